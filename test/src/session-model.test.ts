import fc from 'fast-check'
import t from 'tap'
import type { Test } from 'tap'
import { accessTokenClaims, type AccessTokenClaims } from '../../src/access-token.js'
import { ServiceError, type ErrorCode } from '../../src/errors.js'
import { MemorySessionStore } from '../../src/memory-session-store.js'
import { RedisSessionStore } from '../../src/redis-session-store.js'
import { formatRefreshToken, newRefreshSecret, parseRefreshToken, sessionIdOf } from '../../src/refresh-token.js'
import { RevocationList } from '../../src/revocation-list.js'
import { GRACE_GENERATIONS, type SessionInfo, type SessionStore } from '../../src/session-store.js'
import { SessionService, type SessionPolicy, type TokenPair, type UserFactsSource } from '../../src/sessions.js'
import { FakeClock, modelRuns, positiveIntegerFromEnv, skipUnless, testRedis } from '../helpers.js'

/*
 * A model-based test of the session state machine (issue 11, "How it is
 * tested"; API.md, "Sessions and revocation"). fast-check generates random
 * interleavings of an honest client (refreshing, sometimes from two tabs at
 * once, sometimes from a tab a few rotations behind), an attacker replaying
 * or forging any token it ever saw, logins (some concurrent with a listing,
 * a logout-all or a password change), logouts, logout-all, password changes,
 * listings, and the clock jumping inside and across the grace, the idle and
 * the absolute lifetimes, or to just before their ends. SessionService is
 * driven directly, without HTTP, over each store; a small reference model
 * (Model below) says what every step must answer, and invariants are checked
 * after every step (checkInvariants). Both stores run the same steps (same
 * seed) and must give the model's answers.
 *
 * CI runs a fixed seed and a modest number of runs. A longer search, with a
 * new seed each time (fast-check prints it with any counterexample):
 *   MODEL_RUNS=2000 npx tap test/src/session-model.test.ts
 * MODEL_SEED=<integer> replays a seed; MODEL_COMMANDS=<n> changes the most
 * steps per run (default 40).
 * The Redis variant runs on the real Redis named by TEST_REDIS_URL (e.g.
 * TEST_REDIS_URL=redis://127.0.0.1:6379), under a key prefix of its own,
 * and is skipped without it.
 */

const CI_RUNS = 250
const { runs: RUNS, seed: SEED } = modelRuns(20_301_101, CI_RUNS)
const MAX_COMMANDS = positiveIntegerFromEnv('MODEL_COMMANDS') ?? 40

const SECOND = 1000
const START = Date.UTC(2030, 0, 1)

/*
 * Lifetimes short enough that a run crosses them. The absolute lifetime is
 * less than an access token's lifetime past the idle one, so one refresh near
 * a session's idle end reaches its absolute end, where access tokens are cut
 * short.
 * Every time is a whole number of seconds, and the clock never stops just
 * 1 to 4 s before a session's end on purpose (clockToEdge): the Redis store
 * sets its keys' TTL (in real time) from the fake clock, and a live session
 * must keep its key for the rest of the run.
 */
const POLICY: SessionPolicy = {
  accessTokenTtl: 1800,
  refreshTokenTtl: 3600,
  sessionMaxAge: 4800,
  rotateRefreshTokens: true,
  refreshReuseGrace: 10,
  refreshBindIp: false,
  // Small, so that logins past it (ending the least recently used session) happen within a run.
  maxSessionsPerUser: 2
}
const GRACE_MS = POLICY.refreshReuseGrace * SECOND
const IDLE_MS = POLICY.refreshTokenTtl * SECOND
const MAX_AGE_MS = POLICY.sessionMaxAge * SECOND
const CLIENT = { ip: '203.0.113.7', userAgent: 'session-model-test/1.0' }

// ---------------------------------------------------------------------------
// The reference model

interface ModelSession {
  /** s1, s2, … in login order, for traces. */
  label: string
  userId: string
  /** The public session id (the access tokens' sid). */
  sessionId: string
  createdAt: number
  lastUsedAt: number
  /** Already capped by the absolute expiry: this is when the session ends unless refreshed. */
  idleExpiresAt: number
  absoluteExpiresAt: number
  credentialVersion: number
  revoked: boolean
  /** Its refresh tokens by generation; the last one is current. */
  tokens: string[]
  /** When each spent generation was rotated, by generation. */
  rotatedAt: number[]
  /** What the honest client received, oldest first: its latest token is the last. */
  clientTokens: string[]
  /** When the last access token handed out for it expires (ms; 0 when none was). */
  accessTokensUntil: number
  /** Seen over, past its end, by checkInvariants. */
  seenEnded: boolean
}

interface Model {
  now: number
  users: string[]
  credentialVersions: Map<string, number>
  sessions: ModelSession[]
  tokens: Map<string, { session: ModelSession, generation: number }>
  /** The tokens the attacker holds, most recently obtained last. */
  loot: string[]
  /** The sessions a reuse warning must have been logged for, in order. */
  reuseWarnings: string[]
  /** What happened so far, one line per step, for the failure message. */
  trace: string[]
}

interface Real {
  service: SessionService
  store: SessionStore
  clock: FakeClock
  revocations: RevocationList
  /** The in-test source of user facts: each user's credential version. */
  credentialVersions: Map<string, number>
  reuseWarnings: string[]
  /** The sessions of the refresh_reuse_detected security events the service recorded, in order. */
  reuseEvents: string[]
}

