import { connect } from 'node:net'
import type { AddressInfo } from 'node:net'
import fc from 'fast-check'
import type { FastifyInstance, InjectOptions } from 'fastify'
import t from 'tap'
import { normalizeEmail } from '../../src/users.js'
import { startMailServer, tokenOf, type MailServer } from '../fixtures/mail-server.js'
import { NO_RATE_LIMITS, NEW_PASSWORD, PASSWORD, buildTestApp, errorShapeProblems, freshEmail, logIn, refreshCookieOf, signUpAndLogIn, testDatabase } from '../helpers.js'

/*
 * Property-based fuzzing (fast-check, fixed seed, bounded runs): random and
 * mutated requests to every route, through app.inject() and as raw bytes
 * over TCP. Whatever comes in: never a 5xx, every error in the one shape,
 * never a password hash in an answer, and the service keeps serving.
 */

const SEED = 20261123

/** The account routes of issue 14: links asked for and redeemed, email change, deletion, the built-in pages. */
const ACCOUNT_ROUTES = [
  '/auth/password-reset/request', '/auth/password-reset', '/auth/verify-email/request', '/auth/verify-email',
  '/users/me/email', '/account/reset-password', '/account/verify-email'
]
/** The admin routes of issue 15 (role admin); the requests below carry an admin's token too, so the fuzz reaches them. */
const ADMIN_ROUTES = ['/admin/users', '/admin/events']
const ROUTES = [
  '/auth/signup', '/auth/login', '/auth/refresh', '/auth/logout', '/auth/logout-all', '/auth/logout-others',
  '/auth/password', '/auth/sessions', '/auth/events', '/users/me', '/.well-known/jwks.json', '/health', '/docs', '/docs/json',
  '/auth/introspect', ...ACCOUNT_ROUTES, ...ADMIN_ROUTES
]
const FIELDS = [
  'email', 'password', 'refreshToken', 'currentPassword', 'newPassword', 'token', 'newEmail', 'roles', 'disabled',
  '__proto__', 'constructor', 'prototype'
]
const CONTENT_TYPES = [
  'application/json', 'application/json; charset=utf-8', 'APPLICATION/JSON', 'application/json; charset=latin1',
  'application/jsonx', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'text/plain', 'text/html', '*/*', ''
]

/** Characters that can reach a header over HTTP: visible ASCII, space and obs-text. */
const headerText = (maxLength: number) => fc.string({
  unit: fc.integer({ min: 0x20, max: 0xff }).filter((code) => code !== 0x7f).map((code) => String.fromCharCode(code)),
  maxLength
})

/** Strings with the awkward characters: controls, unicode, astral, NUL, RTL marks. */
const awkwardText = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: fc.integer({ min: 0, max: 0x1f }).map((code) => String.fromCharCode(code)), maxLength: 10 }),
  fc.constantFrom('', ' ', '\u0000', '\u202e', '\ufeff', '\ud83d\ude00', '\ud800', 'ﬀ', '\ufdfa'.repeat(40), 'a'.repeat(300))
)

/** `base` with up to four random edits: inserts, deletions, replacements, truncation. */
const mutated = (base: string) => fc.array(fc.tuple(
  fc.constantFrom('insert', 'delete', 'replace', 'truncate'),
  fc.nat({ max: Math.max(0, base.length) }),
  fc.string({ unit: 'binary', minLength: 1, maxLength: 3 })
), { minLength: 1, maxLength: 4 }).map((edits) => {
  let text = base
  for (const [edit, at, chars] of edits) {
    const i = Math.min(at, text.length)
    if (edit === 'insert') text = text.slice(0, i) + chars + text.slice(i)
    else if (edit === 'delete') text = text.slice(0, i) + text.slice(i + 1)
    else if (edit === 'replace') text = text.slice(0, i) + chars + text.slice(i + chars.length)
    else text = text.slice(0, i)
  }
  return text
})

/** Percent-encodes every byte of `text` (as latin1) but path characters: any string becomes a valid, perhaps undecodable, path. */
const asPath = (text: string): string => [...Buffer.from(text, 'latin1')]
  .map((byte) => /[\w\-.~/]/.test(String.fromCharCode(byte)) ? String.fromCharCode(byte) : `%${byte.toString(16).padStart(2, '0')}`)
  .join('')

interface Secrets {
  email: string
  accessToken: string
  refreshToken: string
  sessionId: string
  userId: string
  /** An access token with the role admin (of another account). */
  adminToken: string
}

