import t from 'tap'
import { UserFactsCache, type UserFacts } from '../../src/user-facts.js'
import {
  NEW_PASSWORD, PASSWORD, TEST_DATABASE_URL, buildTestApp, eventually, signUpAndLogIn, skipUnless, testConfig, testDatabase, testRedis
} from '../helpers.js'

/** A cache over a table the test holds, counting the reads it makes. */
function cacheOver (table: Map<string, UserFacts>) {
  const reads: string[] = []
  const cache = new UserFactsCache(async (userId) => {
    reads.push(userId)
    return table.get(userId)
  }, 2)
  return { cache, reads }
}

t.test('UserFactsCache: one read per miss, then from memory; fresh always reads', async (t) => {
  const table = new Map([['a', { credentialVersion: 1, emailVerified: false, roles: [], disabled: false }], ['b', { credentialVersion: 0, emailVerified: false, roles: [], disabled: false }]])
  const { cache, reads } = cacheOver(table)
  t.strictSame(await cache.get('a'), { credentialVersion: 1, emailVerified: false, roles: [], disabled: false })
  t.strictSame(await cache.get('a'), { credentialVersion: 1, emailVerified: false, roles: [], disabled: false })
  t.strictSame(reads, ['a'], 'one primary-key read')

  table.set('a', { credentialVersion: 2, emailVerified: false, roles: [], disabled: false })
  t.strictSame(await cache.get('a'), { credentialVersion: 1, emailVerified: false, roles: [], disabled: false }, 'stale until told')
  t.strictSame(await cache.fresh('a'), { credentialVersion: 2, emailVerified: false, roles: [], disabled: false }, 'fresh reads the table')
  t.strictSame(await cache.get('a'), { credentialVersion: 2, emailVerified: false, roles: [], disabled: false }, 'and remembers it')

  t.equal(await cache.get('nobody'), undefined, 'a user that does not exist')
  t.equal(cache.size, 1, 'is not remembered')

  await cache.get('b')
  await cache.get('a')
  t.equal(cache.size, 2, 'bounded')
  await cache.get('c')
  t.equal(cache.size, 2, 'the least recently used goes')
})

t.test('UserFactsCache: forget and clear; a slower read never moves an entry back', async (t) => {
  const table = new Map([['a', { credentialVersion: 3, emailVerified: false, roles: [], disabled: false }]])
  const { cache, reads } = cacheOver(table)
  await cache.get('a')
  cache.forget('a')
  await cache.get('a')
  t.equal(reads.length, 2, 'forgotten: read again')
  cache.clear()
  t.equal(cache.size, 0)

  // Two reads in flight; the older answer (version 3) lands after the newer one (version 4).
  let releaseOld!: () => void
  const slow = new UserFactsCache(async () => {
    if (releaseOld === undefined) {
      await new Promise<void>((resolve) => { releaseOld = resolve })
      return { credentialVersion: 3, emailVerified: false, roles: [], disabled: false }
    }
    return { credentialVersion: 4, emailVerified: false, roles: [], disabled: false }
  })
  const older = slow.fresh('a')
  await new Promise((resolve) => setImmediate(resolve))
  await slow.fresh('a')
  releaseOld()
  t.strictSame(await older, { credentialVersion: 3, emailVerified: false, roles: [], disabled: false }, 'the slow read answers what it read')
  t.strictSame(await slow.get('a'), { credentialVersion: 4, emailVerified: false, roles: [], disabled: false }, 'but the cache keeps the newer version')
})

t.test('UserFactsCache: a read under way when the user changes (same version) is answered, not remembered', async (t) => {
  // An address verified while a read of the old row is in flight: the version is the same, the facts are not.
  const table = new Map([['a', { credentialVersion: 2, emailVerified: false, roles: [], disabled: false }]])
  let release!: () => void
  let held = true
  const cache = new UserFactsCache(async (userId) => {
    const facts = table.get(userId)
    if (held) {
      held = false
      await new Promise<void>((resolve) => { release = resolve })
    }
    return facts
  })
  const inFlight = cache.fresh('a')
  await new Promise((resolve) => setImmediate(resolve))
  table.set('a', { credentialVersion: 2, emailVerified: true, roles: [], disabled: false })
  cache.forget('a')
  release()
  t.strictSame(await inFlight, { credentialVersion: 2, emailVerified: false, roles: [], disabled: false }, 'the read answers what it read')
  t.strictSame(await cache.get('a'), { credentialVersion: 2, emailVerified: true, roles: [], disabled: false }, 'but the cache reads again: the verified address')
})

t.test('a password change on one instance makes every other forget the user\'s cached facts', { skip: skipUnless({ postgres: true, redis: true }) }, async (t) => {
  const database = await testDatabase(t, { real: true })
  const { redis, prefix } = await testRedis(t)
  // One configuration: one DATA_DIR, so both sign with the same development key, as instances share theirs.
  const shared = { database, redis, redisKeyPrefix: prefix, config: await testConfig(t) }
  const a = await buildTestApp(t, shared)
  const b = await buildTestApp(t, shared)
  const user = await signUpAndLogIn(a, 'facts')
  const onB = await b.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: user.refreshToken } })
  t.equal(onB.statusCode, 200)
  t.equal(b.userFacts.size, 1, 'a refresh on the other instance cached the user')

  const changed = await a.inject({
    method: 'POST',
    url: '/auth/password',
    headers: { authorization: `Bearer ${onB.json().accessToken}` },
    payload: { currentPassword: PASSWORD, newPassword: NEW_PASSWORD }
  })
  t.equal(changed.statusCode, 204)
  // Pushed through Redis: the outcome is asserted, not how fast this machine delivers it.
  t.ok(await eventually(() => b.userFacts.size === 0), 'forgotten on the other instance')
  const again = await b.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: onB.json().refreshToken } })
  t.equal(again.statusCode, 200, 'the caller\'s session refreshes on it, read afresh')
})

t.test('the in-process deployment: the same cache, told directly', async (t) => {
  // Sessions in process; the users in PostgreSQL where there is one (booting PGlite costs more), else in PGlite.
  const app = await buildTestApp(t, { realDatabase: TEST_DATABASE_URL !== undefined })
  const user = await signUpAndLogIn(app, 'facts-local')
  const changed = await app.inject({
    method: 'POST',
    url: '/auth/password',
    headers: { authorization: `Bearer ${user.accessToken}` },
    payload: { currentPassword: PASSWORD, newPassword: NEW_PASSWORD }
  })
  t.equal(changed.statusCode, 204)
  t.equal(app.userFacts.size, 0, 'the changed user is forgotten at once')
})
