import { Writable } from 'node:stream'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import t from 'tap'
import { BACKENDS, FakeClock, NEW_PASSWORD, NO_RATE_LIMITS, PASSWORD, buildTestApp, logIn, signUp } from '../helpers.js'

/*
 * Sessions (routes/sessions.ts, and what routes/auth.ts does to them):
 * listing, ending one, logout-all, logout-others, password change, lifetimes,
 * client binding and the reuse log line, on every backend. The tests with
 * the default configuration share one app per backend (each uses accounts of
 * its own); the others build theirs.
 */

interface Pair {
  accessToken: string
  refreshToken: string
  refreshExpiresIn: number
}

const bearer = (pair: Pair) => ({ authorization: `Bearer ${pair.accessToken}` })
const sidOf = (pair: Pair): string => JSON.parse(Buffer.from(pair.accessToken.split('.')[1]!, 'base64url').toString()).sid

async function me (app: FastifyInstance, pair: Pair): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'GET', url: '/users/me', headers: bearer(pair) })
}

async function refresh (app: FastifyInstance, pair: Pair, headers: Record<string, string> = {}): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken }, headers })
}

for (const backend of BACKENDS) {
  t.test(backend.name, { skip: backend.skip }, async (t) => {
    const storage = { realDatabase: backend.realDatabase, realRedis: backend.realRedis }
    let defaultApp: Promise<FastifyInstance> | undefined
    /** This backend's app with the default configuration, built on first use. */
    const shared = () => (defaultApp ??= buildTestApp(t, { ...storage, rateLimits: NO_RATE_LIMITS }))

    t.test('GET /auth/sessions lists the live sessions of the caller, current marked', async (t) => {
      const app = await shared()
      const email = await signUp(app, 'sessions')
      const laptop = await logIn(app, email, PASSWORD, { 'user-agent': 'Laptop/1.0' })
      const phone = await logIn(app, email, PASSWORD, { 'user-agent': 'Phone/2.0' })
      const stranger = await signUp(app, 'stranger')
      await logIn(app, stranger)

      const response = await app.inject({ method: 'GET', url: '/auth/sessions', headers: bearer(phone) })
      t.equal(response.statusCode, 200)
      const sessions = response.json()
      t.equal(sessions.length, 2, 'only the caller\'s sessions')
      t.same(sessions.map((s: { id: string }) => s.id), [sidOf(laptop), sidOf(phone)], 'ids are the sid claims, oldest first')
      t.same(sessions.map((s: { current: boolean }) => s.current), [false, true])
      t.same(sessions.map((s: { userAgent: string }) => s.userAgent), ['Laptop/1.0', 'Phone/2.0'])
      for (const session of sessions) {
        t.equal(session.ip, '127.0.0.1')
        for (const field of ['createdAt', 'lastUsedAt', 'expiresAt']) t.ok(!Number.isNaN(Date.parse(session[field])), `${field} is a date`)
        t.ok(Date.parse(session.expiresAt) > Date.parse(session.createdAt))
      }
      t.equal((await app.inject({ method: 'GET', url: '/auth/sessions' })).json().code, 'ACCESS_TOKEN_MISSING')
    })

    t.test('DELETE /auth/sessions/:id ends one session at once; another user\'s is NOT_FOUND', async (t) => {
      const app = await shared()
      const email = await signUp(app, 'sessions')
      const laptop = await logIn(app, email)
      const phone = await logIn(app, email)
      const stranger = await signUp(app, 'stranger')
      const theirs = await logIn(app, stranger)

      const remove = (pair: Pair, id: string) => app.inject({ method: 'DELETE', url: `/auth/sessions/${id}`, headers: bearer(pair) })
      t.equal((await remove(laptop, sidOf(theirs))).json().code, 'NOT_FOUND', 'another user\'s session')
      t.equal((await me(app, theirs)).statusCode, 200, 'and it is untouched')
      t.equal((await remove(laptop, '01a20881-2ca3-7606-ae23-f036464dfeb0')).json().code, 'NOT_FOUND', 'an unknown session')
      t.equal((await remove(laptop, 'not-a-uuid')).json().code, 'VALIDATION_ERROR')

      t.equal((await remove(laptop, sidOf(phone))).statusCode, 204)
      t.equal((await me(app, phone)).json().code, 'ACCESS_TOKEN_REVOKED')
      t.equal((await refresh(app, phone)).json().code, 'REFRESH_TOKEN_REVOKED')
      t.equal((await remove(laptop, sidOf(phone))).json().code, 'NOT_FOUND', 'already ended')
      t.equal((await me(app, laptop)).statusCode, 200, 'the caller\'s own session goes on')
    })

    t.test('logout-others keeps the caller, logout-all ends everything', async (t) => {
      const app = await shared()
      const email = await signUp(app, 'sessions')
      const [a, b, c] = [await logIn(app, email), await logIn(app, email), await logIn(app, email)]

      t.equal((await app.inject({ method: 'POST', url: '/auth/logout-others', headers: bearer(a) })).statusCode, 204)
      t.equal((await me(app, a)).statusCode, 200)
      for (const other of [b, c]) {
        t.equal((await me(app, other)).json().code, 'ACCESS_TOKEN_REVOKED')
        t.equal((await refresh(app, other)).json().code, 'REFRESH_TOKEN_REVOKED')
      }
      t.equal((await app.inject({ method: 'GET', url: '/auth/sessions', headers: bearer(a) })).json().length, 1)

      const d = await logIn(app, email)
      const all = await app.inject({ method: 'POST', url: '/auth/logout-all', headers: bearer(a) })
      t.equal(all.statusCode, 204)
      t.match(String(all.headers['set-cookie']), /refresh_token=;.*Max-Age=0/, 'cookie cleared')
      for (const pair of [a, d]) {
        t.equal((await me(app, pair)).json().code, 'ACCESS_TOKEN_REVOKED')
        t.equal((await refresh(app, pair)).json().code, 'REFRESH_TOKEN_REVOKED')
      }
      const after = await logIn(app, email)
      t.equal((await me(app, after)).statusCode, 200, 'a login after logout-all works')
      t.equal((await app.inject({ method: 'POST', url: '/auth/logout-all' })).json().code, 'ACCESS_TOKEN_MISSING')
    })

    t.test('POST /auth/password checks the current password, changes it, ends the other sessions', async (t) => {
      const app = await shared()
      const email = await signUp(app, 'sessions')
      const here = await logIn(app, email)
      const elsewhere = await logIn(app, email)
      const change = (payload: object) => app.inject({ method: 'POST', url: '/auth/password', headers: bearer(here), payload })

      const wrong = await change({ currentPassword: 'not my password', newPassword: NEW_PASSWORD })
      t.equal(wrong.statusCode, 401)
      t.equal(wrong.json().code, 'INVALID_CREDENTIALS')
      t.equal((await change({ currentPassword: PASSWORD, newPassword: 'short' })).json().code, 'VALIDATION_ERROR')
      t.equal((await me(app, elsewhere)).statusCode, 200, 'failed attempts change nothing')

      t.equal((await change({ currentPassword: PASSWORD, newPassword: NEW_PASSWORD })).statusCode, 204)
      t.equal((await me(app, here)).statusCode, 200, 'the caller stays signed in')
      t.equal((await me(app, elsewhere)).json().code, 'ACCESS_TOKEN_REVOKED')
      t.equal((await refresh(app, elsewhere)).json().code, 'REFRESH_TOKEN_REVOKED')
      const old = await app.inject({ method: 'POST', url: '/auth/login', payload: { email, password: PASSWORD } })
      t.equal(old.json().code, 'INVALID_CREDENTIALS', 'the old password no longer works')
      const fresh = await app.inject({ method: 'POST', url: '/auth/login', payload: { email, password: NEW_PASSWORD } })
      t.equal(fresh.statusCode, 200)
    })

    t.test('idle lifetime moves with each refresh, the absolute one never does', async (t) => {
      const clock = new FakeClock()
      const app = await buildTestApp(t, { ...storage, clock, env: { REFRESH_TOKEN_TTL: '45m', SESSION_MAX_AGE: '1h', ACCESS_TOKEN_TTL: '5m' } })
      const email = await signUp(app, 'sessions')
      let pair = await logIn(app, email)
      t.equal(pair.refreshExpiresIn, 45 * 60)

      clock.advance(30 * 60_000)
      const renewed = await refresh(app, pair)
      t.equal(renewed.statusCode, 200)
      pair = renewed.json()
      t.equal(pair.refreshExpiresIn, 30 * 60, 'capped by the absolute lifetime, not 45 minutes')
      t.match(String(renewed.headers['set-cookie']), /Max-Age=1800;/, 'and so is the cookie')

      clock.advance(29 * 60_000)
      pair = (await refresh(app, pair)).json()
      t.equal(pair.refreshExpiresIn, 60, 'one minute left')
      clock.advance(61_000)
      t.equal((await refresh(app, pair)).json().code, 'REFRESH_TOKEN_EXPIRED')

      pair = await logIn(app, email)
      clock.advance(45 * 60_000)
      t.equal((await refresh(app, pair)).json().code, 'REFRESH_TOKEN_EXPIRED', 'idle for the whole idle lifetime')
    })

    t.test('REFRESH_BIND_IP with TRUST_PROXY: a refresh from another address is refused and logged', async (t) => {
      const lines: string[] = []
      const stream = new Writable({ write (chunk, _encoding, done) { lines.push(String(chunk)); done() } })
      const app = await buildTestApp(t, {
        ...storage,
        env: { REFRESH_BIND_IP: 'true', TRUST_PROXY: 'true' },
        logger: { level: 'warn', stream }
      })
      const email = await signUp(app, 'sessions')
      const pair = await logIn(app, email, PASSWORD, { 'x-forwarded-for': '203.0.113.7' })
      const sessions = await app.inject({ method: 'GET', url: '/auth/sessions', headers: bearer(pair) })
      t.equal(sessions.json()[0].ip, '203.0.113.7', 'the proxy\'s client address is the session\'s')

      const moved = await refresh(app, pair, { 'x-forwarded-for': '198.51.100.9' })
      t.equal(moved.json().code, 'REFRESH_TOKEN_INVALID')
      const warning = lines.map((line) => JSON.parse(line)).find((entry) => entry.event === 'refresh_from_other_address')
      t.ok(warning, 'logged at warn')
      t.equal(warning?.ip, '198.51.100.9')
      t.equal(warning?.sessionId, sidOf(pair))
      t.notOk(lines.join('').includes(pair.refreshToken.split('.').pop()!), 'the token never reaches the log')

      t.equal((await refresh(app, pair, { 'x-forwarded-for': '203.0.113.7' })).statusCode, 200, 'the same address refreshes')
    })

    t.test('reuse after the grace is logged at warn with user, session and address, never the token', async (t) => {
      const lines: string[] = []
      const stream = new Writable({ write (chunk, _encoding, done) { lines.push(String(chunk)); done() } })
      const clock = new FakeClock()
      const app = await buildTestApp(t, { ...storage, clock, env: { REFRESH_REUSE_GRACE: '10s' }, logger: { level: 'warn', stream } })
      const email = await signUp(app, 'sessions')
      const pair = await logIn(app, email)
      const first = (await refresh(app, pair)).json()
      clock.advance(5_000)
      t.equal((await refresh(app, pair)).json().refreshToken, first.refreshToken, 'inside the grace: the same successor')
      clock.advance(6_000)
      t.equal((await refresh(app, pair)).json().code, 'REFRESH_TOKEN_REUSED', 'after the grace: reuse')
      t.equal((await refresh(app, first)).json().code, 'REFRESH_TOKEN_REVOKED', 'the whole family is revoked')
      t.equal((await me(app, first)).json().code, 'ACCESS_TOKEN_REVOKED')

      const entry = lines.map((line) => JSON.parse(line)).find((line) => line.event === 'refresh_token_reused')
      t.equal(entry?.level, 40, 'warn')
      t.equal(entry?.sessionId, sidOf(pair))
      t.equal(entry?.ip, '127.0.0.1')
      t.type(entry?.userId, 'string')
      for (const token of [pair.refreshToken, first.refreshToken]) {
        t.notOk(lines.join('').includes(token.split('.').pop()!), 'no token secret in the log')
      }
    })
  })
}
