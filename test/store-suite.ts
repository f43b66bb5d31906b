import { randomBytes, randomUUID } from 'node:crypto'
import type { Test } from 'tap'
import { hashSecret, newFamilyId, sessionIdOf } from '../src/refresh-token.js'
import {
  GRACE_GENERATIONS, type NewSession, type RefreshAttempt, type RefreshOutcome, type SessionStore
} from '../src/session-store.js'

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
    id: sessionIdOf(newFamilyId()),
    userId: randomUUID(),
    tokenHash: randomHash(),
    credentialVersion: 0,
    createdAt,
    idleExpiresAt: createdAt + IDLE_TTL,
    absoluteExpiresAt: createdAt + MAX_AGE,
    userAgent: 'test-agent/1.0',
    ip: LOGIN_IP,
    ...overrides
  }
}

/** A refresh of `session` with the token of `generation` whose secret hashes to `hash`. */
export function attempt (
  session: NewSession, generation: number, hash: string, now: number, options: Partial<RefreshAttempt> = {}
): RefreshAttempt {
  return { sessionId: session.id, generation, hash, now, idleTtlMs: IDLE_TTL, graceMs: GRACE, ...options }
}

/** A successor whose sealed form is recognizable, to see which ones a grace answer carries. */
export function successor (): { hash: string, sealed: string } {
  const hash = randomHash()
  return { hash, sealed: `sealed:${hash.slice(0, 40)}` }
}

/**
 * A session and the tokens it has had: generation n's hash is hashes[n] and
 * its successor was sealed as sealed[n]. `rotate` refreshes the current one.
 */
export async function chain (store: SessionStore, overrides: Partial<NewSession> = {}) {
  const session = newSession(overrides)
  await store.create(session, session.createdAt)
  const hashes = [session.tokenHash]
  const sealed: string[] = []
  return {
    session,
    hashes,
    sealed,
    get current (): number {
      return hashes.length - 1
    },
    async rotate (now: number, options: Partial<RefreshAttempt> = {}): Promise<RefreshOutcome> {
      const next = successor()
      const outcome = await store.refresh(attempt(session, hashes.length - 1, hashes.at(-1)!, now, { successor: next, ...options }))
      if (outcome.result === 'refreshed') {
        hashes.push(next.hash)
        sealed.push(next.sealed)
      }
      return outcome
    },
    /** Presents generation `generation` again (with its own secret unless `hash` is given), without rotation. */
    async present (generation: number, now: number, options: Partial<RefreshAttempt> & { hash?: string } = {}): Promise<RefreshOutcome> {
      return await store.refresh(attempt(session, generation, options.hash ?? hashes[generation]!, now, { successor: successor(), ...options }))
    }
  }
}

function count (outcomes: RefreshOutcome[], result: RefreshOutcome['result']): number {
  return outcomes.filter((outcome) => outcome.result === result).length
}

