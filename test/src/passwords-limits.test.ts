import { availableParallelism } from 'node:os'
import { BroadcastChannel } from 'node:worker_threads'
import t, { type Test } from 'tap'
import { ServiceError } from '../../src/errors.js'
import { MAX_PASSWORD_BYTES, createPasswordHasher, defaultHashingLimits, type PooledPasswordHasher } from '../../src/passwords.js'
import { RateLimitedError } from '../../src/rate-limited.js'
import { PASSWORD, assertErrorShape, buildTestApp } from '../helpers.js'
import { RELEASE_CHANNEL, holdPassword } from '../fixtures/holding-password-worker.js'

/*
 * argon2 under load: at most as many hashes at once as hashing threads (one a
 * core by default), a bounded line behind them (Piscina's own maxQueue), and
 * 429 RATE_LIMITED (Retry-After: 1) at once when it is full, so a login flood
 * cannot slow every other route down. Over-long passwords never reach argon2.
 *
 * Nothing here depends on the machine's core count or speed: the limits are
 * injected small, threads are held by the test (test/fixtures/holding-password-worker.ts)
 * for as long as it likes, and "at once" means "while every thread is still held".
 */

const CHEAP = { memoryCost: 1024, timeCost: 1, parallelism: 1 }
const HOLDING_WORKER = new URL('../fixtures/holding-password-worker.ts', import.meta.url).href

interface Start { id: string, releasedBefore: number }

/**
 * A hasher with small limits whose threads the test can hold (its threads
 * stop when the test ends), and a watch on it: which held hashes started, in
 * the order threads took them, and a way to let them go.
 */
function holdingHasher (t: Test, concurrency: number, maxQueued: number) {
  const channel = new BroadcastChannel(RELEASE_CHANNEL)
  t.teardown(() => channel.close())
  const starts: Start[] = []
  const released = new Set<string>()
  let wake: Array<() => void> = []
  function onThreadMessage (message: unknown): void {
    const started = /^started:(.+)$/.exec(String(message))
    if (started === null) return
    starts.push({ id: started[1]!, releasedBefore: released.size })
    for (const resolve of wake) resolve()
    wake = []
  }
  const hasher = createPasswordHasher(CHEAP, { concurrency, maxQueued, workerFile: HOLDING_WORKER, onThreadMessage })
  t.teardown(() => hasher.stopThreads())
  return {
    hasher,
    /** The first `count` held hashes to start, once that many have. */
    async started (count: number): Promise<Start[]> {
      while (starts.length < count) await new Promise<void>((resolve) => wake.push(resolve))
      return starts.slice(0, count)
    },
    /** Lets a started held hash finish. */
    release (id: string): void {
      if (!starts.some((start) => start.id === id)) throw new Error(`${id} has not started`)
      released.add(id)
      channel.postMessage(`release:${id}`)
    }
  }
}

async function failure (attempt: Promise<unknown>): Promise<unknown> {
  return attempt.then(() => undefined, (error: unknown) => error)
}

function assertRefused (t: Test, error: unknown, name: string): void {
  t.type(error, RateLimitedError, `${name}: RateLimitedError`)
  const refused = error as RateLimitedError
  t.equal(refused.statusCode, 429, `${name}: 429`)
  t.equal(refused.code, 'RATE_LIMITED')
  t.equal(refused.retryAfterSeconds, 1, 'Retry-After: 1')
  t.equal(refused.message, 'Too many password checks at once: retry in a second')
  // Pins how Piscina's refusal is recognised (src/passwords.ts): an upgrade that rewords it fails here.
  t.match((refused.cause as Error | undefined)?.message, /^Task queue is at limit$/, `${name}: Piscina's own refusal`)
}

