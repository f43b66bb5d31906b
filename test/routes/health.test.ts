import { once } from 'node:events'
import { createServer, connect, type Server, type Socket } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import t from 'tap'
import { openDatabase } from '../../src/database.js'
import { BACKENDS, buildTestApp, eventually, freshEmail, PASSWORD, privateRedis, skipUnless, testDatabaseUrl } from '../helpers.js'
import { freePort } from '../fixtures/service-process.js'

/*
 * /health (routes/health.ts) on every backend, and storage going away
 * mid-flight: requests that need it answer 503 STORE_UNAVAILABLE while it is
 * away (they fail fast: nothing waits for the server to return), /health
 * says so, and the service recovers by itself when the server returns.
 */

for (const backend of BACKENDS) {
  t.test(backend.name, { skip: backend.skip }, async (t) => {
    const app = await buildTestApp(t, { realDatabase: backend.realDatabase, realRedis: backend.realRedis })

    t.test('/health', async (t) => {
      const response = await app.inject({ method: 'GET', url: '/health' })
      t.equal(response.statusCode, 200)
      const withRedis = backend.realRedis ? 'ok' : 'disabled'
      t.same(response.json(), { status: 'ok', checks: { database: 'ok', redis: withRedis, revocationFeed: withRedis } })
      const withBadToken = await app.inject({ method: 'GET', url: '/health', headers: { authorization: 'Bearer garbage' } })
      t.equal(withBadToken.statusCode, 200, 'public: no token needed, a bad one ignored')
    })
  })
}

/** Until `probe` holds: the server is back, and the service finds it again by itself. */
const recovers = (probe: () => Promise<boolean>) => eventually(probe, { timeoutMs: 60_000, intervalMs: 100 })

t.test('Redis killed mid-test: 503 while it is down, /health 503, recovery after restart', { skip: skipUnless({ redisServer: true }) }, async (t) => {
  const port = await freePort()
  let redis = await privateRedis(t, port)
  const app = await buildTestApp(t, { env: { REDIS_URL: `redis://127.0.0.1:${port}` } })
  const post = (url: string, payload: object) => app.inject({ method: 'POST', url, payload })
  const credentials = { email: freshEmail('outage'), password: PASSWORD }

  t.equal((await post('/auth/signup', credentials)).statusCode, 201)
  const login = await post('/auth/login', credentials)
  t.equal(login.statusCode, 200)
  const { accessToken, refreshToken } = login.json()

  redis.kill('SIGKILL')
  await once(redis, 'exit')

  // Answered at all while Redis is down: a request that waited for it would wait until the test times out.
  const refused = await post('/auth/login', credentials)
  t.equal(refused.statusCode, 503, 'login answered while Redis is down')
  t.equal(refused.json().code, 'STORE_UNAVAILABLE')
  t.equal((await post('/auth/refresh', { refreshToken })).json().code, 'STORE_UNAVAILABLE', 'refresh too')
  const health = await app.inject({ method: 'GET', url: '/health' })
  t.equal(health.statusCode, 503)
  t.same(health.json().checks, { database: 'ok', redis: 'down', revocationFeed: 'down' }, 'the revocation feed is down with it: this instance would miss revocations')
  const me = await app.inject({ method: 'GET', url: '/users/me', headers: { authorization: `Bearer ${accessToken}` } })
  t.equal(me.statusCode, 200, 'routes that need no Redis keep working')

  redis = await privateRedis(t, port)
  t.ok(await recovers(async () => (await post('/auth/login', credentials)).statusCode === 200), 'login works again once Redis is back')
  t.ok(await recovers(async () => (await app.inject({ method: 'GET', url: '/health' })).statusCode === 200), 'ready again once the feed has caught up')
  t.equal(await feedMetric(app, 'auth_revocation_feed_connected'), 1, 'the feed reports itself connected')
  t.equal(await feedMetric(app, 'auth_revocation_feed_catch_up_seconds_count'), 1, 'and how long it was without Redis, once')
})

