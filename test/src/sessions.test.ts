import { randomBytes } from 'node:crypto'
import t from 'tap'
import type { AccessTokenFacts } from '../../src/access-token.js'
import type { Test } from 'tap'
import type { ErrorCode } from '../../src/errors.js'
import { ServiceError } from '../../src/errors.js'
import { formatRefreshToken, newFamilyId, parseRefreshToken, sessionIdOf, type RefreshToken } from '../../src/refresh-token.js'
import { RevocationList } from '../../src/revocation-list.js'
import { GRACE_GENERATIONS } from '../../src/session-store.js'
import type { SecurityEventRecord } from '../../src/security-events.js'
import type { ClientInfo, SessionOwner, SessionPolicy, SessionService, TokenPair } from '../../src/sessions.js'
import type { UserFacts } from '../../src/user-facts.js'
import { DEFAULT_SESSION_POLICY, FakeClock, inProcessSessionService } from '../helpers.js'

/*
 * SessionService over the in-process store, with no HTTP in it: the token
 * lifecycle (open, refresh, grace, reuse, logout) and the rules of issue 11
 * (complete reuse detection, a grace for every recent rotation, credential
 * versions, the per-user limit, access tokens capped at the session's end).
 * The same rules over HTTP and both backends: sessions-over-http.test.ts.
 */

const SECOND = 1000
const DAY = 86_400 * SECOND
const T0 = Date.UTC(2030, 0, 1)
const CLIENT: ClientInfo = { ip: '203.0.113.7', userAgent: 'test-agent/1.0' }
const USER: SessionOwner = { id: 'user-1', credentialVersion: 0 }
const STRANGER: SessionOwner = { id: 'user-2', credentialVersion: 0 }

interface LogCall { details: Record<string, unknown>, message: string }
interface Issued { userId: string, sessionId: string, notAfter: number }

function setup (t: Test, policy: Partial<SessionPolicy> = {}) {
  const clock = new FakeClock(T0)
  const fullPolicy = { ...DEFAULT_SESSION_POLICY, ...policy }
  const revocations = new RevocationList(clock, fullPolicy.accessTokenTtl * 1000)
  // The users' facts as the database holds them; `reads` counts how the service asks for them.
  const facts = new Map<string, UserFacts>([[USER.id, { credentialVersion: 0, emailVerified: false, roles: [], disabled: false }], [STRANGER.id, { credentialVersion: 0, emailVerified: false, roles: [], disabled: false }]])
  const reads = { get: 0, fresh: 0 }
  /** Set to make reading the user afresh fail, as when the database is down. */
  const outage: { error?: Error } = {}
  /** Set to hold SessionService.open between creating its session and reading the user afresh. */
  const gate: { hold?: Promise<void> } = {}
  const users = {
    get: async (userId: string) => {
      reads.get += 1
      return facts.get(userId)
    },
    fresh: async (userId: string) => {
      reads.fresh += 1
      await gate.hold
      if (outage.error !== undefined) throw outage.error
      return facts.get(userId)
    }
  }
  const issued: Issued[] = []
  /** What each access token says of its user, in the order they were issued. */
  const issuedFacts: AccessTokenFacts[] = []
  const events: SecurityEventRecord[] = []
  const refreshes: string[] = []
  const { service, store } = inProcessSessionService(t, {
    clock,
    policy: fullPolicy,
    revocations,
    users,
    events: { record: (event) => { events.push(event) } },
    refreshed: (outcome) => { refreshes.push(outcome) },
    issueAccessToken: (userId, sessionId, notAfter, tokenFacts) => {
      issued.push({ userId, sessionId, notAfter })
      issuedFacts.push(tokenFacts)
      return `access-token-${issued.length}`
    }
  })
  const calls: LogCall[] = []
  const log = { warn: (details: object, message: string) => { calls.push({ details: details as Record<string, unknown>, message }) } }
  return { clock, store, revocations, service, issued, issuedFacts, log, calls, facts, reads, gate, outage, events, refreshes }
}

/** Awaits `promise` expecting a ServiceError with `code`. */
async function failsWith (t: Test, promise: Promise<unknown>, code: ErrorCode, name: string): Promise<void> {
  try {
    await promise
    t.fail(`${name}: expected ${code}, but it succeeded`)
  } catch (error) {
    t.ok(error instanceof ServiceError, `${name}: a ServiceError`)
    t.equal((error as ServiceError).code, code, `${name}: ${code}`)
  }
}

/** The public session id (sid) a refresh token belongs to. */
function sessionOf (token: string): string {
  return sessionIdOf(parseRefreshToken(token)!.familyId)
}

/** The token with some of its parts replaced. */
function forge (token: string, changes: Partial<RefreshToken>): string {
  return formatRefreshToken({ ...parseRefreshToken(token)!, ...changes })
}

const randomSecret = (): string => randomBytes(32).toString('base64url')

t.test('open returns a token pair for a new session', async (t) => {
  const { service, issued, store, reads } = setup(t)
  const pair = await service.open(USER, CLIENT)
  t.match(pair, { accessToken: 'access-token-1', tokenType: 'Bearer', expiresIn: 600, refreshExpiresIn: 14 * 86_400 })
  const token = parseRefreshToken(pair.refreshToken)
  t.ok(token, 'the refresh token parses')
  t.ok(pair.refreshToken.startsWith('rt2.'), 'in the rt2 format')
  t.equal(token!.generation, 0, 'generation 0')
  t.equal(token!.expiresAt, (T0 + 14 * DAY) / 1000, 'it carries its idle expiry')
  const sessionId = sessionIdOf(token!.familyId)
  t.not(sessionId, token!.familyId, 'the public session id is not the family id')
  t.notOk(sessionId.includes(token!.familyId), 'nor contains it')
  t.strictSame(issued, [{ userId: USER.id, sessionId, notAfter: T0 + 14 * DAY }], 'the access token is for this user and session, capped at its end')
  t.equal(store.size, 1)
  t.equal(reads.fresh, 1, 'the user is read afresh once the session exists')

  const other = await service.open(USER, CLIENT)
  t.not(parseRefreshToken(other.refreshToken)!.familyId, token!.familyId, 'every login is a new family')
  t.not(sessionOf(other.refreshToken), sessionId, 'and a new session')
})

