import { randomBytes } from 'node:crypto'
import t from 'tap'
import type { Test } from 'tap'
import { Cluster } from 'ioredis'
import type { FastifyInstance } from 'fastify'
import { ConfigError, loadConfig, type Config } from '../../src/config.js'
import { clusterSeed, createRedisClient } from '../../src/redis-client.js'
import { RedisRevocationFeed } from '../../src/redis-revocation-feed.js'
import { RedisSessionStore } from '../../src/redis-session-store.js'
import type { RevocationEvent } from '../../src/revocation-list.js'
import {
  FakeClock, TEST_DATABASE_URL, buildTestApp, eventually, logIn, signUp, skipUnless, testConfig, testDatabase
} from '../helpers.js'
import { ClusterUnsupportedError, startLocalRedisCluster, type LocalRedisCluster } from '../fixtures/local-redis-cluster.js'
import { T0, newSession, sessionStoreSuite } from '../fixtures/store-suite.js'

/*
 * The service on a Redis Cluster (REDIS_CLUSTER=true): a local three-node
 * cluster is started for this file and torn down after it (the cluster cases
 * skip, saying why, where redis-server is missing). The keys of one
 * session share a hash tag, so each of the store's scripts runs on one node;
 * revocations are published on the cluster bus, so they reach instances
 * subscribed on any node.
 */

t.test('REDIS_CLUSTER configuration', async (t) => {
  const config = loadConfig({ REDIS_CLUSTER: 'true', REDIS_URL: 'redis://:secret@cache-0:7000' })
  t.match(config, { redisCluster: true, redisUrl: 'redis://:secret@cache-0:7000', redisKeyPrefix: 'auth:' })
  t.equal(loadConfig({ REDIS_CLUSTER: 'true', REDIS_URL: 'redis://cache-0:7000/0' }).redisCluster, true, 'database 0 may be named')
  const refusals: Array<[Record<string, string>, string]> = [
    [{ REDIS_CLUSTER: 'true', REDIS_URL: 'redis://cache-0:7000/2' }, 'REDIS_URL'],
    [{ REDIS_CLUSTER: 'true', REDIS_URL: 'redis://cache-0:7000', REDIS_KEY_PREFIX: 'auth:{eu}:' }, 'REDIS_KEY_PREFIX']
  ]
  for (const [env, variable] of refusals) {
    t.throws(() => loadConfig(env), new ConfigError(variable, ''), `refused: ${JSON.stringify(env)}`)
  }
  t.equal(loadConfig({ REDIS_URL: 'redis://cache:6379/2', REDIS_KEY_PREFIX: 'a{b}:' }).redisKeyPrefix, 'a{b}:', 'a single node takes both')
})

t.test('the seed node of REDIS_URL, and what every node is reached with', async (t) => {
  t.strictSame(clusterSeed('redis://cache-0:7000'), { seed: { host: 'cache-0', port: 7000 }, credentials: {} })
  t.strictSame(clusterSeed('redis://cache-0'), { seed: { host: 'cache-0', port: 6379 }, credentials: {} }, 'the default port')
  t.strictSame(clusterSeed('rediss://auth:p%40ss@[::1]:7001'), {
    seed: { host: '::1', port: 7001 },
    credentials: { username: 'auth', password: 'p@ss', tls: {} }
  }, 'user, password (decoded) and TLS for every node; an IPv6 seed without brackets')
  t.strictSame(clusterSeed('redis://:secret@10.0.0.5:7000').credentials, { password: 'secret' }, 'a password alone')
})

let cluster: LocalRedisCluster | undefined
let skip = skipUnless({ redisServer: true })
if (skip === false) {
  try {
    cluster = await startLocalRedisCluster(3)
    t.teardown(() => cluster?.stop())
  } catch (error) {
    if (!(error instanceof ClusterUnsupportedError)) throw error
    skip = `skipped: no local Redis Cluster: ${error.message}`
  }
}

/** A connected Cluster client seeded from the local cluster, with the service's fail-fast options. */
async function clusterClient (t: Test): Promise<Cluster> {
  const client = createRedisClient(cluster!.seedUrl, { cluster: true })
  t.ok(client instanceof Cluster, 'a Cluster client')
  await client.connect()
  t.teardown(() => client.quit().then(() => undefined, () => client.disconnect()))
  return client as Cluster
}

const uniquePrefix = (): string => `auth-cluster-test:${randomBytes(6).toString('hex')}:`

t.test('RedisSessionStore on a Redis Cluster', { skip }, async (t) => {
  const client = await clusterClient(t)

  t.test('shared suite', async (t) => {
    sessionStoreSuite(t, async () => new RedisSessionStore(client, { prefix: uniquePrefix() }))
  })

  t.test('sessions spread over the nodes, each session on one node', async (t) => {
    const store = new RedisSessionStore(client, { prefix: uniquePrefix() })
    const sessions = Array.from({ length: 30 }, () => newSession())
    await Promise.all(sessions.map((session) => store.create(session, T0)))
    const masters = client.nodes('master')
    t.equal(masters.length, 3, 'three masters')
    const holders = new Set<number>()
    for (const session of sessions) {
      // A node that does not own the key's slot answers MOVED.
      const found = await Promise.all(masters.map((node) => node.exists(store.sessionKey(session.id)).catch(() => 0)))
      t.equal(found.filter((count) => count === 1).length, 1, `session ${session.id} lives on exactly one node`)
      holders.add(found.indexOf(1))
    }
    t.ok(holders.size > 1, `30 sessions live on ${holders.size} of 3 nodes`)
  })
})

