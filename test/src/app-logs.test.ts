import { createHash } from 'node:crypto'
import type { InjectOptions } from 'fastify'
import t from 'tap'
import { FakeClock, bearer, buildTestApp, capturedLog, freshEmail, refreshCookieOf, skipUnless, testRedis } from '../helpers.js'

/*
 * Nothing secret reaches the log (the redaction src/app.ts configures, and
 * what the service chooses to log): a full flow at trace level (every line
 * Fastify and the service write), then the captured output is searched for
 * every password, token, cookie value, hash and key the flow used.
 */

const JWT_SECRET = 'log-leak-test-signing-secret-0123456789abcdef'
const INTROSPECTION_SECRET = 'log-leak-introspection-secret-0123'

// One app at trace level for the first two tests, its log captured.
const { lines, stream } = capturedLog()
const clock = new FakeClock()
const app = await buildTestApp(t, {
  clock,
  logger: { level: 'trace', stream },
  env: { JWT_ALGORITHM: 'HS256', JWT_SECRET, INTROSPECTION_SECRET, LOG_LEVEL: 'trace' }
})

t.test('a full flow at trace level leaks no secret into the log', async (t) => {
  lines.length = 0 // start-up lines are not requests

  const secrets = new Set<string>([JWT_SECRET, INTROSPECTION_SECRET])
  const keep = (...values: Array<string | undefined>) => {
    for (const value of values) if (value !== undefined && value !== '') secrets.add(value)
  }
  /** A token and the parts of it that are secret on their own (JWT signature, refresh-token secret). */
  const keepToken = (token: string | undefined) => {
    if (token === undefined) return
    keep(token, token.split('.').at(-1))
  }
  const post = async (url: string, options: Omit<InjectOptions, 'method' | 'url'> = {}) => {
    const response = await app.inject({ method: 'POST', url, ...options })
    if (response.statusCode === 200 && url !== '/auth/introspect') {
      keepToken(response.json().accessToken)
      keepToken(response.json().refreshToken)
    }
    keep(refreshCookieOf(response))
    return response
  }

  const email = freshEmail('leak')
  const password = 'first secret passphrase'
  const newPassword = 'second secret passphrase'
  const wrongPassword = 'a wrong secret guess'
  keep(password, newPassword, wrongPassword)

  t.equal((await post('/auth/signup', { payload: { email, password } })).statusCode, 201)
  t.equal((await post('/auth/login', { payload: { email, password: wrongPassword } })).statusCode, 401)
  const login = await post('/auth/login', { payload: { email, password } })
  t.equal(login.statusCode, 200)
  const first = login.json()
  t.equal((await app.inject({ method: 'GET', url: '/users/me', headers: bearer(first.accessToken) })).statusCode, 200)
  t.equal((await app.inject({ method: 'GET', url: '/users/me', headers: bearer(`${first.accessToken}tampered`) })).statusCode, 401)
  t.equal((await app.inject({ method: 'GET', url: '/auth/sessions', headers: bearer(first.accessToken) })).statusCode, 200)

  const byCookie = await post('/auth/refresh', { cookies: { refresh_token: first.refreshToken } })
  t.equal(byCookie.statusCode, 200)
  const byBody = await post('/auth/refresh', { payload: { refreshToken: byCookie.json().refreshToken } })
  t.equal(byBody.statusCode, 200)
  // The first token again, after the grace window: reuse, logged at warn, the session revoked.
  clock.advance(11_000)
  const reused = await post('/auth/refresh', { payload: { refreshToken: first.refreshToken } })
  t.equal(reused.json().code, 'REFRESH_TOKEN_REUSED')

  const second = (await post('/auth/login', { payload: { email, password } })).json()
  const change = await post('/auth/password', { headers: bearer(second.accessToken), payload: { currentPassword: wrongPassword, newPassword } })
  t.equal(change.statusCode, 401)
  t.equal((await post('/auth/password', { headers: bearer(second.accessToken), payload: { currentPassword: password, newPassword } })).statusCode, 204)
  const third = (await post('/auth/login', { payload: { email, password: newPassword } })).json()

  if (app.hasRoute({ method: 'POST', url: '/auth/introspect' })) {
    const introspection = await post('/auth/introspect', { headers: bearer(INTROSPECTION_SECRET), payload: { token: third.accessToken } })
    t.equal(introspection.statusCode, 200, 'introspection')
    await post('/auth/introspect', { headers: bearer(`${INTROSPECTION_SECRET}x`), payload: { token: third.accessToken } })
  }

  // Secrets inside bodies the service refuses.
  await app.inject({ method: 'POST', url: '/auth/login', headers: { 'content-type': 'application/json' }, payload: `{"email":"${email}","password":"${newPassword}",` })
  await app.inject({ method: 'POST', url: '/auth/login', payload: { email, password: newPassword, extra: newPassword } })
  await app.inject({ method: 'POST', url: '/auth/login', headers: { 'content-type': 'text/plain' }, payload: newPassword })
  await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: newPassword, password: newPassword } })
  await post('/auth/refresh', { payload: { refreshToken: `${third.refreshToken}x` } })

  t.equal((await post('/auth/logout', { cookies: { refresh_token: third.refreshToken }, headers: bearer(third.accessToken) })).statusCode, 204)
  t.equal((await post('/auth/logout-all', { headers: bearer(second.accessToken) })).statusCode, 204)

  const user = await app.users.findByEmail(email)
  keep(user!.passwordHash, user!.passwordHash.split('$').at(-1), user!.passwordHash.split('$').at(-2))

  // What the log must still be: detailed, and every line of a request carries its id.
  const log = lines.join('\n')
  t.ok(lines.length > 50, `${lines.length} lines at trace level`)
  t.match(log, /"msg":"incoming request"/)
  t.match(log, /"msg":"request completed"/)
  const reuse = lines.map((line) => JSON.parse(line)).find((entry) => entry.event === 'refresh_token_reused')
  t.ok(reuse, 'the reuse is logged')
  t.match(reuse, { level: 40, userId: user!.id, ip: '127.0.0.1' }, 'at warn, with user and client address')
  // The mail queue's lines belong to no request: it sends (here: writes to the outbox) after the answer.
  const withoutId = lines.filter((line) => { const entry = JSON.parse(line); return entry.reqId === undefined && entry.outboxPath === undefined })
  t.same(withoutId, [], 'every line of a request carries its id')

  t.ok(secrets.size > 25, `${secrets.size} secrets searched for`)
  for (const secret of secrets) {
    t.notOk(log.includes(secret), `not in the log: ${secret.slice(0, 12)}… (${secret.length} characters)`)
  }
})

