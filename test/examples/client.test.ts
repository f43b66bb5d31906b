import t from 'tap'
import type { Test } from 'tap'
import { AuthClient, AuthServiceError, LoginRequiredError } from '../../examples/client/src/auth-client.js'
import { ServiceError } from '../../src/errors.js'
import { linkOf, startMailServer, tokenOf, type MailServer, type ReceivedMail } from '../fixtures/mail-server.js'
import { FakeClock, NEW_PASSWORD, PASSWORD, TEST_DATABASE_URL, buildTestApp, freshEmail } from '../helpers.js'

/*
 * examples/client against the service running over real HTTP (an in-process
 * instance on a free port), as a Node application uses it: refresh token in
 * memory. Refresh requests are counted by the server itself. The account
 * calls run with real mail: the service sends through a real SMTP server
 * (test/fixtures/mail-server.ts), and the tests take the links from it. The browser
 * flavour (refresh token in the HttpOnly cookie) is run in Chromium by
 * browser.test.ts.
 */

const ACCESS_TTL_MS = 60_000

interface Running {
  url: string
  clock: FakeClock
  /** Counts the requests the server receives for `path` from now on. */
  count: (path: string) => () => number
  /** The SMTP server the service sends its mail through. */
  mail: MailServer
  /** Resolves once every mail the service has queued so far reached the server (or was given up). */
  mailSent: () => Promise<void>
  /** What an admin does: sets the user's roles, disables the account. */
  setRoles: (userId: string, roles: string[]) => Promise<void>
  disable: (userId: string) => Promise<void>
}

const TEST_ADMIN = { id: null, ip: null, userAgent: 'client test' }
const claimsOf = (token: string): Record<string, unknown> => JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString())

/** One instance for the whole file (each test has accounts of its own); on PostgreSQL when CI provides it, else PGlite. */
async function service (t: Test): Promise<Running> {
  const clock = new FakeClock(Date.now())
  const mail = await startMailServer(t)
  const app = await buildTestApp(t, {
    clock,
    env: { ACCESS_TOKEN_TTL: `${ACCESS_TTL_MS / 1000}s`, SMTP_URL: mail.url },
    realDatabase: TEST_DATABASE_URL !== undefined
  })
  const counts = new Map<string, number>()
  app.server.on('request', (request) => {
    const path = new URL(request.url ?? '/', 'http://service').pathname
    counts.set(path, (counts.get(path) ?? 0) + 1)
  })
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  return {
    url,
    clock,
    mail,
    mailSent: () => app.mail.flush(),
    setRoles: async (userId, roles) => { await app.admin.updateUser(userId, { roles }, TEST_ADMIN) },
    disable: async (userId) => { await app.admin.updateUser(userId, { disabled: true }, TEST_ADMIN) },
    count: (path) => {
      const start = counts.get(path) ?? 0
      return () => (counts.get(path) ?? 0) - start
    }
  }
}

const running = await service(t)

async function signedIn (t: Test, running: Running, options: Partial<ConstructorParameters<typeof AuthClient>[0]> = {}) {
  const loginRequired: string[] = []
  const client = new AuthClient({ baseUrl: running.url, onLoginRequired: (code) => loginRequired.push(code), ...options })
  const address = freshEmail('client')
  t.match(await client.signup(address, PASSWORD), { email: address }, 'signed up')
  await client.login(address, PASSWORD)
  t.ok(client.signedIn, 'logged in')
  return { client, address, loginRequired }
}

t.test('sign up, log in, call, log out', async (t) => {
  const refreshes = running.count('/auth/refresh')
  const { client, address, loginRequired } = await signedIn(t, running)
  t.equal((await client.me()).email, address)
  await t.rejects(client.signup(address, PASSWORD), { name: 'AuthServiceError', status: 409, code: 'EMAIL_TAKEN' })
  await t.rejects(new AuthClient({ baseUrl: running.url }).login(address, 'wrong password'), { code: 'INVALID_CREDENTIALS' })

  await client.logout()
  t.notOk(client.signedIn)
  await t.rejects(client.me(), LoginRequiredError, 'after logout: login required')
  t.strictSame(loginRequired, ['REFRESH_TOKEN_MISSING'], 'the application was told once')
  t.equal(refreshes(), 0, 'with nothing to refresh with, nothing was sent')
})

