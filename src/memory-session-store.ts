import type { Clock } from './clock.js'
import {
  beyondLimit, decideRefresh, expiresAt, initialState, isLive, isRevocableWith, revokeState, sessionInfo,
  type NewSession, type RefreshAttempt, type RefreshOutcome, type SessionInfo, type SessionState, type SessionStore
} from './session-store.js'

/**
 * The embedded default: sessions in this process's memory. Every method runs
 * synchronously to completion, which makes each step atomic on this instance.
 * Expired sessions are dropped when touched and by a periodic sweep, so
 * memory never grows without bound.
 */
export class MemorySessionStore implements SessionStore {
  readonly #sessions = new Map<string, SessionState>()
  readonly #sessionsByUser = new Map<string, Set<string>>()
  readonly #sweeper: NodeJS.Timeout

  constructor (private readonly clock: Clock, sweepIntervalMs = 60_000) {
    this.#sweeper = setInterval(() => this.sweep(), sweepIntervalMs).unref()
  }

  async create (session: NewSession): Promise<void> {
    this.#sessions.set(session.id, initialState(session))
    const owned = this.#sessionsByUser.get(session.userId) ?? new Set()
    this.#sessionsByUser.set(session.userId, owned.add(session.id))
  }

  async trim (userId: string, keptSessionId: string, now: number, maxSessions: number): Promise<string[]> {
    const others = this.#liveOf(userId, now).filter(([id]) => id !== keptSessionId).map(([id, state]) => ({ id, state, lastUsedAt: state.lastUsedAt }))
    const ended = beyondLimit(others, maxSessions)
    for (const { state } of ended) revokeState(state)
    return ended.map(({ id }) => id)
  }

  async refresh (attempt: RefreshAttempt): Promise<RefreshOutcome> {
    const state = this.#sessions.get(attempt.sessionId)
    if (state === undefined) return { result: 'unknown' }
    const outcome = decideRefresh(state, attempt)
    if (outcome.result === 'expired') this.#delete(attempt.sessionId, state)
    return outcome
  }

  async revoke (sessionId: string, now: number, presented?: { generation: number }): Promise<string | undefined> {
    const state = this.#live(sessionId, now)
    if (state === undefined || !isRevocableWith(state, presented)) return undefined
    revokeState(state)
    return state.userId
  }

  async get (sessionId: string, now: number): Promise<(SessionInfo & { userId: string }) | undefined> {
    const state = this.#live(sessionId, now)
    return state === undefined ? undefined : { ...sessionInfo(sessionId, state), userId: state.userId }
  }

  async list (userId: string, now: number): Promise<SessionInfo[]> {
    return this.#liveOf(userId, now)
      .sort(([, a], [, b]) => a.createdAt - b.createdAt)
      .map(([id, state]) => sessionInfo(id, state))
  }

  async revokeAll (userId: string, now: number, exceptSessionId?: string): Promise<string[]> {
    const revoked: string[] = []
    for (const [id, state] of this.#liveOf(userId, now)) {
      if (id === exceptSessionId) continue
      revokeState(state)
      revoked.push(id)
    }
    return revoked
  }

  async stamp (sessionId: string, credentialVersion: number, now: number): Promise<void> {
    const state = this.#live(sessionId, now)
    if (state !== undefined) state.credentialVersion = Math.max(state.credentialVersion, credentialVersion)
  }

  async ping (): Promise<void> {}

  /** Stops the periodic sweep: the store can then be collected with whatever it holds. */
  stopSweeping (): void {
    clearInterval(this.#sweeper)
  }

  /** Number of sessions held, revoked ones included (until they expire). */
  get size (): number {
    return this.#sessions.size
  }

  sweep (now = this.clock.now()): void {
    for (const [id, state] of this.#sessions) {
      if (now >= expiresAt(state)) this.#delete(id, state)
    }
  }

  /** The session if it is live (neither revoked nor expired); an expired one is dropped. */
  #live (sessionId: string, now: number): SessionState | undefined {
    const state = this.#sessions.get(sessionId)
    if (state !== undefined && now >= expiresAt(state)) {
      this.#delete(sessionId, state)
      return undefined
    }
    return state !== undefined && isLive(state, now) ? state : undefined
  }

  #liveOf (userId: string, now: number): Array<[string, SessionState]> {
    const live: Array<[string, SessionState]> = []
    for (const id of this.#sessionsByUser.get(userId) ?? []) {
      const state = this.#live(id, now)
      if (state !== undefined) live.push([id, state])
    }
    return live
  }

  #delete (sessionId: string, state: SessionState): void {
    this.#sessions.delete(sessionId)
    const owned = this.#sessionsByUser.get(state.userId)
    owned?.delete(sessionId)
    if (owned?.size === 0) this.#sessionsByUser.delete(state.userId)
  }
}