t.test('the redaction list applies to any logger given as options', async (t) => {
  lines.length = 0
  app.log.info({
    password: 'pw-1',
    body: { password: 'pw-2', newPassword: 'pw-3', currentPassword: 'pw-4', refreshToken: 'rt-1', accessToken: 'at-1', token: 'tk-1' },
    req: { headers: { authorization: 'Bearer at-2', cookie: 'refresh_token=rt-2' } },
    res: { headers: { 'set-cookie': 'refresh_token=rt-3' } }
  }, 'something careless')
  const log = lines.join('')
  for (const secret of ['pw-1', 'pw-2', 'pw-3', 'pw-4', 'rt-1', 'at-1', 'tk-1', 'at-2', 'rt-2', 'rt-3']) {
    t.notOk(log.includes(secret), `${secret} redacted`)
  }
  t.match(log, /\[Redacted\]/)
})

t.test('Redis failing a refresh, a logout and a login: logged by message and command, never its arguments', {
  skip: skipUnless({ redis: true })
}, async (t) => {
  const { lines, stream } = capturedLog()
  const { redis, prefix } = await testRedis(t)
  const app = await buildTestApp(t, { redis, redisKeyPrefix: prefix, logger: { level: 'trace', stream }, env: { LOG_LEVEL: 'trace' } })
  const userAgent = 'LeakCanary/1.0 (unique-ua-string)'
  const clientAddress = '203.0.113.77'
  const post = (url: string, options: Omit<InjectOptions, 'method' | 'url'>) =>
    app.inject({ method: 'POST', url, remoteAddress: clientAddress, ...options, headers: { 'user-agent': userAgent, ...options.headers } })

  const email = freshEmail('redis-leak')
  const password = 'a redis leak passphrase'
  t.equal((await post('/auth/signup', { payload: { email, password } })).statusCode, 201)
  const login = await post('/auth/login', { payload: { email, password } })
  t.equal(login.statusCode, 200)
  const { accessToken, refreshToken } = login.json()
  const claims = JSON.parse(Buffer.from(accessToken.split('.')[1], 'base64url').toString())
  // Only this much of the refresh token's format is relied on: the secret is its last part, stored hashed.
  const secret = refreshToken.split('.').at(-1)
  const secretHash = createHash('sha256').update(secret).digest('base64url')
  lines.length = 0

  // A session that is no hash: its scripts fail with WRONGTYPE, their arguments (hashes, sealed successor) in hand.
  await redis.set(`${prefix}session:{${claims.sid}}`, 'not a hash')
  const refresh = await post('/auth/refresh', { payload: { refreshToken } })
  t.match(refresh.json(), { statusCode: 503, code: 'STORE_UNAVAILABLE' }, 'refresh')
  const logout = await post('/auth/logout', { headers: { authorization: `Bearer ${accessToken}` }, payload: { refreshToken } })
  t.match(logout.json(), { statusCode: 503, code: 'STORE_UNAVAILABLE' }, 'logout')
  // A user's index of sessions that is no sorted set: a login fails before the session is written.
  await redis.set(`${prefix}user:{${claims.sub}}:sessions`, 'not a sorted set')
  t.match((await post('/auth/login', { payload: { email, password } })).json(), { statusCode: 503, code: 'STORE_UNAVAILABLE' }, 'login')

  const entries = lines.map((line) => JSON.parse(line))
  const failures = entries.filter((entry) => entry.level === 50)
  t.equal(failures.length, 3, 'each failure logged at error level')
  for (const failure of failures) {
    t.match(failure, { msg: 'request failed', code: 'STORE_UNAVAILABLE', err: { message: /^WRONGTYPE/, command: /^eval(sha)?$/ } },
      'with Redis\'s message and the command\'s name')
    t.notOk(JSON.stringify(failure).includes(clientAddress), 'and not the client address')
  }
  const log = lines.join('\n')
  t.notMatch(log, /"args"/, 'no command arguments anywhere')
  const secrets = [refreshToken, secret, secretHash, secretHash.slice(0, 22), userAgent, password, accessToken, accessToken.split('.').at(-1)]
  for (const value of secrets) t.notOk(log.includes(value), `not in the log: ${value.slice(0, 12)}… (${value.length} characters)`)
})