t.test('20 concurrent calls across an expiry: exactly one refresh, every call answered', async (t) => {
  let refreshesSent = 0
  let meCalls = 0
  let expiredAnswers = 0
  let refreshed!: () => void
  const refreshDone = new Promise<void>((resolve) => { refreshed = resolve })

  /*
   * The clock passes the access token's expiry after the 10th call has gone
   * out, so calls 11 to 20 certainly meet an expired token (the first ten may
   * too, depending on when the server reads its clock). Calls 16 to 20 get
   * their 401 only once the refresh is over, as a slow network would deliver
   * them: they must use the new token rather than refresh again.
   */
  const countingFetch: typeof fetch = async (input, init) => {
    const path = new URL(String(input)).pathname
    if (path === '/auth/refresh') refreshesSent++
    const call = path === '/users/me' ? ++meCalls : 0
    const response = await fetch(input, init)
    if (path === '/users/me' && call === 10) running.clock.advance(ACCESS_TTL_MS + 1000)
    if (path === '/auth/refresh') refreshed()
    if (response.status === 401) {
      expiredAnswers++
      if (call >= 16) await refreshDone
    }
    return response
  }
  const { client, address } = await signedIn(t, running, { fetch: countingFetch })
  const refreshes = running.count('/auth/refresh')
  const meRequests = running.count('/users/me')

  const answers = await Promise.all(Array.from({ length: 20 }, () => client.me()))
  t.equal(answers.length, 20)
  t.ok(answers.every((user) => user.email === address), 'all 20 answered with the user')
  t.equal(refreshes(), 1, 'the server received exactly one refresh')
  t.equal(refreshesSent, 1, 'and the client sent exactly one')
  t.ok(expiredAnswers >= 10 && expiredAnswers <= 20, `${expiredAnswers} calls met ACCESS_TOKEN_EXPIRED and were retried`)
  t.equal(meRequests(), 20 + expiredAnswers, 'each expired call was retried once')

  // The new token is in use: a later call needs no refresh.
  t.equal((await client.me()).email, address)
  t.equal(refreshes(), 1)
})

t.test('a session ended elsewhere: the refresh fails, the application goes to login once', async (t) => {
  const { client, address, loginRequired } = await signedIn(t, running)
  const elsewhere = new AuthClient({ baseUrl: running.url })
  await elsewhere.login(address, PASSWORD)
  await elsewhere.json('/auth/logout-all', { method: 'POST' })

  running.clock.advance(ACCESS_TTL_MS + 1000)
  const refreshes = running.count('/auth/refresh')
  const calls = await Promise.allSettled(Array.from({ length: 5 }, () => client.me()))
  for (const call of calls) {
    t.match(call, { status: 'rejected', reason: { name: 'LoginRequiredError', code: 'REFRESH_TOKEN_REVOKED' } })
  }
  t.equal(refreshes(), 1, 'one refresh for the five calls')
  t.strictSame(loginRequired, ['REFRESH_TOKEN_REVOKED'], 'onLoginRequired called once')
  t.notOk(client.signedIn, 'the tokens are dropped')

  await client.login(address, PASSWORD)
  t.equal((await client.me()).email, address, 'logging in again works')
})

t.test('a revoked access token (not yet expired) whose session is over: one refresh says so, then login required', async (t) => {
  const { client, address, loginRequired } = await signedIn(t, running)
  const elsewhere = new AuthClient({ baseUrl: running.url })
  await elsewhere.login(address, PASSWORD)
  await elsewhere.json('/auth/logout-all', { method: 'POST' })
  const refreshes = running.count('/auth/refresh')
  await t.rejects(client.me(), { name: 'LoginRequiredError', code: 'REFRESH_TOKEN_REVOKED' })
  t.equal(refreshes(), 1, 'one refresh, to learn whether the session lives on')
  t.strictSame(loginRequired, ['REFRESH_TOKEN_REVOKED'])
})

