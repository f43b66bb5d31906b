/**
 * Where sessions (families of rotated refresh tokens) live. Two
 * implementations share this interface and one test suite: in-process
 * (memory-session-store.ts) and Redis (redis-session-store.ts).
 *
 * Every method is one atomic step: a token is spent once, whatever the number
 * of instances and parallel requests. Times are milliseconds since the epoch,
 * always passed in (never read from the store's own clock) so tests can move
 * time.
 */
export interface SessionStore {
  create(session: NewSession, now: number): Promise<void>
  /**
   * When the user holds more than `maxSessions` live sessions, revokes the
   * least recently used ones but `keptSessionId`; answers their ids.
   */
  trim(userId: string, keptSessionId: string, now: number, maxSessions: number): Promise<string[]>
  refresh(attempt: RefreshAttempt): Promise<RefreshOutcome>
  /**
   * Revokes a live session; with `presented`, only if that generation was
   * issued (whoever names the family held one of its tokens). Answers the
   * session's user, or undefined when nothing was revoked (nothing is written then).
   */
  revoke(sessionId: string, now: number, presented?: { generation: number }): Promise<string | undefined>
  /** One live session (neither revoked nor expired), or undefined. */
  get(sessionId: string, now: number): Promise<(SessionInfo & { userId: string }) | undefined>
  /** The user's live sessions, oldest first. */
  list(userId: string, now: number): Promise<SessionInfo[]>
  /** Revokes every live session of the user but `exceptSessionId`; answers the ids revoked. */
  revokeAll(userId: string, now: number, exceptSessionId?: string): Promise<string[]>
  /** Raises a live session's credential version to `credentialVersion` (never lowers it). */
  stamp(sessionId: string, credentialVersion: number, now: number): Promise<void>
  ping(): Promise<void>
}

/** Every operation of a SessionStore, by name (timed one by one for the metrics). */
export const SESSION_STORE_OPERATIONS = ['create', 'trim', 'refresh', 'revoke', 'get', 'list', 'revokeAll', 'stamp', 'ping'] as const satisfies ReadonlyArray<keyof SessionStore>

export interface NewSession {
  id: string
  userId: string
  /** The hash of generation 0's secret. */
  tokenHash: string
  /** The user's credential version when the session opened: a later password change ends it. */
  credentialVersion: number
  createdAt: number
  idleExpiresAt: number
  absoluteExpiresAt: number
  userAgent: string
  ip: string
}

/** A session as GET /auth/sessions lists it. */
export interface SessionInfo {
  id: string
  createdAt: number
  lastUsedAt: number
  /** When it ends unless refreshed: the earlier of its idle and absolute expiries. */
  expiresAt: number
  userAgent: string
  ip: string
}

/** A refresh token as the store sees it: which generation it names, and its secret's hash. */
export interface PresentedToken {
  generation: number
  hash: string
}

export interface RefreshAttempt extends PresentedToken {
  sessionId: string
  now: number
  idleTtlMs: number
  graceMs: number
  /** The next token of the family; undefined when rotation is off. */
  successor?: { hash: string, sealed: string }
  /** Set when refreshes are bound to the address that logged in. */
  clientIp?: string
}

interface LiveSessionFacts {
  userId: string
  /** The session's current generation (after this refresh). */
  generation: number
  credentialVersion: number
  idleExpiresAt: number
  absoluteExpiresAt: number
}

export type RefreshOutcome =
  | ({ result: 'refreshed' } & LiveSessionFacts)
  | ({
    result: 'grace'
    /**
     * The sealed successors from the presented generation to the current one,
     * oldest first, and the hash the last must open to.
     */
    sealedChain: string[]
    currentHash: string
  } & LiveSessionFacts)
  | { result: 'reused' | 'ip-mismatch' | 'revoked' | 'expired', userId: string }
  | { result: 'unknown' }

/**
 * How many spent generations are remembered, each only for the grace after
 * its rotation: a token up to this many rotations behind, presented within
 * the grace, reaches the current token. Anything older is reuse.
 */
export const GRACE_GENERATIONS = 4

/**
 * A spent generation's secret is remembered by the first 132 bits of its
 * hash: enough that only its holder presents a match, and small enough that
 * a Redis session stays in its compact encoding.
 */
export const SPENT_HASH_LENGTH = 22

function spentHash (tokenHash: string): string {
  return tokenHash.slice(0, SPENT_HASH_LENGTH)
}

/** A rotated generation, kept for the grace after its rotation. */
export interface SpentGeneration {
  generation: number
  /** spentHash of its secret's hash. */
  hash: string
  /** Its successor, sealed under its secret. */
  sealedSuccessor: string
  rotatedAt: number
}

/** A session as both stores hold it. */
export interface SessionState {
  userId: string
  createdAt: number
  lastUsedAt: number
  idleExpiresAt: number
  absoluteExpiresAt: number
  userAgent: string
  ip: string
  revoked: boolean
  credentialVersion: number
  generation: number
  tokenHash?: string
  /** Newest first, at most GRACE_GENERATIONS, each rotated less than a grace ago at the last rotation. */
  spent: SpentGeneration[]
}

