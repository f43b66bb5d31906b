import fastifyJwt from '@fastify/jwt'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import {
  ACCESS_TOKEN_TYP, MAX_TOKEN_LENGTH, REQUIRED_CLAIMS, accessTokenClaims, bearerToken, checkAccessClaims,
  type AccessTokenClaims, type AccessTokenFacts
} from '../src/access-token.js'
import { ServiceError, type ErrorCode } from '../src/errors.js'
import { loadSigningKeys, type SigningKeys } from '../src/keys.js'

/**
 * Verified tokens remembered by each verification key (fast-jwt's cache), so a
 * token's signature is checked once, not on every request.
 */
const VERIFIED_TOKENS_KEPT = 10_000

export interface AccessTokenVerification {
  /** A token the route was handed (introspection's, from its body), verified instead of the request's bearer token. */
  token?: string
  /** Accepts an expired token: its signature and claims are still checked (logout names the session of one). */
  allowExpired?: boolean
}

/** Calls back with a verified token's claims, or with why it is refused: a ServiceError (anything else is a fault). */
export type AccessTokenCallback = (...result: [error: Error, claims: undefined] | [error: null, claims: AccessTokenClaims]) => void

export interface AccessTokens {
  /** An access token for the session, never expiring after `notAfter` (ms): its session's end. */
  issue(userId: string, sessionId: string, notAfter: number, facts: AccessTokenFacts): string
  /**
   * Verifies the access token `request` presents: size, kid, signature,
   * algorithm, issuer, audience, type, claims and (unless allowed) expiry.
   * Revocation is the caller's to check.
   */
  verify(request: FastifyRequest, options: AccessTokenVerification, done: AccessTokenCallback): void
  verify(request: FastifyRequest, options?: AccessTokenVerification): Promise<AccessTokenClaims>
}

export interface JwtPluginOptions {
  /** The verification cache's bound, for each verification key (VERIFIED_TOKENS_KEPT unless given). */
  verifiedTokensKept?: number
}

declare module 'fastify' {
  interface FastifyInstance {
    signingKeys: SigningKeys
    accessTokens: AccessTokens
  }
}

declare module '@fastify/jwt' {
  interface FastifyJWT {
    /** What fastify.jwt.sign signs. */
    payload: AccessTokenClaims
    /**
     * `request.user`, which @fastify/jwt sets to a token's payload once its signature
     * and claims pass, before expiry and revocation are checked: nothing to read.
     * A protected route reads `request.auth` (plugins/auth.ts).
     */
    user: unknown
  }
  interface JwtVerifyFunction {
    /**
     * Without options: the one callback form that verifies with the verifier
     * @fastify/jwt builds once for each key, and so uses its cache. (It takes
     * `request.jwtVerify(callback)` as a call with options, and builds a new
     * verifier, with an empty cache, every time.)
     */
    (options: undefined, callback: (error: Error | null, payload: Record<string, unknown>) => void): void
  }
}

/**
 * What @fastify/jwt refuses a token with (its FST_JWT_* errors, and fast-jwt's
 * FAST_JWT_* ones it passes on) that is not ACCESS_TOKEN_INVALID. Expiry is
 * ours to check (ignoreExpiration), so the expired one is only for completeness.
 */
const REFUSALS: Partial<Record<string, ErrorCode>> = {
  FST_JWT_NO_AUTHORIZATION_IN_HEADER: 'ACCESS_TOKEN_MISSING',
  FST_JWT_BAD_REQUEST: 'ACCESS_TOKEN_MISSING',
  FST_JWT_AUTHORIZATION_TOKEN_EXPIRED: 'ACCESS_TOKEN_EXPIRED'
}

/** The answer (API.md) to an error of request.jwtVerify: the one place its errors become ours. */
function refusal (error: Error): Error {
  // Ours already: from extractToken or the key lookup.
  if (error instanceof ServiceError) return error
  const code = 'code' in error ? error.code : undefined
  // Not a refusal of the token but a fault, answered as one.
  if (typeof code !== 'string' || !/^FA?ST_JWT_/.test(code)) return error
  return new ServiceError(REFUSALS[code] ?? 'ACCESS_TOKEN_INVALID')
}

/**
 * Access tokens through @fastify/jwt (on fast-jwt), registered once: the current
 * key signs; a token is verified with the key its `kid` names (the current one
 * or a retired one of JWT_PREVIOUS_PUBLIC_KEYS) and with no other, by the
 * verifier @fastify/jwt builds once for that key, whose cache remembers verified
 * tokens. Expiry is checked against the app's clock rather than fast-jwt's, so
 * tests can move time, on every use, cache hits included; everything else (only
 * the configured algorithm, iss, aud, typ, required claims) is fast-jwt's.
 */