t.test('a role removed: the revoked access token is refreshed, and the call goes on with the new roles', async (t) => {
  const { client, loginRequired } = await signedIn(t, running)
  const { id } = await client.me()
  await running.setRoles(id, ['reports'])
  const withRole = await client.refresh()
  t.strictSame(claimsOf(withRole).roles, ['reports'], 'the refreshed token carries the role')
  await running.setRoles(id, [])
  const refreshes = running.count('/auth/refresh')
  const me = await client.me()
  t.strictSame(me.roles, [], 'the call succeeded after a refresh')
  t.equal(refreshes(), 1, 'one refresh')
  // Given the token it started from, refresh answers the one that replaced it, without a request.
  t.strictSame(claimsOf(await client.refresh(withRole)).roles, [], 'the new token lacks the removed role')
  t.strictSame(loginRequired, [], 'no login asked for')
})

t.test('a disabled account: its refresh answers ACCOUNT_DISABLED, and login is required', async (t) => {
  const { client, loginRequired } = await signedIn(t, running)
  const { id } = await client.me()
  await running.disable(id)
  await t.rejects(client.me(), { name: 'LoginRequiredError', code: 'ACCOUNT_DISABLED' })
  t.strictSame(loginRequired, ['ACCOUNT_DISABLED'])
})

t.test('a stolen refresh token used first: the client\'s refresh is reuse, and it goes to login', async (t) => {
  let stolen: string | undefined
  const leakyFetch: typeof fetch = async (input, init) => {
    const response = await fetch(input, init)
    if (new URL(String(input)).pathname === '/auth/login') stolen = ((await response.clone().json()) as { refreshToken: string }).refreshToken
    return response
  }
  const { client, loginRequired } = await signedIn(t, running, { fetch: leakyFetch, refreshTokenStore: 'memory' })
  const thief = await fetch(`${running.url}/auth/refresh`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ refreshToken: stolen })
  })
  t.equal(thief.status, 200, 'the thief refreshed first')
  // Past the access token's expiry, and past the reuse grace window.
  running.clock.advance(ACCESS_TTL_MS + 1000)
  await t.rejects(client.me(), { name: 'LoginRequiredError', code: 'REFRESH_TOKEN_REUSED' })
  t.strictSame(loginRequired, ['REFRESH_TOKEN_REUSED'])
  const { refreshToken: thiefs } = await thief.json() as { refreshToken: string }
  const again = await fetch(`${running.url}/auth/refresh`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ refreshToken: thiefs })
  })
  t.equal(((await again.json()) as { code: string }).code, 'REFRESH_TOKEN_REVOKED', 'the thief\'s token is revoked with the session')
})

t.test('errors other than the session\'s pass through', async (t) => {
  const { client } = await signedIn(t, running)
  await t.rejects(client.json('/auth/sessions/not-a-uuid', { method: 'DELETE' }), { code: 'VALIDATION_ERROR', status: 400 })
  const missing = await client.fetch('/no/such/route')
  t.equal(missing.status, 404, 'fetch answers non-401 errors as they are')
  t.ok(client.signedIn, 'and keeps the session')
  t.ok(new AuthServiceError(503, 'STORE_UNAVAILABLE', 'x') instanceof Error)
})

type RefreshFault = 'answered 503 STORE_UNAVAILABLE' | 'not answered'

/**
 * A fetch that fails refreshes as a store outage does: the client is answered
 * 503 STORE_UNAVAILABLE, or not at all (fetch rejects). `reached`: the service
 * did the refresh and only its answer was lost (a Redis command that timed out
 * after its write, a dropped connection); otherwise nothing reached the store.
 * `failing` is how many attempts from now on fail.
 */
function failingRefreshes (fault: RefreshFault, { reached }: { reached: boolean }) {
  const faults = {
    failing: 0,
    /** The refresh token each attempt carried, in order. */
    sent: [] as string[],
    fetch: (async (input, init) => {
      if (new URL(String(input)).pathname !== '/auth/refresh') return fetch(input, init)
      faults.sent.push((JSON.parse(String(init?.body)) as { refreshToken: string }).refreshToken)
      if (faults.failing === 0) return fetch(input, init)
      faults.failing--
      if (reached) await (await fetch(input, init)).arrayBuffer()
      if (fault === 'not answered') throw new TypeError('fetch failed')
      return Response.json(new ServiceError('STORE_UNAVAILABLE').toJSON(), { status: 503 })
    }) satisfies typeof fetch
  }
  return faults
}

