import { randomBytes } from 'node:crypto'
import t from 'tap'
import type { Test } from 'tap'
import type { Redis } from 'ioredis'
import { MemorySessionStore } from '../../src/memory-session-store.js'
import { RedisSessionStore } from '../../src/redis-session-store.js'
import { hashSecret, newRefreshSecret, sealSuccessor } from '../../src/refresh-token.js'
import { GRACE_GENERATIONS } from '../../src/session-store.js'
import { FakeClock, skipUnless, testRedis } from '../helpers.js'
import {
  DAY, HOUR, MINUTE, SECOND, T0, attempt, newSession, randomHash, sessionStoreSuite, successor
} from '../fixtures/store-suite.js'

async function memoryStore (t: Test, clock = new FakeClock(T0)): Promise<MemorySessionStore> {
  const store = new MemorySessionStore(clock)
  t.teardown(() => store.stopSweeping())
  return store
}

async function redisStore (t: Test): Promise<{ store: RedisSessionStore, redis: Redis, prefix: string }> {
  const { redis, prefix } = await testRedis(t)
  return { store: new RedisSessionStore(redis, { prefix }), redis, prefix }
}

t.test('MemorySessionStore', async (t) => {
  t.test('shared suite', async (t) => {
    sessionStoreSuite(t, (t) => memoryStore(t))
  })

  t.test('sweep() drops expired sessions', async (t) => {
    const clock = new FakeClock(T0)
    const store = await memoryStore(t, clock)
    const short = newSession({ idleExpiresAt: T0 + HOUR })
    const medium = newSession({ idleExpiresAt: T0 + DAY })
    const long = newSession()
    for (const session of [short, medium, long]) await store.create(session)
    t.equal(store.size, 3)

    store.sweep(T0 + HOUR - 1)
    t.equal(store.size, 3, 'nothing expired yet')
    store.sweep(T0 + HOUR)
    t.equal(store.size, 2, 'the idle-expired session is gone')

    clock.advance(DAY)
    store.sweep()
    t.equal(store.size, 1, 'sweep() without an argument uses the clock')
    t.equal((await store.refresh(attempt(long, 0, long.tokenHash, T0 + DAY))).result, 'refreshed', 'the live one is kept')
  })

  t.test('revoked sessions are kept until they expire, then swept', async (t) => {
    const store = await memoryStore(t)
    const session = newSession({ idleExpiresAt: T0 + HOUR })
    await store.create(session)
    await store.revoke(session.id, T0 + MINUTE)
    store.sweep(T0 + 2 * MINUTE)
    t.equal(store.size, 1, 'still there to answer revoked')
    store.sweep(T0 + HOUR)
    t.equal(store.size, 0)
  })

  t.test('an expired session is dropped when touched', async (t) => {
    const store = await memoryStore(t)
    const session = newSession({ idleExpiresAt: T0 + HOUR })
    await store.create(session)
    await store.refresh(attempt(session, 0, session.tokenHash, T0 + HOUR))
    t.equal(store.size, 0, 'by refresh')

    const other = newSession({ idleExpiresAt: T0 + HOUR })
    await store.create(other)
    t.equal(await store.revoke(other.id, T0 + HOUR), undefined, 'revoke of an expired session does nothing')
    t.equal(store.size, 0, 'by revoke')
  })
})

