import { accessTokenLifetime, type AccessTokenFacts } from './access-token.js'
import type { Clock } from './clock.js'
import type { Config } from './config.js'
import { ServiceError } from './errors.js'
import {
  hashSecret, newFamilyId, newRefreshSecret, openSuccessors, parseRefreshToken, refreshTokenOf, sealSuccessor, sessionIdOf
} from './refresh-token.js'
import type { RefreshOutcomeLabel } from './metrics.js'
import type { RevocationList } from './revocation-list.js'
import type { SecurityEventRecorder } from './security-events.js'
import type { SessionInfo, SessionStore } from './session-store.js'
import type { UserFacts } from './user-facts.js'

export interface TokenPair {
  accessToken: string
  refreshToken: string
  tokenType: 'Bearer'
  /** Seconds until the access token expires. */
  expiresIn: number
  /** Seconds until the session ends unless refreshed (never past its absolute end). */
  refreshExpiresIn: number
}

export interface ClientInfo {
  ip: string
  userAgent: string
}

/** Who acts, from where: the client, and the session of its access token when it sent one. */
export interface Caller extends ClientInfo {
  sessionId?: string
}

/** A live session as its user (or an admin) sees it listed; `current`: the caller's own. */
export type ListedSession = SessionInfo & { current: boolean }

/** An admin acting on another account, from where (null: the command line). */
export interface AdminActor {
  id: string | null
  ip: string | null
  userAgent: string | null
}

/** Where security events go (a pino logger in the service). */
export interface SecurityLog {
  warn(details: object, message: string): void
}

export type SessionPolicy = Pick<Config,
  'accessTokenTtl' | 'refreshTokenTtl' | 'sessionMaxAge' | 'rotateRefreshTokens' | 'refreshReuseGrace' | 'refreshBindIp' | 'maxSessionsPerUser'>

/** What the session lifecycle reads of users: their facts, cached or fresh from the database. */
export interface UserFactsSource {
  get(userId: string): Promise<UserFacts | undefined>
  fresh(userId: string): Promise<UserFacts | undefined>
}

export interface SessionServiceDeps {
  store: SessionStore
  clock: Clock
  policy: SessionPolicy
  revocations: RevocationList
  users: UserFactsSource
  /** Where logins, logouts, revocations, reuse and password changes are recorded. */
  events: SecurityEventRecorder
  /** Told how each refresh ended. */
  refreshed?: (outcome: RefreshOutcomeLabel) => void
  /** Told when a spent refresh token came back and its session was revoked (the account is mailed). */
  reuseDetected?: (userId: string, client: ClientInfo) => void
  /** Signs an access token for the session, expiring after `policy.accessTokenTtl` but never after `notAfter` (ms). */
  issueAccessToken(userId: string, sessionId: string, notAfter: number, facts: AccessTokenFacts): string
}

/** A user as a login opens a session for them: the credential version their password was checked under. */
export interface SessionOwner {
  id: string
  credentialVersion: number
}

/** The refusals that say the refresh token itself is dead, and the outcome each counts as. */
const DEAD_REFRESH_TOKEN: Partial<Record<string, RefreshOutcomeLabel>> = {
  REFRESH_TOKEN_REUSED: 'reused',
  REFRESH_TOKEN_EXPIRED: 'expired',
  REFRESH_TOKEN_INVALID: 'invalid',
  REFRESH_TOKEN_REVOKED: 'revoked',
  // Its session was ended by the disabling.
  ACCOUNT_DISABLED: 'disabled'
}

/** How a failed refresh counts when its token is dead (expired, invalid, revoked, reused); undefined for any other failure (a store away). */
export function deadRefreshTokenOutcome (error: unknown): RefreshOutcomeLabel | undefined {
  return error instanceof ServiceError ? DEAD_REFRESH_TOKEN[error.code] : undefined
}

/**
 * Login, refresh and logout over a SessionStore: the token lifecycle with no
 * HTTP in it. Errors are ServiceErrors from the catalogue.
 */
export class SessionService {
  constructor (private readonly deps: SessionServiceDeps) {}

