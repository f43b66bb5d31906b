import { drizzle } from 'drizzle-orm/node-postgres'
import pg from 'pg'
import t from 'tap'
import * as schema from '../../drizzle/schema.js'
import type { DatabaseHandle } from '../../src/database.js'
import { assertErrorShape, buildTestApp, eventually } from '../helpers.js'

/*
 * Load shedding (plugins/under-pressure.ts, @fastify/under-pressure): past the
 * event-loop or heap limit, every request is answered at once with 429
 * RATE_LIMITED and Retry-After, in the one error shape, and the service takes
 * requests again once the pressure is gone. The thresholds are lowered here
 * to provoke it. Nothing depends on how fast the machine is: the test blocks
 * the loop until a refusal is seen, and waits for the recovery, each with a
 * deadline that only a broken service reaches. Load shedding happens before
 * any route runs, so these apps have a database that is always up and never
 * queried (/health only pings it): the file needs no embedded one.
 */

const neverConnected = new pg.Pool({ connectionString: 'postgres://127.0.0.1:1/never-queried' })
const database: DatabaseHandle = {
  db: drizzle(neverConnected, { schema }),
  kind: 'postgres',
  migrate: async () => {},
  ping: async () => {},
  close: async () => {}
}
t.teardown(() => neverConnected.end())

/** Blocks the event loop for `ms`, as a runaway synchronous task does. */
function blockEventLoop (ms: number): void {
  const until = performance.now() + ms
  while (performance.now() < until) { /* busy */ }
}

t.test('a blocked event loop: 429 while it lags, served again once it catches up', async (t) => {
  // A 100 ms limit on the mean delay over each 50 ms sample, against blocks of 800 ms.
  const app = await buildTestApp(t, { database, underPressure: { maxEventLoopDelay: 100, sampleInterval: 50 } })
  const health = async () => (await app.inject({ method: 'GET', url: '/health' })).statusCode
  t.ok(await eventually(async () => await health() === 200, { timeoutMs: 60_000 }), 'healthy at first')

  /*
   * Once the sample holding a block is taken, every request until the next
   * sample is refused: requests are sent until one is. Whether a block is
   * seen at all depends on the order two timers fire in after it (the
   * sampler's, and the delay monitor's that records the block: if the
   * sampler goes first, it resets the monitor and the block goes unrecorded),
   * so the loop is blocked again until one is seen.
   */
  let refused: Awaited<ReturnType<typeof app.inject>> | undefined
  let blocks = 0
  t.ok(await eventually(async () => {
    blockEventLoop(800)
    blocks++
    return eventually(async () => {
      const response = await app.inject({ method: 'GET', url: '/health' })
      if (response.statusCode === 429) refused = response
      return refused !== undefined
    }, { timeoutMs: 100, intervalMs: 1 })
  }, { timeoutMs: 60_000, intervalMs: 0 }), 'refused while the loop lags')
  t.comment(`${blocks} block(s) of the event loop until a refusal`)
  assertErrorShape(t, refused!, 429, 'RATE_LIMITED', 'under pressure')
  t.equal(refused!.headers['retry-after'], '2', 'Retry-After: 2')
  t.ok(await eventually(async () => await health() === 200, { timeoutMs: 60_000 }), 'served again once the loop keeps up')
})

t.test('the heap over its limit: every route refuses, in the error shape', async (t) => {
  const app = await buildTestApp(t, { database, underPressure: { maxHeapUsedBytes: 1, sampleInterval: 10 } })
  t.ok(await eventually(async () => (await app.inject({ method: 'GET', url: '/health' })).statusCode === 429, { timeoutMs: 60_000 }), 'refused once sampled')
  for (const [method, url] of [['GET', '/users/me'], ['POST', '/auth/login'], ['GET', '/docs/json'], ['GET', '/nowhere']] as const) {
    assertErrorShape(t, await app.inject({ method, url, payload: method === 'POST' ? {} : undefined }), 429, 'RATE_LIMITED', `${method} ${url}`)
  }
})

t.test('under pressure, liveness and metrics are still served: the process is alive, and its metrics show the overload', async (t) => {
  const token = 'metrics-token-for-tests'
  const app = await buildTestApp(t, { database, env: { METRICS_TOKEN: token }, underPressure: { maxHeapUsedBytes: 1, sampleInterval: 10 } })
  t.ok(await eventually(async () => (await app.inject({ method: 'GET', url: '/health' })).statusCode === 429, { timeoutMs: 60_000 }), 'readiness refused once sampled')
  const live = await app.inject({ method: 'GET', url: '/health/live' })
  t.equal(live.statusCode, 200, 'liveness answers')
  t.strictSame(live.json(), { status: 'ok' })
  const metrics = await app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${token}` } })
  t.equal(metrics.statusCode, 200, 'metrics answer')
  t.match(metrics.body, /auth_http_request_duration_seconds_count\{route="\/health",method="GET",status="429"\} [1-9]/, 'and count the refusals')
  assertErrorShape(t, await app.inject({ method: 'GET', url: '/metrics' }), 401, 'ACCESS_TOKEN_MISSING', 'still only with the token')
})
