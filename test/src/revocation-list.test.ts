import t from 'tap'
import { RevocationList, type RevocationEvent, type RevocationFeed } from '../../src/revocation-list.js'
import { FakeClock } from '../helpers.js'

const TTL = 10 * 60_000

t.test('a revoked session stays revoked until its access tokens have expired', async (t) => {
  const clock = new FakeClock()
  const list = new RevocationList(clock, TTL)
  t.equal(list.isRevoked('s1'), false, 'nothing revoked at first')

  await list.revokeSession('s1')
  t.equal(list.isRevoked('s1'), true)
  t.equal(list.isRevoked('s2'), false, 'other sessions are unaffected')

  clock.advance(TTL - 1)
  t.equal(list.isRevoked('s1'), true, 'one millisecond before the access TTL has passed')
  clock.advance(1)
  t.equal(list.isRevoked('s1'), false, 'once every access token it covers has expired')
})

t.test('expired entries are swept, so the list does not grow without bound', async (t) => {
  const clock = new FakeClock()
  const list = new RevocationList(clock, TTL)
  for (let i = 0; i < 100; i++) await list.revokeSession(`old-${i}`)
  t.equal(list.size, 100)

  clock.advance(TTL)
  await list.revokeSession('new')
  t.equal(list.size, 1, 'the expired entries went when the next revocation came')
  t.equal(list.isRevoked('new'), true)
  t.equal(list.isRevoked('old-0'), false)
})

t.test('revoking again extends the entry', async (t) => {
  const clock = new FakeClock()
  const list = new RevocationList(clock, TTL)
  await list.revokeSession('s1')
  clock.advance(TTL / 2)
  await list.revokeSession('s1')
  clock.advance(TTL / 2)
  t.equal(list.isRevoked('s1'), true, 'a token issued before the second revocation is still covered')
  clock.advance(TTL / 2)
  t.equal(list.isRevoked('s1'), false)
})

t.test('events from other instances', async (t) => {
  const clock = new FakeClock()
  const list = new RevocationList(clock, TTL)
  list.apply({ sessionId: 'past', until: clock.now() })
  t.equal(list.size, 0, 'an event no longer in force is ignored')
  list.apply({ sessionId: 's1', until: clock.now() + TTL })
  list.apply({ sessionId: 's1', until: clock.now() + 1 })
  clock.advance(TTL - 1)
  t.equal(list.isRevoked('s1'), true, 'an older event never shortens an entry')
})

t.test('revokeUser rejects the access tokens issued before it', async (t) => {
  const clock = new FakeClock(Date.UTC(2030, 0, 1, 0, 0, 30, 500))
  const list = new RevocationList(clock, TTL)
  const nowSeconds = Math.floor(clock.now() / 1000)
  await list.revokeUser('u1')

  t.equal(list.rejects({ sid: 'a', sub: 'u1', iat: nowSeconds - 60 }), true, 'a token from a minute before')
  t.equal(list.rejects({ sid: 'a', sub: 'u1', iat: nowSeconds - 1 }), true, 'a token from the second before')
  t.equal(list.rejects({ sid: 'b', sub: 'u1', iat: nowSeconds + 1 }), false, 'a token issued after (a new login)')
  t.equal(list.rejects({ sid: 'a', sub: 'u2', iat: nowSeconds - 60 }), false, 'another user')

  await list.revokeSession('c')
  t.equal(list.rejects({ sid: 'c', sub: 'u3', iat: nowSeconds + 1 }), true, 'a revoked session is rejected whatever its iat')

  clock.advance(TTL)
  t.equal(list.rejects({ sid: 'a', sub: 'u1', iat: nowSeconds - 60 }), false, 'expired with the access TTL')
})

t.test('revocations go through the feed and come back from it', async (t) => {
  const published: RevocationEvent[] = []
  let deliver: ((event: RevocationEvent) => void) | undefined
  let closed = false
  const feed: RevocationFeed = {
    async publish (event) { published.push(event) },
    async start (callback) { deliver = callback },
    connected: false,
    async close () { closed = true }
  }
  const clock = new FakeClock()
  const counted: string[] = []
  const list = new RevocationList(clock, TTL, feed, {}, {
    published: (kind) => counted.push(`published ${kind}`),
    received: (kind) => counted.push(`received ${kind}`)
  })
  await list.listen()
  t.equal(list.connected, false, 'connected as its feed says')

  await list.revokeSession('mine')
  t.strictSame(published, [{ sessionId: 'mine', until: clock.now() + TTL }], 'published to the other instances')
  t.equal(list.isRevoked('mine'), true, 'and applied here at once')

  deliver!({ sessionId: 'theirs', until: clock.now() + TTL })
  t.equal(list.isRevoked('theirs'), true, 'an event from another instance applies here')
  await list.revokeUser('someone')
  await list.userChanged('someone')
  t.strictSame(counted, ['published session', 'received session', 'published user', 'published user_changed'],
    'the observer hears of each publication and each delivery, by kind')

  await list.close()
  t.equal(closed, true, 'closing the list closes the feed')
})

t.test('changed users reach the listener, from this instance and others; a resync reaches it too', async (t) => {
  const published: RevocationEvent[] = []
  let deliver: ((event: RevocationEvent) => void) | undefined
  let resync: (() => void) | undefined
  const feed: RevocationFeed = {
    async publish (event) { published.push(event) },
    async start (callback, resynced) {
      deliver = callback
      resync = resynced
    },
    connected: true,
    async close () {}
  }
  const changed: string[] = []
  let resyncs = 0
  const clock = new FakeClock()
  const list = new RevocationList(clock, TTL, feed, { changed: (userId) => changed.push(userId), resynced: () => { resyncs += 1 } })
  await list.listen()

  await list.userChanged('mine')
  t.strictSame(published, [{ changedUserId: 'mine', until: clock.now() + TTL }], 'published to the other instances')
  deliver!({ changedUserId: 'theirs', until: clock.now() + TTL })
  t.strictSame(changed, ['mine', 'theirs'], 'heard here and from the others')
  t.equal(list.size, 0, 'a changed user revokes no access token by itself')
  resync!()
  t.equal(resyncs, 1, 'a reconnect tells the listener it may have missed changes')
})