  /**
   * Opens a session for a user whose password was just checked. If their
   * credentials changed meanwhile (a password change that listed their
   * sessions before this one existed), the session is ended at once and the
   * login refused: its password is no longer theirs.
   */
  async open (user: SessionOwner, client: ClientInfo): Promise<TokenPair> {
    const { store, clock, policy, users } = this.deps
    const now = clock.now()
    const familyId = newFamilyId()
    const sessionId = sessionIdOf(familyId)
    const absoluteExpiresAt = now + policy.sessionMaxAge * 1000
    const idleExpiresAt = Math.min(now + policy.refreshTokenTtl * 1000, absoluteExpiresAt)
    const secret = newRefreshSecret()
    await store.create({
      id: sessionId,
      userId: user.id,
      tokenHash: hashSecret(secret),
      credentialVersion: user.credentialVersion,
      createdAt: now,
      idleExpiresAt,
      absoluteExpiresAt,
      userAgent: client.userAgent,
      ip: client.ip
    }, now)
    // Read after the session exists: a credential change either shows here, or lists this session and ends it.
    let current: UserFacts | undefined
    try {
      current = await users.fresh(user.id)
    } catch (error) {
      // Not left behind as a session nobody holds. Best effort: the database's failure is the one to answer.
      await store.revoke(sessionId, clock.now()).catch(() => undefined)
      throw error
    }
    if (current === undefined || current.disabled || current.credentialVersion !== user.credentialVersion) {
      // No token of it was handed out: ending it in the store is enough.
      await store.revoke(sessionId, clock.now())
      // Disabled while the password was being checked: the answer a login after the disabling gets.
      throw new ServiceError(current?.disabled === true ? 'ACCOUNT_DISABLED' : 'INVALID_CREDENTIALS')
    }
    // Only a login that stands makes room for itself.
    const ended = await store.trim(user.id, sessionId, now, policy.maxSessionsPerUser)
    await Promise.all(ended.map((id) => this.deps.revocations.revokeSession(id)))
    this.deps.events.record({ type: 'login', userId: user.id, sessionId, ...client })
    return this.#pair(user.id, sessionId, refreshTokenOf(familyId, 0, idleExpiresAt, secret), idleExpiresAt, now, current)
  }

  async refresh (refreshToken: string, client: ClientInfo, log: SecurityLog): Promise<TokenPair> {
    try {
      const { pair, outcome } = await this.#refresh(refreshToken, client, log)
      this.deps.refreshed?.(outcome)
      return pair
    } catch (error) {
      this.deps.refreshed?.(deadRefreshTokenOutcome(error) ?? 'unavailable')
      throw error
    }
  }

  async #refresh (refreshToken: string, client: ClientInfo, log: SecurityLog): Promise<{ pair: TokenPair, outcome: RefreshOutcomeLabel }> {
    const { store, clock, policy } = this.deps
    const presented = parseRefreshToken(refreshToken)
    if (presented === undefined) throw new ServiceError('REFRESH_TOKEN_INVALID')
    const { familyId } = presented
    const sessionId = sessionIdOf(familyId)
    const now = clock.now()

    // With rotation, the next token's secret; its token is formed once the store says how long it lives.
    const successor = policy.rotateRefreshTokens ? newRefreshSecret() : undefined
    const outcome = await store.refresh({
      sessionId,
      generation: presented.generation,
      hash: hashSecret(presented.secret),
      now,
      idleTtlMs: policy.refreshTokenTtl * 1000,
      graceMs: policy.refreshReuseGrace * 1000,
      successor: successor === undefined ? undefined : { hash: hashSecret(successor), sealed: sealSuccessor(presented.secret, successor) },
      clientIp: policy.refreshBindIp ? client.ip : undefined
    })