/** A refresh token as the model sees it: a genuine one it handed out, or a forgery naming a session. */
interface Presented {
  session: ModelSession
  generation: number
  /** False when the secret is not the one issued for the generation (a forgery). */
  genuine: boolean
  /** The expiry (Unix seconds) written in the token. */
  expiresAtSeconds: number
}

type Expectation =
  /** 200 with a new token, the session's next generation. */
  | { outcome: 'rotated' }
  /** 200 with the session's current token (the grace answer). */
  | { outcome: 'current' }
  /** 401 with one of `codes`; `ends` when the answer revokes the session. */
  | { outcome: 'refused', codes: readonly ErrorCode[], ends: boolean }

type Answer = { pair: TokenPair } | { code: ErrorCode }

function currentGeneration (session: ModelSession): number {
  return session.tokens.length - 1
}

function isLive (model: Model, session: ModelSession): boolean {
  return !session.revoked && model.now < session.idleExpiresAt
}

function liveSessionsOf (model: Model, userId: string): ModelSession[] {
  return model.sessions.filter((session) => session.userId === userId && isLive(model, session))
}

/** A spent generation still answers the current token: rotated less than the grace ago, and among the last GRACE_GENERATIONS. */
function inGrace (model: Model, session: ModelSession, generation: number): boolean {
  const current = currentGeneration(session)
  return generation < current && current - generation <= GRACE_GENERATIONS && model.now - session.rotatedAt[generation]! < GRACE_MS
}

function refused (...codes: ErrorCode[]): Expectation {
  return { outcome: 'refused', codes, ends: false }
}

/** What a refresh with `presented` must answer now (API.md, "Sessions and revocation"). */
function expectRefresh (model: Model, { session, generation, genuine, expiresAtSeconds }: Presented): Expectation {
  const ended = model.now >= session.idleExpiresAt
  // A revoked session's state lives until its end, then goes: past its end, either answer refuses.
  if (session.revoked) return ended ? refused('REFRESH_TOKEN_REVOKED', 'REFRESH_TOKEN_EXPIRED') : refused('REFRESH_TOKEN_REVOKED')
  if (ended) return refused('REFRESH_TOKEN_EXPIRED')
  const current = currentGeneration(session)
  // A generation never issued proves nothing about who holds the family.
  if (generation > current) return refused(expiresAtSeconds * SECOND <= model.now ? 'REFRESH_TOKEN_EXPIRED' : 'REFRESH_TOKEN_INVALID')
  // Naming the family with a spent generation after its grace, or with a wrong secret, is theft: the session ends.
  if (!genuine || (generation < current && !inGrace(model, session, generation))) {
    return { outcome: 'refused', codes: ['REFRESH_TOKEN_REUSED'], ends: true }
  }
  // Opened before a credential change: over (it cannot happen in the steps below, which revoke such sessions first).
  if (session.credentialVersion < model.credentialVersions.get(session.userId)!) {
    return { outcome: 'refused', codes: ['REFRESH_TOKEN_REVOKED'], ends: true }
  }
  return { outcome: generation === current ? 'rotated' : 'current' }
}

/**
 * Whether a logout with this token revokes the session: any generation the
 * live session issued, spent ones too (whoever names the family held one of
 * its tokens, and wants it over).
 */
function expectLogout (model: Model, { session, generation }: Presented): boolean {
  return isLive(model, session) && generation <= currentGeneration(session)
}

function presentedOf (model: Model, token: string): Presented {
  const known = model.tokens.get(token)
  if (known === undefined) throw new Error('the model does not know this token')
  return { session: known.session, generation: known.generation, genuine: true, expiresAtSeconds: parseRefreshToken(token)!.expiresAt }
}

function labelOf (model: Model, token: string): string {
  const known = model.tokens.get(token)
  return known === undefined ? 'an unknown token' : `${known.session.label}#${known.generation}`
}

function describe (model: Model, answer: Answer): string {
  return 'code' in answer ? answer.code : `200 ${labelOf(model, answer.pair.refreshToken)}`
}

/** A failed check: the message, and every step so far. */
function violated (model: Model, message: string): never {
  throw new Error(`${message}\nSteps:\n  ${model.trace.join('\n  ')}`)
}

function note (model: Model, line: string): void {
  model.trace.push(`@${(model.now - START) / SECOND}s ${line}`)
}

async function settle (promise: Promise<TokenPair>): Promise<Answer> {
  try {
    return { pair: await promise }
  } catch (error) {
    if (error instanceof ServiceError) return { code: error.code }
    throw error
  }
}

/** Holds an answer to what the model expected, and moves the model on. */
function conclude (model: Model, presented: Presented, expected: Expectation, answer: Answer, what: string): void {
  const { session } = presented
  if (expected.outcome === 'refused') {
    if (!('code' in answer) || !expected.codes.includes(answer.code)) {
      violated(model, `${what}: expected ${expected.codes.join(' or ')}, got ${describe(model, answer)}`)
    }
    if (expected.ends) session.revoked = true
    if (answer.code === 'REFRESH_TOKEN_REUSED') model.reuseWarnings.push(session.sessionId)
    note(model, `${what} → ${answer.code}`)
    return
  }
  if (!('pair' in answer)) {
    violated(model, `${what}: expected 200 with ${expected.outcome === 'rotated' ? 'a new token' : 'the current token'}, got ${answer.code}`)
  }
  const { refreshToken } = answer.pair
  if (expected.outcome === 'rotated') {
    if (model.tokens.has(refreshToken)) violated(model, `${what}: a rotation answered ${labelOf(model, refreshToken)}, a token already issued`)
    const spent = currentGeneration(session)
    session.rotatedAt[spent] = model.now
    session.tokens.push(refreshToken)
    model.tokens.set(refreshToken, { session, generation: spent + 1 })
    session.lastUsedAt = model.now
    session.idleExpiresAt = Math.min(model.now + IDLE_MS, session.absoluteExpiresAt)
  } else if (refreshToken !== session.tokens.at(-1)) {
    // One live chain per session: every token that refreshes it leads to its one current token.
    violated(model, `${what}: 200 with ${labelOf(model, refreshToken)} instead of the current ${session.label}#${currentGeneration(session)}: the session forked`)
  }
  checkPair(model, session, answer.pair, what)
  note(model, `${what} → ${describe(model, answer)}`)
}