t.test('refresh rotates: each token is replaced by the next generation of the same family', async (t) => {
  const { service, clock, issued, log, calls, reads } = setup(t)
  const opened = await service.open(USER, CLIENT)
  const sessionId = sessionOf(opened.refreshToken)

  clock.advance(DAY)
  const first = await service.refresh(opened.refreshToken, CLIENT, log)
  t.not(first.refreshToken, opened.refreshToken, 'a new refresh token')
  t.equal(sessionOf(first.refreshToken), sessionId, 'of the same session')
  t.equal(parseRefreshToken(first.refreshToken)!.generation, 1, 'the next generation')
  t.equal(parseRefreshToken(first.refreshToken)!.expiresAt, (T0 + 15 * DAY) / 1000, 'carrying the moved idle expiry')
  t.match(first, { accessToken: 'access-token-2', tokenType: 'Bearer', expiresIn: 600, refreshExpiresIn: 14 * 86_400 })
  t.strictSame(issued[1], { userId: USER.id, sessionId, notAfter: T0 + 15 * DAY })

  clock.advance(DAY)
  const second = await service.refresh(first.refreshToken, CLIENT, log)
  t.not(second.refreshToken, first.refreshToken, 'the successor rotates in turn')
  t.equal(parseRefreshToken(second.refreshToken)!.generation, 2)
  t.equal(calls.length, 0, 'nothing logged')
  t.same(reads, { get: 2, fresh: 1 }, 'a refresh reads the user through the cache (get), never afresh')
})

t.test('within the grace window the previous token answers the same successor', async (t) => {
  const { service, clock, log } = setup(t)
  const opened = await service.open(USER, CLIENT)
  clock.advance(DAY)
  const refreshed = await service.refresh(opened.refreshToken, CLIENT, log)

  clock.advance(5 * SECOND)
  const again = await service.refresh(opened.refreshToken, CLIENT, log)
  t.equal(again.refreshToken, refreshed.refreshToken, 'the same successor, so the family does not fork')
  t.equal(again.refreshExpiresIn, refreshed.refreshExpiresIn - 5, 'the same session end')

  const parallel = await Promise.all(Array.from({ length: 10 }, () => service.refresh(again.refreshToken, CLIENT, log)))
  t.equal(new Set(parallel.map(({ refreshToken }) => refreshToken)).size, 1, 'ten parallel refreshes all get one successor')
  const next = await service.refresh(parallel[0]!.refreshToken, CLIENT, log)
  t.ok(next.refreshToken, 'and that successor goes on')
})

/** Refreshes `count` times from `token`, moving the clock `stepMs` before each: every token of the chain, oldest first. */
async function rotate (service: SessionService, clock: FakeClock, log: { warn(details: object, message: string): void }, token: string, count: number, stepMs: number): Promise<string[]> {
  const chain = [token]
  for (let i = 0; i < count; i++) {
    clock.advance(stepMs)
    chain.push((await service.refresh(chain.at(-1)!, CLIENT, log)).refreshToken)
  }
  return chain
}

