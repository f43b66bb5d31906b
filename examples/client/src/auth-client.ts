/*
 * A client of auth-service for browsers and Node, with no dependencies: it
 * needs only `fetch`.
 *
 * - The access token lives in memory only (never in localStorage, where any
 *   script on the page could read it).
 * - The refresh token: in a browser, the HttpOnly `refresh_token` cookie the
 *   service sets, which no script can read ('cookie'); elsewhere (Node, a
 *   mobile app) in memory, sent in the body ('memory').
 * - A call answered `ACCESS_TOKEN_EXPIRED` refreshes once and is retried. So
 *   is one answered `ACCESS_TOKEN_REVOKED`: the session may live on (an admin
 *   removed a role: the next token carries the new roles), and the refresh
 *   tells (`REFRESH_TOKEN_REVOKED` when the session is over).
 *   Concurrent calls share one refresh (single flight): however many fail at
 *   once, the service sees one `POST /auth/refresh`.
 * - A refresh answered `503 STORE_UNAVAILABLE`, or not answered at all, is
 *   sent again with the same refresh token after a short backoff, within the
 *   service's reuse grace, which answers it as the first attempt would have been.
 * - When the session is over (`REFRESH_TOKEN_*`, `ACCOUNT_DISABLED`, or an
 *   access token invalid, or still revoked after a refresh) the tokens are dropped, `onLoginRequired` is called once, and
 *   the call fails with LoginRequiredError: time to show the login page.
 * - Account recovery and changes (password reset, address verification,
 *   email change, deletion) are one call each; the mailed links carry their
 *   token in the URL fragment, which the application's page passes in.
 */

/** The signed-in user, as `GET /users/me` answers. */
export interface User {
  id: string
  email: string
  /** The address was proven by a mailed link (or a completed password reset). */
  emailVerified: boolean
  roles: string[]
  createdAt: string
}

/** A new account, as `POST /auth/signup` answers. */
export type NewUser = Pick<User, 'id' | 'email' | 'createdAt'>

interface TokenPair {
  accessToken: string
  refreshToken: string
  tokenType: 'Bearer'
  expiresIn: number
  refreshExpiresIn: number
}

/** An error answer of the service: `{ statusCode, code, error, message }`. Branch on `code`. */
export class AuthServiceError extends Error {
  constructor (readonly status: number, readonly code: string, message: string) {
    super(message)
    this.name = 'AuthServiceError'
  }
}

/** The session is over: the user has to log in (again). `code` says why. */
export class LoginRequiredError extends AuthServiceError {
  constructor (code: string, message = 'Log in again') {
    super(401, code, message)
    this.name = 'LoginRequiredError'
  }
}

export interface AuthClientOptions {
  /** Where auth-service is, e.g. `https://auth.example.com` (no trailing path). */
  baseUrl: string
  /**
   * Where the refresh token is kept: 'cookie' (the default in a browser: the
   * service's HttpOnly cookie) or 'memory' (the default elsewhere).
   */
  refreshTokenStore?: 'cookie' | 'memory'
  /** Called once each time the session ends: redirect to the login page here. */
  onLoginRequired?: (code: string) => void
  /** The fetch to use (a wrapper for logging or tests); the global one by default. */
  fetch?: typeof fetch
  /** When a refresh that met a store outage or the network is sent again: by default after 200, 400, 800 and 1600 ms, within 8 s. */
  refreshRetry?: RefreshRetryPolicy
}

export interface RefreshRetryPolicy {
  /** The wait before each retry, in order: as many retries as delays. */
  delaysMs: readonly number[]
  /** No retry is sent later than this after the first attempt went out. */
  withinMs: number
}

/**
 * A retry with the same refresh token is answered as the first attempt would
 * have been (the successor that attempt created, if it got as far) only
 * within the service's REFRESH_REUSE_GRACE, 10 s by default; after it, the
 * token counts as reused and the session is revoked. Hence 3 s of backoff in
 * all, and none started after 8 s.
 */
const DEFAULT_REFRESH_RETRY: RefreshRetryPolicy = { delaysMs: [200, 400, 800, 1600], withinMs: 8000 }

