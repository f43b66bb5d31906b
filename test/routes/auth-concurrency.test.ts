import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'
import t from 'tap'
import type { Test } from 'tap'
import { BACKENDS, FakeClock, NO_RATE_LIMITS, PASSWORD, buildTestApp, freshEmail, refreshCookie, testRedis } from '../helpers.js'
import { jsonPost, requestJson as call } from '../fixtures/service-process.js'

/*
 * Signup, login, refresh and logout (routes/auth.ts) over real HTTP (a random
 * port, global fetch): the whole flow a browser goes through, and races that
 * only show with parallel connections. A backend's tests share one listening
 * app per configuration; on the real backend every app of the file shares
 * one Redis namespace, as the instances of one deployment do.
 */

const NO_GRACE = { REFRESH_REUSE_GRACE: '0s' }

interface Answer {
  status: number
  body: any
  headers: Headers
}

const postJson = (url: string, body: unknown, headers: Record<string, string> = {}) => call(url, jsonPost(body, headers))

function tally (answers: Answer[]): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const answer of answers) {
    const key = answer.status === 200 || answer.status === 201 ? String(answer.status) : `${answer.status} ${answer.body?.code}`
    counts[key] = (counts[key] ?? 0) + 1
  }
  return counts
}

/**
 * With no grace, exactly one of N parallel refreshes succeeds. The first
 * replay of the spent token is detected as reuse and revokes the session;
 * replays processed after that find a revoked session and may answer
 * REFRESH_TOKEN_REVOKED instead. Either way, every loser is a 401.
 */
function assertOneWinner (t: Test, answers: Answer[]): void {
  const counts = tally(answers)
  t.equal(counts['200'], 1, 'exactly one refresh succeeds')
  t.equal(answers.filter((answer) => answer.status === 401).length, answers.length - 1, 'every other one is a 401')
  t.ok((counts['401 REFRESH_TOKEN_REUSED'] ?? 0) >= 1, 'the reuse is detected')
  t.same(Object.keys(counts).sort(), ['200', '401 REFRESH_TOKEN_REUSED', '401 REFRESH_TOKEN_REVOKED'].filter((key) => key in counts),
    `only reuse or revocation: ${JSON.stringify(counts)}`)
}