t.test('threads, first come first served, a bounded line, the (n+1)th refused at once; the line drains', async (t) => {
  const { hasher, ...holds } = holdingHasher(t, 2, 2)
  const ids = ['a', 'b', 'c', 'd']
  const runs = ids.map((id) => hasher.hash(holdPassword(id)))

  t.same((await holds.started(2)).map((start) => start.id).sort(), ['a', 'b'], 'the first two run, one a thread')
  assertRefused(t, await failure(hasher.hash(PASSWORD)), 'a fifth hash, while two run and two wait')
  assertRefused(t, await failure(hasher.verify('$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA', PASSWORD)), 'a verification')

  holds.release('b')
  const third = (await holds.started(3))[2]!
  t.equal(third.id, 'c', 'a finished hash hands its thread to the first in line')
  t.ok(third.releasedBefore >= 1, 'and only once a thread is free')
  holds.release('a')
  const fourth = (await holds.started(4))[3]!
  t.equal(fourth.id, 'd', 'then to the next')
  t.ok(fourth.releasedBefore >= 2)

  // c and d run, nobody waits: the line takes two again, then refuses.
  const more = ['e', 'f'].map((id) => hasher.hash(holdPassword(id)))
  assertRefused(t, await failure(hasher.hash(PASSWORD)), 'one more than the line, again')
  holds.release('c')
  holds.release('d')
  for (const start of (await holds.started(6)).slice(4)) holds.release(start.id)

  const hashes = await Promise.all([...runs, ...more])
  for (const [i, id] of [...ids, 'e', 'f'].entries()) {
    t.equal(await hasher.verify(hashes[i]!, holdPassword(id)), true, `${id} got its own hash`)
  }
  t.equal(await hasher.verify(hashes[0]!, holdPassword('b')), false)
  t.equal(await hasher.verify(await hasher.hash(PASSWORD), PASSWORD), true, 'the line drained: hashing works as usual')

  const broken = createPasswordHasher({ memoryCost: 1, timeCost: 1, parallelism: 1 }, { concurrency: 1, maxQueued: 1 })
  t.teardown(() => broken.stopThreads())
  for (const attempt of [1, 2, 3]) {
    const error = await failure(broken.hash(PASSWORD))
    t.ok(error instanceof Error && !(error instanceof RateLimitedError), `a failing hash rejects its caller with its own error, and frees its thread (${attempt})`)
  }
  for (const limits of [{ concurrency: 0 }, { concurrency: 1.5 }, { maxQueued: 0 }, { concurrency: 1, maxQueued: -1 }]) {
    t.throws(() => createPasswordHasher(CHEAP, limits), RangeError, JSON.stringify(limits))
  }
})

/**
 * Asks for `calls` hashes in one synchronous run, so all reach Piscina before
 * any thread can start or finish, then stops the threads: each call was either
 * 'refused' (at once, RateLimitedError) or 'admitted' (hashed, or ended by the
 * stop). Little hashing is done, so a slow or busy machine changes nothing.
 */
async function admission (hasher: PooledPasswordHasher, calls: number): Promise<string[]> {
  const outcomes = Array.from({ length: calls }, () => failure(hasher.hash(PASSWORD)))
  await new Promise((resolve) => setImmediate(resolve))
  await hasher.stopThreads()
  return (await Promise.all(outcomes)).map((error) => error instanceof RateLimitedError ? 'refused' : 'admitted')
}

t.test('the line is threads + maxQueued long: one call more is refused', async (t) => {
  for (const [concurrency, maxQueued] of [[1, 1], [2, 1], [1, 2], [2, 2]] as const) {
    const hasher = createPasswordHasher(CHEAP, { concurrency, maxQueued })
    t.teardown(() => hasher.stopThreads())
    t.same(await admission(hasher, concurrency + maxQueued + 2), [...Array<string>(concurrency + maxQueued).fill('admitted'), 'refused', 'refused'],
      `${concurrency} thread(s) and a line of ${maxQueued}: first come, first admitted`)
  }
  const hasher = createPasswordHasher(CHEAP, { concurrency: 1, maxQueued: 1 })
  t.teardown(() => hasher.stopThreads())
  await admission(hasher, 3)
  t.equal(await hasher.verify(await hasher.hash(PASSWORD), PASSWORD), true, 'stopped threads start again for the next hash')
})

t.test('the default line: one thread a core, 32 waiting per thread', async (t) => {
  const cores = availableParallelism()
  t.same(defaultHashingLimits(), { concurrency: cores, maxQueued: cores * 32 }, `${cores} cores`)
  t.same(defaultHashingLimits(3), { concurrency: 3, maxQueued: 96 })
  t.same(defaultHashingLimits(0), { concurrency: 1, maxQueued: 32 }, 'at least one thread')

  // Made, never used: no thread starts, so this costs nothing on a machine with many cores.
  t.same(createPasswordHasher(CHEAP).limits, defaultHashingLimits(), 'the hasher the service makes uses them')

  const hasher = createPasswordHasher(CHEAP, { concurrency: 2 })
  t.teardown(() => hasher.stopThreads())
  t.same(hasher.limits, { concurrency: 2, maxQueued: 64 }, 'maxQueued defaults to 32 a thread')
  t.same(await admission(hasher, 2 + 64 + 1), [...Array<string>(66).fill('admitted'), 'refused'], 'and those are the limits applied')
})

t.test('a full hashing line answers 429 RATE_LIMITED at once, Retry-After 1', async (t) => {
  const { hasher, ...holds } = holdingHasher(t, 1, 1)
  const holders = [hasher.hash(holdPassword('x')), hasher.hash(holdPassword('y'))]
  await holds.started(1)

  for (const [name, attempt] of [
    ['hash', () => hasher.hash(PASSWORD)],
    ['verify', () => hasher.verify('$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA', PASSWORD)],
    ['verifyAgainstDecoy', () => hasher.verifyAgainstDecoy(PASSWORD)],
    ['verify of an over-long password (against the decoy)', () => hasher.verify('$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA', '\ufdfa'.repeat(256))]
  ] as const) {
    // x still holds the only thread and y the only place in line: the answer did not wait for either.
    assertRefused(t, await failure(attempt()), name)
  }

  holds.release('x')
  holds.release((await holds.started(2))[1]!.id)
  await Promise.all(holders)
  t.equal(await hasher.verify(await hasher.hash(PASSWORD), PASSWORD), true, 'works again once the line is free')
  t.equal(await hasher.verifyAgainstDecoy(PASSWORD), false, 'the decoy refused earlier is made now')
})