export function initialState (session: NewSession): SessionState {
  return {
    userId: session.userId,
    createdAt: session.createdAt,
    lastUsedAt: session.createdAt,
    idleExpiresAt: Math.min(session.idleExpiresAt, session.absoluteExpiresAt),
    absoluteExpiresAt: session.absoluteExpiresAt,
    userAgent: session.userAgent,
    ip: session.ip,
    revoked: false,
    credentialVersion: session.credentialVersion,
    generation: 0,
    tokenHash: session.tokenHash,
    spent: []
  }
}

export function expiresAt (state: SessionState): number {
  return Math.min(state.idleExpiresAt, state.absoluteExpiresAt)
}

export function isLive (state: SessionState, now: number): boolean {
  return !state.revoked && now < expiresAt(state)
}

export function sessionInfo (id: string, state: SessionState): SessionInfo {
  return {
    id,
    createdAt: state.createdAt,
    lastUsedAt: state.lastUsedAt,
    expiresAt: expiresAt(state),
    userAgent: state.userAgent,
    ip: state.ip
  }
}

/** Whether a token names a spent generation still in its grace, with that generation's secret. */
function inGrace (state: SessionState, { generation, hash }: PresentedToken, now: number, graceMs: number): boolean {
  const spent = state.spent.find((entry) => entry.generation === generation)
  return spent !== undefined && spent.hash === spentHash(hash) && now - spent.rotatedAt < graceMs
}

/**
 * The refresh decision, applied to `state` in place. The in-process store
 * runs it directly; the Redis store's Lua script is the same decision written
 * for Redis, and the shared suite holds them to the same behaviour.
 *
 * - the current generation with its secret refreshes: with rotation, its
 *   successor becomes current and it is remembered for the grace; the idle
 *   expiry moves forward, never past the absolute one;
 * - a generation rotated less than the grace ago (at most GRACE_GENERATIONS
 *   back), with its secret, answers the chain to the current token: parallel
 *   tabs and retried requests continue the one session, which never forks;
 * - any other token naming the family with a generation up to the current one
 *   is reuse: a spent token after its grace, or a wrong secret. Only someone
 *   who held a token of the family can name it, so the whole family is revoked;
 * - a generation beyond the current one was never issued: unknown.
 */
export function decideRefresh (state: SessionState, attempt: RefreshAttempt): RefreshOutcome {
  const { userId } = state
  if (state.revoked) return { result: 'revoked', userId }
  if (attempt.now >= expiresAt(state)) return { result: 'expired', userId }
  if (attempt.generation > state.generation) return { result: 'unknown' }
  const boundElsewhere = attempt.clientIp !== undefined && attempt.clientIp !== state.ip

  if (attempt.generation === state.generation && attempt.hash === state.tokenHash) {
    if (boundElsewhere) return { result: 'ip-mismatch', userId }
    if (attempt.successor !== undefined) {
      const rotated = { generation: state.generation, hash: spentHash(state.tokenHash), sealedSuccessor: attempt.successor.sealed, rotatedAt: attempt.now }
      const stillInGrace = state.spent.filter((entry) => attempt.now - entry.rotatedAt < attempt.graceMs)
      state.spent = [rotated, ...stillInGrace].slice(0, GRACE_GENERATIONS)
      state.generation += 1
      state.tokenHash = attempt.successor.hash
    }
    state.lastUsedAt = attempt.now
    state.idleExpiresAt = Math.min(attempt.now + attempt.idleTtlMs, state.absoluteExpiresAt)
    return { result: 'refreshed', ...liveFacts(state) }
  }

  if (inGrace(state, attempt, attempt.now, attempt.graceMs)) {
    if (boundElsewhere) return { result: 'ip-mismatch', userId }
    const sealedChain = state.spent
      .filter((entry) => entry.generation >= attempt.generation)
      .sort((a, b) => a.generation - b.generation)
      .map((entry) => entry.sealedSuccessor)
    return { result: 'grace', ...liveFacts(state), sealedChain, currentHash: state.tokenHash! }
  }

  revokeState(state)
  return { result: 'reused', userId }
}

function liveFacts (state: SessionState): LiveSessionFacts {
  return {
    userId: state.userId,
    generation: state.generation,
    credentialVersion: state.credentialVersion,
    idleExpiresAt: state.idleExpiresAt,
    absoluteExpiresAt: state.absoluteExpiresAt
  }
}

/**
 * Of a user's other live sessions, those a new one leaves over `maxSessions`:
 * the least recently used first.
 */
export function beyondLimit<T extends { lastUsedAt: number }> (others: T[], maxSessions: number): T[] {
  const excess = others.length + 1 - maxSessions
  return excess <= 0 ? [] : [...others].sort((a, b) => a.lastUsedAt - b.lastUsedAt).slice(0, excess)
}

/** Marks the session revoked and forgets every token hash it held. */
export function revokeState (state: SessionState): void {
  state.revoked = true
  delete state.tokenHash
  state.spent = []
}

/**
 * Whether a logout presenting `presented` may end the session: any generation
 * it issued, spent ones too. A spent token after its grace would be reuse on
 * refresh; on logout its holder wants the session over, which ends a thief's
 * hold on it as well.
 */
export function isRevocableWith (state: SessionState, presented: { generation: number } | undefined): boolean {
  return presented === undefined || presented.generation <= state.generation
}