/** The default policy's retries, shrunk: the same count, a hundredth of the wait. */
const QUICK_RETRY = { delaysMs: [2, 4, 8, 16], withinMs: 8000 }
const FAULTS: RefreshFault[] = ['answered 503 STORE_UNAVAILABLE', 'not answered']

for (const fault of FAULTS) {
  t.test(`a refresh done but ${fault}: sent again with the same token, every call answered, the session goes on`, async (t) => {
    const faults = failingRefreshes(fault, { reached: true })
    const { client, address, loginRequired } = await signedIn(t, running, { fetch: faults.fetch, refreshRetry: QUICK_RETRY })
    const refreshes = running.count('/auth/refresh')
    faults.failing = 1
    running.clock.advance(ACCESS_TTL_MS + 1000)
    const answers = await Promise.all(Array.from({ length: 5 }, () => client.me()))
    t.ok(answers.every((user) => user.email === address), 'all 5 calls answered')
    t.equal(refreshes(), 2, 'one refresh for the five calls, and exactly one retry')
    t.equal(faults.sent[1], faults.sent[0], 'the retry carried the same refresh token')

    // The retry was answered the successor the lost answer held, which refreshes in turn, long after the grace.
    running.clock.advance(ACCESS_TTL_MS + 1000)
    t.equal((await client.me()).email, address)
    t.equal(refreshes(), 3)
    t.not(faults.sent[2], faults.sent[0], 'with the successor')
    t.strictSame(loginRequired, [], 'the session never ended')
  })

  t.test(`every attempt of a refresh ${fault} (Redis down): the call fails after four retries, the session is kept`, async (t) => {
    const faults = failingRefreshes(fault, { reached: false })
    const { client, address, loginRequired } = await signedIn(t, running, { fetch: faults.fetch, refreshRetry: QUICK_RETRY })
    faults.failing = Infinity
    running.clock.advance(ACCESS_TTL_MS + 1000)
    await t.rejects(client.me(), fault === 'not answered'
      ? { name: 'TypeError', message: 'fetch failed' }
      : { name: 'AuthServiceError', status: 503, code: 'STORE_UNAVAILABLE' })
    t.equal(faults.sent.length, 1 + QUICK_RETRY.delaysMs.length, 'the first attempt and four retries')
    t.ok(faults.sent.every((token) => token === faults.sent[0]), 'all with the same refresh token')
    t.ok(client.signedIn, 'the tokens are kept')
    t.strictSame(loginRequired, [])

    faults.failing = 0
    const refreshes = running.count('/auth/refresh')
    t.equal((await client.me()).email, address, 'once Redis is back, the kept refresh token refreshes')
    t.equal(refreshes(), 1)
  })
}

t.test('by default four retries, 3 s of backoff in all: the last well within the 10 s grace', async (t) => {
  const faults = failingRefreshes('answered 503 STORE_UNAVAILABLE', { reached: false })
  const sentAt: number[] = []
  const timedFetch: typeof fetch = async (input, init) => {
    if (new URL(String(input)).pathname === '/auth/refresh') sentAt.push(Date.now())
    return faults.fetch(input, init)
  }
  const { client } = await signedIn(t, running, { fetch: timedFetch })
  faults.failing = Infinity
  running.clock.advance(ACCESS_TTL_MS + 1000)
  await t.rejects(client.me(), { code: 'STORE_UNAVAILABLE' })
  t.equal(sentAt.length, 5)
  const waited = sentAt.at(-1)! - sentAt[0]!
  // Timers may fire a millisecond early.
  t.ok(waited >= 200 + 400 + 800 + 1600 - 4, `the retries waited ${waited} ms`)
})