/** A pair handed out for `session` must be its, and end no later than it. */
function checkPair (model: Model, session: ModelSession, pair: TokenPair, what: string): void {
  const claims = JSON.parse(pair.accessToken) as AccessTokenClaims
  if (claims.sid !== session.sessionId || claims.sub !== session.userId) {
    violated(model, `${what}: the access token is for ${claims.sub}/${claims.sid}, not ${session.userId}/${session.sessionId}`)
  }
  if (claims.exp * SECOND > session.idleExpiresAt) {
    violated(model, `${what}: the access token expires at ${claims.exp * SECOND}, after its session's end ${session.idleExpiresAt}`)
  }
  const refreshExpiresIn = Math.floor((session.idleExpiresAt - model.now) / SECOND)
  if (pair.refreshExpiresIn !== refreshExpiresIn) violated(model, `${what}: refreshExpiresIn ${pair.refreshExpiresIn}, expected ${refreshExpiresIn}`)
  session.accessTokensUntil = Math.max(session.accessTokensUntil, claims.exp * SECOND)
}

/** Presents one token to refresh (`what` says who and which, for the trace); answers the pair when it succeeded. */
async function presentForRefresh (model: Model, real: Real, token: string, presented: Presented, what: string): Promise<TokenPair | undefined> {
  const expected = expectRefresh(model, presented)
  const answer = await settle(real.service.refresh(token, CLIENT, securityLog(real)))
  conclude(model, presented, expected, answer, what)
  return 'pair' in answer ? answer.pair : undefined
}

function securityLog (real: Real) {
  return {
    warn: (details: object) => {
      const { event, sessionId } = details as { event?: string, sessionId?: string }
      if (event === 'refresh_token_reused') real.reuseWarnings.push(sessionId ?? '(no session id)')
    }
  }
}

/** The client keeps whatever it was handed last. */
function receive (session: ModelSession, pair: TokenPair | undefined): void {
  if (pair !== undefined && pair.refreshToken !== session.clientTokens.at(-1)) session.clientTokens.push(pair.refreshToken)
}

function registerSession (model: Model, userId: string, pair: TokenPair, credentialVersion: number, how: string): ModelSession {
  const { sid } = JSON.parse(pair.accessToken) as AccessTokenClaims
  const token = parseRefreshToken(pair.refreshToken)
  if (token === undefined || sessionIdOf(token.familyId) !== sid || token.generation !== 0) {
    violated(model, `${how}: the refresh token does not name generation 0 of session ${sid}`)
  }
  const session: ModelSession = {
    label: `s${model.sessions.length + 1}`,
    userId,
    sessionId: sid,
    createdAt: model.now,
    lastUsedAt: model.now,
    idleExpiresAt: Math.min(model.now + IDLE_MS, model.now + MAX_AGE_MS),
    absoluteExpiresAt: model.now + MAX_AGE_MS,
    credentialVersion,
    revoked: false,
    tokens: [pair.refreshToken],
    rotatedAt: [],
    clientTokens: [pair.refreshToken],
    accessTokensUntil: 0,
    seenEnded: false
  }
  model.sessions.push(session)
  model.tokens.set(pair.refreshToken, { session, generation: 0 })
  checkPair(model, session, pair, how)
  note(model, `${how} → ${session.label}#0`)
  return session
}

/**
 * A login past maxSessionsPerUser ends the user's least recently used other
 * sessions. Sessions last used and opened at the same moment are a tie the
 * stores may break differently (in-process: login order; Redis: index order,
 * by random id), so among those the store is asked which it ended.
 */
async function expectEvictions (model: Model, real: Real, liveBefore: ModelSession[]): Promise<void> {
  const excess = liveBefore.length + 1 - POLICY.maxSessionsPerUser
  if (excess <= 0) return
  const rank = (a: ModelSession, b: ModelSession) => a.lastUsedAt - b.lastUsedAt || a.createdAt - b.createdAt
  const byUse = [...liveBefore].sort(rank)
  const boundary = byUse[excess - 1]!
  const certain = byUse.filter((session) => rank(session, boundary) < 0)
  const tied = byUse.filter((session) => rank(session, boundary) === 0)
  const stillThere = await Promise.all(tied.map((session) => real.store.get(session.sessionId, model.now)))
  const tiedEnded = tied.filter((_session, index) => stillThere[index] === undefined)
  if (certain.length + tiedEnded.length !== excess) {
    violated(model, `the login past the limit ended ${tiedEnded.map((s) => s.label).join(', ') || 'none'} of the tied ${tied.map((s) => s.label).join(', ')}; expected ${excess - certain.length}`)
  }
  for (const session of [...certain, ...tiedEnded]) session.revoked = true
  note(model, `  (least recently used, ended: ${[...certain, ...tiedEnded].map((s) => s.label).join(', ')})`)
}