    switch (outcome.result) {
      case 'refreshed':
      case 'grace': {
        let user = await this.deps.users.get(outcome.userId)
        // Unlike the credential version, the flag can go back: a stale cache must not end a session of an account enabled since.
        if (user?.disabled === true) user = await this.deps.users.fresh(outcome.userId)
        if (user === undefined || user.disabled || outcome.credentialVersion < user.credentialVersion) {
          // Opened before a credential change (a login in flight then, say), or disabled meanwhile: over.
          await this.#end(sessionId)
          throw new ServiceError(user?.disabled === true ? 'ACCOUNT_DISABLED' : 'REFRESH_TOKEN_REVOKED')
        }
        const sessionExpiresAt = Math.min(outcome.idleExpiresAt, outcome.absoluteExpiresAt)
        let secret = successor
        if (outcome.result === 'grace') {
          // The session's current token, reached from the presented one through the successors sealed at each rotation.
          secret = openSuccessors(presented.secret, outcome.sealedChain, outcome.currentHash)
          if (secret === undefined) throw new ServiceError('REFRESH_TOKEN_INVALID')
        }
        const token = secret === undefined ? refreshToken : refreshTokenOf(familyId, outcome.generation, sessionExpiresAt, secret)
        return {
          pair: this.#pair(outcome.userId, sessionId, token, sessionExpiresAt, now, user),
          outcome: outcome.result === 'grace' ? 'grace' : successor === undefined ? 'refreshed' : 'rotated'
        }
      }
      case 'reused':
        this.deps.events.record({ type: 'refresh_reuse_detected', userId: outcome.userId, sessionId, ...client })
        await this.deps.revocations.revokeSession(sessionId)
        log.warn({ event: 'refresh_token_reused', userId: outcome.userId, sessionId, ip: client.ip },
          'a spent refresh token was presented again: session revoked')
        this.deps.reuseDetected?.(outcome.userId, client)
        throw new ServiceError('REFRESH_TOKEN_REUSED')
      case 'ip-mismatch':
        log.warn({ event: 'refresh_from_other_address', userId: outcome.userId, sessionId, ip: client.ip },
          'refresh refused: client address differs from the one that opened the session')
        throw new ServiceError('REFRESH_TOKEN_INVALID')
      case 'revoked':
        // A session the disabling ended says why.
        throw new ServiceError(await this.#isDisabled(outcome.userId) ? 'ACCOUNT_DISABLED' : 'REFRESH_TOKEN_REVOKED')
      case 'expired':
        throw new ServiceError('REFRESH_TOKEN_EXPIRED')
      case 'unknown':
        // A token the store no longer knows had simply reached the end of its life, or never existed.
        throw new ServiceError(presented.expiresAt * 1000 <= now ? 'REFRESH_TOKEN_EXPIRED' : 'REFRESH_TOKEN_INVALID')
    }
  }