/** Answers that mean the session cannot go on, whatever is retried. */
const SESSION_OVER = new Set([
  'ACCESS_TOKEN_INVALID', 'ACCESS_TOKEN_REVOKED', 'ACCOUNT_DISABLED',
  'REFRESH_TOKEN_MISSING', 'REFRESH_TOKEN_EXPIRED', 'REFRESH_TOKEN_INVALID', 'REFRESH_TOKEN_REVOKED', 'REFRESH_TOKEN_REUSED'
])

/** Answers a refresh may cure: an expired token, or one revoked while its session lives on (a role removed). */
const REFRESH_AND_RETRY = new Set(['ACCESS_TOKEN_EXPIRED', 'ACCESS_TOKEN_REVOKED'])

const inBrowser = (): boolean => typeof (globalThis as { document?: unknown }).document !== 'undefined'

export class AuthClient {
  readonly #baseUrl: string
  readonly #store: 'cookie' | 'memory'
  readonly #fetch: typeof fetch
  readonly #onLoginRequired: ((code: string) => void) | undefined
  readonly #refreshRetry: RefreshRetryPolicy
  #accessToken: string | undefined
  #refreshToken: string | undefined
  #refreshing: Promise<string> | undefined
  /** Why the session ended (cleared by the next login): calls still in flight from it end the same way, and the application is told once. */
  #endedBy: string | undefined

  constructor (options: AuthClientOptions) {
    this.#baseUrl = options.baseUrl.replace(/\/+$/, '')
    this.#store = options.refreshTokenStore ?? (inBrowser() ? 'cookie' : 'memory')
    this.#fetch = options.fetch ?? ((input, init) => fetch(input, init))
    this.#onLoginRequired = options.onLoginRequired
    this.#refreshRetry = options.refreshRetry ?? DEFAULT_REFRESH_RETRY
  }

  /** Whether an access token is held (it may have expired: calls refresh it). */
  get signedIn (): boolean {
    return this.#accessToken !== undefined
  }

  /** Creates an account; the service mails a verification link to the address. EMAIL_TAKEN when it has an account. */
  async signup (email: string, password: string): Promise<NewUser> {
    return this.#readJson<NewUser>(await this.#post('/auth/signup', { email, password }))
  }

  async login (email: string, password: string): Promise<void> {
    this.#keep(await this.#readJson<TokenPair>(await this.#post('/auth/login', { email, password })))
  }

  /** Ends the session on the service (and the cookie), then forgets the tokens. Never fails for an already ended session. */
  async logout (): Promise<void> {
    const headers: Record<string, string> = this.#accessToken === undefined ? {} : { authorization: `Bearer ${this.#accessToken}` }
    const body = this.#store === 'memory' && this.#refreshToken !== undefined ? { refreshToken: this.#refreshToken } : undefined
    this.#forget()
    const response = await this.#post('/auth/logout', body, headers)
    if (!response.ok) await this.#readJson(response)
  }

  /** The signed-in user. */
  async me (): Promise<User> {
    return this.json<User>('/users/me')
  }

  /*
   * Account recovery and changes. The links the service mails carry their
   * token in the fragment (`…/reset-password#token=…`), which the browser
   * never sends to a server: the page that opens it reads `location.hash`
   * and calls resetPassword() or verifyEmail() with it. Errors are
   * AuthServiceError; branch on `code`.
   */

  /**
   * Mails a password-reset link if an account has this email. Resolves the
   * same way whether or not one does (the service answers 202 either way):
   * tell the user to check their mail. RATE_LIMITED when asked too often.
   */
  async requestPasswordReset (email: string): Promise<void> {
    await this.#readJson(await this.#post('/auth/password-reset/request', { email }))
  }

  /**
   * Sets a new password with the token of a reset link. Every session of the
   * account ends (this client's too, if it was signed in to it): log in with
   * the new password. LINK_TOKEN_INVALID: the link is unknown, used, replaced
   * by a newer one or expired; VALIDATION_ERROR: the password is not 8 to 256
   * characters.
   */
  async resetPassword (token: string, newPassword: string): Promise<void> {
    await this.#readJson(await this.#post('/auth/password-reset', { token, newPassword }))
  }