t.test('the feed alone dropped (pub/sub connection killed): it reconnects and catches up by itself', { skip: skipUnless({ redisServer: true }) }, async (t) => {
  const port = await freePort()
  await privateRedis(t, port)
  const app = await buildTestApp(t, { env: { REDIS_URL: `redis://127.0.0.1:${port}` } })
  t.equal((await app.inject({ method: 'GET', url: '/health' })).json().checks.revocationFeed, 'ok')
  // This Redis is the test's own: killing its subscribers touches no one else.
  const admin = new Redis(port, '127.0.0.1')
  t.teardown(() => admin.disconnect())
  t.ok(Number(await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub')) >= 1, 'the subscription is cut')
  t.ok(await recovers(async () => await feedMetric(app, 'auth_revocation_feed_catch_up_seconds_count') === 1), 'caught up once it is back')
  t.equal((await app.inject({ method: 'GET', url: '/health' })).json().checks.revocationFeed, 'ok', 'and ready')
})

/** A label-less sample of the app's metrics registry, read as Prometheus would. */
async function feedMetric (app: FastifyInstance, name: string): Promise<number | undefined> {
  const { text } = await app.metrics.exposition()
  const line = text.split('\n').find((each) => each.startsWith(`${name} `))
  return line === undefined ? undefined : Number(line.slice(name.length + 1))
}

/** A TCP relay to PostgreSQL that the test can cut and restore, as a network outage would. */
class Relay {
  #server: Server | undefined
  readonly #sockets = new Set<Socket>()
  constructor (readonly port: number, private readonly target: { host: string, port: number }) {}

  async open (): Promise<void> {
    this.#server = createServer((client) => {
      const upstream = connect(this.target.port, this.target.host)
      for (const socket of [client, upstream]) {
        this.#sockets.add(socket)
        socket.on('close', () => this.#sockets.delete(socket))
        socket.on('error', () => { client.destroy(); upstream.destroy() })
      }
      client.pipe(upstream).pipe(client)
    }).listen(this.port, '127.0.0.1')
    await once(this.#server, 'listening')
  }

  async cut (): Promise<void> {
    for (const socket of this.#sockets) socket.destroy()
    await new Promise((resolve) => this.#server?.close(resolve))
  }
}

t.test('PostgreSQL unreachable mid-test: 503, /health 503, recovery', { skip: skipUnless({ postgres: true }) }, async (t) => {
  // A database of its own, reached through the relay: the test breaks its connections.
  const direct = new URL(await testDatabaseUrl(t))
  const relay = new Relay(await freePort(), { host: direct.hostname, port: Number(direct.port || 5432) })
  await relay.open()
  t.teardown(() => relay.cut())
  const viaRelay = new URL(direct)
  viaRelay.port = String(relay.port)
  const database = await openDatabase({ url: viaRelay.toString() })
  t.teardown(() => database.close())
  const app = await buildTestApp(t, { database })
  const post = (url: string, payload: object) => app.inject({ method: 'POST', url, payload })
  const credentials = { email: freshEmail('outage'), password: PASSWORD }
  const second = { email: freshEmail('outage'), password: PASSWORD }

  t.equal((await post('/auth/signup', credentials)).statusCode, 201)
  await relay.cut()

  // Answered at all while PostgreSQL is unreachable: a request that waited for it would wait until the test times out.
  const refused = await post('/auth/login', credentials)
  t.equal(refused.json().code, 'STORE_UNAVAILABLE', 'login answered while PostgreSQL is unreachable')
  t.equal((await post('/auth/signup', second)).statusCode, 503)
  t.equal((await app.inject({ method: 'GET', url: '/health' })).statusCode, 503)

  await relay.open()
  t.ok(await recovers(async () => (await post('/auth/login', credentials)).statusCode === 200), 'login works again once PostgreSQL is reachable')
  const health = await app.inject({ method: 'GET', url: '/health' })
  t.equal(health.statusCode, 200)
  t.notOk((await post('/auth/login', second)).statusCode === 200, 'the failed signup left nothing behind')
})