/** The credential change as the model sees it: a new version; every live session of the user but `kept` ends. */
function expectCredentialChange (model: Model, kept: ModelSession): void {
  const version = model.credentialVersions.get(kept.userId)! + 1
  model.credentialVersions.set(kept.userId, version)
  if (isLive(model, kept)) kept.credentialVersion = version
  for (const session of liveSessionsOf(model, kept.userId)) {
    if (session !== kept) session.revoked = true
  }
}

/** changeCredentials as a password change route calls it, bumping the version in the in-test user facts. */
async function changePassword (model: Model, real: Real, kept: ModelSession): Promise<void> {
  const credentialVersion = real.credentialVersions.get(kept.userId)!
  await real.service.changeCredentials({ id: kept.userId, credentialVersion }, { ...CLIENT, sessionId: kept.sessionId }, async () => {
    real.credentialVersions.set(kept.userId, credentialVersion + 1)
    return credentialVersion + 1
  })
}

/**
 * Checked after every step:
 * - the store holds exactly the sessions the model says are live, with the
 *   same end (never past SESSION_MAX_AGE) and last use: nothing revoked or
 *   ended comes back;
 * - the access tokens of a revoked session are refused (revocations.isRevoked)
 *   as long as any of them has not expired, and a live session's never are;
 * - a reuse warning was logged for every REFRESH_TOKEN_REUSED answer, and no other.
 * One live chain per session is checked on every answer (conclude): each 200
 * carries the session's one current token.
 */
async function checkInvariants (model: Model, real: Real): Promise<void> {
  // A session seen over after its end stays over (time only moves forward): no need to read it again.
  const watched = model.sessions.filter((session) => !session.seenEnded)
  const stored = await Promise.all(watched.map((session) => real.store.get(session.sessionId, model.now)))
  watched.forEach((session, index) => {
    const found = stored[index]
    if (found === undefined && model.now >= session.idleExpiresAt) session.seenEnded = true
    if (session.idleExpiresAt > session.createdAt + MAX_AGE_MS) violated(model, `${session.label} outlives SESSION_MAX_AGE in the model`)
    if (isLive(model, session) !== (found !== undefined)) {
      violated(model, `${session.label} should be ${isLive(model, session) ? 'live' : 'over'}, the store says ${found === undefined ? 'over' : 'live'}`)
    }
    if (found !== undefined && (found.expiresAt !== session.idleExpiresAt || found.lastUsedAt !== session.lastUsedAt || found.userId !== session.userId)) {
      violated(model, `${session.label}: the store has ${JSON.stringify(found)}, expected end ${session.idleExpiresAt}, last use ${session.lastUsedAt}`)
    }
    if (model.now < session.accessTokensUntil && real.revocations.isRevoked(session.sessionId) !== session.revoked) {
      violated(model, `${session.label}'s access tokens are ${session.revoked ? 'still accepted after its revocation' : 'refused while it is live'}`)
    }
  })
  if (real.reuseWarnings.join() !== model.reuseWarnings.join()) {
    violated(model, `reuse warnings logged for [${real.reuseWarnings.join(', ')}], expected [${model.reuseWarnings.join(', ')}]`)
  }
  if (real.reuseEvents.join() !== model.reuseWarnings.join()) {
    violated(model, `refresh_reuse_detected events recorded for [${real.reuseEvents.join(', ')}], expected [${model.reuseWarnings.join(', ')}]`)
  }
}

// ---------------------------------------------------------------------------
// The steps

type Step = fc.AsyncCommand<Model, Real>

/** A step: `act` resolves its picks against the model, drives the service, and checks the answers; invariants follow. */
class SessionStep implements Step {
  constructor (
    private readonly name: string,
    private readonly act: (model: Model, real: Real) => Promise<void>,
    private readonly applies: (model: Model) => boolean = (model) => model.sessions.length > 0
  ) {}

  check (model: Readonly<Model>): boolean {
    return this.applies(model)
  }

  async run (model: Model, real: Real): Promise<void> {
    await this.act(model, real)
    await checkInvariants(model, real)
  }

  toString (): string {
    return this.name
  }
}

/** Mostly a live session (where most of the rules are), sometimes any: picks 0 to 5 choose among the live ones. */
function pickSession (model: Model, pick: number): ModelSession {
  const live = model.sessions.filter((session) => isLive(model, session))
  const pool = pick < 6 && live.length > 0 ? live : model.sessions
  return pool[pick % pool.length]!
}

const sessionPick = fc.nat({ max: 7 })

const login = fc.nat({ max: 1 }).map((user) => new SessionStep(`login(user ${user})`, async (model, real) => {
  const userId = model.users[user]!
  const credentialVersion = model.credentialVersions.get(userId)!
  const liveBefore = liveSessionsOf(model, userId)
  const pair = await real.service.open({ id: userId, credentialVersion }, CLIENT)
  registerSession(model, userId, pair, credentialVersion, `login ${userId}`)
  await expectEvictions(model, real, liveBefore)
}, () => true))

/** The honest client refreshes with the latest token it holds. */
const clientRefresh = sessionPick.map((pick) => new SessionStep(`clientRefresh(${pick})`, async (model, real) => {
  const session = pickSession(model, pick)
  const token = session.clientTokens.at(-1)!
  receive(session, await presentForRefresh(model, real, token, presentedOf(model, token), `client refreshes ${labelOf(model, token)}`))
}))