  /**
   * Mails a new verification link: for the account of `email`, or without it
   * for the signed-in user (a session is needed then). Resolves the same way
   * whatever the account, as requestPasswordReset does; an address already
   * verified gets no mail.
   */
  async requestEmailVerification (email?: string): Promise<void> {
    if (email === undefined) await this.json('/auth/verify-email/request', { method: 'POST' })
    else await this.#readJson(await this.#post('/auth/verify-email/request', { email }))
  }

  /**
   * Verifies an address with the token of a verification link, or completes
   * an email change with the token mailed to the new address. Access tokens
   * say `email_verified` from the next refresh. LINK_TOKEN_INVALID; for an
   * email change, EMAIL_TAKEN when another account took the address since
   * (the link is spent: ask for the change again).
   */
  async verifyEmail (token: string): Promise<void> {
    await this.#readJson(await this.#post('/auth/verify-email', { token }))
  }

  /**
   * Asks to move the signed-in account to `newEmail`, with its password: a
   * link goes to the new address, and the email changes only when it is
   * followed (verifyEmail). INVALID_CREDENTIALS: a wrong password (the
   * session goes on); EMAIL_TAKEN: an account has the address.
   */
  async changeEmail (newEmail: string, password: string): Promise<void> {
    await this.json('/users/me/email', { method: 'POST', body: { newEmail, password } })
  }

  /**
   * Deletes the signed-in account, with its password; every session ends and
   * this client forgets its tokens (onLoginRequired is not called: nobody is
   * to log in). INVALID_CREDENTIALS: a wrong password, and nothing happened.
   */
  async deleteAccount (password: string): Promise<void> {
    await this.json('/users/me', { method: 'DELETE', body: { password } })
    this.#forget()
  }

  /**
   * `fetch` with the access token: refreshed once and retried on
   * ACCESS_TOKEN_EXPIRED or _REVOKED; LoginRequiredError when the session is over. A
   * relative path is on auth-service; an absolute URL is another service
   * that accepts its access tokens. The body must be replayable (a string,
   * not a stream) for the retry.
   */
  async fetch (pathOrUrl: string, init: RequestInit = {}): Promise<Response> {
    // No token yet (a reload in a browser): the cookie may still hold a session.
    let token = this.#accessToken ?? await this.refresh()
    let response = await this.#send(pathOrUrl, init, token)
    let code = await errorCode(response)
    if (code !== undefined && REFRESH_AND_RETRY.has(code)) {
      token = await this.refresh(token)
      response = await this.#send(pathOrUrl, init, token)
      code = await errorCode(response)
    }
    if (code !== undefined && SESSION_OVER.has(code)) throw this.#sessionOver(code)
    return response
  }