  /**
   * Logs out the session named by a refresh token (any token it issued: who
   * names the family held one) and/or by a verified access token's session
   * id. Answers whether a live session was revoked: one already gone writes
   * and publishes nothing, and is no error (logout is idempotent).
   */
  async logout ({ refreshToken, sessionId }: { refreshToken?: string, sessionId?: string }, client: ClientInfo): Promise<boolean> {
    const presented = refreshToken === undefined ? undefined : parseRefreshToken(refreshToken)
    const ended: Array<{ sessionId: string, userId: string | undefined }> = []
    if (presented !== undefined) {
      const id = sessionIdOf(presented.familyId)
      ended.push({ sessionId: id, userId: await this.#end(id, { generation: presented.generation }) })
    }
    if (sessionId !== undefined) ended.push({ sessionId, userId: await this.#end(sessionId) })
    for (const { sessionId, userId } of ended) {
      if (userId !== undefined) this.deps.events.record({ type: 'logout', userId, sessionId, ...client })
    }
    return ended.some(({ userId }) => userId !== undefined)
  }

  /** The user's live sessions; `current` marks the one the request came from. */
  async list (userId: string, currentSessionId: string): Promise<ListedSession[]> {
    const sessions = await this.deps.store.list(userId, this.deps.clock.now())
    return sessions.map((session) => ({ ...session, current: session.id === currentSessionId }))
  }

  /** Whether the session is live (neither revoked nor expired) and the user's: one store read. */
  async isLiveSessionOf (userId: string, sessionId: string): Promise<boolean> {
    return (await this.deps.store.get(sessionId, this.deps.clock.now()))?.userId === userId
  }

  /** Revokes one of the user's sessions; NOT_FOUND when it is not a live session of theirs. */
  async revokeOwned (userId: string, sessionId: string, caller: ClientInfo): Promise<void> {
    if (!await this.isLiveSessionOf(userId, sessionId) || await this.#end(sessionId) === undefined) {
      throw new ServiceError('NOT_FOUND', 'No such session')
    }
    // The event names the session that ended, not the one the request came from.
    this.deps.events.record({ type: 'session_revoked', userId, ip: caller.ip, userAgent: caller.userAgent, sessionId })
  }

  /** Revokes every session of the user (logout-all), or with `keepCallerSession` every one but the caller's (logout-others). */
  async revokeAll (userId: string, caller: Caller, { keepCallerSession = false } = {}): Promise<void> {
    await this.#revokeAll(userId, keepCallerSession ? caller.sessionId : undefined)
    this.deps.events.record({ type: 'sessions_revoked', userId, ...caller })
  }

  /** An admin revokes every session of the user: recorded with the admin as the actor. */
  async revokeAllByAdmin (userId: string, actor: AdminActor): Promise<void> {
    await this.#revokeAll(userId)
    this.deps.events.record({ type: 'sessions_revoked', userId, actorId: actor.id, ip: actor.ip, userAgent: actor.userAgent })
  }

  /**
   * The user's roles changed (already stored): every instance re-reads the
   * user and refuses access tokens claiming a role they no longer have;
   * after a removal (`narrowed`), every token issued before the change. The
   * sessions stay: their next refresh carries the new roles.
   */
  async rolesChanged (userId: string, roles: string[], change: { version: number, narrowed: boolean }): Promise<void> {
    await this.deps.revocations.rolesChanged(userId, roles, change)
  }

  async #revokeAll (userId: string, exceptSessionId?: string): Promise<void> {
    const { store, clock, revocations } = this.deps
    const revoked = await store.revokeAll(userId, clock.now(), exceptSessionId)
    await Promise.all(revoked.map((id) => revocations.revokeSession(id)))
    if (exceptSessionId === undefined) await revocations.revokeUser(userId)
  }

  /**
   * A credential change (a new password): `change` stores it and answers the
   * user's new credential version. Every session but the caller's ends,
   * and so does a login in flight (SessionService.open). The kept session is
   * stamped with the new version first, so its own refreshes meanwhile never
   * take it for one opened before the change.
   */
  async changeCredentials (user: SessionOwner, caller: Caller & { sessionId: string }, change: () => Promise<number | undefined>): Promise<void> {
    const { store, clock, revocations } = this.deps
    const keepSessionId = caller.sessionId
    await store.stamp(keepSessionId, user.credentialVersion + 1, clock.now())
    const version = await change()
    if (version === undefined) throw new ServiceError('INVALID_CREDENTIALS')
    // Another change at the same moment: the kept session follows the latest.
    if (version !== user.credentialVersion + 1) await store.stamp(keepSessionId, version, clock.now())
    await revocations.userChanged(user.id)
    await this.#revokeAll(user.id, keepSessionId)
    this.deps.events.record({ type: 'password_changed', userId: user.id, ...caller })
  }

  /**
   * Ends every session of the user for a change that `change` makes (a
   * password reset raises the credential version, a deletion removes the
   * user): their refresh tokens at once, their access tokens within a second
   * on every instance, and a login in flight meanwhile too (SessionService.open
   * re-reads the user after opening its session). Every instance re-reads the
   * user. `change` runs first: when it throws, nothing is revoked.
   */
  async endAllSessions<T> (userId: string, change: () => Promise<T>): Promise<T> {
    const result = await change()
    await this.deps.revocations.userChanged(userId)
    await this.#revokeAll(userId)
    return result
  }

  /** Tells every instance to re-read the user (a verified or changed address): cached facts and profiles are stale. */
  async userChanged (userId: string): Promise<void> {
    await this.deps.revocations.userChanged(userId)
  }

  /** Whether an admin disabled the user (what a refused refresh tells); a store away, or no such user, is not. */
  async #isDisabled (userId: string): Promise<boolean> {
    try {
      return (await this.deps.users.get(userId))?.disabled === true
    } catch {
      return false
    }
  }

  /**
   * Revokes a live session (with `presented`, only if it issued that
   * generation) and tells every instance; answers its user, or undefined
   * when there was no such live session.
   */
  async #end (sessionId: string, presented?: { generation: number }): Promise<string | undefined> {
    const userId = await this.deps.store.revoke(sessionId, this.deps.clock.now(), presented)
    if (userId !== undefined) await this.deps.revocations.revokeSession(sessionId)
    return userId
  }

  #pair (userId: string, sessionId: string, refreshToken: string, sessionExpiresAt: number, now: number, user: UserFacts): TokenPair {
    const { policy } = this.deps
    return {
      accessToken: this.deps.issueAccessToken(userId, sessionId, sessionExpiresAt, { emailVerified: user.emailVerified, roles: user.roles }),
      refreshToken,
      tokenType: 'Bearer',
      expiresIn: accessTokenLifetime(now, policy.accessTokenTtl, sessionExpiresAt),
      refreshExpiresIn: Math.max(0, Math.floor((sessionExpiresAt - now) / 1000))
    }
  }
}
