import { randomBytes, randomUUID } from 'node:crypto'
import type { Test } from 'tap'
import { hashSecret, newSessionId } from '../src/refresh-token.js'
import { SPENT_TOKENS_KEPT, type NewSession, type RefreshAttempt, type RefreshOutcome, type SessionStore } from '../src/session-store.js'

/*
 * The behaviour every SessionStore must have, run against each implementation
 * by session-store.test.ts. Times are fake and passed explicitly, as the
 * stores never read a clock of their own.
 */

export const SECOND = 1000
export const MINUTE = 60 * SECOND
export const HOUR = 60 * MINUTE
export const DAY = 24 * HOUR

/** The fake "now" every test starts at. */
export const T0 = Date.UTC(2030, 0, 1)
export const IDLE_TTL = 14 * DAY
export const MAX_AGE = 90 * DAY
export const GRACE = 10 * SECOND
export const LOGIN_IP = '203.0.113.7'

/** A fresh store for one test; whatever it needs is torn down with `t`. */
export type StoreFactory = (t: Test) => Promise<SessionStore>

/** A token hash as the service computes it: base64url SHA-256 of a random secret. */
export function randomHash (): string {
  return hashSecret(randomBytes(32).toString('base64url'))
}

export function newSession (overrides: Partial<NewSession> = {}): NewSession {
  const createdAt = overrides.createdAt ?? T0
  return {
    id: newSessionId(createdAt),
    userId: randomUUID(),
    tokenHash: randomHash(),
    createdAt,
    idleExpiresAt: createdAt + IDLE_TTL,
    absoluteExpiresAt: createdAt + MAX_AGE,
    userAgent: 'test-agent/1.0',
    ip: LOGIN_IP,
    ...overrides
  }
}

export function attempt (
  session: NewSession, presentedHash: string, now: number, options: Partial<RefreshAttempt> = {}
): RefreshAttempt {
  return { sessionId: session.id, presentedHash, now, idleTtlMs: IDLE_TTL, graceMs: GRACE, ...options }
}

/** A successor whose sealed form is recognizable, to see which one a grace answer carries. */
export function successor (): { hash: string, sealed: string } {
  const hash = randomHash()
  return { hash, sealed: `sealed:${hash}` }
}

function count (outcomes: RefreshOutcome[], result: RefreshOutcome['result']): number {
  return outcomes.filter((outcome) => outcome.result === result).length
}