t.test('no retry starts after the policy\'s window: a longer backoff ends the retries', async (t) => {
  const faults = failingRefreshes('answered 503 STORE_UNAVAILABLE', { reached: false })
  const { client } = await signedIn(t, running, { fetch: faults.fetch, refreshRetry: { delaysMs: [0, 0, 60_000], withinMs: 1000 } })
  faults.failing = Infinity
  running.clock.advance(ACCESS_TTL_MS + 1000)
  await t.rejects(client.me(), { code: 'STORE_UNAVAILABLE' })
  t.equal(faults.sent.length, 3, 'the first attempt and the two retries that fit')
})

// ---------------------------------------------------------------------------
// Account recovery and changes, with the links taken from real mail

/** The mails to `to` whose subject matches, once everything queued so far has been sent: the newest last. */
async function mailsTo (to: string, subject: RegExp): Promise<ReceivedMail[]> {
  await running.mailSent()
  return running.mail.received.filter((mail) => mail.to.includes(to) && subject.test(mail.subject))
}

/** The token of the newest mail to `to` with a matching subject. */
async function latestToken (to: string, subject: RegExp): Promise<string> {
  const mails = await mailsTo(to, subject)
  if (mails.length === 0) throw new Error(`no mail to ${to} matching ${subject}`)
  return tokenOf(mails.at(-1)!)
}

const RESET = /reset your password/i
const VERIFY = /verify your email/i
const CONFIRM_CHANGE = /confirm your new email/i

