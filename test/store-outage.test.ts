import { once } from 'node:events'
import { createServer, connect, type Server, type Socket } from 'node:net'
import t from 'tap'
import { TEST_DATABASE_URL, buildTestApp, testDatabaseUrl } from './helpers.js'
import { openDatabase } from '../src/database.js'
import { privateRedis } from './hardening-helpers.js'
import { freePort } from './service-process.js'

/*
 * Storage going away mid-flight: requests that need it answer 503
 * STORE_UNAVAILABLE in bounded time, /health says so, nothing hangs, and the
 * service recovers by itself when the server returns.
 */

/** Polls until `probe` holds, for at most `ms`; answers the time it took. */
async function within (ms: number, probe: () => Promise<boolean>): Promise<number> {
  const start = performance.now()
  while (!await probe()) {
    if (performance.now() - start > ms) throw new Error(`not within ${ms} ms`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  return performance.now() - start
}

const credentials = { email: 'outage@example.com', password: 'password123' }

t.test('Redis killed mid-test: 503 within 5 s, /health 503, recovery after restart', async (t) => {
  const port = await freePort()
  let redis = await privateRedis(t, port)
  const app = await buildTestApp(t, { env: { REDIS_URL: `redis://127.0.0.1:${port}` } })
  const post = (url: string, payload: object) => app.inject({ method: 'POST', url, payload })

  t.equal((await post('/auth/signup', credentials)).statusCode, 201)
  const login = await post('/auth/login', credentials)
  t.equal(login.statusCode, 200)
  const { accessToken, refreshToken } = login.json()

  redis.kill('SIGKILL')
  await once(redis, 'exit')

  const start = performance.now()
  const refused = await post('/auth/login', credentials)
  t.equal(refused.statusCode, 503)
  t.equal(refused.json().code, 'STORE_UNAVAILABLE')
  t.ok(performance.now() - start < 5000, `login answered 503 in ${(performance.now() - start).toFixed(0)} ms`)
  t.equal((await post('/auth/refresh', { refreshToken })).json().code, 'STORE_UNAVAILABLE', 'refresh too')
  const health = await app.inject({ method: 'GET', url: '/health' })
  t.equal(health.statusCode, 503)
  t.same(health.json().checks, { database: 'ok', redis: 'down' })
  const me = await app.inject({ method: 'GET', url: '/users/me', headers: { authorization: `Bearer ${accessToken}` } })
  t.equal(me.statusCode, 200, 'routes that need no Redis keep working')

  redis = await privateRedis(t, port)
  const recovery = await within(10_000, async () => (await post('/auth/login', credentials)).statusCode === 200)
  t.pass(`login works again ${recovery.toFixed(0)} ms after Redis is back`)
  t.equal((await app.inject({ method: 'GET', url: '/health' })).statusCode, 200)
})

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

t.test('PostgreSQL unreachable mid-test: 503, /health 503, recovery', { skip: TEST_DATABASE_URL === undefined && 'TEST_DATABASE_URL is not set' }, async (t) => {
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

  t.equal((await post('/auth/signup', credentials)).statusCode, 201)
  await relay.cut()

  const start = performance.now()
  const refused = await post('/auth/login', credentials)
  t.equal(refused.json().code, 'STORE_UNAVAILABLE')
  t.ok(performance.now() - start < 5000, `login answered 503 in ${(performance.now() - start).toFixed(0)} ms`)
  t.equal((await post('/auth/signup', { email: 'second@example.com', password: 'password123' })).statusCode, 503)
  t.equal((await app.inject({ method: 'GET', url: '/health' })).statusCode, 503)

  await relay.open()
  const recovery = await within(10_000, async () => (await post('/auth/login', credentials)).statusCode === 200)
  t.pass(`login works again ${recovery.toFixed(0)} ms after PostgreSQL is reachable`)
  const health = await app.inject({ method: 'GET', url: '/health' })
  t.equal(health.statusCode, 200)
  t.notOk((await post('/auth/login', { email: 'second@example.com', password: 'password123' })).statusCode === 200, 'the failed signup left nothing behind')
})