/**
 * Two tabs refresh at once with the client's latest token. The store serves
 * them one after the other, in an order the test does not fix: whichever
 * matches the first expectation is taken as first. Two 200s carry the same token.
 */
const twoTabsRefresh = sessionPick.map((pick) => new SessionStep(`twoTabsRefresh(${pick})`, async (model, real) => {
  const session = pickSession(model, pick)
  const token = session.clientTokens.at(-1)!
  const presented = presentedOf(model, token)
  const expectedFirst = expectRefresh(model, presented)
  const answers = await Promise.all([1, 2].map(() => settle(real.service.refresh(token, CLIENT, securityLog(real)))))
  const [a, b] = answers as [Answer, Answer]
  const matchesFirst = (answer: Answer) => expectedFirst.outcome === 'refused' ? 'code' in answer && expectedFirst.codes.includes(answer.code) : 'pair' in answer
  const [first, second] = matchesFirst(a) ? [a, b] : [b, a]
  const what = `two tabs refresh ${labelOf(model, token)}`
  conclude(model, presented, expectedFirst, first, `${what} (first)`)
  conclude(model, presented, expectRefresh(model, presented), second, `${what} (second)`)
  if ('pair' in a && 'pair' in b && a.pair.refreshToken !== b.pair.refreshToken) violated(model, `${what}: two different tokens`)
  receive(session, 'pair' in first ? first.pair : undefined)
}))

/** A tab `behind` rotations behind the client presents the token it kept. */
const laggingTabRefresh = fc.tuple(sessionPick, fc.integer({ min: 1, max: GRACE_GENERATIONS })).map(([pick, behind]) =>
  new SessionStep(`laggingTabRefresh(${pick}, ${behind} behind)`, async (model, real) => {
    const session = pickSession(model, pick)
    const token = session.clientTokens.at(-1 - behind)!
    receive(session, await presentForRefresh(model, real, token, presentedOf(model, token), `a tab ${behind} behind presents ${labelOf(model, token)}`))
  }, (model) => model.sessions.length > 0 && pickSession(model, pick).clientTokens.length > behind))

/** The attacker copies one of the tokens the client ever held ("stolen at any time"). */
const steal = fc.tuple(sessionPick, fc.nat({ max: 15 })).map(([pick, index]) => new SessionStep(`steal(${pick}, ${index})`, async (model) => {
  const { clientTokens } = pickSession(model, pick)
  const token = clientTokens[index % clientTokens.length]!
  model.loot = [...model.loot.filter((held) => held !== token), token]
  note(model, `attacker steals ${labelOf(model, token)}`)
}))

const lootPick = fc.oneof(fc.constant('latest' as const), fc.nat({ max: 15 }))

function pickLoot (model: Model, pick: 'latest' | number): string {
  return pick === 'latest' ? model.loot.at(-1)! : model.loot[pick % model.loot.length]!
}

/**
 * The attacker refreshes a token it holds and keeps whatever it gets, then
 * continues its own chain: `times` refreshes in a row, as fast as it likes.
 */
const attackerRefresh = fc.tuple(lootPick, fc.integer({ min: 1, max: 10 })).map(([pick, times]) =>
  new SessionStep(`attackerRefresh(${pick}, ×${times})`, async (model, real) => {
    let token = pickLoot(model, pick)
    for (let attempt = 1; attempt <= times; attempt++) {
      const pair = await presentForRefresh(model, real, token, presentedOf(model, token), `attacker presents ${labelOf(model, token)}`)
      if (pair === undefined) return
      token = pair.refreshToken
      model.loot = [...model.loot.filter((held) => held !== token), token]
    }
  }, (model) => model.loot.length > 0))

/**
 * The attacker forges from a token it holds: the same family and generation
 * with another secret (reuse: only a holder of the family can name it), a
 * generation the session never reached, or no token at all.
 */
const forgery = fc.tuple(lootPick, fc.constantFrom('wrong-secret' as const, 'unissued-generation' as const, 'malformed' as const))
  .map(([pick, kind]) => new SessionStep(`forge(${pick}, ${kind})`, async (model, real) => {
    const base = pickLoot(model, pick)
    const what = `attacker forges (${kind}) from ${labelOf(model, base)}`
    if (kind === 'malformed') {
      const answer = await settle(real.service.refresh(`${base.slice(0, 20)}…`, CLIENT, securityLog(real)))
      if (!('code' in answer) || answer.code !== 'REFRESH_TOKEN_INVALID') violated(model, `${what}: expected REFRESH_TOKEN_INVALID, got ${describe(model, answer)}`)
      note(model, `${what} → ${answer.code}`)
      return
    }
    const parsed = parseRefreshToken(base)!
    const known = presentedOf(model, base)
    const generation = kind === 'wrong-secret' ? known.generation : currentGeneration(known.session) + 1
    const forged = formatRefreshToken({ ...parsed, generation, secret: newRefreshSecret() })
    await presentForRefresh(model, real, forged, { session: known.session, generation, genuine: false, expiresAtSeconds: parsed.expiresAt }, what)
  }, (model) => model.loot.length > 0))

