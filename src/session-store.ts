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
  refresh(attempt: RefreshAttempt): Promise<RefreshOutcome>
  /**
   * Revokes a session; with `presentedHash`, only if it is the session's
   * current or previous token. Answers the session's user, or undefined when
   * there was nothing to revoke.
   */
  revoke(sessionId: string, now: number, presentedHash?: string): Promise<string | undefined>
  /** The user's live sessions (neither revoked nor expired), oldest first. */
  list(userId: string, now: number): Promise<SessionInfo[]>
  /** Revokes every live session of the user but `exceptSessionId`; answers the ids revoked. */
  revokeAll(userId: string, now: number, exceptSessionId?: string): Promise<string[]>
  ping(): Promise<void>
  close(): Promise<void>
}

export interface NewSession {
  id: string
  userId: string
  tokenHash: string
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

export interface RefreshAttempt {
  sessionId: string
  presentedHash: string
  now: number
  idleTtlMs: number
  graceMs: number
  /** The next token of the family; undefined when rotation is off. */
  successor?: { hash: string, sealed: string }
  /** Set when refreshes are bound to the address that logged in. */
  clientIp?: string
}

export type RefreshOutcome =
  | { result: 'refreshed', userId: string, idleExpiresAt: number, absoluteExpiresAt: number }
  | {
    result: 'grace'
    userId: string
    /** The successor as the rotation sealed it, and the hash it must open to. */
    sealedSuccessor: string
    successorHash: string
    idleExpiresAt: number
    absoluteExpiresAt: number
  }
  | { result: 'reused' | 'ip-mismatch' | 'revoked' | 'expired', userId: string }
  | { result: 'unknown' }

/** How many spent tokens of a family are remembered to recognize reuse. */
export const SPENT_TOKENS_KEPT = 8

/**
 * A spent token is remembered by the first 48 bits of its hash: recognizing
 * a replay needs no more (a forger's guess matches one of the eight with odds
 * of 1 in 3.5 × 10^13, and would only end the session), and eight of them fit
 * in one 64-byte value, which keeps a Redis session hash compactly encoded.
 */
export const SPENT_TAG_LENGTH = 8

export function spentTag (tokenHash: string): string {
  return tokenHash.slice(0, SPENT_TAG_LENGTH)
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
  tokenHash?: string
  previousHash?: string
  rotatedAt?: number
  sealedSuccessor?: string
  /** Tags (spentTag) of spent tokens, most recent first, at most SPENT_TOKENS_KEPT. */
  spentTags: string[]
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
    tokenHash: session.tokenHash,
    spentTags: []
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

/**
 * The refresh decision, applied to `state` in place. The in-process store
 * runs it directly; the Redis store's Lua script is the same decision written
 * for Redis, and the shared suite holds them to the same behaviour.
 *
 * - the current token refreshes: with rotation, it becomes the previous one
 *   and its successor the current one; the idle expiry moves forward, never
 *   past the absolute one;
 * - the previous token, within the grace window after its rotation, answers
 *   the sealed successor (parallel tabs get one successor, the family never forks);
 * - any other spent token is reuse: the whole family is revoked.
 */
export function decideRefresh (state: SessionState, attempt: RefreshAttempt): RefreshOutcome {
  const { userId } = state
  if (state.revoked) return { result: 'revoked', userId }
  if (attempt.now >= expiresAt(state)) return { result: 'expired', userId }
  const boundElsewhere = attempt.clientIp !== undefined && attempt.clientIp !== state.ip

  if (attempt.presentedHash === state.tokenHash) {
    if (boundElsewhere) return { result: 'ip-mismatch', userId }
    if (attempt.successor !== undefined) {
      state.previousHash = state.tokenHash
      state.rotatedAt = attempt.now
      state.sealedSuccessor = attempt.successor.sealed
      state.tokenHash = attempt.successor.hash
      state.spentTags = [spentTag(attempt.presentedHash), ...state.spentTags].slice(0, SPENT_TOKENS_KEPT)
    }
    state.lastUsedAt = attempt.now
    state.idleExpiresAt = Math.min(attempt.now + attempt.idleTtlMs, state.absoluteExpiresAt)
    return { result: 'refreshed', userId, idleExpiresAt: state.idleExpiresAt, absoluteExpiresAt: state.absoluteExpiresAt }
  }

  if (attempt.presentedHash === state.previousHash && attempt.now - state.rotatedAt! < attempt.graceMs) {
    if (boundElsewhere) return { result: 'ip-mismatch', userId }
    return {
      result: 'grace',
      userId,
      sealedSuccessor: state.sealedSuccessor!,
      successorHash: state.tokenHash!,
      idleExpiresAt: state.idleExpiresAt,
      absoluteExpiresAt: state.absoluteExpiresAt
    }
  }

  if (state.spentTags.includes(spentTag(attempt.presentedHash))) {
    revokeState(state)
    return { result: 'reused', userId }
  }
  return { result: 'unknown' }
}

/** Marks the session revoked and forgets every token hash it held. */
export function revokeState (state: SessionState): void {
  state.revoked = true
  delete state.tokenHash
  delete state.previousHash
  delete state.sealedSuccessor
  state.spentTags = []
}

export function isRevocableWith (state: SessionState, presentedHash: string | undefined): boolean {
  return presentedHash === undefined || presentedHash === state.tokenHash || presentedHash === state.previousHash
}
