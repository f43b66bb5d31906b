import t from 'tap'
import { buildTestApp } from './helpers.js'
import { assertErrorShape } from './hardening-helpers.js'

/*
 * Load shedding (@fastify/under-pressure): past the event-loop or heap limit,
 * every request is answered at once with 429 RATE_LIMITED and Retry-After,
 * in the one error shape, and the service takes requests again once the
 * pressure is gone. The thresholds are lowered here to provoke it.
 */

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Polls `probe` every 10 ms, for at most 5 s. */
async function eventually (probe: () => Promise<boolean>): Promise<boolean> {
  for (let i = 0; i < 500; i++) {
    if (await probe()) return true
    await sleep(10)
  }
  return false
}

t.test('a blocked event loop: 429 while it lags, served again once it catches up', async (t) => {
  const app = await buildTestApp(t, { underPressure: { maxEventLoopDelay: 50, sampleInterval: 50 } })
  t.ok(await eventually(async () => (await app.inject({ method: 'GET', url: '/health' })).statusCode === 200), 'healthy at first')

  // A 300 ms block against a 50 ms limit; the sampler's overdue timer records the lag just
  // before the next request. On a busy machine that ordering can slip, hence a few tries.
  let refused = await app.inject({ method: 'GET', url: '/health' })
  for (let attempt = 0; attempt < 20 && refused.statusCode !== 429; attempt++) {
    const until = performance.now() + 300
    while (performance.now() < until) { /* what a runaway synchronous task does */ }
    await sleep(1)
    refused = await app.inject({ method: 'GET', url: '/health' })
  }
  assertErrorShape(t, refused, 429, 'RATE_LIMITED', 'under pressure')
  t.equal(refused.headers['retry-after'], '2', 'Retry-After: 2')
  t.ok(await eventually(async () => (await app.inject({ method: 'GET', url: '/health' })).statusCode === 200), 'served again once the loop keeps up')
})

t.test('the heap over its limit: every route refuses, in the error shape', async (t) => {
  const app = await buildTestApp(t, { underPressure: { maxHeapUsedBytes: 1, sampleInterval: 10 } })
  t.ok(await eventually(async () => (await app.inject({ method: 'GET', url: '/health' })).statusCode === 429), 'refused once sampled')
  for (const [method, url] of [['GET', '/users/me'], ['POST', '/auth/login'], ['GET', '/docs/json'], ['GET', '/nowhere']] as const) {
    assertErrorShape(t, await app.inject({ method, url, payload: method === 'POST' ? {} : undefined }), 429, 'RATE_LIMITED', `${method} ${url}`)
  }
})