t.test('requestPasswordReset and resetPassword: the link from the mail sets the password, once', async (t) => {
  const { client, address, loginRequired } = await signedIn(t, running)
  await client.requestPasswordReset(` ${address.toUpperCase()} `)
  const mail = await running.mail.waitFor(address, { subject: RESET })
  t.match(new URL(linkOf(mail)), { pathname: '/account/reset-password', search: '' }, 'the built-in page (APP_URL is unset)')
  t.match(new URL(linkOf(mail)).hash, /^#token=[\w-]{43}$/, 'the token in the fragment')

  const nobody = freshEmail('client-nobody')
  await client.requestPasswordReset(nobody)
  t.same(await mailsTo(nobody, /./), [], 'an unknown email: the same answer, and no mail')

  const stranger = new AuthClient({ baseUrl: running.url })
  await stranger.resetPassword(tokenOf(mail), NEW_PASSWORD)
  t.ok(await running.mail.waitFor(address, { subject: /password was reset/i }), 'the account is told')
  await t.rejects(stranger.resetPassword(tokenOf(mail), 'yet another passphrase'),
    { name: 'AuthServiceError', status: 400, code: 'LINK_TOKEN_INVALID' }, 'a link works once')
  await t.rejects(stranger.resetPassword('not-a-token-at-all', NEW_PASSWORD), { code: 'LINK_TOKEN_INVALID' })

  await t.rejects(new AuthClient({ baseUrl: running.url }).login(address, PASSWORD), { code: 'INVALID_CREDENTIALS' }, 'the old password is gone')
  await new AuthClient({ baseUrl: running.url }).login(address, NEW_PASSWORD)

  // The client that was signed in lost its session with the reset.
  running.clock.advance(ACCESS_TTL_MS + 1000)
  await t.rejects(client.me(), { name: 'LoginRequiredError', code: 'REFRESH_TOKEN_REVOKED' })
  t.strictSame(loginRequired, ['REFRESH_TOKEN_REVOKED'])
})

t.test('resetPassword: a too-short password is refused before the link is spent', async (t) => {
  const { address } = await signedIn(t, running)
  const client = new AuthClient({ baseUrl: running.url })
  await client.requestPasswordReset(address)
  const token = await latestToken(address, RESET)
  await t.rejects(client.resetPassword(token, 'short'), { name: 'AuthServiceError', status: 400, code: 'VALIDATION_ERROR' })
  await client.resetPassword(token, NEW_PASSWORD)
})

t.test('verifyEmail with the signup\'s link; requestEmailVerification replaces it, signed in or by email', async (t) => {
  const { client, address } = await signedIn(t, running)
  t.equal((await client.me()).emailVerified, false, 'unverified after signup')
  const first = tokenOf(await running.mail.waitFor(address, { subject: VERIFY }))

  await client.requestEmailVerification()
  t.equal((await mailsTo(address, VERIFY)).length, 2, 'signed in: a new link')
  await new AuthClient({ baseUrl: running.url }).requestEmailVerification(address)
  t.equal((await mailsTo(address, VERIFY)).length, 3, 'by email, without a session: another')
  const latest = await latestToken(address, VERIFY)

  await t.rejects(client.verifyEmail(first), { code: 'LINK_TOKEN_INVALID' }, 'the signup\'s link was replaced')
  await client.verifyEmail(latest)
  t.equal((await client.me()).emailVerified, true, 'verified')
  await t.rejects(client.verifyEmail(latest), { code: 'LINK_TOKEN_INVALID' }, 'once')

  await client.requestEmailVerification(address)
  t.equal((await mailsTo(address, VERIFY)).length, 3, 'a verified address gets no more links')

  await t.rejects(new AuthClient({ baseUrl: running.url }).requestEmailVerification(), { name: 'LoginRequiredError', code: 'REFRESH_TOKEN_MISSING' },
    'without an email, a session is needed')
})

t.test('changeEmail: the link mailed to the new address moves the account; the old one is told', async (t) => {
  const { client, address, loginRequired } = await signedIn(t, running)
  const other = await signedIn(t, running)
  const newEmail = freshEmail('client-moved')

  await t.rejects(client.changeEmail(newEmail, 'not my password'), { name: 'AuthServiceError', status: 401, code: 'INVALID_CREDENTIALS' })
  t.ok(client.signedIn, 'a wrong password does not end the session')
  await t.rejects(client.changeEmail(other.address.toUpperCase(), PASSWORD), { status: 409, code: 'EMAIL_TAKEN' })

  await client.changeEmail(newEmail, PASSWORD)
  t.equal((await client.me()).email, address, 'nothing changes until the link is followed')
  await client.verifyEmail(tokenOf(await running.mail.waitFor(newEmail, { subject: CONFIRM_CHANGE })))
  t.match(await client.me(), { email: newEmail, emailVerified: true }, 'moved, and verified')
  t.match((await running.mail.waitFor(address, { subject: /email address was changed/i })).text, newEmail, 'the old address is told')
  await new AuthClient({ baseUrl: running.url }).login(newEmail, PASSWORD)
  await t.rejects(new AuthClient({ baseUrl: running.url }).login(address, PASSWORD), { code: 'INVALID_CREDENTIALS' })
  t.strictSame(loginRequired, [])
})

t.test('changeEmail: an address taken before the link is followed answers EMAIL_TAKEN, and the link is spent', async (t) => {
  const { client, address } = await signedIn(t, running)
  const newEmail = freshEmail('client-contested')
  await client.changeEmail(newEmail, PASSWORD)
  const token = tokenOf(await running.mail.waitFor(newEmail, { subject: CONFIRM_CHANGE }))
  await new AuthClient({ baseUrl: running.url }).signup(newEmail, PASSWORD)
  await t.rejects(client.verifyEmail(token), { name: 'AuthServiceError', status: 409, code: 'EMAIL_TAKEN' })
  await t.rejects(client.verifyEmail(token), { code: 'LINK_TOKEN_INVALID' }, 'spent')
  t.equal((await client.me()).email, address)
})

t.test('deleteAccount: with the password, the account and its session are gone and the email is free', async (t) => {
  const { client, address, loginRequired } = await signedIn(t, running)
  await t.rejects(client.deleteAccount('not my password'), { name: 'AuthServiceError', status: 401, code: 'INVALID_CREDENTIALS' })
  t.equal((await client.me()).email, address, 'a wrong password deletes nothing')

  await client.deleteAccount(PASSWORD)
  t.notOk(client.signedIn, 'the tokens are forgotten')
  t.strictSame(loginRequired, [], 'nobody is sent to the login page')
  t.ok(await running.mail.waitFor(address, { subject: /account was deleted/i }), 'the address is told')
  await t.rejects(new AuthClient({ baseUrl: running.url }).login(address, PASSWORD), { code: 'INVALID_CREDENTIALS' })
  t.match(await new AuthClient({ baseUrl: running.url }).signup(address, PASSWORD), { email: address }, 'the email signs up again')
})
