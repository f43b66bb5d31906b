import type { FastifyInstance } from 'fastify'
import t from 'tap'
import type { Test } from 'tap'
import {
  TEST_REDIS_URL, buildTestApp, eventually, logIn, signUp, signUpAndLogIn, skipUnless, testConfig, testDatabase, testRedis
} from '../helpers.js'

/*
 * Two instances of the service sharing one PostgreSQL and one Redis (under
 * this test's own key prefix), each configured as `npm start` configures it:
 * REDIS_URL, so each opens a Redis connection of its own, and one DATA_DIR,
 * so both sign with the same development key, as a real deployment shares its
 * key. Revocations reach the other instance through the feed (published, and
 * kept for an instance that starts later). Nothing here needs a process of
 * its own: the instances talk only through Redis and PostgreSQL.
 */

const skip = skipUnless({ postgres: true, redis: true })

interface Instances {
  /** A new instance on the shared storage; closed when the test ends. */
  start(): Promise<FastifyInstance>
}

async function sharedStorage (t: Test, env: Record<string, string> = {}): Promise<Instances> {
  const database = await testDatabase(t, { real: true })
  // testRedis deletes the prefix's keys when the test ends; its connection is not the instances'.
  const { prefix } = await testRedis(t)
  const config = await testConfig(t, { REDIS_URL: TEST_REDIS_URL!, REDIS_KEY_PREFIX: prefix, ...env })
  return { start: () => buildTestApp(t, { config, database }) }
}

async function me (app: FastifyInstance, accessToken: string): Promise<{ status: number, code?: string }> {
  const response = await app.inject({ method: 'GET', url: '/users/me', headers: { authorization: `Bearer ${accessToken}` } })
  return { status: response.statusCode, code: response.json().code }
}

/** Whether `app` comes to refuse `accessToken` as revoked: the outcome, however long this machine takes to deliver it. */
async function refusedAsRevoked (app: FastifyInstance, accessToken: string): Promise<boolean> {
  return await eventually(async () => (await me(app, accessToken)).code === 'ACCESS_TOKEN_REVOKED')
}

t.test('revocation on one instance reaches the other', { skip }, async (t) => {
  const storage = await sharedStorage(t)
  const [a, b] = await Promise.all([storage.start(), storage.start()])
  t.ok(a.hasDecorator('redis') && b.hasDecorator('redis'), 'each instance opened Redis from REDIS_URL')
  t.not(a.redis, b.redis, 'a connection of its own')
  for (let round = 0; round < 5; round++) {
    const tokens = await signUpAndLogIn(a, 'feed')
    t.equal((await me(b, tokens.accessToken)).status, 200, 'the other instance accepts the token')
    const logout = await a.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${tokens.accessToken}` }, payload: {} })
    t.equal(logout.statusCode, 204)
    t.ok(await refusedAsRevoked(b, tokens.accessToken), `round ${round}: refused on the other instance`)
  }

  // logout-all and a deleted session travel the same way.
  const tokens = await signUpAndLogIn(a, 'feed-all')
  const other = await logIn(b, tokens.email)
  t.equal((await a.inject({ method: 'POST', url: '/auth/logout-all', headers: { authorization: `Bearer ${tokens.accessToken}` } })).statusCode, 204)
  t.ok(await refusedAsRevoked(b, other.accessToken), 'logout-all on one instance revokes the session opened on the other')
})

t.test('a refresh token spent on one instance cannot be spent on the other', { skip }, async (t) => {
  const storage = await sharedStorage(t, { REFRESH_REUSE_GRACE: '0s' })
  const [a, b] = await Promise.all([storage.start(), storage.start()])
  const tokens = await signUpAndLogIn(a, 'feed-reuse')
  const refresh = (app: FastifyInstance, refreshToken: string) => app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken } })
  const first = await refresh(a, tokens.refreshToken)
  t.equal(first.statusCode, 200)
  const again = await refresh(b, tokens.refreshToken)
  t.equal(again.json().code, 'REFRESH_TOKEN_REUSED')
  const successor = await refresh(b, first.json().refreshToken)
  t.equal(successor.json().code, 'REFRESH_TOKEN_REVOKED', 'reuse revoked the whole family on every instance')
  t.ok(await refusedAsRevoked(a, first.json().accessToken), 'and its access token on the instance that issued it')
})

t.test('a restarted instance still refuses tokens revoked while it was down', { skip }, async (t) => {
  const storage = await sharedStorage(t)
  const a = await storage.start()
  const b = await storage.start()
  const email = await signUp(a, 'feed-restart')
  const tokens = await logIn(a, email)
  await t.resolves(b.close(), 'one instance stops')
  const logout = await a.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${tokens.accessToken}` }, payload: {} })
  t.equal(logout.statusCode, 204, 'the session is logged out on the other while it is down')
  const restarted = await storage.start()
  t.equal((await me(restarted, tokens.accessToken)).code, 'ACCESS_TOKEN_REVOKED', 'the instance started afterwards refuses it at once')
})