t.test(`the grace covers every token rotated less than the grace ago, up to ${GRACE_GENERATIONS} rotations behind`, async (t) => {
  t.test('two rotations behind, two seconds after its rotation', async (t) => {
    const { service, clock, log, calls } = setup(t)
    const opened = await service.open(USER, CLIENT)
    const [t0, , t2] = await rotate(service, clock, log, opened.refreshToken, 2, SECOND)
    clock.advance(SECOND)
    const behind = await service.refresh(t0!, CLIENT, log)
    t.equal(behind.refreshToken, t2, 'the current token, not a fork')
    t.equal(calls.length, 0, 'no theft logged')
    const next = await service.refresh(t2!, CLIENT, log)
    t.equal(parseRefreshToken(next.refreshToken)!.generation, 3, 'the session goes on from the current token')
  })

  t.test(`${GRACE_GENERATIONS} rotations behind: every token of the chain reaches the current one`, async (t) => {
    const { service, clock, log } = setup(t)
    const opened = await service.open(USER, CLIENT)
    const chain = await rotate(service, clock, log, opened.refreshToken, GRACE_GENERATIONS, SECOND)
    const current = chain.at(-1)!
    for (const [generation, token] of chain.slice(0, -1).entries()) {
      t.equal((await service.refresh(token, CLIENT, log)).refreshToken, current, `generation ${generation}: the current token`)
    }
  })

  t.test(`${GRACE_GENERATIONS + 1} rotations behind, still inside the grace in time: reuse`, async (t) => {
    const { service, clock, log, calls, revocations } = setup(t)
    const opened = await service.open(USER, CLIENT)
    const chain = await rotate(service, clock, log, opened.refreshToken, GRACE_GENERATIONS + 1, SECOND)
    await failsWith(t, service.refresh(chain[0]!, CLIENT, log), 'REFRESH_TOKEN_REUSED', 'the oldest token')
    t.equal(calls.length, 1, 'logged once')
    t.ok(revocations.isRevoked(sessionOf(opened.refreshToken)), 'its access tokens revoked')
    await failsWith(t, service.refresh(chain.at(-1)!, CLIENT, log), 'REFRESH_TOKEN_REVOKED', 'the current token')
  })

  t.test('a token rotated exactly a grace ago is reuse', async (t) => {
    const { service, clock, log } = setup(t)
    const opened = await service.open(USER, CLIENT)
    await service.refresh(opened.refreshToken, CLIENT, log)
    clock.advance(10 * SECOND - 1)
    t.ok(await service.refresh(opened.refreshToken, CLIENT, log), 'a millisecond before the end: grace')
    clock.advance(1)
    await failsWith(t, service.refresh(opened.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REUSED', 'at the end')
  })
})

t.test('laundering: a spent token is reuse however many rotations came after it', async (t) => {
  t.test('nine quick rotations by a thief, then the victim presents the stolen token', async (t) => {
    const { service, clock, log, calls, revocations } = setup(t)
    const opened = await service.open(USER, CLIENT)
    const sessionId = sessionOf(opened.refreshToken)
    const thief = { ip: '198.51.100.66', userAgent: 'curl/8' }
    let latest = opened.refreshToken
    for (let i = 0; i < 9; i++) {
      clock.advance(SECOND / 10)
      latest = (await service.refresh(latest, thief, log)).refreshToken
    }
    await failsWith(t, service.refresh(opened.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REUSED', 'the victim\'s token, a second later')
    t.equal(calls.length, 1, 'one warning')
    t.match(calls[0], { details: { event: 'refresh_token_reused', userId: USER.id, sessionId, ip: CLIENT.ip } })
    t.ok(revocations.isRevoked(sessionId), 'the thief\'s access tokens are revoked')
    await failsWith(t, service.refresh(latest, thief, log), 'REFRESH_TOKEN_REVOKED', 'the thief\'s latest token')
  })

  t.test('a token spent two months ago on a session refreshed daily since', async (t) => {
    const { service, clock, log } = setup(t)
    const opened = await service.open(USER, CLIENT)
    const chain = await rotate(service, clock, log, opened.refreshToken, 60, DAY)
    await failsWith(t, service.refresh(chain[0]!, CLIENT, log), 'REFRESH_TOKEN_REUSED', 'the first token')
    await failsWith(t, service.refresh(chain.at(-1)!, CLIENT, log), 'REFRESH_TOKEN_REVOKED', 'the current one')
  })
})

t.test('after the grace window the previous token is reuse: the session is revoked and it is logged', async (t) => {
  const { service, clock, log, calls, revocations } = setup(t)
  const opened = await service.open(USER, CLIENT)
  const sessionId = sessionOf(opened.refreshToken)
  clock.advance(DAY)
  const refreshed = await service.refresh(opened.refreshToken, CLIENT, log)

  clock.advance(10 * SECOND)
  const thief = { ip: '198.51.100.66', userAgent: 'curl/8' }
  await failsWith(t, service.refresh(opened.refreshToken, thief, log), 'REFRESH_TOKEN_REUSED', 'the rotated token after the grace')

  t.equal(calls.length, 1, 'one warning')
  t.match(calls[0], { details: { userId: USER.id, sessionId, ip: thief.ip } }, 'naming the user, the session and the address')
  const logged = JSON.stringify(calls)
  for (const token of [opened.refreshToken, refreshed.refreshToken]) {
    const { secret, familyId } = parseRefreshToken(token)!
    t.notOk(logged.includes(secret), 'no refresh token secret in the log')
    t.notOk(logged.includes(familyId), 'no family id in the log')
  }
  t.notOk(logged.includes('rt2.'), 'no refresh token in the log')
  t.notOk(logged.includes('access-token'), 'no access token in the log')
  t.equal(revocations.isRevoked(sessionId), true, 'its access tokens are revoked')

  await failsWith(t, service.refresh(refreshed.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REVOKED', 'the current token of the family')
  await failsWith(t, service.refresh(opened.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REVOKED', 'the spent token again')
  t.equal(calls.length, 1, 'a revoked session is not reported again')
})

t.test('a token naming the family with a wrong secret is reuse, never a way to the current token', async (t) => {
  t.test('a recent generation, inside the grace', async (t) => {
    const { service, clock, log, calls } = setup(t)
    const opened = await service.open(USER, CLIENT)
    const refreshed = await service.refresh(opened.refreshToken, CLIENT, log)
    clock.advance(SECOND)
    await failsWith(t, service.refresh(forge(opened.refreshToken, { secret: randomSecret() }), CLIENT, log), 'REFRESH_TOKEN_REUSED', 'generation 0, a wrong secret')
    t.equal(calls.length, 1, 'logged')
    await failsWith(t, service.refresh(refreshed.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REVOKED', 'the session is over')
  })

  t.test('the current generation', async (t) => {
    const { service, log } = setup(t)
    const opened = await service.open(USER, CLIENT)
    await failsWith(t, service.refresh(forge(opened.refreshToken, { secret: randomSecret() }), CLIENT, log), 'REFRESH_TOKEN_REUSED', 'a wrong secret')
    await failsWith(t, service.refresh(opened.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REVOKED', 'the real token')
  })

  t.test('a generation never issued is unknown: invalid, and nothing is revoked', async (t) => {
    const { service, log, calls, revocations } = setup(t)
    const opened = await service.open(USER, CLIENT)
    for (const generation of [1, 2, 1000]) {
      await failsWith(t, service.refresh(forge(opened.refreshToken, { generation }), CLIENT, log), 'REFRESH_TOKEN_INVALID', `generation ${generation}`)
    }
    t.equal(calls.length, 0)
    t.equal(revocations.size, 0)
    t.ok(await service.refresh(opened.refreshToken, CLIENT, log), 'the real token still works')
  })
})

t.test('with a grace of 0 a rotated token is reuse at once', async (t) => {
  const { service, log } = setup(t, { refreshReuseGrace: 0 })
  const opened = await service.open(USER, CLIENT)
  const refreshed = await service.refresh(opened.refreshToken, CLIENT, log)
  await failsWith(t, service.refresh(opened.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REUSED', 'the same token again, same instant')
  await failsWith(t, service.refresh(refreshed.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REVOKED', 'its successor')
})

t.test('malformed and unknown tokens are invalid and revoke nothing', async (t) => {
  const { service, log, calls, revocations } = setup(t)
  const opened = await service.open(USER, CLIENT)
  const jwt = 'eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2lnbmF0dXJl'

  const malformed: Array<[string, string]> = [
    ['garbage', 'garbage'], ['empty', ''], ['a JWT', jwt],
    ['another prefix', opened.refreshToken.replace('rt2.', 'rt1.')],
    ['a short secret', opened.refreshToken.slice(0, -1)],
    ['a negative generation', opened.refreshToken.replace(/^rt2\.([^.]+)\.0\./, 'rt2.$1.-1.')]
  ]
  for (const [name, garbage] of malformed) {
    await failsWith(t, service.refresh(garbage, CLIENT, log), 'REFRESH_TOKEN_INVALID', name)
  }
  const unknownFamily = forge(opened.refreshToken, { familyId: newFamilyId() })
  await failsWith(t, service.refresh(unknownFamily, CLIENT, log), 'REFRESH_TOKEN_INVALID', 'a well-formed token of no session')
  const sessionIdAsFamily = forge(opened.refreshToken, { familyId: sessionOf(opened.refreshToken).replaceAll('-', '').slice(0, 22) })
  await failsWith(t, service.refresh(sessionIdAsFamily, CLIENT, log), 'REFRESH_TOKEN_INVALID', 'the public session id in place of the family id')

  const pair = await service.refresh(opened.refreshToken, CLIENT, log)
  t.ok(pair.refreshToken, 'the real token still works')
  t.equal(calls.length, 0, 'nothing logged')
  t.equal(revocations.size, 0, 'nothing revoked')
})

t.test('a session not refreshed for REFRESH_TOKEN_TTL has expired', async (t) => {
  const { service, clock, log, store } = setup(t)
  const opened = await service.open(USER, CLIENT)
  clock.advance(14 * DAY - 1)
  const kept = await service.refresh(opened.refreshToken, CLIENT, log)
  t.equal(kept.refreshExpiresIn, 14 * 86_400, 'just in time: the idle expiry moves forward')

  clock.advance(14 * DAY)
  await failsWith(t, service.refresh(kept.refreshToken, CLIENT, log), 'REFRESH_TOKEN_EXPIRED', 'after the idle TTL')
  t.equal(store.size, 0, 'the store dropped it')
  await failsWith(t, service.refresh(kept.refreshToken, CLIENT, log), 'REFRESH_TOKEN_EXPIRED', 'still expired once the store has forgotten it (its own expiry is past)')
})

t.test('no session outlives SESSION_MAX_AGE; refreshExpiresIn and the access token never go past it', async (t) => {
  const maxAge = 20 * 86_400
  const { service, clock, log, store, issued } = setup(t, { sessionMaxAge: maxAge })
  const absoluteEnd = T0 + maxAge * 1000
  const opened = await service.open(USER, CLIENT)
  t.equal(opened.refreshExpiresIn, 14 * 86_400)

  let token = opened.refreshToken
  for (const day of [10, 15, 19, 20 - 1 / 86_400]) {
    clock.time = T0 + day * DAY
    const pair = await service.refresh(token, CLIENT, log)
    const remaining = Math.floor((absoluteEnd - clock.now()) / 1000)
    t.equal(pair.refreshExpiresIn, remaining, `day ${day}: capped at the absolute end`)
    t.ok(parseRefreshToken(pair.refreshToken)!.expiresAt * 1000 <= absoluteEnd, `day ${day}: the token's expiry is capped too`)
    t.ok(issued.at(-1)!.notAfter <= absoluteEnd, `day ${day}: the access token ends with the session at the latest`)
    t.equal(pair.expiresIn, Math.min(600, remaining), `day ${day}: expiresIn ${pair.expiresIn}`)
    token = pair.refreshToken
  }

  clock.time = absoluteEnd
  await failsWith(t, service.refresh(token, CLIENT, log), 'REFRESH_TOKEN_EXPIRED', 'at the absolute end')
  store.sweep()
  await failsWith(t, service.refresh(token, CLIENT, log), 'REFRESH_TOKEN_EXPIRED', 'after the store swept it')
})

t.test('the access token is capped at the session\'s end: absolute and idle', async (t) => {
  t.test('SESSION_MAX_AGE shorter than ACCESS_TOKEN_TTL', async (t) => {
    const { service, clock, log, issued } = setup(t, { sessionMaxAge: 300, accessTokenTtl: 600 })
    const opened = await service.open(USER, CLIENT)
    t.equal(opened.expiresIn, 300, 'expiresIn: the session\'s five minutes')
    t.equal(issued[0]!.notAfter, T0 + 300 * SECOND, 'the access token is asked to end with the session')
    clock.advance(290 * SECOND)
    const late = await service.refresh(opened.refreshToken, CLIENT, log)
    t.equal(late.expiresIn, 10, 'ten seconds before the end: ten seconds')
    t.equal(late.refreshExpiresIn, 10)
    t.equal(issued[1]!.notAfter, T0 + 300 * SECOND)
  })

  t.test('REFRESH_TOKEN_TTL shorter than ACCESS_TOKEN_TTL', async (t) => {
    const { service, clock, log, issued } = setup(t, { refreshTokenTtl: 120, accessTokenTtl: 600 })
    const opened = await service.open(USER, CLIENT)
    t.equal(opened.expiresIn, 120)
    t.equal(issued[0]!.notAfter, T0 + 120 * SECOND)
    clock.advance(60 * SECOND)
    const pair = await service.refresh(opened.refreshToken, CLIENT, log)
    t.equal(pair.expiresIn, 120, 'the idle end moved')
    t.equal(issued[1]!.notAfter, T0 + 180 * SECOND)
  })
})

t.test('an unknown token is expired when its own expiry is past, else invalid', async (t) => {
  const { service, log } = setup(t)
  const opened = await service.open(USER, CLIENT)
  const familyId = newFamilyId()

  await failsWith(t, service.refresh(forge(opened.refreshToken, { familyId, expiresAt: (T0 - 16 * DAY) / 1000 }), CLIENT, log),
    'REFRESH_TOKEN_EXPIRED', 'its expiry has passed')
  await failsWith(t, service.refresh(forge(opened.refreshToken, { familyId, expiresAt: T0 / 1000 }), CLIENT, log),
    'REFRESH_TOKEN_EXPIRED', 'its expiry is now')
  await failsWith(t, service.refresh(forge(opened.refreshToken, { familyId, expiresAt: (T0 + DAY) / 1000 }), CLIENT, log),
    'REFRESH_TOKEN_INVALID', 'one that should still be alive is invalid')

  const pastExpiryOfALiveSession = forge(opened.refreshToken, { expiresAt: (T0 - DAY) / 1000 })
  t.ok(await service.refresh(pastExpiryOfALiveSession, CLIENT, log), 'the expiry is informational: a session the store knows decides')
})

t.test('logout revokes the session, its refresh tokens and its access tokens, once', async (t) => {
  const { service, log, revocations } = setup(t)
  const opened = await service.open(USER, CLIENT)
  const sessionId = sessionOf(opened.refreshToken)
  t.equal(revocations.isRevoked(sessionId), false)

  t.equal(await service.logout({ refreshToken: opened.refreshToken }, CLIENT), true, 'a live session: revoked')
  t.equal(revocations.isRevoked(sessionId), true, 'the session id is in the revocation list')
  t.equal(revocations.size, 1)
  await failsWith(t, service.refresh(opened.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REVOKED', 'its refresh token')
  t.equal(await service.logout({ refreshToken: opened.refreshToken }, CLIENT), false, 'again: nothing to revoke, no error')
  t.equal(await service.logout({ sessionId }, CLIENT), false, 'by its session id: nothing either')
  t.equal(await service.logout({ refreshToken: opened.refreshToken, sessionId }, CLIENT), false, 'both')
  t.equal(revocations.size, 1, 'no new revocation entry')

  const byAccess = await service.open(USER, CLIENT)
  t.equal(await service.logout({ sessionId: sessionOf(byAccess.refreshToken) }, CLIENT), true, 'by the access token\'s session id')
  t.equal(revocations.isRevoked(sessionOf(byAccess.refreshToken)), true)
  await failsWith(t, service.refresh(byAccess.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REVOKED', 'a session logged out by id')
  t.equal(await service.logout({ sessionId: sessionIdOf(newFamilyId()) }, CLIENT), false, 'an unknown session id is not an error')
  t.equal(revocations.size, 2)

  const both = await service.open(USER, CLIENT)
  t.equal(await service.logout({ refreshToken: both.refreshToken, sessionId: sessionOf(both.refreshToken) }, CLIENT), true, 'refresh and access token of one session')
  t.equal(revocations.size, 3, 'one entry')

  const parallel = await service.open(USER, CLIENT)
  const answers = await Promise.all(Array.from({ length: 5 }, () => service.logout({ refreshToken: parallel.refreshToken }, CLIENT)))
  t.strictSame(answers.filter(Boolean), [true], 'five parallel logouts of one session: one revokes')
  t.equal(revocations.size, 4, 'one entry')
})

t.test('logout with a refresh token: any token the session issued ends it, spent ones too; nothing else does', async (t) => {
  const { service, clock, log, revocations } = setup(t)
  const opened = await service.open(USER, CLIENT)
  const sessionId = sessionOf(opened.refreshToken)

  t.equal(await service.logout({ refreshToken: forge(opened.refreshToken, { generation: 1 }) }, CLIENT), false, 'a generation not issued')
  t.equal(await service.logout({ refreshToken: forge(opened.refreshToken, { familyId: newFamilyId() }) }, CLIENT), false, 'another family')
  t.equal(await service.logout({ refreshToken: 'garbage' }, CLIENT), false, 'garbage')
  t.equal(revocations.isRevoked(sessionId), false, 'not revoked')
  const refreshed = await service.refresh(opened.refreshToken, CLIENT, log)
  t.ok(refreshed.refreshToken, 'the session still works')

  // Long after its rotation: on refresh it would be reuse; on logout its holder wants the session over, thief or not.
  clock.advance(600 * SECOND)
  t.equal(await service.logout({ refreshToken: opened.refreshToken }, CLIENT), true, 'a token spent long ago logs the session out')
  t.equal(revocations.isRevoked(sessionId), true)
  await failsWith(t, service.refresh(refreshed.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REVOKED', 'the current token after that')

  const other = await service.open(USER, CLIENT)
  t.equal(await service.logout({ refreshToken: forge(other.refreshToken, { secret: randomSecret() }) }, CLIENT), true,
    'a wrong secret for a family: only a holder can name it, as on refresh')
})

t.test('with rotation off a refresh returns the same token and extends the session', async (t) => {
  const { service, clock, log } = setup(t, { rotateRefreshTokens: false })
  const opened = await service.open(USER, CLIENT)
  for (const day of [10, 20, 30]) {
    clock.time = T0 + day * DAY
    const pair = await service.refresh(opened.refreshToken, CLIENT, log)
    t.equal(pair.refreshToken, opened.refreshToken, `day ${day}: the same refresh token`)
    t.equal(pair.refreshExpiresIn, 14 * 86_400, `day ${day}: the idle expiry moved forward`)
  }
})

t.test('REFRESH_BIND_IP refuses a refresh from another address', async (t) => {
  const { service, log, calls } = setup(t, { refreshBindIp: true })
  const opened = await service.open(USER, CLIENT)
  const elsewhere = { ip: '198.51.100.66', userAgent: CLIENT.userAgent }
  await failsWith(t, service.refresh(opened.refreshToken, elsewhere, log), 'REFRESH_TOKEN_INVALID', 'another address')
  t.equal(calls.length, 1, 'logged at warn')
  t.match(calls[0], { details: { userId: USER.id, sessionId: sessionOf(opened.refreshToken), ip: elsewhere.ip } })
  t.notOk(JSON.stringify(calls).includes(parseRefreshToken(opened.refreshToken)!.secret), 'without the token')

  const pair = await service.refresh(opened.refreshToken, CLIENT, log)
  t.ok(pair.refreshToken, 'the address that logged in may refresh: the refused attempt spent nothing')
  await failsWith(t, service.refresh(opened.refreshToken, elsewhere, log), 'REFRESH_TOKEN_INVALID', 'the rotated token inside its grace, from elsewhere')
  t.equal((await service.refresh(opened.refreshToken, CLIENT, log)).refreshToken, pair.refreshToken, 'and from the address that logged in: the grace answer')

  const unbound = setup(t)
  const other = await unbound.service.open(USER, CLIENT)
  t.ok(await unbound.service.refresh(other.refreshToken, elsewhere, unbound.log), 'without REFRESH_BIND_IP any address may refresh')
})

t.test('listing and revoking a user\'s sessions', async (t) => {
  const { service, log, revocations, clock } = setup(t)
  const a = await service.open(USER, CLIENT)
  clock.advance(SECOND)
  const b = await service.open(USER, { ip: '198.51.100.1', userAgent: 'phone' })
  clock.advance(SECOND)
  const c = await service.open(USER, CLIENT)
  const stranger = await service.open(STRANGER, CLIENT)
  const [idA, idB, idC] = [a, b, c].map(({ refreshToken }) => sessionOf(refreshToken))

  const listed = await service.list(USER.id, idB!)
  t.strictSame(listed.map(({ id, current }) => [id, current]), [[idA, false], [idB, true], [idC, false]], 'oldest first, the caller\'s marked')
  t.match(listed[1], { ip: '198.51.100.1', userAgent: 'phone', createdAt: T0 + SECOND })

  t.equal(await service.isLiveSessionOf(USER.id, idA!), true)
  t.equal(await service.isLiveSessionOf(STRANGER.id, idA!), false, 'not another user\'s')
  await failsWith(t, service.revokeOwned(USER.id, sessionOf(stranger.refreshToken), CLIENT), 'NOT_FOUND', 'another user\'s session')
  await service.revokeOwned(USER.id, idA!, CLIENT)
  t.equal(revocations.isRevoked(idA!), true)
  t.equal(await service.isLiveSessionOf(USER.id, idA!), false, 'a revoked session is not live')
  await failsWith(t, service.revokeOwned(USER.id, idA!, CLIENT), 'NOT_FOUND', 'a session already deleted')
  await failsWith(t, service.refresh(a.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REVOKED', 'a deleted session')

  await service.revokeAll(USER.id, { ...CLIENT, sessionId: idC }, { keepCallerSession: true })
  await failsWith(t, service.refresh(b.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REVOKED', 'logout-others: the others')
  t.ok(await service.refresh(c.refreshToken, CLIENT, log), 'logout-others: the caller\'s own session goes on')
  t.ok(await service.refresh(stranger.refreshToken, CLIENT, log), 'another user is unaffected')
  t.strictSame((await service.list(USER.id, idC!)).map(({ id }) => id), [idC])
})

t.test('a login past maxSessionsPerUser ends the least recently used session', async (t) => {
  const { service, clock, log, revocations } = setup(t, { maxSessionsPerUser: 2 })
  const a = await service.open(USER, CLIENT)
  clock.advance(SECOND)
  const b = await service.open(USER, CLIENT)
  clock.advance(SECOND)
  const aNow = await service.refresh(a.refreshToken, CLIENT, log)
  await service.open(STRANGER, CLIENT)
  clock.advance(SECOND)
  const c = await service.open(USER, CLIENT)

  const idB = sessionOf(b.refreshToken)
  t.ok(revocations.isRevoked(idB), 'b, used least recently, is ended with its access tokens')
  await failsWith(t, service.refresh(b.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REVOKED', 'b\'s refresh token')
  t.strictSame((await service.list(USER.id, '')).map(({ id }) => id), [a, c].map(({ refreshToken }) => sessionOf(refreshToken)),
    'a (refreshed since) and c remain')
  t.ok(await service.refresh(aNow.refreshToken, CLIENT, log), 'a goes on')
  t.equal((await service.list(STRANGER.id, '')).length, 1, 'another user\'s sessions do not count')
})

t.test('credential versions: a session opened or kept under an older one is over', async (t) => {
  t.test('open refuses a user whose credentials changed since their password was checked', async (t) => {
    const { service, facts, issued, store } = setup(t)
    facts.set(USER.id, { credentialVersion: 1, emailVerified: false, roles: [], disabled: false })
    await failsWith(t, service.open(USER, CLIENT), 'INVALID_CREDENTIALS', 'checked under version 0, now 1')
    t.equal(issued.length, 0, 'no access token signed')
    t.strictSame(await service.list(USER.id, ''), [], 'no live session left')
    t.equal(store.size, 1, 'the session was created, then ended')
    facts.delete(USER.id)
    await failsWith(t, service.open(USER, CLIENT), 'INVALID_CREDENTIALS', 'a user deleted meanwhile')
  })

  t.test('refresh ends a session whose version is older than the user\'s', async (t) => {
    const { service, clock, log, facts, revocations } = setup(t)
    const opened = await service.open(USER, CLIENT)
    const rotated = await service.refresh(opened.refreshToken, CLIENT, log)
    facts.set(USER.id, { credentialVersion: 1, emailVerified: false, roles: [], disabled: false })
    clock.advance(SECOND)
    await failsWith(t, service.refresh(opened.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REVOKED', 'through the grace')
    t.ok(revocations.isRevoked(sessionOf(opened.refreshToken)), 'its access tokens revoked')
    await failsWith(t, service.refresh(rotated.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REVOKED', 'the current token')

    const deleted = await service.open(STRANGER, CLIENT)
    facts.delete(STRANGER.id)
    await failsWith(t, service.refresh(deleted.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REVOKED', 'a user that no longer exists')
  })

  t.test('changeCredentials ends every session but the caller\'s, which goes on', async (t) => {
    const { service, log, facts, revocations } = setup(t)
    const [a, b, c] = [await service.open(USER, CLIENT), await service.open(USER, CLIENT), await service.open(USER, CLIENT)]
    const stranger = await service.open(STRANGER, CLIENT)
    await service.changeCredentials(USER, { ...CLIENT, sessionId: sessionOf(a.refreshToken) }, async () => {
      facts.set(USER.id, { credentialVersion: 1, emailVerified: false, roles: [], disabled: false })
      return 1
    })
    const kept = await service.refresh(a.refreshToken, CLIENT, log)
    t.ok(kept, 'the caller\'s session refreshes')
    t.ok(await service.refresh(kept.refreshToken, CLIENT, log), 'and goes on')
    for (const [name, pair] of [['b', b], ['c', c]] as Array<[string, TokenPair]>) {
      await failsWith(t, service.refresh(pair.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REVOKED', name)
      t.ok(revocations.isRevoked(sessionOf(pair.refreshToken)), `${name}'s access tokens revoked`)
    }
    t.ok(await service.refresh(stranger.refreshToken, CLIENT, log), 'another user is unaffected')
    await failsWith(t, service.open(USER, CLIENT), 'INVALID_CREDENTIALS', 'a login whose password was checked before the change')
    t.ok(await service.open({ id: USER.id, credentialVersion: 1 }, CLIENT), 'a login checked after it opens')
  })

  t.test('a change that finds no user is refused, and ends nothing', async (t) => {
    const { service, log } = setup(t)
    const a = await service.open(USER, CLIENT)
    const b = await service.open(USER, CLIENT)
    await failsWith(t, service.changeCredentials(USER, { ...CLIENT, sessionId: sessionOf(a.refreshToken) }, async () => undefined), 'INVALID_CREDENTIALS', 'no such user')
    t.ok(await service.refresh(b.refreshToken, CLIENT, log), 'the other session goes on')
    t.ok(await service.refresh(a.refreshToken, CLIENT, log), 'and the caller\'s')
  })

  t.test('a change at the same moment as another: the kept session follows the latest version', async (t) => {
    const { service, log, facts } = setup(t)
    const a = await service.open(USER, CLIENT)
    await service.changeCredentials(USER, { ...CLIENT, sessionId: sessionOf(a.refreshToken) }, async () => {
      facts.set(USER.id, { credentialVersion: 2, emailVerified: false, roles: [], disabled: false })
      return 2
    })
    t.ok(await service.refresh(a.refreshToken, CLIENT, log), 'the caller\'s session refreshes')
  })

  t.test('a login in flight (session created, user not yet re-read) during a change is ended', async (t) => {
    const { service, log, facts, gate, store } = setup(t)
    const caller = await service.open(USER, CLIENT)
    let release!: () => void
    gate.hold = new Promise((resolve) => { release = resolve })
    const login = service.open(USER, CLIENT)
    // Let the login create its session and wait on the user's facts.
    await new Promise((resolve) => setImmediate(resolve))
    t.equal(store.size, 2, 'the in-flight session exists')
    delete gate.hold
    await service.changeCredentials(USER, { ...CLIENT, sessionId: sessionOf(caller.refreshToken) }, async () => {
      facts.set(USER.id, { credentialVersion: 1, emailVerified: false, roles: [], disabled: false })
      return 1
    })
    release()
    await failsWith(t, login, 'INVALID_CREDENTIALS', 'the login')
    t.strictSame((await service.list(USER.id, '')).map(({ id }) => id), [sessionOf(caller.refreshToken)], 'only the caller\'s session is live')
    t.ok(await service.refresh(caller.refreshToken, CLIENT, log), 'and it goes on')
  })

  t.test('a login whose user cannot be read afresh fails, and leaves no session behind', async (t) => {
    const { service, outage } = setup(t)
    outage.error = new ServiceError('STORE_UNAVAILABLE')
    await failsWith(t, service.open(USER, CLIENT), 'STORE_UNAVAILABLE', 'the database\'s failure is the answer')
    t.strictSame(await service.list(USER.id, ''), [], 'no session nobody holds')
  })

  t.test('a login refused for a credential change makes no room for itself: the per-user limit ends nothing', async (t) => {
    const { service, log, facts } = setup(t, { maxSessionsPerUser: 1 })
    const caller = await service.open(USER, CLIENT)
    await service.changeCredentials(USER, { ...CLIENT, sessionId: sessionOf(caller.refreshToken) }, async () => {
      facts.set(USER.id, { credentialVersion: 1, emailVerified: false, roles: [], disabled: false })
      return 1
    })
    // Its password was checked under version 0, before the change.
    await failsWith(t, service.open(USER, CLIENT), 'INVALID_CREDENTIALS', 'the stale login')
    t.ok(await service.refresh(caller.refreshToken, CLIENT, log), 'the caller\'s session, the only one allowed, goes on')
  })
})

t.test('each lifecycle step records its security event, with the client, and each refresh its outcome', async (t) => {
  const { service, clock, log, events, refreshes } = setup(t)
  const PHONE: ClientInfo = { ip: '198.51.100.9', userAgent: 'phone/2.0' }
  const a = await service.open(USER, CLIENT)
  const b = await service.open(USER, PHONE)
  const idA = sessionOf(a.refreshToken)
  const idB = sessionOf(b.refreshToken)
  t.strictSame(events, [
    { type: 'login', userId: USER.id, sessionId: idA, ...CLIENT },
    { type: 'login', userId: USER.id, sessionId: idB, ...PHONE }
  ], 'a login: the user, the new session, the client')

  events.length = 0
  const rotated = await service.refresh(a.refreshToken, CLIENT, log)
  await service.refresh(a.refreshToken, CLIENT, log)
  t.strictSame(events, [], 'refreshes, grace included, record nothing')
  clock.advance(11 * SECOND)
  await failsWith(t, service.refresh(a.refreshToken, PHONE, log), 'REFRESH_TOKEN_REUSED', 'reuse after the grace')
  t.strictSame(events, [{ type: 'refresh_reuse_detected', userId: USER.id, sessionId: idA, ...PHONE }], 'reuse: the client that came back with the spent token')
  await failsWith(t, service.refresh(rotated.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REVOKED', 'the session is over')
  await failsWith(t, service.refresh('garbage', CLIENT, log), 'REFRESH_TOKEN_INVALID', 'garbage')
  t.strictSame(refreshes, ['rotated', 'grace', 'reused', 'revoked', 'invalid'], 'each refresh counted by outcome')

  events.length = 0
  t.equal(await service.logout({ refreshToken: b.refreshToken }, PHONE), true)
  t.equal(await service.logout({ refreshToken: b.refreshToken, sessionId: idB }, PHONE), false)
  t.strictSame(events, [{ type: 'logout', userId: USER.id, sessionId: idB, ...PHONE }], 'a logout once, none for one that revoked nothing')

  const c = await service.open(USER, CLIENT)
  const d = await service.open(USER, PHONE)
  const e = await service.open(USER, PHONE)
  events.length = 0
  await service.revokeOwned(USER.id, sessionOf(d.refreshToken), CLIENT)
  await service.revokeAll(USER.id, { ...CLIENT, sessionId: sessionOf(c.refreshToken) }, { keepCallerSession: true })
  await service.changeCredentials(USER, { ...CLIENT, sessionId: sessionOf(c.refreshToken) }, async () => 1)
  await service.revokeAll(USER.id, { ...PHONE, sessionId: sessionOf(e.refreshToken) })
  t.strictSame(events, [
    { type: 'session_revoked', userId: USER.id, sessionId: sessionOf(d.refreshToken), ...CLIENT },
    { type: 'sessions_revoked', userId: USER.id, sessionId: sessionOf(c.refreshToken), ...CLIENT },
    { type: 'password_changed', userId: USER.id, sessionId: sessionOf(c.refreshToken), ...CLIENT },
    { type: 'sessions_revoked', userId: USER.id, sessionId: sessionOf(e.refreshToken), ...PHONE }
  ], 'deleting a session names the one that ended; logout-others, a password change and logout-all name the caller\'s')
})

t.test('disabled accounts and roles', async (t) => {
  const enabled: UserFacts = { credentialVersion: 0, emailVerified: false, roles: [], disabled: false }

  t.test('access tokens carry the user\'s roles as the user cache has them at each issue', async (t) => {
    const { service, facts, issuedFacts, log } = setup(t)
    facts.set(USER.id, { ...enabled, roles: ['admin', 'reports'] })
    const opened = await service.open(USER, CLIENT)
    facts.set(USER.id, { ...enabled, roles: ['reports'], emailVerified: true })
    await service.refresh(opened.refreshToken, CLIENT, log)
    t.strictSame(issuedFacts, [{ emailVerified: false, roles: ['admin', 'reports'] }, { emailVerified: true, roles: ['reports'] }])
  })

  t.test('a login whose account was disabled while its password was checked: ACCOUNT_DISABLED, and no session', async (t) => {
    const { service, facts, issued } = setup(t)
    facts.set(USER.id, { ...enabled, disabled: true })
    await failsWith(t, service.open(USER, CLIENT), 'ACCOUNT_DISABLED', 'disabled meanwhile')
    t.equal(issued.length, 0, 'no access token signed')
    t.strictSame(await service.list(USER.id, ''), [], 'no live session left')
    facts.set(USER.id, { ...enabled, disabled: true, credentialVersion: 1 })
    await failsWith(t, service.open(USER, CLIENT), 'ACCOUNT_DISABLED', 'disabled and its password changed: the disabling is what it is told')
  })

  t.test('a refresh of a disabled account ends its session: ACCOUNT_DISABLED, then again for the ended session', async (t) => {
    const { service, facts, log, revocations, refreshes } = setup(t)
    const opened = await service.open(USER, CLIENT)
    facts.set(USER.id, { ...enabled, disabled: true })
    await failsWith(t, service.refresh(opened.refreshToken, CLIENT, log), 'ACCOUNT_DISABLED', 'a cache that already knows')
    t.ok(revocations.isRevoked(sessionOf(opened.refreshToken)), 'its access tokens revoked')
    t.strictSame(await service.list(USER.id, ''), [], 'the session is over')
    await failsWith(t, service.refresh(opened.refreshToken, CLIENT, log), 'ACCOUNT_DISABLED', 'the ended session says why')
    t.strictSame(refreshes, ['disabled', 'disabled'], 'counted as refreshes of a disabled account')
  })

  t.test('a session ended by a disabling says ACCOUNT_DISABLED; once enabled again, it stays revoked', async (t) => {
    const { service, facts, log } = setup(t)
    const opened = await service.open(USER, CLIENT)
    await service.endAllSessions(USER.id, async () => { facts.set(USER.id, { ...enabled, disabled: true }) })
    await failsWith(t, service.refresh(opened.refreshToken, CLIENT, log), 'ACCOUNT_DISABLED', 'disabled')
    facts.set(USER.id, enabled)
    await failsWith(t, service.refresh(opened.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REVOKED', 'enabled again: the session is still over')
  })

  t.test('a revoked session whose user cannot be read answers REFRESH_TOKEN_REVOKED, not a store failure', async (t) => {
    const { service, facts, log } = setup(t)
    const opened = await service.open(USER, CLIENT)
    await service.revokeAll(USER.id, CLIENT)
    await failsWith(t, service.refresh(opened.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REVOKED', 'an enabled user')
    facts.get = () => { throw new Error('database down') }
    await failsWith(t, service.refresh(opened.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REVOKED', 'the user unreadable')
  })

  t.test('an admin ending every session is recorded with the admin as the actor, and no session of the admin\'s', async (t) => {
    const { service, events } = setup(t)
    const opened = await service.open(USER, CLIENT)
    await service.revokeAllByAdmin(USER.id, { id: STRANGER.id, ip: '198.51.100.1', userAgent: 'admin-console' })
    t.strictSame(await service.list(USER.id, ''), [], 'every session ended')
    t.ok(opened, 'it had one')
    t.match(events.at(-1), { type: 'sessions_revoked', userId: USER.id, actorId: STRANGER.id, ip: '198.51.100.1', userAgent: 'admin-console' })
    t.notOk('sessionId' in events.at(-1)!, 'names no session')
  })
})