/** Logout with the client's latest refresh token, one the attacker holds, or the session's access token. */
const logout = fc.tuple(sessionPick, fc.constantFrom('client' as const, 'attacker' as const, 'access-token' as const), lootPick)
  .map(([pick, by, loot]) => new SessionStep(`logout(${pick}, ${by}${by === 'attacker' ? `, ${loot}` : ''})`, async (model, real) => {
    if (by === 'access-token') {
      const session = pickSession(model, pick)
      const expected = isLive(model, session)
      const revoked = await real.service.logout({ sessionId: session.sessionId }, CLIENT)
      if (revoked !== expected) violated(model, `logout of ${session.label} by its access token answered ${revoked}, expected ${expected}`)
      if (revoked) session.revoked = true
      note(model, `logout of ${session.label} by its access token → ${revoked ? 'revoked' : 'nothing to revoke'}`)
      return
    }
    const token = by === 'client' ? pickSession(model, pick).clientTokens.at(-1)! : pickLoot(model, loot)
    const presented = presentedOf(model, token)
    const expected = expectLogout(model, presented)
    const revoked = await real.service.logout({ refreshToken: token }, CLIENT)
    const what = `${by} logs out with ${labelOf(model, token)}`
    if (revoked !== expected) violated(model, `${what}: answered ${revoked}, expected ${expected}`)
    if (revoked) presented.session.revoked = true
    note(model, `${what} → ${revoked ? 'revoked' : 'nothing revoked'}`)
  }, (model) => model.sessions.length > 0 && (by !== 'attacker' || model.loot.length > 0)))

/**
 * What GET /auth/sessions lists must be the user's live sessions, oldest
 * first; `concurrent` is a session opened while the list was read, which it
 * may or may not include.
 */
function checkListing (model: Model, userId: string, listed: SessionInfo[], what: string, concurrent?: ModelSession): void {
  const expected = liveSessionsOf(model, userId).filter((session) => session !== concurrent).map((session) => session.sessionId)
  const ids = listed.map(({ id }) => id)
  const missing = expected.filter((id) => !ids.includes(id))
  const extra = ids.filter((id) => !expected.includes(id) && id !== concurrent?.sessionId)
  if (missing.length > 0 || extra.length > 0) {
    const labels = (sessionIds: string[]) => sessionIds.map((id) => model.sessions.find((session) => session.sessionId === id)?.label ?? id).join(', ')
    violated(model, `${what}: lists [${labels(ids)}]; missing [${labels(missing)}], not live [${labels(extra)}]`)
  }
  if (listed.some((session, index) => index > 0 && session.createdAt < listed[index - 1]!.createdAt)) violated(model, `${what}: not oldest first`)
}

/** The user lists their sessions (from any device). */
const listSessions = fc.nat({ max: 1 }).map((user) => new SessionStep(`listSessions(user ${user})`, async (model, real) => {
  const userId = model.users[user]!
  const listed = await real.service.list(userId, '')
  checkListing(model, userId, listed, `list of ${userId}'s sessions`)
  note(model, `list of ${userId}'s sessions → ${listed.length}`)
}, () => true))

/**
 * A login while another device of the same user lists the sessions, one
 * started `delay` turns of the event loop after the other (login later when
 * positive): the login succeeds, and its session is a session like any other
 * afterwards (found by logout-all, password changes and listings). Only when
 * the login cannot end another session (the limit).
 */
const loginWhileListing = fc.tuple(fc.nat({ max: 1 }), fc.integer({ min: -2, max: 2 })).map(([user, delay]) =>
  new SessionStep(`loginWhileListing(user ${user}, ${delay > 0 ? `login ${delay} turns later` : delay < 0 ? `list ${-delay} turns later` : 'together'})`, async (model, real) => {
    const userId = model.users[user]!
    const credentialVersion = model.credentialVersions.get(userId)!
    const later = async <T>(turns: number, start: () => Promise<T>): Promise<T> => {
      for (let turn = 0; turn < turns; turn++) await new Promise(setImmediate)
      return await start()
    }
    const [pair, listed] = await Promise.all([
      later(Math.max(0, delay), () => real.service.open({ id: userId, credentialVersion }, CLIENT)),
      later(Math.max(0, -delay), () => real.service.list(userId, ''))
    ])
    const what = `login ${userId} while listing its sessions`
    const session = registerSession(model, userId, pair, credentialVersion, what)
    checkListing(model, userId, listed, what, session)
  }, (model) => liveSessionsOf(model, model.users[user]!).length < POLICY.maxSessionsPerUser))

/**
 * A login while another device of the same user logs out everywhere, one
 * started `delay` turns after the other: the login may end up ended with the
 * rest or live (it came after), as the store says, but never half of each:
 * afterwards it is a session like any other. Only when the login cannot end
 * another session (the limit).
 */
const loginDuringLogoutAll = fc.tuple(fc.nat({ max: 1 }), fc.integer({ min: -2, max: 2 })).map(([user, delay]) =>
  new SessionStep(`loginDuringLogoutAll(user ${user}, ${delay > 0 ? `login ${delay} turns later` : delay < 0 ? `logout-all ${-delay} turns later` : 'together'})`, async (model, real) => {
    const userId = model.users[user]!
    const credentialVersion = model.credentialVersions.get(userId)!
    const ending = liveSessionsOf(model, userId)
    const later = async <T>(turns: number, start: () => Promise<T>): Promise<T> => {
      for (let turn = 0; turn < turns; turn++) await new Promise(setImmediate)
      return await start()
    }
    const [pair] = await Promise.all([
      later(Math.max(0, delay), () => real.service.open({ id: userId, credentialVersion }, CLIENT)),
      later(Math.max(0, -delay), () => real.service.revokeAll(userId, CLIENT))
    ])
    for (const session of ending) session.revoked = true
    const session = registerSession(model, userId, pair, credentialVersion, `login ${userId} during its logout-all`)
    session.revoked = await real.store.get(session.sessionId, model.now) === undefined
    note(model, `  (logout-all ended ${[...ending, ...session.revoked ? [session] : []].map((s) => s.label).join(', ') || 'nothing'})`)
  }, (model) => liveSessionsOf(model, model.users[user]!).length < POLICY.maxSessionsPerUser))