export function sessionStoreSuite (t: Test, makeStore: StoreFactory): void {
  t.test('create, then refresh with rotation: each token works once and its successor becomes current', async (t) => {
    const store = await makeStore(t)
    const session = newSession()
    await store.create(session, T0)

    const first = successor()
    const now1 = T0 + MINUTE
    const refreshed = await store.refresh(attempt(session, session.tokenHash, now1, { successor: first }))
    t.strictSame(refreshed, {
      result: 'refreshed',
      userId: session.userId,
      idleExpiresAt: now1 + IDLE_TTL,
      absoluteExpiresAt: session.absoluteExpiresAt
    })

    // The spent token does not refresh again (within the grace it only replays the successor).
    const again = await store.refresh(attempt(session, session.tokenHash, now1, { successor: successor() }))
    t.equal(again.result, 'grace', 'the spent token is no longer current')

    const second = successor()
    const now2 = now1 + HOUR
    const next = await store.refresh(attempt(session, first.hash, now2, { successor: second }))
    t.strictSame(next, {
      result: 'refreshed',
      userId: session.userId,
      idleExpiresAt: now2 + IDLE_TTL,
      absoluteExpiresAt: session.absoluteExpiresAt
    }, 'the successor is the current token')

    const third = await store.refresh(attempt(session, second.hash, now2 + HOUR, { successor: successor() }))
    t.equal(third.result, 'refreshed', 'and so on down the family')
  })

  t.test('refresh without rotation: the same token keeps working and the idle expiry moves forward', async (t) => {
    const store = await makeStore(t)
    const session = newSession()
    await store.create(session, T0)

    for (const day of [1, 10, 20, 33]) {
      // Day 20 and 33 are past the original idle expiry (day 14): only extension keeps it alive.
      const now = T0 + day * DAY
      const outcome = await store.refresh(attempt(session, session.tokenHash, now))
      t.strictSame(outcome, {
        result: 'refreshed',
        userId: session.userId,
        idleExpiresAt: now + IDLE_TTL,
        absoluteExpiresAt: session.absoluteExpiresAt
      }, `refresh on day ${day}`)
    }
  })

  t.test('grace window: the previous token answers the same sealed successor, then counts as reuse', async (t) => {
    const store = await makeStore(t)
    const session = newSession()
    await store.create(session, T0)

    const rotatedAt = T0 + MINUTE
    const next = successor()
    const refreshed = await store.refresh(attempt(session, session.tokenHash, rotatedAt, { successor: next }))
    t.equal(refreshed.result, 'refreshed')

    for (const delay of [0, 1, GRACE - 1]) {
      const outcome = await store.refresh(attempt(session, session.tokenHash, rotatedAt + delay, { successor: successor() }))
      t.strictSame(outcome, {
        result: 'grace',
        userId: session.userId,
        sealedSuccessor: next.sealed,
        successorHash: next.hash,
        idleExpiresAt: rotatedAt + IDLE_TTL,
        absoluteExpiresAt: session.absoluteExpiresAt
      }, `${delay} ms after the rotation`)
    }

    const reused = await store.refresh(attempt(session, session.tokenHash, rotatedAt + GRACE, { successor: successor() }))
    t.strictSame(reused, { result: 'reused', userId: session.userId }, 'at the end of the grace it is reuse')

    const later = rotatedAt + GRACE + SECOND
    for (const [name, hash] of [['the successor', next.hash], ['the reused token', session.tokenHash], ['an unknown hash', randomHash()]]) {
      const outcome = await store.refresh(attempt(session, hash!, later, { successor: successor() }))
      t.strictSame(outcome, { result: 'revoked', userId: session.userId }, `${name} answers revoked`)
    }
    const withoutRotation = await store.refresh(attempt(session, next.hash, later))
    t.equal(withoutRotation.result, 'revoked', 'revoked without rotation too')
  })

  t.test('an older spent token (not the previous one) is reuse even inside the grace window', async (t) => {
    const store = await makeStore(t)
    const session = newSession()
    await store.create(session, T0)
    const first = successor()
    const second = successor()
    t.equal((await store.refresh(attempt(session, session.tokenHash, T0 + MINUTE, { successor: first }))).result, 'refreshed')
    t.equal((await store.refresh(attempt(session, first.hash, T0 + MINUTE + 1, { successor: second }))).result, 'refreshed')
    const outcome = await store.refresh(attempt(session, session.tokenHash, T0 + MINUTE + 2, { successor: successor() }))
    t.strictSame(outcome, { result: 'reused', userId: session.userId })
    t.equal((await store.refresh(attempt(session, second.hash, T0 + MINUTE + 3))).result, 'revoked')
  })

  t.test(`the last ${SPENT_TOKENS_KEPT} spent tokens are each recognized as reuse; older ones are forgotten`, async (t) => {
    const rotations = SPENT_TOKENS_KEPT + 2
    for (let age = 2; age <= rotations; age++) {
      const store = await makeStore(t)
      const session = newSession()
      await store.create(session, T0)
      // hashes[0] is the original token; hashes[rotations] the current one.
      const hashes = [session.tokenHash]
      for (let rotation = 1; rotation <= rotations; rotation++) {
        const next = successor()
        const outcome = await store.refresh(attempt(session, hashes.at(-1)!, T0 + rotation * MINUTE, { successor: next }))
        t.equal(outcome.result, 'refreshed')
        hashes.push(next.hash)
      }
      // age 1 is the previous token (grace); age 2 and older are merely spent.
      const replayed = await store.refresh(attempt(session, hashes[rotations - age]!, T0 + rotations * MINUTE + 1))
      const expected = age <= SPENT_TOKENS_KEPT ? 'reused' : 'unknown'
      t.equal(replayed.result, expected, `the token spent ${age} rotations ago: ${expected}`)
    }
  })

  t.test('a long user agent, of any characters, is listed as it was given', async (t) => {
    const store = await makeStore(t)
    const userAgent = 'Mozilla/5.0 (X11; Linux x86_64) ÄÖÜ ñ é ' + 'ÿ'.repeat(100) + ' Safari/537.36 '.repeat(5)
    const session = newSession({ userAgent })
    await store.create(session, T0)
    t.strictSame((await store.list(session.userId, T0 + 1)).map((listed) => listed.userAgent), [userAgent])
  })

  /** 20 refreshes of one session's current token at once, each with a successor of its own. */
  async function race (t: Test, graceMs?: number) {
    const store = await makeStore(t)
    const session = newSession()
    await store.create(session, T0)
    const now = T0 + MINUTE
    const successors = Array.from({ length: 20 }, () => successor())
    const outcomes = await Promise.all(successors.map((next) =>
      store.refresh(attempt(session, session.tokenHash, now, { successor: next, ...(graceMs === undefined ? {} : { graceMs }) }))))
    return { store, session, now, successors, outcomes }
  }

  t.test('grace 0: exactly one of 20 parallel refreshes with one token succeeds, the rest fail as reuse', async (t) => {
    const { store, session, now, successors, outcomes } = await race(t, 0)

    t.equal(count(outcomes, 'refreshed'), 1, 'one refreshed')
    // The first attempt after the winner is reuse and revokes the family; the
    // ones after it find the session revoked (its hashes are forgotten then).
    t.equal(count(outcomes, 'reused'), 1, 'the next one is reuse')
    t.equal(count(outcomes, 'revoked'), 18, 'the others find the session revoked')
    for (const outcome of outcomes) {
      t.equal('userId' in outcome && outcome.userId, session.userId)
    }
    // Reuse revoked the family: not even the winner's successor goes on.
    const winner = successors[outcomes.findIndex((outcome) => outcome.result === 'refreshed')]!
    const after = await store.refresh(attempt(session, winner.hash, now + 1, { successor: successor(), graceMs: 0 }))
    t.equal(after.result, 'revoked')
  })

  t.test('grace > 0: 20 parallel refreshes get one successor between them, the family never forks', async (t) => {
    const { store, session, now, successors, outcomes } = await race(t)

    t.equal(count(outcomes, 'refreshed'), 1, 'one refreshed')
    t.equal(count(outcomes, 'grace'), 19, 'the others answered from the grace window')
    const winnerIndex = outcomes.findIndex((outcome) => outcome.result === 'refreshed')
    const winner = successors[winnerIndex]!
    const sealed = new Set(outcomes.map((outcome) => outcome.result === 'grace' ? outcome.sealedSuccessor : undefined))
    sealed.delete(undefined)
    t.strictSame([...sealed], [winner.sealed], 'every grace answer carries the winner\'s successor')

    // Only the winner's successor was stored; the losers' successors are unknown.
    for (const [index, loser] of successors.entries()) {
      if (index === winnerIndex) continue
      const outcome = await store.refresh(attempt(session, loser.hash, now + 1, { successor: successor() }))
      t.equal(outcome.result, 'unknown', `loser ${index}'s successor was never stored`)
    }
    const next = await store.refresh(attempt(session, winner.hash, now + 2, { successor: successor() }))
    t.equal(next.result, 'refreshed', 'the winner\'s successor is current')
  })

  t.test('an unknown hash or session answers unknown and revokes nothing', async (t) => {
    const store = await makeStore(t)
    const session = newSession()
    await store.create(session, T0)

    const now = T0 + MINUTE
    t.strictSame(await store.refresh(attempt(session, randomHash(), now, { successor: successor() })), { result: 'unknown' })
    t.strictSame(await store.refresh(attempt(newSession(), session.tokenHash, now, { successor: successor() })), { result: 'unknown' },
      'a session that was never created')
    const outcome = await store.refresh(attempt(session, session.tokenHash, now, { successor: successor() }))
    t.equal(outcome.result, 'refreshed', 'the session still works')
  })

  t.test('idle expiry: a session not refreshed before idleExpiresAt is over', async (t) => {
    const store = await makeStore(t)
    const idle = HOUR
    const lapsed = newSession({ idleExpiresAt: T0 + idle })
    const alive = newSession({ idleExpiresAt: T0 + idle })
    await store.create(lapsed, T0)
    await store.create(alive, T0)

    const justInTime = await store.refresh(attempt(alive, alive.tokenHash, T0 + idle - 1, { successor: successor() }))
    t.equal(justInTime.result, 'refreshed', 'one millisecond before the idle expiry')

    for (const now of [T0 + idle, T0 + idle + DAY]) {
      const outcome = await store.refresh(attempt(lapsed, lapsed.tokenHash, now, { successor: successor() }))
      t.ok(outcome.result === 'expired' || outcome.result === 'unknown', `answers ${outcome.result} at idle expiry + ${now - T0 - idle} ms`)
    }
  })

  t.test('absolute expiry: refresh never extends a session past absoluteExpiresAt', async (t) => {
    const store = await makeStore(t)
    const absolute = T0 + 20 * DAY
    const session = newSession({ absoluteExpiresAt: absolute })
    await store.create(session, T0)

    let current = session.tokenHash
    for (const day of [10, 19]) {
      const next = successor()
      const outcome = await store.refresh(attempt(session, current, T0 + day * DAY, { successor: next }))
      t.strictSame(outcome, {
        result: 'refreshed', userId: session.userId, idleExpiresAt: absolute, absoluteExpiresAt: absolute
      }, `on day ${day} the idle expiry is capped at the absolute one`)
      current = next.hash
    }
    const outcome = await store.refresh(attempt(session, current, absolute, { successor: successor() }))
    t.ok(outcome.result === 'expired' || outcome.result === 'unknown', `at the absolute expiry: ${outcome.result}`)

    // Created with an idle expiry beyond the absolute one: capped from the start.
    const capped = newSession({ idleExpiresAt: T0 + 30 * DAY, absoluteExpiresAt: T0 + 5 * DAY })
    await store.create(capped, T0)
    const late = await store.refresh(attempt(capped, capped.tokenHash, T0 + 5 * DAY))
    t.ok(late.result === 'expired' || late.result === 'unknown', `a session created with idle > absolute ends at absolute: ${late.result}`)
  })

  t.test('revoke with a presented hash only revokes with the current or previous token', async (t) => {
    const store = await makeStore(t)
    const session = newSession()
    await store.create(session, T0)
    const first = successor()
    const second = successor()
    t.equal((await store.refresh(attempt(session, session.tokenHash, T0 + MINUTE, { successor: first }))).result, 'refreshed')
    t.equal((await store.refresh(attempt(session, first.hash, T0 + 2 * MINUTE, { successor: second }))).result, 'refreshed')
    // Now: current second, previous first, and the original token is merely spent.

    const now = T0 + 3 * MINUTE
    t.equal(await store.revoke(session.id, now, randomHash()), undefined, 'an unknown hash revokes nothing')
    t.equal(await store.revoke(session.id, now, session.tokenHash), undefined, 'an older spent hash revokes nothing')
    t.equal(await store.revoke(newSession().id, now, second.hash), undefined, 'another session is not revoked by this one\'s token')

    const third = successor()
    const still = await store.refresh(attempt(session, second.hash, now, { successor: third }))
    t.equal(still.result, 'refreshed', 'the session was left alone')

    // Now the previous token is `second`: presenting it revokes.
    t.equal(await store.revoke(session.id, now + 1, second.hash), session.userId, 'the previous token revokes and answers the user')
    t.strictSame(await store.refresh(attempt(session, third.hash, now + 2, { successor: successor() })),
      { result: 'revoked', userId: session.userId })

    const other = newSession()
    await store.create(other, T0)
    t.equal(await store.revoke(other.id, now, other.tokenHash), other.userId, 'the current token revokes')
    t.strictSame(await store.refresh(attempt(other, other.tokenHash, now + 1)), { result: 'revoked', userId: other.userId })
  })

  t.test('revoke without a hash revokes the session and answers its user', async (t) => {
    const store = await makeStore(t)
    const session = newSession()
    await store.create(session, T0)
    const now = T0 + MINUTE

    t.equal(await store.revoke(session.id, now), session.userId)
    t.strictSame(await store.refresh(attempt(session, session.tokenHash, now + 1, { successor: successor() })),
      { result: 'revoked', userId: session.userId })
    t.strictSame(await store.refresh(attempt(session, session.tokenHash, now + 1)), { result: 'revoked', userId: session.userId })
    t.equal(await store.revoke(session.id, now + 2, session.tokenHash), undefined, 'its tokens are forgotten: nothing left to revoke with them')
    t.equal(await store.revoke(newSession().id, now), undefined, 'an unknown session: nothing to revoke')
  })

  t.test('client address binding', async (t) => {
    const store = await makeStore(t)
    const session = newSession()
    await store.create(session, T0)
    const now = T0 + MINUTE

    const elsewhere = await store.refresh(attempt(session, session.tokenHash, now, { successor: successor(), clientIp: '198.51.100.9' }))
    t.strictSame(elsewhere, { result: 'ip-mismatch', userId: session.userId })

    const next = successor()
    const same = await store.refresh(attempt(session, session.tokenHash, now + 1, { successor: next, clientIp: LOGIN_IP }))
    t.equal(same.result, 'refreshed', 'the mismatch neither spent nor revoked the token')

    const graceElsewhere = await store.refresh(attempt(session, session.tokenHash, now + 2, { successor: successor(), clientIp: '198.51.100.9' }))
    t.strictSame(graceElsewhere, { result: 'ip-mismatch', userId: session.userId }, 'the grace answer is bound too')
    const graceSame = await store.refresh(attempt(session, session.tokenHash, now + 3, { successor: successor(), clientIp: LOGIN_IP }))
    t.equal(graceSame.result, 'grace')
    t.equal(graceSame.result === 'grace' && graceSame.sealedSuccessor, next.sealed)

    const unbound = await store.refresh(attempt(session, next.hash, now + 4, { successor: successor() }))
    t.equal(unbound.result, 'refreshed', 'without clientIp there is no binding')
  })
  t.test('list and revokeAll: a user\'s live sessions, oldest first', async (t) => {
    const store = await makeStore(t)
    const userId = randomUUID()
    const oldest = newSession({ userId, createdAt: T0, idleExpiresAt: T0 + HOUR })
    const middle = newSession({ userId, createdAt: T0 + SECOND, userAgent: 'phone', ip: '198.51.100.1' })
    const newest = newSession({ userId, createdAt: T0 + 2 * SECOND })
    const stranger = newSession({ createdAt: T0 })
    // Created out of order: the listing sorts by creation time.
    for (const session of [newest, stranger, oldest, middle]) await store.create(session, session.createdAt)

    const now = T0 + MINUTE
    t.strictSame(await store.list(userId, now), [oldest, middle, newest].map((session) => ({
      id: session.id,
      createdAt: session.createdAt,
      lastUsedAt: session.createdAt,
      expiresAt: session.idleExpiresAt,
      userAgent: session.userAgent,
      ip: session.ip
    })))
    t.strictSame(await store.list(randomUUID(), now), [], 'a user without sessions')

    const later = T0 + HOUR
    t.equal((await store.refresh(attempt(middle, middle.tokenHash, later, { successor: successor() }))).result, 'refreshed')
    const listed = await store.list(userId, later)
    t.strictSame(listed.map(({ id }) => id), [middle.id, newest.id], 'the idle-expired session is not listed')
    t.match(listed[0], { lastUsedAt: later, expiresAt: later + IDLE_TTL }, 'a refresh shows in the listing')

    t.equal(await store.revoke(newest.id, later), userId)
    t.strictSame((await store.list(userId, later)).map(({ id }) => id), [middle.id], 'a revoked session is not listed')

    const another = newSession({ userId, createdAt: later })
    await store.create(another, later)
    t.strictSame((await store.revokeAll(userId, later, another.id)).sort(), [middle.id], 'all but the caller\'s, only live ones')
    t.strictSame((await store.list(userId, later)).map(({ id }) => id), [another.id])
    t.equal((await store.refresh(attempt(middle, randomHash(), later + 1))).result, 'revoked')

    t.strictSame(await store.revokeAll(userId, later), [another.id], 'without an exception: every one')
    t.strictSame(await store.list(userId, later), [])
    t.equal((await store.refresh(attempt(another, another.tokenHash, later + 1))).result, 'revoked')
    t.equal((await store.refresh(attempt(stranger, stranger.tokenHash, later + 1))).result, 'refreshed', 'another user is unaffected')
  })
}