  /** `fetch`, with a JSON body in and out; an error answer throws AuthServiceError. */
  async json<T> (pathOrUrl: string, { body, ...init }: Omit<RequestInit, 'body'> & { body?: unknown } = {}): Promise<T> {
    const headers = new Headers(init.headers)
    if (body !== undefined) headers.set('content-type', 'application/json')
    const response = await this.fetch(pathOrUrl, { ...init, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) })
    return this.#readJson<T>(response)
  }

  /**
   * A new access token from the refresh token: one refresh however many
   * callers ask at once, retried on a store outage or a network error.
   * `stale` is the token a caller found expired: if another caller has
   * replaced it since, that one is answered at once.
   */
  async refresh (stale?: string): Promise<string> {
    if (this.#refreshing !== undefined) return this.#refreshing
    if (stale !== undefined && this.#accessToken !== stale) {
      // Since this caller's request went out, another one refreshed the token, or found the session over.
      if (this.#accessToken !== undefined) return this.#accessToken
      if (this.#endedBy !== undefined) throw new LoginRequiredError(this.#endedBy)
    }
    this.#refreshing = this.#refreshNow().finally(() => { this.#refreshing = undefined })
    return this.#refreshing
  }

  async #refreshNow (): Promise<string> {
    if (this.#store === 'memory' && this.#refreshToken === undefined) throw this.#sessionOver('REFRESH_TOKEN_MISSING')
    const response = await this.#postRefresh(this.#store === 'memory' ? { refreshToken: this.#refreshToken } : undefined)
    const code = await errorCode(response)
    if (code !== undefined && SESSION_OVER.has(code)) throw this.#sessionOver(code)
    // Anything else that failed (429, 503, the network) is passing: the session is kept for a later try.
    return this.#keep(await this.#readJson<TokenPair>(response))
  }

  /**
   * POST /auth/refresh, sent again after each of the policy's delays while it
   * is answered 503 STORE_UNAVAILABLE or not at all (fetch rejects), with the
   * same token (in a browser the same cookie: a failed refresh sets none).
   * The last answer or rejection is the caller's.
   */
  async #postRefresh (body: unknown): Promise<Response> {
    const { delaysMs, withinMs } = this.#refreshRetry
    const firstSentAt = Date.now()
    const retryDelay = (retry: number): number | undefined => {
      const delay = delaysMs[retry]
      return delay !== undefined && Date.now() - firstSentAt + delay <= withinMs ? delay : undefined
    }
    for (let retry = 0; ; retry++) {
      let delay: number | undefined
      try {
        const response = await this.#post('/auth/refresh', body)
        delay = await errorCode(response, 503) === 'STORE_UNAVAILABLE' ? retryDelay(retry) : undefined
        if (delay === undefined) return response
      } catch (error) {
        delay = retryDelay(retry)
        if (delay === undefined) throw error
      }
      await new Promise((resolve) => setTimeout(resolve, delay))
    }
  }

  #keep (pair: TokenPair): string {
    this.#accessToken = pair.accessToken
    this.#endedBy = undefined
    // In a browser the cookie holds it; a copy in script would be one more thing to steal.
    if (this.#store === 'memory') this.#refreshToken = pair.refreshToken
    return pair.accessToken
  }

  #forget (): void {
    this.#accessToken = undefined
    this.#refreshToken = undefined
  }

  /** Drops the session, tells the application (once per session), and answers the error to throw. */
  #sessionOver (code: string): LoginRequiredError {
    this.#forget()
    if (this.#endedBy === undefined) {
      this.#endedBy = code
      this.#onLoginRequired?.(code)
    }
    return new LoginRequiredError(code)
  }

  #url (pathOrUrl: string): string {
    return /^https?:\/\//.test(pathOrUrl) ? pathOrUrl : `${this.#baseUrl}${pathOrUrl}`
  }

  async #send (pathOrUrl: string, init: RequestInit, token: string): Promise<Response> {
    const headers = new Headers(init.headers)
    headers.set('authorization', `Bearer ${token}`)
    return this.#fetch(this.#url(pathOrUrl), { ...init, headers })
  }

  /** The /auth routes: with the cookie (credentials) in 'cookie' mode, JSON when there is a body, none otherwise. */
  async #post (path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Response> {
    return this.#fetch(this.#url(path), {
      method: 'POST',
      credentials: this.#store === 'cookie' ? 'include' : 'omit',
      headers: body === undefined ? headers : { ...headers, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) })
    })
  }

  async #readJson<T> (response: Response): Promise<T> {
    const text = await response.text()
    const body = text === '' ? undefined : JSON.parse(text)
    if (!response.ok) {
      const code = typeof body?.code === 'string' ? body.code : 'UNKNOWN'
      if (SESSION_OVER.has(code)) throw this.#sessionOver(code)
      throw new AuthServiceError(response.status, code, typeof body?.message === 'string' ? body.message : response.statusText)
    }
    return body as T
  }
}

/** The `code` of an answer with `status` (read from a copy: the caller may still read the body), else undefined. */
async function errorCode (response: Response, status = 401): Promise<string | undefined> {
  if (response.status !== status) return undefined
  try {
    const body = await response.clone().json() as { code?: unknown }
    return typeof body.code === 'string' ? body.code : undefined
  } catch {
    return undefined
  }
}