const logoutAll = fc.nat({ max: 1 }).map((user) => new SessionStep(`logoutAll(user ${user})`, async (model, real) => {
  const userId = model.users[user]!
  const ending = liveSessionsOf(model, userId)
  await real.service.revokeAll(userId, CLIENT)
  for (const session of ending) session.revoked = true
  note(model, `logout-all ${userId} → ended ${ending.map((s) => s.label).join(', ') || 'nothing'}`)
}, () => true))

/** A password change from one session: that one stays, every other of the user ends. */
const passwordChange = sessionPick.map((pick) => new SessionStep(`passwordChange(${pick})`, async (model, real) => {
  const kept = pickSession(model, pick)
  await changePassword(model, real, kept)
  expectCredentialChange(model, kept)
  note(model, `password change of ${kept.userId} from ${kept.label}`)
}))

/**
 * A login whose password was checked before a password change, and whose
 * session opens while the change runs (after `turns` turns of the event
 * loop, to vary the interleaving) or once it is over: it fails, or its
 * session is ended. Only when the login cannot end another session (the
 * limit), which would depend on the interleaving.
 */
const loginDuringPasswordChange = fc.tuple(sessionPick, fc.constantFrom(0, 1, 2, 'after' as const)).map(([pick, turns]) =>
  new SessionStep(`loginDuringPasswordChange(${pick}, ${turns === 'after' ? 'opens after the change' : `opens after ${turns} turns`})`, async (model, real) => {
    const kept = pickSession(model, pick)
    const { userId } = kept
    const credentialVersion = model.credentialVersions.get(userId)!
    const login = async () => {
      for (let turn = 0; turn < (turns === 'after' ? 0 : turns); turn++) await new Promise(setImmediate)
      return await settle(real.service.open({ id: userId, credentialVersion }, CLIENT))
    }
    let answer: Answer
    if (turns === 'after') {
      await changePassword(model, real, kept)
      answer = await login()
    } else {
      [answer] = await Promise.all([login(), changePassword(model, real, kept)])
    }
    expectCredentialChange(model, kept)
    const what = `login ${userId} checked before a password change from ${kept.label}, opened ${turns === 'after' ? 'after it' : 'during it'}`
    if ('code' in answer) {
      if (answer.code !== 'INVALID_CREDENTIALS') violated(model, `${what}: ${answer.code}, expected INVALID_CREDENTIALS`)
      note(model, `${what} → ${answer.code}`)
      return
    }
    if (turns === 'after') violated(model, `${what}: 200, expected INVALID_CREDENTIALS`)
    const session = registerSession(model, userId, answer.pair, credentialVersion, what)
    session.revoked = true
    note(model, `  (${session.label} must be ended by the change)`)
  }, (model) => model.sessions.length > 0 && liveSessionsOf(model, pickSession(model, pick).userId).length < POLICY.maxSessionsPerUser))

function advanceClock (model: Model, real: Real, seconds: number, why: string): void {
  model.now += seconds * SECOND
  real.clock.advance(seconds * SECOND)
  note(model, `clock +${seconds}s (${why})`)
}

/** Clock jumps in seconds, by what they cross; the bounds themselves (where off-by-ones live) are generated often. */
const CLOCK_JUMPS: Array<[string, number, number, number]> = [
  // [kind, weight, shortest, longest]
  ['inside the grace', 6, 1, POLICY.refreshReuseGrace - 1],
  ['to the end of the grace', 2, POLICY.refreshReuseGrace, POLICY.refreshReuseGrace],
  ['across the grace', 4, POLICY.refreshReuseGrace + 1, POLICY.refreshTokenTtl / 4],
  ['across the idle lifetime', 1, POLICY.refreshTokenTtl, 2 * POLICY.refreshTokenTtl],
  ['across the absolute lifetime', 1, POLICY.sessionMaxAge, POLICY.sessionMaxAge + POLICY.refreshTokenTtl]
]

const clockJump = fc.oneof(...CLOCK_JUMPS.map(([kind, weight, min, max]) => ({
  weight,
  arbitrary: fc.integer({ min, max }).map((seconds) => new SessionStep(`clock(+${seconds}s, ${kind})`, async (model, real) => {
    advanceClock(model, real, seconds, kind)
  }, () => true))
})))

/**
 * The clock moves to just before (0: exactly at) an edge of a session: the
 * end of the grace of its latest rotation, or its own end. Off-by-ones live
 * there, and refreshes near a session's end are where access tokens are cut short.
 */
function clockToEdge (pick: number, edge: 'grace' | 'session', secondsBefore: number): SessionStep {
  const edgeOf = (session: ModelSession) => edge === 'grace' ? (session.rotatedAt.at(-1) ?? -Infinity) + GRACE_MS : session.idleExpiresAt
  return new SessionStep(`clockToEdge(${pick}, ${edge}, ${secondsBefore}s before)`, async (model, real) => {
    const session = pickSession(model, pick)
    const why = `to ${secondsBefore}s before the end of ${edge === 'grace' ? `the grace of ${session.label}'s latest rotation` : session.label}`
    advanceClock(model, real, (edgeOf(session) - model.now) / SECOND - secondsBefore, why)
  }, (model) => model.sessions.length > 0 && edgeOf(pickSession(model, pick)) - secondsBefore * SECOND > model.now)
}