t.test('RedisRevocationFeed on a Redis Cluster', { skip }, async (t) => {
  const prefix = uniquePrefix()
  const clock = new FakeClock(Date.now())
  const publisher = new RedisRevocationFeed(await clusterClient(t), { prefix, clock })
  const listener = new RedisRevocationFeed(await clusterClient(t), { prefix, clock })
  t.teardown(() => Promise.all([publisher.close(), listener.close()]))

  const heard: RevocationEvent[] = []
  await listener.start((event) => heard.push(event), () => {})
  const event = { sessionId: 'session-a', until: clock.now() + 60_000 }
  await publisher.publish(event)
  await eventually(() => heard.length > 0)
  t.strictSame(heard, [event], 'published on one client, heard through another one\'s subscription')

  const late = new RedisRevocationFeed(await clusterClient(t), { prefix, clock })
  t.teardown(() => late.close())
  const caughtUp: RevocationEvent[] = []
  await late.start((missed) => caughtUp.push(missed), () => {})
  // Read at start and again when its subscription connects: delivery is idempotent, so repeats are harmless.
  t.ok(caughtUp.length >= 1, 'an instance starting later reads what it missed')
  t.strictSame([...new Set(caughtUp.map((missed) => JSON.stringify(missed)))], [JSON.stringify(event)], 'and nothing else')
})

/** A call's status and JSON body (undefined when empty). */
interface Reply { status: number, body: any }

async function call (app: FastifyInstance, method: 'GET' | 'POST', url: string, { token, body }: { token?: string, body?: unknown } = {}): Promise<Reply> {
  const response = await app.inject({
    method,
    url,
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
    ...(body === undefined ? {} : { payload: body as Record<string, unknown> })
  })
  return { status: response.statusCode, body: response.body === '' ? undefined : response.json() }
}

t.test('two instances on a Redis Cluster (REDIS_CLUSTER=true)', { skip }, async (t) => {
  // One configuration (so one DATA_DIR, one signing key) and one users database for both instances.
  const config: Config = await testConfig(t, { REDIS_CLUSTER: 'true', REDIS_URL: cluster!.seedUrl, REDIS_KEY_PREFIX: uniquePrefix() })
  // Users are incidental here: in PostgreSQL where there is one (booting PGlite costs more), else in PGlite.
  const database = await testDatabase(t, { real: TEST_DATABASE_URL !== undefined })
  // One after the other: both would migrate the one database at once.
  const a = await buildTestApp(t, { config, database })
  const b = await buildTestApp(t, { config, database })
  t.ok(a.redis instanceof Cluster && b.redis instanceof Cluster, 'each instance opened a Cluster client from REDIS_URL')
  for (const app of [a, b]) t.strictSame((await call(app, 'GET', '/health')).body, { status: 'ok', checks: { database: 'ok', redis: 'ok', revocationFeed: 'ok' } })

  const email = await signUp(a, 'cluster')
  const login = async (app: FastifyInstance): Promise<{ accessToken: string, refreshToken: string }> => await logIn(app, email)

  /** Whether `app` comes to refuse `accessToken` as revoked: the outcome, however long this machine takes to deliver it. */
  const refusedAsRevoked = async (app: FastifyInstance, accessToken: string): Promise<boolean> =>
    await eventually(async () => (await call(app, 'GET', '/users/me', { token: accessToken })).body?.code === 'ACCESS_TOKEN_REVOKED')

  t.test('logout on one instance: ACCESS_TOKEN_REVOKED on the other', async (t) => {
    for (let round = 0; round < 3; round++) {
      const tokens = await login(a)
      t.equal((await call(b, 'GET', '/users/me', { token: tokens.accessToken })).status, 200, 'the other instance accepts the token')
      t.equal((await call(a, 'POST', '/auth/logout', { token: tokens.accessToken, body: {} })).status, 204)
      t.ok(await refusedAsRevoked(b, tokens.accessToken), `round ${round}: refused on the other instance`)
    }
  })

  t.test('rotation, the grace window and reuse detection across instances', async (t) => {
    const tokens = await login(b)
    const rotated = await call(a, 'POST', '/auth/refresh', { body: { refreshToken: tokens.refreshToken } })
    t.equal(rotated.status, 200, 'refreshed on one instance')
    const parallel = await call(b, 'POST', '/auth/refresh', { body: { refreshToken: tokens.refreshToken } })
    t.equal(parallel.status, 200, 'the same token inside the grace window on the other')
    t.equal(parallel.body.refreshToken, rotated.body.refreshToken, 'gets the same successor: the session does not fork')
    const next = await call(b, 'POST', '/auth/refresh', { body: { refreshToken: rotated.body.refreshToken } })
    t.equal(next.status, 200, 'the successor is current on every instance')
    const sessions = await call(a, 'GET', '/auth/sessions', { token: next.body.accessToken })
    t.ok(sessions.body.some((session: { current: boolean }) => session.current), 'the session is listed on the other instance')
  })

  t.test('logout-all on one instance ends the sessions opened on the other', async (t) => {
    const onA = await login(a)
    const onB = await login(b)
    t.equal((await call(b, 'POST', '/auth/logout-all', { token: onB.accessToken })).status, 204)
    t.equal((await call(a, 'POST', '/auth/refresh', { body: { refreshToken: onA.refreshToken } })).body.code, 'REFRESH_TOKEN_REVOKED')
    t.ok(await refusedAsRevoked(a, onA.accessToken), 'ACCESS_TOKEN_REVOKED')
    t.strictSame((await call(a, 'GET', '/auth/sessions', { token: (await login(a)).accessToken })).body.length, 1, 'only the new session is left')
  })
})
