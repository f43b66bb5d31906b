import t from 'tap'
import { PASSWORD, TEST_DATABASE_URL, TEST_REDIS_URL, testDatabaseUrl, testRedis } from '../helpers.js'
import { jsonPost, requestJson, startService, stopService, temporaryDataDir, type ServiceProcess } from '../fixtures/service-process.js'

/*
 * Graceful shutdown of a real process: SIGTERM in the middle of a burst. The
 * requests already sent all get their answer (none is cut off with a reset),
 * the process exits 0, and a refresh whose answer was lost with the instance
 * can be retried elsewhere within the grace window.
 */

interface Outcome {
  name: string
  status?: number
  body?: any
  error?: string
}

async function attempt (name: string, url: string, init?: RequestInit): Promise<Outcome> {
  try {
    const { status, body } = await requestJson(url, init)
    return { name, status, body }
  } catch (error) {
    const cause = (error as { cause?: { code?: string, message?: string } }).cause
    return { name, error: cause?.code ?? cause?.message ?? String(error) }
  }
}

async function loggedIn (service: ServiceProcess, email: string): Promise<{ accessToken: string, refreshToken: string }> {
  const signup = await requestJson(`${service.url}/auth/signup`, jsonPost({ email, password: PASSWORD }))
  if (signup.status !== 201) throw new Error(`signup: ${signup.status} ${signup.body?.message}`)
  const login = await requestJson(`${service.url}/auth/login`, jsonPost({ email, password: PASSWORD }))
  if (login.status !== 200) throw new Error(`login: ${login.status} ${login.body?.message}`)
  return login.body
}

/** Starts every request of the burst, sends SIGTERM once the first answer is in, and waits for all of them and the exit. */
async function burstThenStop (service: ServiceProcess, requests: Array<() => Promise<Outcome>>): Promise<{ outcomes: Outcome[], exitCode: number | null }> {
  const pending = requests.map((request) => request())
  await Promise.race(pending)
  const exit = stopService(service)
  const outcomes = await Promise.all(pending)
  return { outcomes, exitCode: await exit }
}

const shared = TEST_DATABASE_URL !== undefined && TEST_REDIS_URL !== undefined

t.test('SIGTERM during a burst: every request in flight is answered, the process exits 0, and a refresh can be retried elsewhere', async (t) => {
  // With PostgreSQL and Redis, a second instance of the same deployment (one store, one signing key) takes over.
  // A grace window wide enough for a slow CI machine to stop one process and retry on the other.
  const env: Record<string, string> = { LOGIN_RATE_LIMIT: '1000/1m', REFRESH_REUSE_GRACE: '30s', JWT_ALGORITHM: 'HS256', JWT_SECRET: 'shutdown-test-secret-0123456789abcdef' }
  if (shared) {
    env.DATABASE_URL = await testDatabaseUrl(t)
    env.REDIS_URL = TEST_REDIS_URL!
    env.REDIS_KEY_PREFIX = (await testRedis(t)).prefix
  }
  const [service, other] = await Promise.all([
    startService(t, { ...env, DATA_DIR: await temporaryDataDir(t) }),
    shared ? startService(t, { ...env, DATA_DIR: await temporaryDataDir(t) }) : undefined
  ])
  const users = await Promise.all(Array.from({ length: 6 }, (_, i) => loggedIn(service, `burst-${i}@example.com`)))

  // Logins are the slow ones (real argon2id), so the burst is still in flight when SIGTERM arrives.
  const requests: Array<() => Promise<Outcome>> = []
  for (let i = 0; i < 24; i++) {
    requests.push(() => attempt('login', `${service.url}/auth/login`, jsonPost({ email: `burst-${i % 6}@example.com`, password: PASSWORD })))
    requests.push(() => attempt('me', `${service.url}/users/me`, { headers: { authorization: `Bearer ${users[i % 6]!.accessToken}` } }))
  }
  for (const [i, user] of users.entries()) {
    requests.push(() => attempt('refresh', `${service.url}/auth/refresh`, jsonPost({ refreshToken: user.refreshToken })))
    requests.push(() => attempt('signup', `${service.url}/auth/signup`, jsonPost({ email: `late-${i}@example.com`, password: PASSWORD })))
  }

  const { outcomes, exitCode } = await burstThenStop(service, requests)
  const failed = outcomes.filter((outcome) => outcome.error !== undefined)
  t.same(failed, [], 'no request failed with a reset or a refused connection')
  const expected: Record<string, number> = { login: 200, me: 200, refresh: 200, signup: 201 }
  const wrong = outcomes.filter((outcome) => outcome.error === undefined && outcome.status !== expected[outcome.name])
  t.same(wrong.map(({ name, status, body }) => ({ name, status, code: body?.code })), [], 'each got its normal answer')
  t.equal(outcomes.length, 60)
  t.equal(exitCode, 0, 'exits 0')
  t.match(service.output(), /"msg":"shutting down"/, 'says why it stops')
  t.notOk(/"level":50/.test(service.output()), 'no error logged')

  t.test('a refresh whose instance stopped is safe to retry on another within the grace window', {
    skip: !shared && 'needs TEST_DATABASE_URL and TEST_REDIS_URL'
  }, async (t) => {
    const refreshes = outcomes.filter((outcome) => outcome.name === 'refresh')
    // The client never saw (or lost) the answer: it retries with the token it holds, on the other instance.
    for (const [i, user] of users.entries()) {
      const retry = await requestJson(`${other!.url}/auth/refresh`, jsonPost({ refreshToken: user.refreshToken }))
      t.equal(retry.status, 200, `user ${i}: the retry succeeds`)
      t.equal(retry.body.refreshToken, refreshes[i]!.body.refreshToken, `user ${i}: with the successor already issued: the session does not fork`)
      const me = await requestJson(`${other!.url}/users/me`, { headers: { authorization: `Bearer ${retry.body.accessToken}` } })
      t.equal(me.status, 200, `user ${i}: the session goes on`)
    }
    t.equal(await stopService(other!), 0)
  })
})