const clockToGraceEnd = fc.tuple(sessionPick, fc.nat({ max: 2 })).map(([pick, secondsBefore]) => clockToEdge(pick, 'grace', secondsBefore))
const clockToSessionEnd = fc.tuple(sessionPick, fc.oneof(fc.constant(0), fc.integer({ min: 5, max: POLICY.accessTokenTtl + 60 }))).map(([pick, secondsBefore]) => clockToEdge(pick, 'session', secondsBefore))

const steps = fc.commands([fc.oneof(
  { weight: 4, arbitrary: login },
  { weight: 12, arbitrary: clientRefresh },
  { weight: 3, arbitrary: twoTabsRefresh },
  { weight: 5, arbitrary: laggingTabRefresh },
  { weight: 4, arbitrary: steal },
  { weight: 6, arbitrary: attackerRefresh },
  { weight: 2, arbitrary: forgery },
  { weight: 1, arbitrary: logout },
  { weight: 1, arbitrary: logoutAll },
  { weight: 1, arbitrary: listSessions },
  { weight: 1, arbitrary: loginWhileListing },
  { weight: 1, arbitrary: loginDuringLogoutAll },
  { weight: 1, arbitrary: passwordChange },
  { weight: 1, arbitrary: loginDuringPasswordChange },
  { weight: 5, arbitrary: clockJump },
  { weight: 1, arbitrary: clockToGraceEnd },
  { weight: 2, arbitrary: clockToSessionEnd }
)], { maxCommands: MAX_COMMANDS, size: 'max' })

// ---------------------------------------------------------------------------
// The runs

type StoreOfRun = (clock: FakeClock, run: number) => SessionStore

async function runModel (t: Test, storeOfRun: StoreOfRun): Promise<void> {
  let run = 0
  await fc.assert(fc.asyncProperty(steps, async (commands) => {
    run += 1
    const clock = new FakeClock(START)
    const store = storeOfRun(clock, run)
    // User ids of this run only, so runs sharing a store never see each other's sessions.
    const users = [`alice-${run}`, `bob-${run}`]
    const credentialVersions = new Map(users.map((userId) => [userId, 0]))
    const userFacts: UserFactsSource = {
      get: async (userId) => credentialVersions.has(userId) ? { credentialVersion: credentialVersions.get(userId)!, emailVerified: false, roles: [], disabled: false } : undefined,
      fresh: async (userId) => credentialVersions.has(userId) ? { credentialVersion: credentialVersions.get(userId)!, emailVerified: false, roles: [], disabled: false } : undefined
    }
    const revocations = new RevocationList(clock, POLICY.accessTokenTtl * SECOND)
    const reuseEvents: string[] = []
    const service = new SessionService({
      store,
      clock,
      policy: POLICY,
      revocations,
      users: userFacts,
      events: {
        record: (event) => { if (event.type === 'refresh_reuse_detected') reuseEvents.push(event.sessionId ?? '(no session id)') }
      },
      // The claims the real signer would sign, in plain JSON: the model reads sid and exp from them.
      issueAccessToken: (userId, sessionId, notAfter, facts) => JSON.stringify(accessTokenClaims({
        userId, sessionId, facts, now: clock.now(), ttlSeconds: POLICY.accessTokenTtl, notAfter, issuer: 'session-model-test', audience: 'session-model-test'
      }))
    })
    const model: Model = {
      now: START,
      users,
      credentialVersions: new Map(credentialVersions),
      sessions: [],
      tokens: new Map(),
      loot: [],
      reuseWarnings: [],
      trace: []
    }
    const real: Real = { service, store, clock, revocations, credentialVersions, reuseWarnings: [], reuseEvents }
    try {
      // Every run starts with the first user logged in, so its first steps have a session to act on.
      const [firstUser] = users as [string, string]
      registerSession(model, firstUser, await service.open({ id: firstUser, credentialVersion: 0 }, CLIENT), 0, `login ${firstUser}`)
      await fc.asyncModelRun(() => ({ model, real }), commands)
    } finally {
      if (store instanceof MemorySessionStore) store.stopSweeping()
    }
  }), { seed: SEED, numRuns: RUNS })
  t.pass(`${RUNS} runs of up to ${MAX_COMMANDS} steps (seed ${SEED}) answered as the model says`)
}

// A longer search takes longer than the file timeout of .taprc: about 100 ms a run for both variants.
if (RUNS > CI_RUNS) t.setTimeout(Math.max(120_000, RUNS * 100))

t.test('the grace covers at least the last 4 rotations (the model takes the store\'s own bound)', async (t) => {
  t.ok(GRACE_GENERATIONS >= 4, `GRACE_GENERATIONS is ${GRACE_GENERATIONS}`)
})

t.test('MemorySessionStore follows the model', async (t) => {
  // A sweep interval longer than any run: expired sessions go when touched, as in production between sweeps.
  await runModel(t, (clock) => new MemorySessionStore(clock, 3_600_000))
})

t.test('RedisSessionStore follows the model', { skip: skipUnless({ redis: true }) }, async (t) => {
  const { redis, prefix } = await testRedis(t)
  await runModel(t, (_clock, run) => new RedisSessionStore(redis, { prefix: `${prefix}run${run}:` }))
})