async function jwtPlugin (fastify: FastifyInstance, options: JwtPluginOptions): Promise<void> {
  const { config, clock } = fastify
  const keys = await loadSigningKeys(config)
  const keysByKid = new Map(keys.verificationKeys.map(({ kid, key }) => [kid, key]))
  // Tokens handed to verify() for a request, read by extractToken in its place of the bearer token.
  const handedTokens = new WeakMap<FastifyRequest, string>()

  /** The token a request presents, refused before any parsing when it is missing or too long. */
  function presentedToken (request: FastifyRequest): string {
    const handed = handedTokens.get(request)
    if (handed === undefined) return bearerToken(request.headers.authorization)
    if (handed.length > MAX_TOKEN_LENGTH) throw new ServiceError('ACCESS_TOKEN_INVALID', 'The access token is too long')
    return handed
  }

  await fastify.register(fastifyJwt, {
    secret: {
      private: keys.signingKey,
      // The decoded token (decode.complete): its header's kid picks the key, and nothing else does.
      // A PEM (or HS256 secret) string, so @fastify/jwt keeps one verifier for each key.
      public: (_request, token, callback) => {
        const key = keysByKid.get(token.header.kid)
        if (key === undefined) callback(new ServiceError('ACCESS_TOKEN_INVALID'), undefined)
        else callback(null, key)
      }
    },
    decode: { complete: true },
    sign: { algorithm: keys.algorithm, kid: keys.kid, header: { alg: keys.algorithm, typ: ACCESS_TOKEN_TYP } },
    verify: {
      extractToken: presentedToken,
      algorithms: [keys.algorithm],
      allowedIss: config.jwt.issuer,
      allowedAud: config.jwt.audience,
      requiredClaims: [...REQUIRED_CLAIMS],
      checkTyp: ACCESS_TOKEN_TYP,
      ignoreExpiration: true,
      // Only verified tokens are served from it. fast-jwt stores a refusal too, already
      // stale so never served, but it takes a place: a forged token with a known kid
      // evicts the least recently used entry (which then costs one more signature check).
      cache: options.verifiedTokensKept ?? VERIFIED_TOKENS_KEPT,
      // Keyed on the token itself, not on fast-jwt's default SHA-512 of it: about 5 MB for
      // 10,000 tokens, and no hash on every request (bench, /users/me: 0.47x bare with it, 0.67x without).
      cacheKeyBuilder: (token: string) => token,
      // Expiry being ours, an entry lasts at most as long as an access token does.
      cacheTTL: config.accessTokenTtl * 1000
    }
  })

  function verify (request: FastifyRequest, options: AccessTokenVerification, done: AccessTokenCallback): void
  function verify (request: FastifyRequest, options?: AccessTokenVerification): Promise<AccessTokenClaims>
  function verify (
    request: FastifyRequest, { token, allowExpired = false }: AccessTokenVerification = {}, done?: AccessTokenCallback
  ): Promise<AccessTokenClaims> | undefined {
    if (done === undefined) {
      return new Promise((resolve, reject) => {
        verify(request, { token, allowExpired }, (error, claims) => error === null ? resolve(claims) : reject(error))
      })
    }
    if (token !== undefined) handedTokens.set(request, token)
    request.jwtVerify(undefined, (error, payload) => {
      if (token !== undefined) handedTokens.delete(request)
      if (error !== null) return done(refusal(error), undefined)
      let claims: AccessTokenClaims
      try {
        claims = checkAccessClaims(payload, clock.now(), { allowExpired })
      } catch (error) {
        return done(error as Error, undefined)
      }
      done(null, claims)
    })
  }

  const accessTokens: AccessTokens = {
    issue: (userId, sessionId, notAfter, facts) => fastify.jwt.sign(accessTokenClaims({
      userId,
      sessionId,
      facts,
      now: clock.now(),
      ttlSeconds: config.accessTokenTtl,
      notAfter,
      issuer: config.jwt.issuer,
      audience: config.jwt.audience
    })),
    verify
  }

  fastify.decorate('signingKeys', keys)
  fastify.decorate('accessTokens', accessTokens)
}

export default fp(jwtPlugin, { name: 'jwt', dependencies: ['config'] })
