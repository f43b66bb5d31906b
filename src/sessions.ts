import type { Clock } from './clock.js'
import type { Config } from './config.js'
import { ServiceError } from './errors.js'
import {
  hashSecret, issueRefreshToken, newRefreshSecret, newSessionId, openSuccessor, parseRefreshToken,
  refreshTokenOf, sealSuccessor, sessionStartedAt, type RefreshToken
} from './refresh-token.js'
import type { RevocationList } from './revocation-list.js'
import type { SessionInfo, SessionStore } from './session-store.js'

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

/** Where security events go (a pino logger in the service). */
export interface SecurityLog {
  warn(details: object, message: string): void
}

export type SessionPolicy = Pick<Config,
  'accessTokenTtl' | 'refreshTokenTtl' | 'sessionMaxAge' | 'rotateRefreshTokens' | 'refreshReuseGrace' | 'refreshBindIp'>

export interface SessionServiceDeps {
  store: SessionStore
  clock: Clock
  policy: SessionPolicy
  revocations: RevocationList
  /** Signs an access token for the session; its lifetime is `policy.accessTokenTtl`. */
  issueAccessToken(userId: string, sessionId: string): string
}

/**
 * Login, refresh and logout over a SessionStore: the token lifecycle with no
 * HTTP in it. Errors are ServiceErrors from the catalogue.
 */
export class SessionService {
  constructor (private readonly deps: SessionServiceDeps) {}

  async open (userId: string, client: ClientInfo): Promise<TokenPair> {
    const { store, clock, policy } = this.deps
    const now = clock.now()
    const sessionId = newSessionId(now)
    const absoluteExpiresAt = now + policy.sessionMaxAge * 1000
    const idleExpiresAt = Math.min(now + policy.refreshTokenTtl * 1000, absoluteExpiresAt)
    const { token, secret } = issueRefreshToken(sessionId, idleExpiresAt)
    await store.create({
      id: sessionId,
      userId,
      tokenHash: hashSecret(secret),
      createdAt: now,
      idleExpiresAt,
      absoluteExpiresAt,
      userAgent: client.userAgent,
      ip: client.ip
    }, now)
    return this.#pair(userId, sessionId, token, idleExpiresAt, now)
  }

  async refresh (refreshToken: string, client: ClientInfo, log: SecurityLog): Promise<TokenPair> {
    const { store, clock, policy, revocations } = this.deps
    const presented = parseRefreshToken(refreshToken)
    if (presented === undefined) throw new ServiceError('REFRESH_TOKEN_INVALID')
    const { sessionId } = presented
    const now = clock.now()
    const idleTtlMs = policy.refreshTokenTtl * 1000

    // With rotation, the next token's secret; its token is formed once the store says how long it lives.
    const successor = policy.rotateRefreshTokens ? newRefreshSecret() : undefined
    const outcome = await store.refresh({
      sessionId,
      presentedHash: hashSecret(presented.secret),
      now,
      idleTtlMs,
      graceMs: policy.refreshReuseGrace * 1000,
      successor: successor === undefined ? undefined : { hash: hashSecret(successor), sealed: sealSuccessor(presented.secret, successor) },
      clientIp: policy.refreshBindIp ? client.ip : undefined
    })

    switch (outcome.result) {
      case 'refreshed': {
        const sessionExpiresAt = Math.min(outcome.idleExpiresAt, outcome.absoluteExpiresAt)
        const token = successor === undefined ? refreshToken : refreshTokenOf(sessionId, sessionExpiresAt, successor)
        return this.#pair(outcome.userId, sessionId, token, sessionExpiresAt, now)
      }
      case 'grace': {
        // The same successor the rotation returned: same secret, and the same expiry, which the store set then.
        const remembered = openSuccessor(presented.secret, outcome.sealedSuccessor, outcome.successorHash)
        if (remembered === undefined) throw new ServiceError('REFRESH_TOKEN_INVALID')
        const sessionExpiresAt = Math.min(outcome.idleExpiresAt, outcome.absoluteExpiresAt)
        return this.#pair(outcome.userId, sessionId, refreshTokenOf(sessionId, sessionExpiresAt, remembered), sessionExpiresAt, now)
      }
      case 'reused':
        await revocations.revokeSession(sessionId)
        log.warn({ event: 'refresh_token_reused', userId: outcome.userId, sessionId, ip: client.ip },
          'a rotated refresh token was presented again: session revoked')
        throw new ServiceError('REFRESH_TOKEN_REUSED')
      case 'ip-mismatch':
        log.warn({ event: 'refresh_from_other_address', userId: outcome.userId, sessionId, ip: client.ip },
          'refresh refused: client address differs from the one that opened the session')
        throw new ServiceError('REFRESH_TOKEN_INVALID')
      case 'revoked':
        throw new ServiceError('REFRESH_TOKEN_REVOKED')
      case 'expired':
        throw new ServiceError('REFRESH_TOKEN_EXPIRED')
      case 'unknown':
        throw new ServiceError(lapsed(presented, now, policy) ? 'REFRESH_TOKEN_EXPIRED' : 'REFRESH_TOKEN_INVALID')
    }
  }