function requestArbitrary (secrets: Secrets): fc.Arbitrary<InjectOptions> {
  const tokenish = fc.oneof(
    fc.constant(secrets.accessToken), fc.constant(secrets.refreshToken),
    mutated(secrets.accessToken), mutated(secrets.refreshToken), awkwardText
  )
  const roleList = fc.array(fc.oneof(fc.constantFrom('admin', 'billing', 'Admin', '', '1x'), awkwardText), { maxLength: 40 })
  const value = fc.oneof(tokenish, fc.constant(secrets.email), mutated(secrets.email), fc.constant(PASSWORD), awkwardText,
    fc.jsonValue({ maxDepth: 2 }))
  const jsonBody = fc.dictionary(fc.oneof(fc.constantFrom(...FIELDS), fc.string({ maxLength: 8 })), value, { maxKeys: 4 })
    .map((body) => JSON.stringify(body))
  const validBody = fc.constantFrom(
    JSON.stringify({ email: secrets.email, password: PASSWORD }),
    JSON.stringify({ refreshToken: secrets.refreshToken }),
    JSON.stringify({ currentPassword: PASSWORD, newPassword: `${PASSWORD}!` }),
    JSON.stringify({ email: secrets.email }),
    JSON.stringify({ token: 'A'.repeat(43), newPassword: `${PASSWORD}!` }),
    JSON.stringify({ newEmail: `new-${secrets.email}`, password: PASSWORD }),
    JSON.stringify({ roles: ['billing'] }),
    JSON.stringify({ disabled: false }),
    JSON.stringify({ roles: [], disabled: false })
  )
  const body = fc.option(fc.oneof(
    jsonBody,
    validBody.chain(mutated),
    fc.string({ unit: 'binary', maxLength: 200 }),
    fc.uint8Array({ maxLength: 200 }).map((bytes) => Buffer.from(bytes)),
    fc.nat({ max: 3000 }).map((depth) => '['.repeat(depth) + ']'.repeat(depth)),
    fc.jsonValue({ maxDepth: 4 }).map((json) => JSON.stringify(json) ?? 'null'),
    fc.record({ roles: roleList, disabled: fc.oneof(fc.boolean(), fc.jsonValue()) }, { requiredKeys: [] }).map((patch) => JSON.stringify(patch))
  ), { nil: undefined })

  const path = fc.oneof(
    fc.constantFrom(...ROUTES),
    fc.constantFrom(`/auth/sessions/${secrets.sessionId}`, '/auth/sessions/'),
    fc.oneof(fc.uuid(), headerText(40)).map((id) => `/auth/sessions/${asPath(id).replace(/\//g, '%2f')}`),
    fc.tuple(fc.oneof(fc.constant(secrets.userId), fc.uuid(), headerText(40).map((id) => asPath(id).replace(/\//g, '%2f'))), fc.constantFrom('', '/sessions'))
      .map(([id, rest]) => `/admin/users/${id}${rest}`),
    fc.tuple(fc.constantFrom('query', 'limit', 'cursor', 'userId', 'type', 'before'), headerText(40), fc.constantFrom(...ADMIN_ROUTES))
      .map(([name, value, route]) => `${route}?${name}=${asPath(value)}`),
    fc.constantFrom(...ROUTES).chain(mutated).map((mangled) => `/${asPath(mangled.replace(/^\/+/, ''))}`),
    fc.tuple(fc.constantFrom(...ROUTES), headerText(30)).map(([route, query]) => `${route}?${asPath(query)}`),
    fc.constantFrom('/%E0%A4%A', '/docs/../../etc/passwd', '//auth//login', '/auth/login/', '/AUTH/LOGIN', '/auth/login%00', '/*')
  )

  const authorization = fc.oneof(
    fc.constant(`Bearer ${secrets.accessToken}`),
    fc.constant(`Bearer ${secrets.adminToken}`),
    mutated(secrets.adminToken).map((token) => `Bearer ${token}`),
    mutated(secrets.accessToken).map((token) => `Bearer ${token}`),
    headerText(100),
    headerText(100).map((token) => `Bearer ${token}`),
    fc.nat({ max: 15_000 }).map((length) => `Bearer ${'a'.repeat(length)}`),
    fc.constantFrom('Bearer', 'Bearer ', 'bearer x.y.z', 'Basic YTpi', `Bearer ${secrets.refreshToken}`, `Bearer ${secrets.accessToken} extra`)
  )
  const cookie = fc.oneof(
    fc.constant(`refresh_token=${secrets.refreshToken}`),
    mutated(secrets.refreshToken).map((token) => `refresh_token=${asPath(token)}`),
    headerText(200),
    fc.nat({ max: 12_000 }).map((length) => `refresh_token=${'r'.repeat(length)}`),
    fc.constantFrom('refresh_token=%E0%A4%A; =; ;;', 'refresh_token=', 'refresh_token="quoted"; refresh_token=twice')
  )
  const headers = fc.record({
    'content-type': fc.oneof(fc.constantFrom(...CONTENT_TYPES), headerText(40)),
    authorization,
    cookie,
    origin: fc.oneof(fc.constantFrom('https://evil.example', 'null', 'http://localhost:80'), headerText(30)),
    'x-forwarded-for': fc.oneof(fc.ipV4(), fc.ipV6(), headerText(30)),
    'x-request-id': headerText(40)
  }, { requiredKeys: [] })

  return fc.record({
    method: fc.constantFrom('GET', 'POST', 'POST', 'POST', 'DELETE', 'PUT', 'PATCH', 'OPTIONS', 'HEAD'),
    url: path,
    headers,
    payload: body
  }).map(({ method, url, headers, payload }) => {
    const request: InjectOptions = { method: method as InjectOptions['method'], url, headers: { ...headers } }
    if (payload !== undefined && method !== 'GET' && method !== 'HEAD') request.payload = payload
    return request
  })
}

/** A new account granted the role admin (as an admin or the command line grants it), signed in: its id and access token. */
async function signedInAdmin (app: FastifyInstance): Promise<{ id: string, accessToken: string }> {
  const email = freshEmail('fuzz-admin')
  const { id } = (await app.inject({ method: 'POST', url: '/auth/signup', payload: { email, password: PASSWORD } })).json()
  await app.admin.updateUser(id, { roles: ['admin'] }, { id: null, ip: null, userAgent: null })
  return { id, accessToken: (await logIn(app, email)).accessToken }
}

async function session (app: FastifyInstance): Promise<Secrets> {
  const { email, accessToken, refreshToken } = await signUpAndLogIn(app, 'fuzz')
  const sessions = await app.inject({ method: 'GET', url: '/auth/sessions', headers: { authorization: `Bearer ${accessToken}` } })
  const me = await app.inject({ method: 'GET', url: '/users/me', headers: { authorization: `Bearer ${accessToken}` } })
  return { email, accessToken, refreshToken, sessionId: sessions.json()[0].id, userId: me.json().id, adminToken: (await signedInAdmin(app)).accessToken }
}

/** The codes of API.md's error table: the only ones a client is promised. */
const API_CODES = new Set([
  'VALIDATION_ERROR', 'LINK_TOKEN_INVALID', 'ACCESS_TOKEN_MISSING', 'ACCESS_TOKEN_EXPIRED', 'ACCESS_TOKEN_INVALID', 'ACCESS_TOKEN_REVOKED',
  'REFRESH_TOKEN_MISSING', 'REFRESH_TOKEN_EXPIRED', 'REFRESH_TOKEN_INVALID', 'REFRESH_TOKEN_REVOKED', 'REFRESH_TOKEN_REUSED',
  'INVALID_CREDENTIALS', 'FORBIDDEN', 'ACCOUNT_DISABLED', 'EMAIL_NOT_VERIFIED', 'NOT_FOUND', 'EMAIL_TAKEN', 'LAST_ADMIN',
  'PAYLOAD_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE', 'RATE_LIMITED', 'STORE_UNAVAILABLE'
])

/** The error codes answered that API.md does not list, with an example request of each. */
function offContract (): { note: (method: string, url: string, response: { statusCode: number, body: string }) => void, found: Map<string, string> } {
  const found = new Map<string, string>()
  return {
    found,
    note (method, url, response) {
      if (response.statusCode < 400 || method === 'HEAD') return
      const code = (JSON.parse(response.body) as { code?: unknown }).code
      if (typeof code === 'string' && !API_CODES.has(code) && !found.has(code)) found.set(code, `${method} ${url}`)
    }
  }
}

function problemsOf (method: string, response: { statusCode: number, headers: Record<string, unknown>, body: string }): string[] {
  const problems: string[] = []
  if (response.statusCode >= 500) problems.push(`status ${response.statusCode}`)
  if (response.statusCode >= 400 && method !== 'HEAD') {
    problems.push(...errorShapeProblems(response.statusCode, response.headers['content-type'] as string | undefined, response.body))
  }
  if (response.body.includes('$argon2')) problems.push('a password hash in the answer')
  return problems
}

/*
 * One app for the whole file, with no rate limit in reach (thousands of
 * requests come from one address), a proxy trusted and CORS configured, so
 * that every header the fuzzer sends is read.
 */
const app = await buildTestApp(t, { env: { TRUST_PROXY: 'true', CORS_ORIGINS: 'https://app.example.com' }, rateLimits: NO_RATE_LIMITS })

t.test('random and mutated requests to every route', async (t) => {
  const secrets = await session(app)
  const statuses = new Map<number, number>()
  const codes = offContract()

  await fc.assert(fc.asyncProperty(requestArbitrary(secrets), async (request) => {
    const response = await app.inject(request)
    statuses.set(response.statusCode, (statuses.get(response.statusCode) ?? 0) + 1)
    const problems = problemsOf(String(request.method), response)
    if (problems.length > 0) throw new Error(`${request.method} ${request.url}: ${problems.join('; ')}\n${response.body.slice(0, 300)}`)
    codes.note(String(request.method), String(request.url), response)
  }), { seed: SEED, numRuns: 2500, endOnFailure: true })
  t.strictSame(Object.fromEntries(codes.found), {}, `every error code is one of API.md's; others: ${JSON.stringify(Object.fromEntries(codes.found))}`)

  t.pass(`statuses: ${JSON.stringify(Object.fromEntries([...statuses].sort(([a], [b]) => a - b)))}`)
  t.ok([...statuses.keys()].filter((status) => status < 300).length >= 2, 'some requests got through to a handler')
  t.ok(statuses.size >= 6, 'and many kinds of refusal were reached')

  // Still serving, and still correct.
  t.equal((await app.inject({ method: 'GET', url: '/health' })).statusCode, 200)
  const after = await session(app)
  t.equal((await app.inject({ method: 'GET', url: '/users/me', headers: { authorization: `Bearer ${after.accessToken}` } })).statusCode, 200)
  t.equal(({} as Record<string, unknown>).email, undefined, 'Object.prototype is untouched')
})

/** A fresh account and live links of each kind, read from the mail the service sent. */
interface AccountSecrets extends Secrets {
  resetToken: string
  verifyToken: string
  changeToken: string
  /** The address the pending email change moves to. */
  newEmail: string
}

async function accountSession (app: FastifyInstance, mail: MailServer): Promise<AccountSecrets> {
  const secrets = await session(app)
  const authorization = `Bearer ${secrets.accessToken}`
  const newEmail = freshEmail('fuzz-new')
  const reset = await app.inject({ method: 'POST', url: '/auth/password-reset/request', payload: { email: secrets.email } })
  const change = await app.inject({ method: 'POST', url: '/users/me/email', headers: { authorization }, payload: { newEmail, password: PASSWORD } })
  if (reset.statusCode !== 202 || change.statusCode !== 202) throw new Error(`no links: ${reset.body} ${change.body}`)
  const [resetMail, verifyMail, changeMail] = await Promise.all([
    mail.waitFor(secrets.email, { subject: /reset your password/i }),
    mail.waitFor(secrets.email, { subject: /verify your email/i }),
    mail.waitFor(newEmail, { subject: /confirm your new email/i })
  ])
  return { ...secrets, resetToken: tokenOf(resetMail), verifyToken: tokenOf(verifyMail), changeToken: tokenOf(changeMail), newEmail }
}

/** An arbitrary drawn anew from the live secrets each time a value is generated (the account changes during a run). */
const fromLive = <T>(live: () => AccountSecrets, arbitrary: (secrets: AccountSecrets) => fc.Arbitrary<T>): fc.Arbitrary<T> =>
  fc.constant(null).chain(() => arbitrary(live()))

interface AccountCall {
  method: InjectOptions['method']
  url: string
  authorized?: boolean
  body?: unknown
}

/** Requests to the account routes as a client would make them: each route with the body it expects, with live tokens. */
const wellFormedCalls = (secrets: AccountSecrets): AccountCall[] => [
  { method: 'POST', url: '/auth/password-reset/request', body: { email: secrets.email } },
  { method: 'POST', url: '/auth/password-reset/request', body: { email: ` ${secrets.email.toUpperCase()} ` } },
  { method: 'POST', url: '/auth/password-reset/request', body: { email: freshEmail('fuzz-nobody') } },
  { method: 'POST', url: '/auth/password-reset', body: { token: secrets.resetToken, newPassword: NEW_PASSWORD } },
  { method: 'POST', url: '/auth/password-reset', body: { token: secrets.verifyToken, newPassword: NEW_PASSWORD } },
  { method: 'POST', url: '/auth/verify-email/request', body: { email: secrets.email } },
  { method: 'POST', url: '/auth/verify-email/request', authorized: true },
  { method: 'POST', url: '/auth/verify-email/request', authorized: true, body: {} },
  { method: 'POST', url: '/auth/verify-email', body: { token: secrets.verifyToken } },
  { method: 'POST', url: '/auth/verify-email', body: { token: secrets.changeToken } },
  { method: 'POST', url: '/auth/verify-email', body: { token: secrets.resetToken } },
  { method: 'POST', url: '/users/me/email', authorized: true, body: { newEmail: freshEmail('fuzz-next'), password: PASSWORD } },
  { method: 'POST', url: '/users/me/email', authorized: true, body: { newEmail: secrets.email, password: PASSWORD } },
  { method: 'POST', url: '/users/me/email', authorized: true, body: { newEmail: freshEmail('fuzz-next'), password: 'not the password' } },
  { method: 'DELETE', url: '/users/me', authorized: true, body: { password: 'not the password' } },
  { method: 'DELETE', url: '/users/me', authorized: true, body: { password: PASSWORD } },
  { method: 'GET', url: '/account/reset-password' },
  { method: 'GET', url: '/account/verify-email' }
]

/** What may go wrong with a well-formed call: each part left alone (absent), or replaced. */
interface Perturbation {
  /** Another body altogether (undefined: none). */
  body?: string | undefined
  /** The call's own body, mutated: a character changed, dropped or cut. */
  bodyEdit?: boolean
  contentType?: string
  authorization?: string
  /** A call that needs the access token sent without it. */
  unauthorized?: boolean
  method?: string
  url?: string
}

function accountRequestArbitrary (live: () => AccountSecrets): fc.Arbitrary<InjectOptions> {
  const call = fromLive(live, (secrets) => fc.constantFrom(...wellFormedCalls(secrets)))
  const tokenish = fromLive(live, (secrets) => fc.oneof(
    fc.constantFrom(secrets.resetToken, secrets.verifyToken, secrets.changeToken, secrets.accessToken),
    mutated(secrets.resetToken), mutated(secrets.verifyToken), awkwardText, fc.string({ minLength: 43, maxLength: 43 })
  ))
  const value = fc.oneof(tokenish, fromLive(live, (secrets) => fc.constantFrom(secrets.email, secrets.newEmail, PASSWORD)),
    awkwardText, fc.jsonValue({ maxDepth: 2 }))
  const perturbation: fc.Arbitrary<Perturbation> = fc.record({
    body: fc.oneof(
      fc.dictionary(fc.oneof(fc.constantFrom(...FIELDS), fc.string({ maxLength: 8 })), value, { maxKeys: 4 }).map((body) => JSON.stringify(body)),
      fc.string({ unit: 'binary', maxLength: 120 }),
      fc.jsonValue({ maxDepth: 3 }).map((json) => JSON.stringify(json) ?? 'null'),
      fc.constant(undefined)
    ),
    bodyEdit: fc.constant(true),
    contentType: fc.oneof(fc.constantFrom(...CONTENT_TYPES), headerText(40)),
    authorization: fromLive(live, (secrets) => fc.oneof(
      mutated(secrets.accessToken).map((token) => `Bearer ${token}`),
      fc.constantFrom(`Bearer ${secrets.refreshToken}`, 'Bearer', 'Basic YTpi', `Bearer ${secrets.resetToken}`),
      headerText(80)
    )),
    unauthorized: fc.constant(true),
    method: fc.constantFrom('GET', 'POST', 'DELETE', 'PUT', 'PATCH', 'HEAD', 'OPTIONS'),
    url: fc.oneof(
      fc.constantFrom(...ACCOUNT_ROUTES, '/users/me').chain(mutated).map((mangled) => `/${asPath(mangled.replace(/^\/+/, ''))}`),
      fc.tuple(fc.constantFrom(...ACCOUNT_ROUTES), headerText(30)).map(([route, query]) => `${route}?${asPath(query)}`),
      fromLive(live, (secrets) => fc.constant(`/account/reset-password?token=${secrets.resetToken}`))
    )
  }, { requiredKeys: [] })

  return perturbedCalls(call, perturbation, live, (call, secrets) => call.authorized === true ? secrets.accessToken : undefined)
}

/**
 * Requests from well-formed `calls`, two in five sent as they are and the
 * rest broken by a `perturbation`; `tokenOf` is the access token a call
 * carries unless the perturbation changes or drops it (undefined: none).
 */
function perturbedCalls<S> (
  calls: fc.Arbitrary<AccountCall>, perturbation: fc.Arbitrary<Perturbation>, live: () => S, tokenOf: (call: AccountCall, secrets: S) => string | undefined
): fc.Arbitrary<InjectOptions> {
  const untouched: fc.Arbitrary<Perturbation> = fc.constant({})
  return fc.tuple(calls, fc.oneof({ weight: 2, arbitrary: untouched }, { weight: 3, arbitrary: perturbation }), fc.constant(null).map(live))
    .chain(([call, change, secrets]) => {
      const text = call.body === undefined ? undefined : JSON.stringify(call.body)
      const edited = change.bodyEdit === true && text !== undefined ? mutated(text) : fc.constant(text)
      return edited.map((bodyText) => {
        const headers: Record<string, string> = {}
        const payload = 'body' in change ? change.body : bodyText
        if (payload !== undefined) headers['content-type'] = change.contentType ?? 'application/json'
        const token = tokenOf(call, secrets)
        if (change.authorization !== undefined) headers.authorization = change.authorization
        else if (token !== undefined && change.unauthorized !== true) headers.authorization = `Bearer ${token}`
        const method = change.method ?? call.method
        const request: InjectOptions = { method: method as InjectOptions['method'], url: change.url ?? call.url, headers }
        if (payload !== undefined && method !== 'GET' && method !== 'HEAD') request.payload = payload
        return request
      })
    })
}

t.test('the account routes: well-formed calls with live link tokens, and every way they can be broken', async (t) => {
  // An app of its own, sending real mail: the links' tokens come from the messages, as a person's would.
  const mail = await startMailServer(t)
  const accountApp = await buildTestApp(t, {
    env: { SMTP_URL: mail.url },
    rateLimits: NO_RATE_LIMITS,
    mail: { linkMailsPerRecipientPerHour: 1_000_000 }
  })
  let live = await accountSession(accountApp, mail)
  const outcomes = new Map<string, number>()
  const accepted = new Map<string, string>()
  const codes = offContract()

  await fc.assert(fc.asyncProperty(accountRequestArbitrary(() => live), async (request) => {
    const secrets = live
    const response = await accountApp.inject(request)
    const path = String(request.url).split('?')[0]!
    const code = response.statusCode >= 400 && request.method !== 'HEAD' ? ` ${String(response.json().code)}` : ''
    const outcome = `${request.method} ${path} ${response.statusCode}${code}`
    outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1)

    const problems = problemsOf(String(request.method), response)
    for (const [name, token] of [['reset', secrets.resetToken], ['verification', secrets.verifyToken], ['email change', secrets.changeToken]]) {
      if (response.body.includes(token!)) problems.push(`the ${name} token in the answer`)
    }
    // A request for a link answers the same body whatever the account: it tells nobody whether one exists.
    if (response.statusCode === 202 && path.endsWith('/request')) {
      const first = accepted.get(path) ?? response.body
      accepted.set(path, first)
      if (response.body !== first) problems.push(`a 202 unlike the others: ${response.body}`)
    }
    if (problems.length > 0) throw new Error(`${request.method} ${request.url}: ${problems.join('; ')}\n${response.body.slice(0, 300)}`)
    codes.note(String(request.method), String(request.url), response)

    // Links spent or replaced, the password or the address changed, the account gone: carry on with a fresh one.
    if (response.statusCode < 300 && request.method !== 'GET' && request.method !== 'HEAD' && request.method !== 'OPTIONS') {
      live = await accountSession(accountApp, mail)
    }
  }), { seed: SEED, numRuns: 400, endOnFailure: true })

  const reached = (pattern: RegExp): number => [...outcomes].filter(([outcome]) => pattern.test(outcome)).reduce((sum, [, count]) => sum + count, 0)
  t.pass(`outcomes: ${JSON.stringify(Object.fromEntries([...outcomes].sort(([a], [b]) => a.localeCompare(b))))}`)
  t.ok(reached(/^POST \/auth\/password-reset 204$/) > 0, 'a password was reset')
  t.ok(reached(/^POST \/auth\/verify-email 204$/) > 0, 'an address was verified or changed')
  t.ok(reached(/^POST \/users\/me\/email 202$/) > 0, 'an email change was asked for')
  t.ok(reached(/^DELETE \/users\/me 204$/) > 0, 'an account was deleted')
  t.ok(reached(/LINK_TOKEN_INVALID$/) > 0, 'tokens were refused')
  t.ok(reached(/^POST \/auth\/[a-z-]+\/request 202$/) > 0, 'links were asked for')
  t.ok(reached(/ 400 VALIDATION_ERROR$/) > 0, 'broken bodies were refused')
  t.strictSame(Object.fromEntries(codes.found), {}, `every error code is one of API.md's; others: ${JSON.stringify(Object.fromEntries(codes.found))}`)

  t.equal((await accountApp.inject({ method: 'GET', url: '/health' })).statusCode, 200, 'still serving')
})

/** What the admin-route fuzz acts with: an admin, a user to act on (replaced once changed), and a cursor the service gave. */
interface AdminSecrets {
  adminId: string
  adminToken: string
  /** A user's access token, without the role. */
  userToken: string
  targetId: string
  cursor: string
}

async function adminSession (app: FastifyInstance, admin: { id: string, accessToken: string }): Promise<AdminSecrets> {
  const target = await signUpAndLogIn(app, 'fuzz-target')
  const targetId = (await app.inject({ method: 'GET', url: '/users/me', headers: { authorization: `Bearer ${target.accessToken}` } })).json().id
  const page = await app.inject({ method: 'GET', url: '/admin/users?limit=1', headers: { authorization: `Bearer ${admin.accessToken}` } })
  if (page.statusCode !== 200) throw new Error(`the admin cannot list users: ${page.statusCode} ${page.body}`)
  return { adminId: admin.id, adminToken: admin.accessToken, userToken: target.accessToken, targetId, cursor: page.json().next }
}

/** Requests to the admin routes as an admin's client would make them: each with the query or body it expects. */
const wellFormedAdminCalls = (secrets: AdminSecrets): AccountCall[] => [
  { method: 'GET', url: '/admin/users' },
  { method: 'GET', url: '/admin/users?query=fuzz-target&limit=5' },
  { method: 'GET', url: '/admin/users?query=%25_%5C&limit=100' },
  { method: 'GET', url: `/admin/users?limit=2&cursor=${secrets.cursor}` },
  { method: 'GET', url: `/admin/users/${secrets.targetId}` },
  { method: 'GET', url: `/admin/users/${secrets.adminId}` },
  { method: 'GET', url: '/admin/users/00000000-0000-4000-8000-000000000000' },
  { method: 'PATCH', url: `/admin/users/${secrets.targetId}`, body: { roles: ['billing', 'support'] } },
  { method: 'PATCH', url: `/admin/users/${secrets.targetId}`, body: { disabled: true } },
  { method: 'PATCH', url: `/admin/users/${secrets.targetId}`, body: { roles: [], disabled: false } },
  { method: 'PATCH', url: `/admin/users/${secrets.targetId}`, body: { roles: Array.from({ length: 33 }, (_, index) => `role-${index}`) } },
  { method: 'PATCH', url: `/admin/users/${secrets.targetId}`, body: { roles: ['Not A Role'] } },
  { method: 'PATCH', url: `/admin/users/${secrets.targetId}`, body: {} },
  // The only admin of this app's database: refused with LAST_ADMIN, whatever else happens.
  { method: 'PATCH', url: `/admin/users/${secrets.adminId}`, body: { roles: [] } },
  { method: 'PATCH', url: `/admin/users/${secrets.adminId}`, body: { disabled: true } },
  { method: 'DELETE', url: `/admin/users/${secrets.adminId}` },
  { method: 'DELETE', url: `/admin/users/${secrets.targetId}` },
  { method: 'DELETE', url: `/admin/users/${secrets.targetId}/sessions` },
  { method: 'GET', url: `/admin/events?userId=${secrets.targetId}&type=login&limit=3` },
  { method: 'GET', url: '/admin/events?before=not-a-cursor' },
  { method: 'GET', url: '/admin/events' }
]

function adminRequestArbitrary (live: () => AdminSecrets): fc.Arbitrary<InjectOptions> {
  const call = fc.constant(null).chain(() => fc.constantFrom(...wellFormedAdminCalls(live())))
  const value = fc.oneof(awkwardText, fc.jsonValue({ maxDepth: 2 }), fc.array(fc.oneof(fc.constantFrom('admin', 'billing'), awkwardText), { maxLength: 40 }))
  const perturbation: fc.Arbitrary<Perturbation> = fc.record({
    body: fc.oneof(
      fc.dictionary(fc.oneof(fc.constantFrom('roles', 'disabled', ...FIELDS), fc.string({ maxLength: 8 })), value, { maxKeys: 3 }).map((body) => JSON.stringify(body)),
      fc.string({ unit: 'binary', maxLength: 120 }),
      fc.jsonValue({ maxDepth: 3 }).map((json) => JSON.stringify(json) ?? 'null'),
      fc.constant(undefined)
    ),
    bodyEdit: fc.constant(true),
    contentType: fc.oneof(fc.constantFrom(...CONTENT_TYPES), headerText(40)),
    authorization: fc.constant(null).chain(() => fc.oneof(
      mutated(live().adminToken).map((token) => `Bearer ${token}`),
      fc.constantFrom(`Bearer ${live().userToken}`, 'Bearer', 'Basic YTpi'),
      headerText(80)
    )),
    unauthorized: fc.constant(true),
    method: fc.constantFrom('GET', 'POST', 'DELETE', 'PUT', 'PATCH', 'HEAD', 'OPTIONS'),
    url: fc.oneof(
      fc.constant(null).chain(() => fc.constantFrom(...wellFormedAdminCalls(live()).map(({ url }) => url))).chain(mutated)
        .map((mangled) => `/${asPath(mangled.replace(/^\/+/, ''))}`),
      fc.tuple(fc.constantFrom('/admin/users', '/admin/events'), fc.constantFrom('query', 'limit', 'cursor', 'userId', 'type', 'before', 'x'), headerText(60))
        .map(([route, name, text]) => `${route}?${name}=${asPath(text)}`),
      fc.constant(null).chain(() => mutated(live().cursor)).map((cursor) => `/admin/users?cursor=${asPath(cursor)}`)
    )
  }, { requiredKeys: [] })

  return perturbedCalls(call, perturbation, live, (_call, secrets) => secrets.adminToken)
}

t.test('the admin routes: well-formed calls with an admin\'s token, and every way they can be broken', async (t) => {
  // An app and a database of its own with one admin, so that what only the last admin gets (LAST_ADMIN) is reached too.
  const adminApp = await buildTestApp(t, { rateLimits: NO_RATE_LIMITS, database: await testDatabase(t, { fresh: true }) })
  const admin = await signedInAdmin(adminApp)
  let live = await adminSession(adminApp, admin)
  const outcomes = new Map<string, number>()
  const codes = offContract()

  await fc.assert(fc.asyncProperty(adminRequestArbitrary(() => live), async (request) => {
    const response = await adminApp.inject(request)
    const path = String(request.url).split('?')[0]!.replace(/[0-9a-f]{8}-[0-9a-f-]{27}/g, ':id')
    const code = response.statusCode >= 400 && request.method !== 'HEAD' ? ` ${String(response.json().code)}` : ''
    const outcome = `${request.method} ${path} ${response.statusCode}${code}`
    outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1)
    const problems = problemsOf(String(request.method), response)
    if (problems.length > 0) throw new Error(`${request.method} ${request.url}: ${problems.join('; ')}\n${response.body.slice(0, 300)}`)
    codes.note(String(request.method), String(request.url), response)
    // The user acted on was changed or is gone: carry on with a fresh one.
    if (response.statusCode < 300 && request.method !== 'GET' && request.method !== 'HEAD' && request.method !== 'OPTIONS') {
      live = await adminSession(adminApp, admin)
    }
  }), { seed: SEED, numRuns: 400, endOnFailure: true })

  const reached = (pattern: RegExp): number => [...outcomes].filter(([outcome]) => pattern.test(outcome)).reduce((sum, [, count]) => sum + count, 0)
  t.pass(`outcomes: ${JSON.stringify(Object.fromEntries([...outcomes].sort(([a], [b]) => a.localeCompare(b))))}`)
  t.ok(reached(/^GET \/admin\/users 200$/) > 0, 'users were listed')
  t.ok(reached(/^GET \/admin\/users\/:id 200$/) > 0, 'a user was read')
  t.ok(reached(/^PATCH \/admin\/users\/:id 200$/) > 0, 'a user was changed')
  t.ok(reached(/^DELETE \/admin\/users\/:id 204$/) > 0, 'a user was deleted')
  t.ok(reached(/^DELETE \/admin\/users\/:id\/sessions 204$/) > 0, 'sessions were ended')
  t.ok(reached(/^GET \/admin\/events 200$/) > 0, 'events were listed')
  t.ok(reached(/ 409 LAST_ADMIN$/) > 0, 'the last admin was kept')
  t.ok(reached(/ 403 FORBIDDEN$/) > 0, 'a token without the role was refused')
  t.ok(reached(/ 400 VALIDATION_ERROR$/) > 0, 'broken queries and bodies were refused')
  t.ok(reached(/ 404 NOT_FOUND$/) > 0, 'unknown users were not found')
  t.strictSame(Object.fromEntries(codes.found), {}, `every error code is one of API.md's; others: ${JSON.stringify(Object.fromEntries(codes.found))}`)

  const stillAdmin = await adminApp.inject({ method: 'GET', url: '/admin/users', headers: { authorization: `Bearer ${admin.accessToken}` } })
  t.equal(stillAdmin.statusCode, 200, 'the admin is still one, and the app still serves')
})

t.test('signup and login with awkward emails and passwords: 4xx or success, and consistent', async (t) => {
  const emailLike = fc.oneof(
    fc.emailAddress(),
    fc.tuple(awkwardText, fc.emailAddress()).map(([prefix, email]) => prefix + email),
    fc.tuple(fc.emailAddress(), awkwardText).map(([email, suffix]) => email + suffix),
    fc.emailAddress().chain(mutated),
    fc.emailAddress().map((email) => `  ${email.toUpperCase()}\t`)
  )
  const password = fc.oneof(fc.string({ minLength: 8, maxLength: 64 }), awkwardText, fc.string({ unit: 'grapheme', minLength: 8, maxLength: 40 }))

  await fc.assert(fc.asyncProperty(emailLike, password, async (email, password) => {
    const signup = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email, password } })
    const problems = problemsOf('POST', signup)
    if (![201, 400, 409].includes(signup.statusCode)) problems.push(`signup ${signup.statusCode}`)
    if (signup.statusCode === 201) {
      if (signup.json().email !== normalizeEmail(email)) problems.push(`stored ${signup.json().email} for ${JSON.stringify(email)}`)
      const login = await app.inject({ method: 'POST', url: '/auth/login', payload: { email: normalizeEmail(email), password } })
      if (login.statusCode !== 200) problems.push(`login after signup: ${login.statusCode} ${login.body}`)
      if (refreshCookieOf(login) === undefined) problems.push('no cookie')
    } else {
      const login = await app.inject({ method: 'POST', url: '/auth/login', payload: { email, password } })
      problems.push(...problemsOf('POST', login))
      if (![400, 401].includes(login.statusCode) && signup.statusCode !== 409) problems.push(`login without an account: ${login.statusCode}`)
    }
    if (problems.length > 0) throw new Error(`${JSON.stringify(email)} / ${JSON.stringify(password)}: ${problems.join('; ')}`)
  }), { seed: SEED, numRuns: 250, endOnFailure: true })
  t.pass('every signup and login answered as the contract says')
})