export function sessionStoreSuite (t: Test, makeStore: StoreFactory): void {
  t.test('create, then refresh with rotation: each generation refreshes once and its successor becomes current', async (t) => {
    const store = await makeStore(t)
    const family = await chain(store)
    const { session } = family

    const now1 = T0 + MINUTE
    t.strictSame(await family.rotate(now1), {
      result: 'refreshed',
      userId: session.userId,
      generation: 1,
      credentialVersion: 0,
      idleExpiresAt: now1 + IDLE_TTL,
      absoluteExpiresAt: session.absoluteExpiresAt
    })
    t.equal((await family.present(0, now1)).result, 'grace', 'the spent generation does not refresh again')

    const now2 = now1 + HOUR
    t.strictSame(await family.rotate(now2), {
      result: 'refreshed',
      userId: session.userId,
      generation: 2,
      credentialVersion: 0,
      idleExpiresAt: now2 + IDLE_TTL,
      absoluteExpiresAt: session.absoluteExpiresAt
    }, 'the successor is the current token')
    t.equal((await family.rotate(now2 + HOUR)).result, 'refreshed', 'and so on down the family')
  })

  t.test('refresh without rotation: the same token keeps working and the idle expiry moves forward', async (t) => {
    const store = await makeStore(t)
    const session = newSession()
    await store.create(session, T0)

    for (const day of [1, 10, 20, 33]) {
      // Day 20 and 33 are past the original idle expiry (day 14): only extension keeps it alive.
      const now = T0 + day * DAY
      t.strictSame(await store.refresh(attempt(session, 0, session.tokenHash, now)), {
        result: 'refreshed',
        userId: session.userId,
        generation: 0,
        credentialVersion: 0,
        idleExpiresAt: now + IDLE_TTL,
        absoluteExpiresAt: session.absoluteExpiresAt
      }, `refresh on day ${day}`)
    }
    t.equal((await store.refresh(attempt(session, 0, randomHash(), T0 + 34 * DAY))).result, 'reused',
      'a wrong secret for the family is reuse without rotation too')
  })

  t.test('grace window: the previous generation answers the chain to the current token, then counts as reuse', async (t) => {
    const store = await makeStore(t)
    const family = await chain(store)
    const rotatedAt = T0 + MINUTE
    t.equal((await family.rotate(rotatedAt)).result, 'refreshed')

    for (const delay of [0, 1, GRACE - 1]) {
      t.strictSame(await family.present(0, rotatedAt + delay), {
        result: 'grace',
        userId: family.session.userId,
        generation: 1,
        credentialVersion: 0,
        idleExpiresAt: rotatedAt + IDLE_TTL,
        absoluteExpiresAt: family.session.absoluteExpiresAt,
        sealedChain: [family.sealed[0]],
        currentHash: family.hashes[1]
      }, `${delay} ms after the rotation`)
    }

    t.strictSame(await family.present(0, rotatedAt + GRACE), { result: 'reused', userId: family.session.userId },
      'at the end of the grace it is reuse')

    const later = rotatedAt + GRACE + SECOND
    for (const [name, generation, hash] of [['the successor', 1, family.hashes[1]], ['the reused token', 0, family.hashes[0]], ['a wrong secret', 1, randomHash()]] as const) {
      t.strictSame(await family.present(generation, later, { hash }), { result: 'revoked', userId: family.session.userId }, `${name} answers revoked`)
    }
    t.equal((await store.refresh(attempt(family.session, 1, family.hashes[1]!, later))).result, 'revoked', 'revoked without rotation too')
  })

  t.test(`a token up to ${GRACE_GENERATIONS} rotations behind, inside its grace, answers the chain to the current token`, async (t) => {
    for (let behind = 1; behind <= GRACE_GENERATIONS; behind++) {
      const store = await makeStore(t)
      const family = await chain(store)
      // One rotation a second: every one of them is inside the grace of the first.
      for (let rotation = 1; rotation <= behind; rotation++) t.equal((await family.rotate(T0 + rotation * SECOND)).result, 'refreshed')
      const outcome = await family.present(0, T0 + behind * SECOND + 1)
      t.match(outcome, { result: 'grace', generation: behind, currentHash: family.hashes[behind] }, `${behind} behind: grace`)
      t.strictSame(outcome.result === 'grace' && outcome.sealedChain, family.sealed, `${behind} behind: every link from it to the current token, oldest first`)
      t.equal((await family.rotate(T0 + behind * SECOND + 2)).result, 'refreshed', 'the session goes on: no fork')
    }
  })

  t.test(`${GRACE_GENERATIONS + 1} rotations behind is reuse, even inside the grace`, async (t) => {
    const store = await makeStore(t)
    const family = await chain(store)
    for (let rotation = 1; rotation <= GRACE_GENERATIONS + 1; rotation++) await family.rotate(T0 + rotation * 100)
    t.equal((await family.present(1, T0 + SECOND)).result, 'grace', `${GRACE_GENERATIONS} behind still has its grace`)
    t.strictSame(await family.present(0, T0 + SECOND), { result: 'reused', userId: family.session.userId })
  })

  t.test('a spent generation presented with a wrong secret is reuse, never a way to the current token', async (t) => {
    for (const generation of [0, 1]) {
      const store = await makeStore(t)
      const family = await chain(store)
      await family.rotate(T0 + SECOND)
      await family.rotate(T0 + 2 * SECOND)
      const forged = await family.present(generation, T0 + 3 * SECOND, { hash: randomHash() })
      t.strictSame(forged, { result: 'reused', userId: family.session.userId }, `generation ${generation}, inside its grace`)
      t.equal((await family.present(2, T0 + 4 * SECOND)).result, 'revoked', 'the family is revoked')
    }
  })

  t.test('the current generation with a wrong secret is reuse: only a holder of the family can name it', async (t) => {
    const store = await makeStore(t)
    const family = await chain(store)
    await family.rotate(T0 + SECOND)
    t.strictSame(await family.present(1, T0 + 2 * SECOND, { hash: randomHash() }), { result: 'reused', userId: family.session.userId })
    t.equal((await family.present(1, T0 + 3 * SECOND)).result, 'revoked')
  })

  t.test('a generation that was never issued is unknown, and revokes nothing', async (t) => {
    const store = await makeStore(t)
    const family = await chain(store)
    await family.rotate(T0 + SECOND)
    t.strictSame(await store.refresh(attempt(family.session, 2, randomHash(), T0 + 2 * SECOND)), { result: 'unknown' })
    t.strictSame(await store.refresh(attempt(family.session, 1e12, family.hashes[1]!, T0 + 2 * SECOND)), { result: 'unknown' })
    t.equal((await family.rotate(T0 + 3 * SECOND)).result, 'refreshed', 'the session still works')
  })

  t.test('laundering cannot outrun detection: every spent generation is reuse after its grace, however many rotations since', async (t) => {
    const rotations = 3 * GRACE_GENERATIONS
    for (const replayed of [0, 1, GRACE_GENERATIONS, rotations - 2]) {
      const store = await makeStore(t)
      const family = await chain(store)
      for (let rotation = 1; rotation <= rotations; rotation++) t.equal((await family.rotate(T0 + rotation * MINUTE)).result, 'refreshed')
      const outcome = await family.present(replayed, T0 + rotations * MINUTE + 1)
      t.strictSame(outcome, { result: 'reused', userId: family.session.userId }, `generation ${replayed} of ${rotations}`)
      t.equal((await family.present(rotations, T0 + rotations * MINUTE + 2)).result, 'revoked', 'the launderer\'s token is revoked with it')
    }
  })

  t.test('a spent generation is forgotten by the first rotation after its grace; it stays reuse', async (t) => {
    const store = await makeStore(t)
    const family = await chain(store)
    await family.rotate(T0 + SECOND)
    await family.rotate(T0 + 2 * SECOND)
    // A rotation after both graces forgets both; the token one behind (generation 2) is remembered.
    await family.rotate(T0 + HOUR)
    t.equal((await family.present(2, T0 + HOUR + 1)).result, 'grace')
    t.equal((await family.present(1, T0 + HOUR + 2)).result, 'reused')
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
      store.refresh(attempt(session, 0, session.tokenHash, now, { successor: next, ...(graceMs === undefined ? {} : { graceMs }) }))))
    return { store, session, now, successors, outcomes }
  }

  t.test('grace 0: exactly one of 20 parallel refreshes with one token succeeds, the rest fail as reuse', async (t) => {
    const { store, session, now, successors, outcomes } = await race(t, 0)

    t.equal(count(outcomes, 'refreshed'), 1, 'one refreshed')
    // The first attempt after the winner is reuse and revokes the family; the
    // ones after it find the session revoked.
    t.equal(count(outcomes, 'reused'), 1, 'the next one is reuse')
    t.equal(count(outcomes, 'revoked'), 18, 'the others find the session revoked')
    for (const outcome of outcomes) {
      t.equal('userId' in outcome && outcome.userId, session.userId)
    }
    const winner = successors[outcomes.findIndex((outcome) => outcome.result === 'refreshed')]!
    const after = await store.refresh(attempt(session, 1, winner.hash, now + 1, { successor: successor(), graceMs: 0 }))
    t.equal(after.result, 'revoked', 'reuse revoked the family: not even the winner\'s successor goes on')
  })

  t.test('grace > 0: 20 parallel refreshes get one successor between them, the family never forks', async (t) => {
    const { store, session, now, successors, outcomes } = await race(t)

    t.equal(count(outcomes, 'refreshed'), 1, 'one refreshed')
    t.equal(count(outcomes, 'grace'), 19, 'the others answered from the grace window')
    const winnerIndex = outcomes.findIndex((outcome) => outcome.result === 'refreshed')
    const winner = successors[winnerIndex]!
    const chains = new Set(outcomes.map((outcome) => outcome.result === 'grace' ? JSON.stringify([outcome.sealedChain, outcome.currentHash]) : undefined))
    chains.delete(undefined)
    t.strictSame([...chains], [JSON.stringify([[winner.sealed], winner.hash])], 'every grace answer leads to the winner\'s successor')

    const next = await store.refresh(attempt(session, 1, winner.hash, now + 2, { successor: successor() }))
    t.equal(next.result, 'refreshed', 'the winner\'s successor is current')
    // Only the winner's successor was stored: a loser's, never handed out, would be a wrong secret.
    const loser = successors[(winnerIndex + 1) % successors.length]!
    t.equal((await store.refresh(attempt(session, 1, loser.hash, now + 3))).result, 'reused', 'a loser\'s successor is a wrong secret')
  })

  t.test('an unknown session answers unknown and revokes nothing', async (t) => {
    const store = await makeStore(t)
    const session = newSession()
    await store.create(session, T0)
    const now = T0 + MINUTE
    t.strictSame(await store.refresh(attempt(newSession(), 0, session.tokenHash, now, { successor: successor() })), { result: 'unknown' },
      'a session that was never created')
    t.equal((await store.refresh(attempt(session, 0, session.tokenHash, now, { successor: successor() }))).result, 'refreshed', 'the session still works')
  })

  t.test('idle expiry: a session not refreshed before idleExpiresAt is over', async (t) => {
    const store = await makeStore(t)
    const idle = HOUR
    const lapsed = newSession({ idleExpiresAt: T0 + idle })
    const alive = newSession({ idleExpiresAt: T0 + idle })
    await store.create(lapsed, T0)
    await store.create(alive, T0)

    const justInTime = await store.refresh(attempt(alive, 0, alive.tokenHash, T0 + idle - 1, { successor: successor() }))
    t.equal(justInTime.result, 'refreshed', 'one millisecond before the idle expiry')

    for (const now of [T0 + idle, T0 + idle + DAY]) {
      const outcome = await store.refresh(attempt(lapsed, 0, lapsed.tokenHash, now, { successor: successor() }))
      t.ok(outcome.result === 'expired' || outcome.result === 'unknown', `answers ${outcome.result} at idle expiry + ${now - T0 - idle} ms`)
    }
    t.equal(await store.get(lapsed.id, T0 + idle), undefined, 'get: not live')
    t.strictSame(await store.list(lapsed.userId, T0 + idle), [], 'list: not listed')
  })

  t.test('absolute expiry: refresh never extends a session past absoluteExpiresAt', async (t) => {
    const store = await makeStore(t)
    const absolute = T0 + 20 * DAY
    const family = await chain(store, { absoluteExpiresAt: absolute })

    for (const day of [10, 19]) {
      t.match(await family.rotate(T0 + day * DAY), { result: 'refreshed', idleExpiresAt: absolute, absoluteExpiresAt: absolute },
        `on day ${day} the idle expiry is capped at the absolute one`)
    }
    const outcome = await family.rotate(absolute)
    t.ok(outcome.result === 'expired' || outcome.result === 'unknown', `at the absolute expiry: ${outcome.result}`)

    // Created with an idle expiry beyond the absolute one: capped from the start.
    const capped = newSession({ idleExpiresAt: T0 + 30 * DAY, absoluteExpiresAt: T0 + 5 * DAY })
    await store.create(capped, T0)
    const late = await store.refresh(attempt(capped, 0, capped.tokenHash, T0 + 5 * DAY))
    t.ok(late.result === 'expired' || late.result === 'unknown', `a session created with idle > absolute ends at absolute: ${late.result}`)
  })

  t.test('revoke with a presented token: any generation the session issued, spent ones too; never one it did not', async (t) => {
    const store = await makeStore(t)
    const family = await chain(store)
    const { session } = family
    await family.rotate(T0 + MINUTE)
    await family.rotate(T0 + 2 * MINUTE)
    const now = T0 + 3 * MINUTE

    t.equal(await store.revoke(session.id, now, { generation: 3 }), undefined, 'a generation never issued revokes nothing')
    t.equal(await store.revoke(newSession().id, now, { generation: 0 }), undefined, 'an unknown session: nothing to revoke')
    t.equal((await family.present(2, now, { successor: undefined })).result, 'refreshed', 'the session was left alone')

    t.equal(await store.revoke(session.id, now + 1, { generation: 0 }), session.userId, 'a token spent long ago revokes: its holder wants the session over')
    t.strictSame(await family.present(2, now + 2), { result: 'revoked', userId: session.userId })
    t.equal(await store.revoke(session.id, now + 3, { generation: 2 }), undefined, 'revoked once: nothing more to revoke')

    const other = newSession()
    await store.create(other, T0)
    t.equal(await store.revoke(other.id, now, { generation: 0 }), other.userId, 'the current token revokes')
    t.strictSame(await store.refresh(attempt(other, 0, other.tokenHash, now + 1)), { result: 'revoked', userId: other.userId })
  })

  t.test('revoke without a token revokes a live session once, and answers its user', async (t) => {
    const store = await makeStore(t)
    const session = newSession()
    await store.create(session, T0)
    const now = T0 + MINUTE

    t.equal(await store.revoke(session.id, now), session.userId)
    t.strictSame(await store.refresh(attempt(session, 0, session.tokenHash, now + 1, { successor: successor() })),
      { result: 'revoked', userId: session.userId })
    t.equal(await store.revoke(session.id, now + 2), undefined, 'already revoked: nothing to revoke')
    t.equal(await store.revoke(newSession().id, now), undefined, 'an unknown session: nothing to revoke')
    t.equal(await store.get(session.id, now + 2), undefined, 'get: a revoked session is not live')
  })

  t.test('get: one live session and its owner', async (t) => {
    const store = await makeStore(t)
    const session = newSession({ userAgent: 'phone', ip: '198.51.100.1' })
    await store.create(session, T0)
    t.strictSame(await store.get(session.id, T0 + 1), {
      id: session.id,
      userId: session.userId,
      createdAt: T0,
      lastUsedAt: T0,
      expiresAt: session.idleExpiresAt,
      userAgent: 'phone',
      ip: '198.51.100.1'
    })
    t.equal(await store.get(newSession().id, T0 + 1), undefined, 'an unknown session')
  })

  t.test('stamp raises a live session\'s credential version, never lowers it', async (t) => {
    const store = await makeStore(t)
    const family = await chain(store, { credentialVersion: 3 })
    await store.stamp(family.session.id, 5, T0 + 1)
    t.match(await family.rotate(T0 + 2), { result: 'refreshed', credentialVersion: 5 })
    await store.stamp(family.session.id, 4, T0 + 3)
    t.match(await family.present(0, T0 + 4), { result: 'grace', credentialVersion: 5 }, 'a lower version is ignored; grace answers carry it too')
    await store.revoke(family.session.id, T0 + 5)
    await store.stamp(family.session.id, 9, T0 + 6)
    t.strictSame(await family.present(1, T0 + 7), { result: 'revoked', userId: family.session.userId }, 'a revoked session stays revoked')
  })

  t.test('client address binding', async (t) => {
    const store = await makeStore(t)
    const family = await chain(store)
    const now = T0 + MINUTE

    t.strictSame(await family.present(0, now, { clientIp: '198.51.100.9' }), { result: 'ip-mismatch', userId: family.session.userId })
    t.equal((await family.rotate(now + 1, { clientIp: LOGIN_IP })).result, 'refreshed', 'the mismatch neither spent nor revoked the token')
    t.strictSame(await family.present(0, now + 2, { clientIp: '198.51.100.9' }), { result: 'ip-mismatch', userId: family.session.userId },
      'the grace answer is bound too')
    t.match(await family.present(0, now + 3, { clientIp: LOGIN_IP }), { result: 'grace', sealedChain: [family.sealed[0]] })
    t.equal((await family.rotate(now + 4)).result, 'refreshed', 'without clientIp there is no binding')
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
    t.equal((await store.refresh(attempt(middle, 0, middle.tokenHash, later, { successor: successor() }))).result, 'refreshed')
    const listed = await store.list(userId, later)
    t.strictSame(listed.map(({ id }) => id), [middle.id, newest.id], 'the idle-expired session is not listed')
    t.match(listed[0], { lastUsedAt: later, expiresAt: later + IDLE_TTL }, 'a refresh shows in the listing')

    t.equal(await store.revoke(newest.id, later), userId)
    t.strictSame((await store.list(userId, later)).map(({ id }) => id), [middle.id], 'a revoked session is not listed')

    const another = newSession({ userId, createdAt: later })
    await store.create(another, later)
    t.strictSame((await store.revokeAll(userId, later, another.id)).sort(), [middle.id], 'all but the caller\'s, only live ones')
    t.strictSame((await store.list(userId, later)).map(({ id }) => id), [another.id])
    t.equal((await store.refresh(attempt(middle, 1, randomHash(), later + 1))).result, 'revoked')

    t.strictSame(await store.revokeAll(userId, later), [another.id], 'without an exception: every one')
    t.strictSame(await store.list(userId, later), [])
    t.strictSame(await store.revokeAll(userId, later), [], 'nothing left: nothing revoked')
    t.equal((await store.refresh(attempt(another, 0, another.tokenHash, later + 1))).result, 'revoked')
    t.equal((await store.refresh(attempt(stranger, 0, stranger.tokenHash, later + 1))).result, 'refreshed', 'another user is unaffected')
  })

  t.test('trim: past the per-user limit, the least recently used others end', async (t) => {
    const store = await makeStore(t)
    const userId = randomUUID()
    const limit = 3
    /** Creates the session and trims for it, as a login does. */
    const open = async (session: NewSession, max = limit): Promise<string[]> => {
      await store.create(session, session.createdAt)
      return await store.trim(session.userId, session.id, session.createdAt, max)
    }
    const sessions = [0, 1, 2].map((index) => newSession({ userId, createdAt: T0 + index * SECOND }))
    for (const session of sessions) t.strictSame(await open(session), [], 'within the limit')
    // The oldest is used most recently: the least recently used is now the second.
    t.equal((await store.refresh(attempt(sessions[0]!, 0, sessions[0]!.tokenHash, T0 + MINUTE))).result, 'refreshed')

    const fourth = newSession({ userId, createdAt: T0 + 2 * MINUTE })
    t.strictSame(await open(fourth), [sessions[1]!.id], 'the least recently used one ended')
    t.strictSame((await store.list(userId, T0 + 2 * MINUTE)).map(({ id }) => id), [sessions[0]!.id, sessions[2]!.id, fourth.id])
    t.strictSame(await store.refresh(attempt(sessions[1]!, 0, sessions[1]!.tokenHash, T0 + 3 * MINUTE)), { result: 'revoked', userId })
    t.strictSame(await store.trim(userId, fourth.id, T0 + 3 * MINUTE, limit), [], 'at the limit: nothing more')

    const fifth = newSession({ userId, createdAt: T0 + 4 * MINUTE })
    t.strictSame(await open(fifth, 2), [sessions[2]!.id, sessions[0]!.id], 'a lower limit ends as many as it takes, least recently used first')
    t.equal((await store.list(userId, T0 + 4 * MINUTE)).length, 2)
    t.strictSame(await open(newSession({ createdAt: T0 + 5 * MINUTE }), 1), [], 'another user\'s sessions do not count')
  })
}
