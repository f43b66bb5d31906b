import { randomUUID } from 'node:crypto'
import { ServiceError } from './errors.js'
import { isRoleList } from './roles.js'

/** Tokens longer than this are refused before any parsing or signature work. */
export const MAX_TOKEN_LENGTH = 8192

/** The claim that marks an access token (a refresh token is never a JWT). */
export const TOKEN_USE = 'access'

/** RFC 9068's media type for JWT access tokens, put in and checked on the `typ` header. */
export const ACCESS_TOKEN_TYP = 'at+jwt'

export const REQUIRED_CLAIMS = ['sub', 'sid', 'jti', 'iat', 'exp', 'iss', 'aud', 'token_use'] as const

export interface AccessTokenClaims {
  sub: string
  sid: string
  jti: string
  iat: number
  exp: number
  iss: string
  aud: string
  token_use: typeof TOKEN_USE
  /** Whether the user's address was verified when the token was issued (API.md, "Tokens"). */
  email_verified: boolean
  /**
   * The user's roles when the token was issued. Optional when verifying: a
   * token issued before roles existed has none (it is refused by role-gated
   * routes, and expires within ACCESS_TOKEN_TTL).
   */
  roles?: string[]
}

/** What an access token says of its user besides who they are. */
export interface AccessTokenFacts {
  emailVerified: boolean
  roles: string[]
}

/** Seconds an access token issued at `now` lives: `ttlSeconds`, cut short by `notAfter` (its session's end, ms). */
export function accessTokenLifetime (now: number, ttlSeconds: number, notAfter: number): number {
  return Math.max(0, Math.min(ttlSeconds, Math.floor(notAfter / 1000) - Math.floor(now / 1000)))
}

/** The claims of a new access token: it expires `ttlSeconds` after `now`, or at `notAfter` (its session's end, ms) if sooner. */
export function accessTokenClaims (
  { userId, sessionId, facts, now, ttlSeconds, notAfter, issuer, audience }:
  { userId: string, sessionId: string, facts: AccessTokenFacts, now: number, ttlSeconds: number, notAfter: number, issuer: string, audience: string }
): AccessTokenClaims {
  const iat = Math.floor(now / 1000)
  const exp = iat + accessTokenLifetime(now, ttlSeconds, notAfter)
  return {
    sub: userId,
    sid: sessionId,
    jti: randomUUID(),
    iat,
    exp,
    iss: issuer,
    aud: audience,
    token_use: TOKEN_USE,
    email_verified: facts.emailVerified,
    roles: facts.roles
  }
}

/** The token of an `Authorization: Bearer <token>` header. */
export function bearerToken (authorization: string | undefined): string {
  const scheme = authorization === undefined ? null : /^Bearer(?:\s+|$)/i.exec(authorization)
  const token = scheme === null ? '' : authorization!.slice(scheme[0].length).trim()
  if (token === '') throw new ServiceError('ACCESS_TOKEN_MISSING')
  if (token.length > MAX_TOKEN_LENGTH || /\s/.test(token)) throw new ServiceError('ACCESS_TOKEN_INVALID')
  return token
}

/**
 * Checks what signature verification leaves to us: the claims' types, the
 * token type, and expiry against the injected clock (`now`, ms). Run on every
 * use of a token, a verification cache's hits included.
 */
export function checkAccessClaims (payload: Record<string, unknown>, now: number, { allowExpired = false } = {}): AccessTokenClaims {
  const { sub, sid, jti, iat, exp, token_use: tokenUse, roles } = payload
  if (
    typeof sub !== 'string' || typeof sid !== 'string' || typeof jti !== 'string' ||
    typeof iat !== 'number' || typeof exp !== 'number' || tokenUse !== TOKEN_USE ||
    (roles !== undefined && !isRoleList(roles))
  ) {
    throw new ServiceError('ACCESS_TOKEN_INVALID')
  }
  if (!allowExpired && exp * 1000 <= now) throw new ServiceError('ACCESS_TOKEN_EXPIRED')
  return payload as unknown as AccessTokenClaims
}