/**
 * Writes `bytes` to a fresh connection and reads everything until the server
 * closes it, which it does after every answer here: the 30 s are only a
 * safety net (the answer so far is taken), never reached however slow the machine.
 */
async function raw (port: number, bytes: Buffer | string): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    let answer = ''
    const done = () => { clearTimeout(timer); socket.destroy(); resolve(answer) }
    const timer = setTimeout(done, 30_000)
    socket.on('data', (chunk) => { answer += chunk.toString('latin1') })
    socket.on('error', done)
    socket.on('close', done)
    socket.end(bytes)
  })
}

function parse (answer: string): { status: number, contentType: string | undefined, body: string } | undefined {
  const match = /^HTTP\/1\.1 (\d{3})[^\r]*\r\n([\s\S]*?)\r\n\r\n([\s\S]*)$/.exec(answer)
  if (match === null) return undefined
  const contentType = /^content-type: *(.*)$/im.exec(match[2]!)?.[1]
  const chunked = /^transfer-encoding: *chunked/im.test(match[2]!)
  const body = chunked ? match[3]!.replace(/^[0-9a-f]+\r\n/i, '').replace(/\r\n0\r\n\r\n$/, '') : match[3]!
  return { status: Number(match[1]), contentType, body }
}

t.test('raw bytes over TCP: malformed HTTP, oversize headers, garbage', async (t) => {
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as AddressInfo

  const cases: Array<[string, string]> = [
    ['an oversize Authorization header', `GET /users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${'a'.repeat(20_000)}\r\n\r\n`],
    ['an oversize Cookie header', `POST /auth/refresh HTTP/1.1\r\nHost: x\r\nCookie: refresh_token=${'r'.repeat(20_000)}\r\nContent-Length: 0\r\n\r\n`],
    ['a NUL in a header', 'GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\u0000b\r\n\r\n'],
    ['a header without a colon', 'GET /health HTTP/1.1\r\nHost: x\r\nAuthorization Bearer\r\n\r\n'],
    ['a bad request line', 'GARBAGE\r\n\r\n'],
    ['a bad HTTP version', 'GET /health HTTP/9.9\r\nHost: x\r\n\r\n'],
    ['both Content-Length and chunked', 'POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n0\r\n\r\n'],
    ['a negative Content-Length', 'POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\nContent-Type: application/json\r\n\r\n'],
    ['a bad chunk size', 'POST /auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nzz\r\n{}\r\n0\r\n\r\n']
  ]
  for (const [name, request] of cases) {
    const answer = parse(await raw(port, request))
    t.ok(answer, `${name}: an HTTP answer`)
    if (answer === undefined) continue
    t.ok(answer.status >= 400 && answer.status < 500, `${name}: ${answer.status}`)
    t.same(errorShapeProblems(answer.status, answer.contentType, answer.body), [], `${name}: the error shape`)
  }

  const underLimit = parse(await raw(port, `GET /users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${'a'.repeat(12_000)}\r\nConnection: close\r\n\r\n`))
  t.equal(underLimit?.status, 401, 'a 12 KB token reaches the service and is refused as invalid')
  t.equal(JSON.parse(underLimit?.body ?? '{}').code, 'ACCESS_TOKEN_INVALID')

  await fc.assert(fc.asyncProperty(
    fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 300 }).map((bytes) => Buffer.from(bytes)),
      fc.tuple(fc.constantFrom('GET', 'POST', 'DELETE', 'BREW'), fc.constantFrom(...ROUTES), headerText(60), headerText(80))
        .map(([method, route, name, value]) => `${method} ${route} HTTP/1.1\r\nHost: x\r\n${name}: ${value}\r\nConnection: close\r\n\r\n`)
    ),
    async (bytes) => {
      const text = await raw(port, bytes)
      if (text === '') return // the server may close a connection that never formed a request
      const answer = parse(text)
      if (answer === undefined) throw new Error(`not HTTP: ${JSON.stringify(text.slice(0, 100))}`)
      const problems = problemsOf('GET', { statusCode: answer.status, headers: { 'content-type': answer.contentType }, body: answer.body })
      if (problems.length > 0) throw new Error(`${JSON.stringify(String(bytes).slice(0, 100))}: ${problems.join('; ')}`)
    }
  ), { seed: SEED, numRuns: 150, endOnFailure: true })

  const health = parse(await raw(port, 'GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'))
  t.equal(health?.status, 200, 'still serving after all of it')
})