for (const backend of BACKENDS) {
  t.test(backend.name, { skip: backend.skip }, async (t) => {
    const redis = backend.realRedis ? await testRedis(t) : undefined

    /** Another instance of this backend's service with `env`, listening on a random local port until `owner` ends; its base URL. */
    async function instance (owner: Test, env: Record<string, string>): Promise<string> {
      const app: FastifyInstance = await buildTestApp(owner, {
        realDatabase: backend.realDatabase, redis: redis?.redis, redisKeyPrefix: redis?.prefix, clock: new FakeClock(), env, rateLimits: NO_RATE_LIMITS
      })
      await app.listen({ port: 0, host: '127.0.0.1' })
      return `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
    }

    const servers = new Map<string, Promise<string>>()
    /** This backend's instance with `env`, started on first use and shared by the tests. */
    function serve (env: Record<string, string> = {}): Promise<string> {
      const key = JSON.stringify(env)
      if (!servers.has(key)) servers.set(key, instance(t, env))
      return servers.get(key)!
    }

    async function loggedIn (base: string): Promise<{ accessToken: string, refreshToken: string }> {
      const email = freshEmail('http')
      const signup = await postJson(`${base}/auth/signup`, { email, password: PASSWORD })
      const login = await postJson(`${base}/auth/login`, { email, password: PASSWORD })
      if (signup.status !== 201 || login.status !== 200) throw new Error(`could not log in: ${signup.status} ${login.status}`)
      return login.body
    }

    t.test('the full flow: signup, login, me, refresh by cookie, logout, revoked', async (t) => {
      const base = await serve()
      const email = freshEmail('http')

      const signup = await postJson(`${base}/auth/signup`, { email: `  ${email.toUpperCase()} `, password: PASSWORD })
      t.equal(signup.status, 201)
      t.equal(signup.body.email, email)

      const login = await postJson(`${base}/auth/login`, { email, password: PASSWORD })
      t.equal(login.status, 200)
      const loginCookie = refreshCookie(login.headers)
      t.ok(loginCookie, 'login sets the refresh cookie')
      t.equal(loginCookie!.httpOnly, true, 'HttpOnly')
      t.equal(loginCookie!.sameSite, 'Strict', 'SameSite=Strict')
      t.equal(loginCookie!.path, '/auth', 'Path=/auth')
      t.equal(loginCookie!.value, login.body.refreshToken)

      const me = await call(`${base}/users/me`, { headers: { authorization: `Bearer ${login.body.accessToken}` } })
      t.equal(me.status, 200)
      t.same(me.body, { ...signup.body, emailVerified: false, roles: [] }, 'the signed-up user, not verified yet')

      // What a browser does: POST with the cookie it was given, no body, no content type.
      const refreshed = await call(`${base}/auth/refresh`, { method: 'POST', headers: { cookie: `refresh_token=${loginCookie!.value}` } })
      t.equal(refreshed.status, 200)
      t.not(refreshed.body.refreshToken, login.body.refreshToken, 'rotated')
      const refreshedCookie = refreshCookie(refreshed.headers)
      t.equal(refreshedCookie?.value, refreshed.body.refreshToken, 'the cookie is replaced')
      t.equal((await call(`${base}/users/me`, { headers: { authorization: `Bearer ${refreshed.body.accessToken}` } })).status, 200)

      const logout = await call(`${base}/auth/logout`, { method: 'POST', headers: { cookie: `refresh_token=${refreshedCookie!.value}` } })
      t.equal(logout.status, 204)
      t.equal(logout.body, undefined, 'no body')
      t.equal(refreshCookie(logout.headers)?.maxAge, 0, 'the cookie is cleared')

      const after = await call(`${base}/users/me`, { headers: { authorization: `Bearer ${refreshed.body.accessToken}` } })
      t.equal(after.status, 401)
      t.equal(after.body.code, 'ACCESS_TOKEN_REVOKED')
      const older = await call(`${base}/users/me`, { headers: { authorization: `Bearer ${login.body.accessToken}` } })
      t.equal(older.body.code, 'ACCESS_TOKEN_REVOKED', 'every access token of the session')
      const again = await call(`${base}/auth/refresh`, { method: 'POST', headers: { cookie: `refresh_token=${refreshedCookie!.value}` } })
      t.equal(again.status, 401)
      t.equal(again.body.code, 'REFRESH_TOKEN_REVOKED')
      t.equal(refreshCookie(again.headers)?.maxAge, 0, 'the dead cookie is cleared')
    })

    t.test('10 parallel signups of one email, differently cased: exactly one account', async (t) => {
      const base = await serve()
      const local = freshEmail('race').split('@')[0]!
      const spellings = Array.from({ length: 10 }, (_, i) => {
        const email = `${local}@example.com`
        return i % 2 === 0 ? email.toUpperCase() : email.replace(/^./, (c) => c.toUpperCase())
      })
      const answers = await Promise.all(spellings.map((email, i) =>
        postJson(`${base}/auth/signup`, { email, password: `password-${i}` })))
      t.same(tally(answers), { 201: 1, '409 EMAIL_TAKEN': 9 })

      const winner = answers.findIndex((answer) => answer.status === 201)
      t.equal(answers[winner]!.body.email, `${local}@example.com`)
      const loginAs = (i: number) => postJson(`${base}/auth/login`, { email: `${local}@example.com`, password: `password-${i}` })
      t.equal((await loginAs(winner)).status, 200, 'the winner\'s password is the one stored')
      t.equal((await loginAs((winner + 1) % 10)).status, 401, 'no loser\'s password was stored')
    })

    t.test('20 parallel refreshes of one token with no grace: exactly one succeeds', async (t) => {
      const base = await serve(NO_GRACE)
      const { refreshToken } = await loggedIn(base)
      const answers = await Promise.all(Array.from({ length: 20 }, () => postJson(`${base}/auth/refresh`, { refreshToken })))
      assertOneWinner(t, answers)
      const winner = answers.find((answer) => answer.status === 200)!
      const successor = await postJson(`${base}/auth/refresh`, { refreshToken: winner.body.refreshToken })
      t.equal(successor.body.code, 'REFRESH_TOKEN_REVOKED', 'the reuse revoked the session, successor included')
      const me = await call(`${base}/users/me`, { headers: { authorization: `Bearer ${winner.body.accessToken}` } })
      t.equal(me.body.code, 'ACCESS_TOKEN_REVOKED')
    })

    t.test('20 parallel refreshes of one token within the grace: all succeed with one successor', async (t) => {
      const base = await serve()
      const { refreshToken } = await loggedIn(base)
      const answers = await Promise.all(Array.from({ length: 20 }, () => postJson(`${base}/auth/refresh`, { refreshToken })))
      t.same(tally(answers), { 200: 20 })
      const successors = new Set(answers.map((answer) => answer.body.refreshToken))
      t.equal(successors.size, 1, 'one new refresh token: the session does not fork')
      const [successor] = successors
      t.not(successor, refreshToken)
      const cookies = new Set(answers.map((answer) => refreshCookie(answer.headers)?.value))
      t.same([...cookies], [successor], 'every answer sets the same cookie')
      const accessChecks = await Promise.all(answers.map((answer) =>
        call(`${base}/users/me`, { headers: { authorization: `Bearer ${answer.body.accessToken}` } })))
      t.ok(accessChecks.every((check) => check.status === 200), 'every access token works')
      const next = await postJson(`${base}/auth/refresh`, { refreshToken: successor })
      t.equal(next.status, 200, 'the successor refreshes')
    })

    t.test('two instances on one Redis and PostgreSQL: a token is spent once across them', {
      skip: !backend.realRedis && 'sessions are per process without Redis'
    }, async (t) => {
      // This backend's instances all share one Redis namespace: the second of each pair is another instance of the first.
      const strictA = await serve(NO_GRACE)
      const strictB = await instance(t, NO_GRACE)
      const strict = await loggedIn(strictA)
      const answers = await Promise.all(Array.from({ length: 20 }, (_, i) =>
        postJson(`${i % 2 === 0 ? strictA : strictB}/auth/refresh`, { refreshToken: strict.refreshToken })))
      assertOneWinner(t, answers)

      const graceA = await serve()
      const graceB = await instance(t, {})
      const lenient = await loggedIn(graceA)
      const graced = await Promise.all(Array.from({ length: 20 }, (_, i) =>
        postJson(`${i % 2 === 0 ? graceA : graceB}/auth/refresh`, { refreshToken: lenient.refreshToken })))
      t.same(tally(graced), { 200: 20 })
      t.equal(new Set(graced.map((answer) => answer.body.refreshToken)).size, 1, 'one successor across instances')

      const email = freshEmail('both')
      const signups = await Promise.all(Array.from({ length: 10 }, (_, i) =>
        postJson(`${i % 2 === 0 ? graceA : graceB}/auth/signup`, { email: i % 3 === 0 ? email.toUpperCase() : email, password: PASSWORD })))
      t.same(tally(signups), { 201: 1, '409 EMAIL_TAKEN': 9 }, 'one account across instances')

      const session = await loggedIn(graceA)
      t.equal((await postJson(`${graceA}/auth/logout`, { refreshToken: session.refreshToken })).status, 204)
      const elsewhere = await postJson(`${graceB}/auth/refresh`, { refreshToken: session.refreshToken })
      t.equal(elsewhere.body.code, 'REFRESH_TOKEN_REVOKED', 'a logout on one instance revokes the refresh token on the other at once')
    })
  })
}
