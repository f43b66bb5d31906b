import t from 'tap'
import { ServiceError } from '../src/errors.js'
import { MAX_PASSWORD_BYTES, createPasswordHasher, defaultHashingQueue } from '../src/passwords.js'
import { RateLimitedError } from '../src/rate-limited.js'
import { QueueFullError, WorkQueue } from '../src/work-queue.js'
import { buildTestApp } from './helpers.js'
import { PASSWORD, assertErrorShape } from './hardening-helpers.js'

/*
 * argon2 under load: at most as many hashes at once as cores, a bounded line
 * behind them, and 429 RATE_LIMITED (Retry-After: 1) at once when it is full,
 * so a login flood cannot slow every other route down. Over-long passwords
 * never reach argon2.
 */

const CHEAP = { memoryCost: 1024, timeCost: 1, parallelism: 1 }

/** A promise the test settles by hand, to hold a queue slot for as long as it likes. */
function gate (): { promise: Promise<void>, open: () => void } {
  let open!: () => void
  const promise = new Promise<void>((resolve) => { open = resolve })
  return { promise, open }
}

const tick = () => new Promise((resolve) => setImmediate(resolve))

t.test('WorkQueue: concurrency, first come first served, a bounded line', async (t) => {
  const queue = new WorkQueue({ concurrency: 2, maxQueued: 2 })
  const gates = Array.from({ length: 4 }, gate)
  const order: number[] = []
  const runs = gates.map((g, i) => queue.run(async () => { order.push(i); await g.promise; return i }))
  await tick()
  t.same(order, [0, 1], 'two run')
  t.equal(queue.running, 2)
  t.equal(queue.queued, 2, 'two wait')
  await t.rejects(queue.run(async () => 'too many'), QueueFullError, 'a fifth is refused at once')

  gates[1]!.open()
  await tick()
  t.same(order, [0, 1, 2], 'a finished task hands its slot to the first in line')
  t.equal(queue.running, 2)
  t.equal(queue.queued, 1)
  gates[0]!.open()
  gates[2]!.open()
  gates[3]!.open()
  t.same(await Promise.all(runs), [0, 1, 2, 3], 'each gets its own result')
  t.equal(queue.running, 0, 'every slot released')
  t.equal(queue.queued, 0)

  await t.rejects(queue.run(async () => { throw new Error('boom') }), /boom/, 'a failing task rejects its caller')
  t.equal(queue.running, 0, 'and releases its slot')
  t.equal(await queue.run(async () => 'after'), 'after')

  t.throws(() => new WorkQueue({ concurrency: 0, maxQueued: 1 }), RangeError)
  t.throws(() => new WorkQueue({ concurrency: 1, maxQueued: -1 }), RangeError)
})

t.test('the default line: as many slots as cores (at most the thread pool), 32 waiting per slot', async (t) => {
  const queue = defaultHashingQueue()
  t.ok(queue.concurrency >= 1 && queue.concurrency <= 4, `concurrency ${queue.concurrency}`)
  t.equal(queue.maxQueued, queue.concurrency * 32)
})

t.test('a full hashing line answers 429 RATE_LIMITED at once, Retry-After 1', async (t) => {
  const queue = new WorkQueue({ concurrency: 1, maxQueued: 0 })
  const hasher = createPasswordHasher(CHEAP, queue)
  const held = gate()
  const holder = queue.run(() => held.promise)

  const started = performance.now()
  for (const [name, attempt] of [
    ['hash', () => hasher.hash(PASSWORD)],
    ['verify', () => hasher.verify('$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA', PASSWORD)],
    ['verifyNothing', () => hasher.verifyNothing(PASSWORD)]
  ] as const) {
    const error = await attempt().then(() => undefined, (error: unknown) => error)
    t.type(error, RateLimitedError, `${name}: RateLimitedError`)
    t.equal((error as RateLimitedError).statusCode, 429)
    t.equal((error as RateLimitedError).code, 'RATE_LIMITED')
    t.equal((error as RateLimitedError).retryAfterSeconds, 1)
  }
  t.ok(performance.now() - started < 1000, 'refused without waiting for the slot')

  held.open()
  await holder
  t.equal(await hasher.verify(await hasher.hash(PASSWORD), PASSWORD), true, 'works again once the slot is free')
})

t.test('over HTTP: login and signup answer 429 while the line is full; other routes do not wait', async (t) => {
  const queue = new WorkQueue({ concurrency: 1, maxQueued: 1 })
  const app = await buildTestApp(t, { passwordHasher: createPasswordHasher(CHEAP, queue) })
  const credentials = { email: 'queue@example.com', password: PASSWORD }
  t.equal((await app.inject({ method: 'POST', url: '/auth/signup', payload: credentials })).statusCode, 201)
  const { accessToken } = (await app.inject({ method: 'POST', url: '/auth/login', payload: credentials })).json()

  const held = [gate(), gate()]
  const holders = held.map((g) => queue.run(() => g.promise))
  await tick()
  t.equal(queue.running + queue.queued, 2, 'the slot and the line are taken')

  const login = await app.inject({ method: 'POST', url: '/auth/login', payload: credentials })
  assertErrorShape(t, login, 429, 'RATE_LIMITED', 'login')
  t.equal(login.headers['retry-after'], '1', 'Retry-After: 1')
  assertErrorShape(t, await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'queue2@example.com', password: PASSWORD } }),
    429, 'RATE_LIMITED', 'signup')
  const me = await app.inject({ method: 'GET', url: '/users/me', headers: { authorization: `Bearer ${accessToken}` } })
  t.equal(me.statusCode, 200, '/users/me needs no hashing and does not queue')

  for (const g of held) g.open()
  await Promise.all(holders)
  t.equal((await app.inject({ method: 'POST', url: '/auth/login', payload: credentials })).statusCode, 200, 'login works again')
  t.equal((await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'queue2@example.com', password: PASSWORD } })).statusCode,
    201, 'the refused signup created nothing and can be retried')
})

t.test('argon2\'s own errors are not mistaken for a full line', async (t) => {
  const broken = createPasswordHasher({ memoryCost: 1, timeCost: 1, parallelism: 1 })
  const error = await broken.hash(PASSWORD).then(() => undefined, (error: unknown) => error)
  t.type(error, Error)
  t.notOk(error instanceof RateLimitedError, 'a bad parameter is an error of its own')
  // The decoy for unknown accounts fails alike, each time: a failed decoy is not kept.
  for (const attempt of [1, 2]) {
    const decoyError = await broken.verifyNothing(PASSWORD).then(() => undefined, (error: unknown) => error)
    t.type(decoyError, Error, `decoy, attempt ${attempt}`)
    t.notOk(decoyError instanceof RateLimitedError)
  }
  await broken.close()
})

t.test('argon2 input is capped: normalization cannot blow a 256-character password up', async (t) => {
  const hasher = createPasswordHasher(CHEAP)
  // U+FDFA is one character that NFKC turns into 18.
  const expanding = '\ufdfa'.repeat(256)
  t.ok(Buffer.byteLength(expanding.normalize('NFKC')) > MAX_PASSWORD_BYTES, 'over the cap once normalized')
  const error = await hasher.hash(expanding).then(() => undefined, (error: unknown) => error)
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