  /**
   * Revokes the session named by a refresh token (only its current or
   * previous one) and/or by a verified access token's session id. Unknown or
   * already revoked sessions are not an error: logout is idempotent.
   */
  async close ({ refreshToken, sessionId }: { refreshToken?: string, sessionId?: string }): Promise<void> {
    const { store, clock, revocations } = this.deps
    const presented = refreshToken === undefined ? undefined : parseRefreshToken(refreshToken)
    if (presented !== undefined) {
      const userId = await store.revoke(presented.sessionId, clock.now(), hashSecret(presented.secret))
      if (userId !== undefined) await revocations.revokeSession(presented.sessionId)
    }
    if (sessionId !== undefined) {
      await store.revoke(sessionId, clock.now())
      await revocations.revokeSession(sessionId)
    }
  }

  /** The user's live sessions; `current` marks the one the request came from. */
  async list (userId: string, currentSessionId: string): Promise<Array<SessionInfo & { current: boolean }>> {
    const sessions = await this.deps.store.list(userId, this.deps.clock.now())
    return sessions.map((session) => ({ ...session, current: session.id === currentSessionId }))
  }

  /** Whether the session is live (neither revoked nor expired) and the user's. */
  async isLiveSessionOf (userId: string, sessionId: string): Promise<boolean> {
    return (await this.deps.store.list(userId, this.deps.clock.now())).some(({ id }) => id === sessionId)
  }

  /** Revokes one of the user's sessions; NOT_FOUND when it is not a live session of theirs. */
  async revokeOwned (userId: string, sessionId: string): Promise<void> {
    const { store, clock, revocations } = this.deps
    if (!await this.isLiveSessionOf(userId, sessionId)) throw new ServiceError('NOT_FOUND', 'No such session')
    await store.revoke(sessionId, clock.now())
    await revocations.revokeSession(sessionId)
  }

  /** Revokes every session of the user, or every one but `exceptSessionId`. */
  async revokeAll (userId: string, exceptSessionId?: string): Promise<void> {
    const { store, clock, revocations } = this.deps
    const revoked = await store.revokeAll(userId, clock.now(), exceptSessionId)
    await Promise.all(revoked.map((id) => revocations.revokeSession(id)))
    if (exceptSessionId === undefined) await revocations.revokeUser(userId)
  }

  #pair (userId: string, sessionId: string, refreshToken: string, sessionExpiresAt: number, now: number): TokenPair {
    return {
      accessToken: this.deps.issueAccessToken(userId, sessionId),
      refreshToken,
      tokenType: 'Bearer',
      expiresIn: this.deps.policy.accessTokenTtl,
      refreshExpiresIn: Math.max(0, Math.floor((sessionExpiresAt - now) / 1000))
    }
  }
}

/** Whether a token the store no longer knows had simply reached the end of its life. */
function lapsed (token: RefreshToken, now: number, policy: SessionPolicy): boolean {
  return token.expiresAt * 1000 <= now || sessionStartedAt(token.sessionId) + policy.sessionMaxAge * 1000 <= now
}
