import { randomBytes } from 'node:crypto'
import t from 'tap'
import type { Test } from 'tap'
import type { ErrorCode } from '../src/errors.js'
import { ServiceError } from '../src/errors.js'
import { MemorySessionStore } from '../src/memory-session-store.js'
import { formatRefreshToken, newSessionId, parseRefreshToken, sessionStartedAt } from '../src/refresh-token.js'
import { RevocationList } from '../src/revocation-list.js'
import { SessionService, type ClientInfo, type SessionPolicy } from '../src/sessions.js'
import { FakeClock } from './helpers.js'

const SECOND = 1000
const DAY = 86_400 * SECOND
const T0 = Date.UTC(2030, 0, 1)
const CLIENT: ClientInfo = { ip: '203.0.113.7', userAgent: 'test-agent/1.0' }
const USER = 'user-1'

const POLICY: SessionPolicy = {
  accessTokenTtl: 600,
  refreshTokenTtl: 14 * 86_400,
  sessionMaxAge: 90 * 86_400,
  rotateRefreshTokens: true,
  refreshReuseGrace: 10,
  refreshBindIp: false
}

interface LogCall { details: Record<string, unknown>, message: string }

function setup (t: Test, policy: Partial<SessionPolicy> = {}) {
  const clock = new FakeClock(T0)
  const store = new MemorySessionStore(clock)
  t.teardown(() => store.close())
  const fullPolicy = { ...POLICY, ...policy }
  const revocations = new RevocationList(clock, fullPolicy.accessTokenTtl * 1000)
  const issued: Array<{ userId: string, sessionId: string }> = []
  const service = new SessionService({
    store,
    clock,
    policy: fullPolicy,
    revocations,
    issueAccessToken: (userId, sessionId) => {
      issued.push({ userId, sessionId })
      return `access-token-${issued.length}`
    }
  })
  const calls: LogCall[] = []
  const log = { warn: (details: object, message: string) => { calls.push({ details: details as Record<string, unknown>, message }) } }
  return { clock, store, revocations, service, issued, log, calls }
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

function sessionOf (token: string): string {
  return parseRefreshToken(token)!.sessionId
}

t.test('open returns a token pair for a new session', async (t) => {
  const { service, issued, store } = setup(t)
  const pair = await service.open(USER, CLIENT)
  t.match(pair, { accessToken: 'access-token-1', tokenType: 'Bearer', expiresIn: 600, refreshExpiresIn: 14 * 86_400 })
  const token = parseRefreshToken(pair.refreshToken)
  t.ok(token, 'the refresh token parses')
  t.equal(sessionStartedAt(token!.sessionId), T0, 'its session id carries the login time')
  t.equal(token!.expiresAt, (T0 + 14 * DAY) / 1000, 'and its idle expiry')
  t.strictSame(issued, [{ userId: USER, sessionId: token!.sessionId }], 'the access token is for this user and session')
  t.equal(store.size, 1)

  const other = await service.open(USER, CLIENT)
  t.not(sessionOf(other.refreshToken), token!.sessionId, 'every login is a new session')
})

t.test('refresh rotates: each token is replaced by a new one of the same session', async (t) => {
  const { service, clock, issued, log, calls } = setup(t)
  const opened = await service.open(USER, CLIENT)
  const sessionId = sessionOf(opened.refreshToken)

  clock.advance(DAY)
  const first = await service.refresh(opened.refreshToken, CLIENT, log)
  t.not(first.refreshToken, opened.refreshToken, 'a new refresh token')
  t.equal(sessionOf(first.refreshToken), sessionId, 'of the same session')
  t.match(first, { accessToken: 'access-token-2', tokenType: 'Bearer', expiresIn: 600, refreshExpiresIn: 14 * 86_400 })
  t.strictSame(issued[1], { userId: USER, sessionId })

  clock.advance(DAY)
  const second = await service.refresh(first.refreshToken, CLIENT, log)
  t.not(second.refreshToken, first.refreshToken, 'the successor rotates in turn')
  t.equal(calls.length, 0, 'nothing logged')
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
  t.match(calls[0], { details: { userId: USER, sessionId, ip: thief.ip } }, 'naming the user, the session and the address')
  const logged = JSON.stringify(calls)
  for (const token of [opened.refreshToken, refreshed.refreshToken]) {
    const { secret } = parseRefreshToken(token)!
    t.notOk(logged.includes(secret), 'no refresh token secret in the log')
  }
  t.notOk(logged.includes('rt1.'), 'no refresh token in the log')
  t.notOk(logged.includes('access-token'), 'no access token in the log')
  t.equal(revocations.isRevoked(sessionId), true, 'its access tokens are revoked')

  await failsWith(t, service.refresh(refreshed.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REVOKED', 'the current token of the family')
})

t.test('with a grace of 0 a rotated token is reuse at once', async (t) => {
  const { service, log } = setup(t, { refreshReuseGrace: 0 })
  const opened = await service.open(USER, CLIENT)
  const refreshed = await service.refresh(opened.refreshToken, CLIENT, log)
  await failsWith(t, service.refresh(opened.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REUSED', 'the same token again, same instant')
  await failsWith(t, service.refresh(refreshed.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REVOKED', 'its successor')
})

t.test('malformed and unknown tokens are invalid and revoke nothing', async (t) => {
  const { service, log, calls } = setup(t)
  const opened = await service.open(USER, CLIENT)
  const token = parseRefreshToken(opened.refreshToken)!
  const jwt = 'eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2lnbmF0dXJl'

  const malformed: Array<[string, string]> = [
    ['garbage', 'garbage'], ['empty', ''], ['a JWT', jwt], ['another prefix', opened.refreshToken.replace('rt1.', 'rt0.')]
  ]
  for (const [name, garbage] of malformed) {
    await failsWith(t, service.refresh(garbage, CLIENT, log), 'REFRESH_TOKEN_INVALID', name)
  }
  const unknownSession = formatRefreshToken({ ...token, sessionId: newSessionId(T0) })
  await failsWith(t, service.refresh(unknownSession, CLIENT, log), 'REFRESH_TOKEN_INVALID', 'a well-formed token of no session')
  const wrongSecret = formatRefreshToken({ ...token, secret: randomBytes(32).toString('base64url') })
  await failsWith(t, service.refresh(wrongSecret, CLIENT, log), 'REFRESH_TOKEN_INVALID', 'a guessed secret for a real session')

  const pair = await service.refresh(opened.refreshToken, CLIENT, log)
  t.ok(pair.refreshToken, 'the real token still works')
  t.equal(calls.length, 0, 'nothing logged')
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
  await failsWith(t, service.refresh(kept.refreshToken, CLIENT, log), 'REFRESH_TOKEN_EXPIRED', 'still expired once the store has forgotten it')
})

t.test('no session outlives SESSION_MAX_AGE, and refreshExpiresIn never goes past it', async (t) => {
  const maxAge = 20 * 86_400
  const { service, clock, log, store } = setup(t, { sessionMaxAge: maxAge })
  const absoluteEnd = T0 + maxAge * 1000
  const opened = await service.open(USER, CLIENT)
  t.equal(opened.refreshExpiresIn, 14 * 86_400)

  let token = opened.refreshToken
  for (const day of [10, 15, 19, 20 - 1 / 86_400]) {
    clock.time = T0 + day * DAY
    const pair = await service.refresh(token, CLIENT, log)
    const remaining = Math.floor((absoluteEnd - clock.now()) / 1000)
    t.ok(pair.refreshExpiresIn <= remaining, `day ${day}: refreshExpiresIn ${pair.refreshExpiresIn} within the remaining ${remaining} s`)
    t.equal(pair.refreshExpiresIn, remaining, `day ${day}: capped at the absolute end`)
    t.ok(parseRefreshToken(pair.refreshToken)!.expiresAt * 1000 <= absoluteEnd, `day ${day}: the token's expiry is capped too`)
    token = pair.refreshToken
  }

  clock.time = absoluteEnd
  await failsWith(t, service.refresh(token, CLIENT, log), 'REFRESH_TOKEN_EXPIRED', 'at the absolute end')
  store.sweep()
  await failsWith(t, service.refresh(token, CLIENT, log), 'REFRESH_TOKEN_EXPIRED', 'after the store swept it')
})

t.test('a lapsed token of a session the store no longer knows is expired, not invalid', async (t) => {
  const { service, log } = setup(t)
  const opened = await service.open(USER, CLIENT)
  const template = parseRefreshToken(opened.refreshToken)!

  const pastExpiry = formatRefreshToken({ ...template, sessionId: newSessionId(T0 - 30 * DAY), expiresAt: (T0 - 16 * DAY) / 1000 })
  await failsWith(t, service.refresh(pastExpiry, CLIENT, log), 'REFRESH_TOKEN_EXPIRED', 'its encoded expiry has passed')

  const tooOld = formatRefreshToken({ ...template, sessionId: newSessionId(T0 - 91 * DAY), expiresAt: (T0 + DAY) / 1000 })
  await failsWith(t, service.refresh(tooOld, CLIENT, log), 'REFRESH_TOKEN_EXPIRED', 'its session started more than SESSION_MAX_AGE ago')

  const recent = formatRefreshToken({ ...template, sessionId: newSessionId(T0 - DAY), expiresAt: (T0 + DAY) / 1000 })
  await failsWith(t, service.refresh(recent, CLIENT, log), 'REFRESH_TOKEN_INVALID', 'but one that should still be alive is invalid')
})

t.test('close revokes the session, its refresh tokens and its access tokens', async (t) => {
  const { service, log, revocations } = setup(t)
  const opened = await service.open(USER, CLIENT)
  const sessionId = sessionOf(opened.refreshToken)
  t.equal(revocations.isRevoked(sessionId), false)

  await service.close({ refreshToken: opened.refreshToken })
  t.equal(revocations.isRevoked(sessionId), true, 'the session id is in the revocation list')
  await failsWith(t, service.refresh(opened.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REVOKED', 'its refresh token')
  await service.close({ refreshToken: opened.refreshToken })
  t.pass('closing again is not an error')

  const byAccess = await service.open(USER, CLIENT)
  await service.close({ sessionId: sessionOf(byAccess.refreshToken) })
  t.equal(revocations.isRevoked(sessionOf(byAccess.refreshToken)), true, 'by the access token\'s session id')
  await failsWith(t, service.refresh(byAccess.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REVOKED', 'a session closed by id')
  await service.close({ sessionId: newSessionId(T0) })
  t.pass('an unknown session id is not an error')
})

t.test('close with a token that is not the session\'s current or previous one revokes nothing', async (t) => {
  const { service, log, revocations } = setup(t)
  const opened = await service.open(USER, CLIENT)
  const sessionId = sessionOf(opened.refreshToken)
  const forged = formatRefreshToken({ ...parseRefreshToken(opened.refreshToken)!, secret: randomBytes(32).toString('base64url') })

  await service.close({ refreshToken: forged })
  await service.close({ refreshToken: 'garbage' })
  t.equal(revocations.isRevoked(sessionId), false, 'not revoked by a forged token')
  const refreshed = await service.refresh(opened.refreshToken, CLIENT, log)
  t.ok(refreshed.refreshToken, 'the session still works')

  await service.close({ refreshToken: opened.refreshToken })
  t.equal(revocations.isRevoked(sessionId), true, 'the just-rotated (previous) token can still log out')
  await failsWith(t, service.refresh(refreshed.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REVOKED', 'the current token after that')
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
  t.match(calls[0], { details: { userId: USER, sessionId: sessionOf(opened.refreshToken), ip: elsewhere.ip } })
  t.notOk(JSON.stringify(calls).includes(parseRefreshToken(opened.refreshToken)!.secret), 'without the token')

  const pair = await service.refresh(opened.refreshToken, CLIENT, log)
  t.ok(pair.refreshToken, 'the address that logged in may refresh: the refused attempt spent nothing')

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
  const stranger = await service.open('user-2', CLIENT)
  const [idA, idB, idC] = [a, b, c].map(({ refreshToken }) => sessionOf(refreshToken))

  const listed = await service.list(USER, idB!)
  t.strictSame(listed.map(({ id, current }) => [id, current]), [[idA, false], [idB, true], [idC, false]], 'oldest first, the caller\'s marked')
  t.match(listed[1], { ip: '198.51.100.1', userAgent: 'phone', createdAt: T0 + SECOND })

  await failsWith(t, service.revokeOwned(USER, sessionOf(stranger.refreshToken)), 'NOT_FOUND', 'another user\'s session')
  await service.revokeOwned(USER, idA!)
  t.equal(revocations.isRevoked(idA!), true)
  await failsWith(t, service.refresh(a.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REVOKED', 'a deleted session')

  await service.revokeAll(USER, idC)
  await failsWith(t, service.refresh(b.refreshToken, CLIENT, log), 'REFRESH_TOKEN_REVOKED', 'logout-others: the others')
  t.ok(await service.refresh(c.refreshToken, CLIENT, log), 'logout-others: the caller\'s own session goes on')
  t.ok(await service.refresh(stranger.refreshToken, CLIENT, log), 'another user is unaffected')
  t.strictSame((await service.list(USER, idC!)).map(({ id }) => id), [idC])
})