t.test('RedisSessionStore', { skip: skipUnless({ redis: true }) }, async (t) => {
  t.test('shared suite', async (t) => {
    sessionStoreSuite(t, async (t) => (await redisStore(t)).store)
  })

  /** Every key under `prefix`, with its PTTL. */
  async function keysWithTtl (redis: Redis, prefix: string): Promise<Array<[string, number]>> {
    const keys: string[] = []
    let cursor = '0'
    do {
      const [next, found] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
      keys.push(...found)
      cursor = next
    } while (cursor !== '0')
    return Promise.all(keys.map(async (key): Promise<[string, number]> => [key, await redis.pttl(key)]))
  }

  t.test('every key expires, and the session no later than its own end', async (t) => {
    const { store, redis, prefix } = await redisStore(t)
    const absolute = T0 + 20 * DAY
    const session = newSession({ absoluteExpiresAt: absolute })

    /*
     * The session's key ends with the session; other keys (the user's index
     * of sessions, written at create) may hold it until its absolute end at
     * most. Fake time moves but real time does not, so a key's TTL is
     * compared with the remaining life as of the (fake) time it was written.
     */
    const check = async (step: string, remaining: number): Promise<void> => {
      const keys = await keysWithTtl(redis, prefix)
      t.ok(keys.some(([key]) => key === store.sessionKey(session.id)), `${step}: the session is stored`)
      for (const [key, ttl] of keys) {
        const limit = key === store.sessionKey(session.id) ? remaining : absolute - T0
        t.ok(ttl > 0, `${step}: ${key} has a TTL (${ttl})`)
        t.ok(ttl <= limit, `${step}: ${key}'s TTL ${ttl} is at most ${limit} ms`)
      }
      // Real time barely moves during the test: the TTL is the session's life, not something shorter.
      const [, ttl] = keys.find(([key]) => key === store.sessionKey(session.id))!
      t.ok(ttl > remaining - MINUTE, `${step}: the session's TTL ${ttl} follows its remaining ${remaining} ms`)
    }

    await store.create(session, T0)
    await check('after create', 14 * DAY)

    const next = successor()
    const now = T0 + 10 * DAY
    t.equal((await store.refresh(attempt(session, 0, session.tokenHash, now, { successor: next }))).result, 'refreshed')
    await check('after refresh capped by the absolute expiry', absolute - now)

    t.equal((await store.refresh(attempt(session, 0, session.tokenHash, now + 1))).result, 'grace')
    await check('after a grace answer', absolute - now)

    t.equal(await store.revoke(session.id, now), session.userId)
    await check('after revoke', absolute - now)
  })

  t.test('reuse detection keeps the TTL', async (t) => {
    const { store, redis, prefix } = await redisStore(t)
    const session = newSession()
    await store.create(session, T0)
    t.equal((await store.refresh(attempt(session, 0, session.tokenHash, T0, { successor: successor() }))).result, 'refreshed')
    t.equal((await store.refresh(attempt(session, 0, session.tokenHash, T0 + HOUR))).result, 'reused')
    const ttl = await redis.pttl(store.sessionKey(session.id))
    t.ok(ttl > 14 * DAY - MINUTE && ttl <= 14 * DAY, `the revoked session still expires with the session (${ttl})`)
    for (const [key, ttl] of await keysWithTtl(redis, prefix)) t.ok(ttl > 0, `${key} expires (${ttl})`)
  })

  t.test('the stored session never contains a raw token secret', async (t) => {
    const { store, redis } = await redisStore(t)
    const secret = randomBytes(32).toString('base64url')
    const session = newSession({ tokenHash: hashSecret(secret) })
    await store.create(session, T0)

    const next = newRefreshSecret()
    const sealed = sealSuccessor(secret, next)
    const outcome = await store.refresh(attempt(session, 0, session.tokenHash, T0 + MINUTE, {
      successor: { hash: hashSecret(next), sealed }
    }))
    t.equal(outcome.result, 'refreshed')

    const stored = await redis.hgetall(store.sessionKey(session.id))
    const dump = JSON.stringify(stored)
    t.ok(Object.values(stored).includes(hashSecret(next)), 'the current token is stored as its hash')
    t.ok(Object.values(stored).includes(sealed), 'the successor is stored sealed')
    for (const [name, value] of [['old secret', secret], ['new secret', next]]) {
      t.notOk(dump.includes(value!), `the ${name} is not stored`)
    }
  })

  t.test('a session stays in Redis\'s compact hash encoding: no value over 64 bytes, however long its life', async (t) => {
    const { store, redis } = await redisStore(t)
    const [limit] = (await redis.config('GET', 'hash-max-listpack-value') as string[]).slice(1)
    // A user agent as long as the routes keep (256 characters), of two-byte characters.
    const session = newSession({ userAgent: 'é'.repeat(256), ip: '2001:db8:85a3:1234:5678:8a2e:370:7334' })
    await store.create(session, T0)
    let current = session.tokenHash
    for (let rotation = 1; rotation <= 2 * GRACE_GENERATIONS; rotation++) {
      const next = { hash: hashSecret(newRefreshSecret()), sealed: sealSuccessor(newRefreshSecret(), newRefreshSecret()) }
      t.equal((await store.refresh(attempt(session, rotation - 1, current, T0 + rotation * SECOND, { successor: next }))).result, 'refreshed')
      current = next.hash
    }
    const fields = await redis.hgetall(store.sessionKey(session.id))
    t.equal(Object.keys(fields).filter((field) => /^s\d$/.test(field)).length, GRACE_GENERATIONS, 'as many sealed successors as the grace keeps, however many rotations')
    const longest = Math.max(...Object.values(fields).map((value) => Buffer.byteLength(value)))
    t.ok(longest <= Number(limit ?? 64), `the longest value is ${longest} bytes (limit ${limit})`)
    t.equal(await redis.call('OBJECT', 'ENCODING', store.sessionKey(session.id)), 'listpack')
    t.equal((await store.list(session.userId, T0 + DAY)).at(0)?.userAgent, session.userAgent, 'the user agent is whole')
  })

  t.test('keys live under the configured prefix only', async (t) => {
    const { store, redis, prefix } = await redisStore(t)
    const session = newSession({ tokenHash: randomHash() })
    await store.create(session, T0)
    t.ok(store.sessionKey(session.id).startsWith(prefix))
    t.equal(await redis.exists(store.sessionKey(session.id)), 1)
    const other = await redisStore(t)
    t.strictSame(await keysWithTtl(redis, other.prefix), [], 'nothing under another prefix')
    t.equal(await other.store.refresh(attempt(session, 0, session.tokenHash, T0 + 1)).then((outcome) => outcome.result), 'unknown',
      'a store with another prefix does not see the session')
  })
})