t.test('over HTTP: login and signup answer 429 while the line is full; other routes do not wait', async (t) => {
  const { hasher, ...holds } = holdingHasher(t, 1, 1)
  const app = await buildTestApp(t, { passwordHasher: hasher })
  const credentials = { email: 'queue@example.com', password: PASSWORD }
  t.equal((await app.inject({ method: 'POST', url: '/auth/signup', payload: credentials })).statusCode, 201)
  const { accessToken } = (await app.inject({ method: 'POST', url: '/auth/login', payload: credentials })).json()

  const holders = [hasher.hash(holdPassword('http-1')), hasher.hash(holdPassword('http-2'))]
  await holds.started(1)

  const login = await app.inject({ method: 'POST', url: '/auth/login', payload: credentials })
  assertErrorShape(t, login, 429, 'RATE_LIMITED', 'login')
  t.equal(login.headers['retry-after'], '1', 'Retry-After: 1')
  const unknown = await app.inject({ method: 'POST', url: '/auth/login', payload: { email: 'nobody@example.com', password: PASSWORD } })
  assertErrorShape(t, unknown, 429, 'RATE_LIMITED', 'login of an unknown email (the decoy verification)')
  assertErrorShape(t, await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'queue2@example.com', password: PASSWORD } }),
    429, 'RATE_LIMITED', 'signup')
  const me = await app.inject({ method: 'GET', url: '/users/me', headers: { authorization: `Bearer ${accessToken}` } })
  t.equal(me.statusCode, 200, '/users/me needs no hashing and does not queue')

  holds.release('http-1')
  holds.release((await holds.started(2))[1]!.id)
  await Promise.all(holders)
  t.equal((await app.inject({ method: 'POST', url: '/auth/login', payload: credentials })).statusCode, 200, 'login works again')
  t.equal((await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'queue2@example.com', password: PASSWORD } })).statusCode,
    201, 'the refused signup created nothing and can be retried')
})

t.test('argon2\'s own errors are not mistaken for a full line', async (t) => {
  const broken = createPasswordHasher({ memoryCost: 1, timeCost: 1, parallelism: 1 })
  const error = await failure(broken.hash(PASSWORD))
  t.type(error, Error)
  t.notOk(error instanceof RateLimitedError, 'a bad parameter is an error of its own')
  // The decoy for unknown accounts fails alike, each time: a failed decoy is not kept.
  for (const attempt of [1, 2]) {
    const decoyError = await failure(broken.verifyAgainstDecoy(PASSWORD))
    t.type(decoyError, Error, `decoy, attempt ${attempt}`)
    t.notOk(decoyError instanceof RateLimitedError)
  }
  await broken.stopThreads()
})

t.test('argon2 input is capped: normalization cannot blow a 256-character password up', async (t) => {
  const hasher = createPasswordHasher(CHEAP)
  t.teardown(() => hasher.stopThreads())
  // U+FDFA is one character that NFKC turns into 18.
  const expanding = '\ufdfa'.repeat(256)
  t.ok(Buffer.byteLength(expanding.normalize('NFKC')) > MAX_PASSWORD_BYTES, 'over the cap once normalized')
  const error = await failure(hasher.hash(expanding))
  t.type(error, ServiceError)
  t.equal((error as ServiceError).code, 'VALIDATION_ERROR', 'hash refuses it')
  const stored = await hasher.hash('\ufdfa'.repeat(8))
  t.equal(await hasher.verify(stored, expanding), false, 'verify answers false, without hashing the whole of it')
  t.equal(await hasher.verify(stored, '\ufdfa'.repeat(8)), true, 'a short password of the same character is fine')

  const app = await buildTestApp(t)
  const signup = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'long@example.com', password: expanding } })
  assertErrorShape(t, signup, 400, 'VALIDATION_ERROR', 'signup with an expanding password')
  const login = await app.inject({ method: 'POST', url: '/auth/login', payload: { email: 'long@example.com', password: expanding } })
  assertErrorShape(t, login, 401, 'INVALID_CREDENTIALS', 'login with it')
  const tooLong = await app.inject({ method: 'POST', url: '/auth/login', payload: { email: 'long@example.com', password: 'p'.repeat(257) } })
  assertErrorShape(t, tooLong, 400, 'VALIDATION_ERROR', 'a 257-character password never reaches argon2')
})
