import { randomBytes } from 'node:crypto'
import t from 'tap'
import type { Test } from 'tap'
import { TEST_DATABASE_URL, TEST_REDIS_URL, testDatabaseUrl, testRedis } from './helpers.js'
import {
  jsonPost, requestJson, startService, stopService, temporaryDataDir, type ServiceProcess
} from './service-process.js'

/*
 * Two instances of the service, as separate processes over real HTTP,
 * sharing one PostgreSQL and one Redis (with this test's own key prefix).
 */

const skip = (TEST_DATABASE_URL === undefined || TEST_REDIS_URL === undefined) && 'TEST_DATABASE_URL and TEST_REDIS_URL are not set'

interface Cluster {
  start(): Promise<ServiceProcess>
}

async function sharedStorage (t: Test, env: Record<string, string> = {}): Promise<Cluster> {
  const databaseUrl = await testDatabaseUrl(t)
  const { prefix } = await testRedis(t)
  const dataDir = await temporaryDataDir(t)
  return {
    // One DATA_DIR: the instances sign with the same development key, as a real deployment shares its key.
    start: () => startService(t, { DATA_DIR: dataDir, DATABASE_URL: databaseUrl, REDIS_URL: TEST_REDIS_URL!, REDIS_KEY_PREFIX: prefix, ...env })
  }
}

async function login (service: ServiceProcess, email: string): Promise<{ accessToken: string, refreshToken: string }> {
  await requestJson(`${service.url}/auth/signup`, jsonPost({ email, password: 'password123' }))
  const { status, body } = await requestJson(`${service.url}/auth/login`, jsonPost({ email, password: 'password123' }))
  if (status !== 200) throw new Error(`login failed: ${status}`)
  return body
}

async function me (service: ServiceProcess, accessToken: string): Promise<{ status: number, code?: string }> {
  const { status, body } = await requestJson(`${service.url}/users/me`, { headers: { authorization: `Bearer ${accessToken}` } })
  return { status, code: body?.code }
}

const email = () => `user-${randomBytes(4).toString('hex')}@example.com`

const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]!
}

t.test('revocation on one instance reaches the other within one second', { skip }, async (t) => {
  const storage = await sharedStorage(t)
  const [a, b] = await Promise.all([storage.start(), storage.start()])
  const delays: number[] = []
  for (let round = 0; round < 5; round++) {
    const tokens = await login(a, email())
    t.equal((await me(b, tokens.accessToken)).status, 200, 'the other instance accepts the token')
    const loggedOutAt = performance.now()
    await requestJson(`${a.url}/auth/logout`, jsonPost({}, { authorization: `Bearer ${tokens.accessToken}` }))
    let answer = await me(b, tokens.accessToken)
    while (answer.code !== 'ACCESS_TOKEN_REVOKED' && performance.now() - loggedOutAt < 1000) {
      answer = await me(b, tokens.accessToken)
    }
    delays.push(performance.now() - loggedOutAt)
    t.equal(answer.code, 'ACCESS_TOKEN_REVOKED', `round ${round}: refused on the other instance`)
  }
  t.ok(median(delays) < 1000, `median propagation ${median(delays).toFixed(1)} ms`)
  t.comment(`revocation reached the other instance in ${delays.map((d) => d.toFixed(1)).join(', ')} ms`)

  // logout-all and a deleted session travel the same way.
  const address = email()
  const tokens = await login(a, address)
  const other = await login(b, address)
  const start = performance.now()
  t.equal((await requestJson(`${a.url}/auth/logout-all`, { method: 'POST', headers: { authorization: `Bearer ${tokens.accessToken}` } })).status, 204)
  let answer = await me(b, other.accessToken)
  while (answer.code !== 'ACCESS_TOKEN_REVOKED' && performance.now() - start < 1000) answer = await me(b, other.accessToken)
  t.equal(answer.code, 'ACCESS_TOKEN_REVOKED', 'logout-all on one instance revokes the session opened on the other')
})

t.test('a refresh token spent on one instance cannot be spent on the other', { skip }, async (t) => {
  const storage = await sharedStorage(t, { REFRESH_REUSE_GRACE: '0s' })
  const [a, b] = await Promise.all([storage.start(), storage.start()])
  const tokens = await login(a, email())
  const first = await requestJson(`${a.url}/auth/refresh`, jsonPost({ refreshToken: tokens.refreshToken }))
  t.equal(first.status, 200)
  const again = await requestJson(`${b.url}/auth/refresh`, jsonPost({ refreshToken: tokens.refreshToken }))
  t.equal(again.body.code, 'REFRESH_TOKEN_REUSED')
  const successor = await requestJson(`${b.url}/auth/refresh`, jsonPost({ refreshToken: first.body.refreshToken }))
  t.equal(successor.body.code, 'REFRESH_TOKEN_REVOKED', 'reuse revoked the whole family on every instance')
  t.equal((await me(a, first.body.accessToken)).code, 'ACCESS_TOKEN_REVOKED')
})

t.test('a restarted instance still refuses tokens revoked while it was down', { skip }, async (t) => {
  const storage = await sharedStorage(t)
  const a = await storage.start()
  let b = await storage.start()
  const tokens = await login(a, email())
  t.equal(await stopService(b), 0)
  await requestJson(`${a.url}/auth/logout`, jsonPost({}, { authorization: `Bearer ${tokens.accessToken}` }))
  b = await storage.start()
  t.equal((await me(b, tokens.accessToken)).code, 'ACCESS_TOKEN_REVOKED')
})
