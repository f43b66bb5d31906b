import fastifyJwt, { type JWT } from '@fastify/jwt'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { LRUCache } from 'lru-cache'
import {
  ACCESS_TOKEN_TYP, MAX_TOKEN_LENGTH, REQUIRED_CLAIMS, accessTokenClaims, checkAccessClaims, checkExpiry, headerKid,
  type AccessTokenClaims
} from '../src/access-token.js'
import { ServiceError } from '../src/errors.js'
import { loadSigningKeys, type SigningKeys } from '../src/keys.js'

/** Verified tokens remembered, so a token's signature is checked once, not on every request. */
export const VERIFIED_TOKENS_KEPT = 10_000

export interface AccessTokens {
  /** An access token for the session, never expiring after `notAfter` (ms): its session's end. */
  issue(userId: string, sessionId: string, notAfter: number): string
  /** Verifies size, kid, signature, algorithm, issuer, audience, type, claims and (unless allowed) expiry. */
  verify(token: string, options?: { allowExpired?: boolean }): AccessTokenClaims
  /** How many verified tokens are remembered right now. */
  readonly cachedTokens: number
}

export interface JwtPluginOptions {
  /** The verification cache's bound (VERIFIED_TOKENS_KEPT unless given). */
  verifiedTokensKept?: number
}

declare module 'fastify' {
  interface FastifyInstance {
    signingKeys: SigningKeys
    accessTokens: AccessTokens
  }
}

/**
 * Access tokens through @fastify/jwt (fast-jwt). Each verification key (the
 * current one, then retired ones kept for key rotation) is its own @fastify/jwt
 * namespace with a verifier built once; a token is verified by the key its
 * `kid` names, and by nothing else. Expiry is checked against the app's clock
 * rather than fast-jwt's, so tests can move time; everything else (only the
 * configured algorithm, iss, aud, typ, required claims) is fast-jwt's.
 */
async function jwtPlugin (fastify: FastifyInstance, options: JwtPluginOptions): Promise<void> {
  const { config, clock } = fastify
  const keys = await loadSigningKeys(config)

  const verifiers = new Map<string, JWT>()
  for (const [index, { kid, key }] of keys.verificationKeys.entries()) {
    const namespace = `key${index}`
    await fastify.register(fastifyJwt, {
      namespace,
      // Only the current key signs; retired ones verify the tokens they signed until those expire.
      secret: index === 0 ? { private: keys.signingKey, public: key } : { public: key },
      sign: { algorithm: keys.algorithm, kid, header: { alg: keys.algorithm, typ: ACCESS_TOKEN_TYP } },
      verify: {
        algorithms: [keys.algorithm],
        allowedIss: config.jwt.issuer,
        allowedAud: config.jwt.audience,
        requiredClaims: [...REQUIRED_CLAIMS],
        checkTyp: ACCESS_TOKEN_TYP,
        ignoreExpiration: true
      }
    })
    verifiers.set(kid, (fastify.jwt as unknown as Record<string, JWT>)[namespace]!)
  }
  const signer = verifiers.get(keys.kid)!
  // Bounded. No TTL to track: every hit has its expiry checked, and an expired one is dropped.
  const verified = new LRUCache<string, AccessTokenClaims>({ max: options.verifiedTokensKept ?? VERIFIED_TOKENS_KEPT })

  const accessTokens: AccessTokens = {
    issue: (userId, sessionId, notAfter) => signer.sign({
      ...accessTokenClaims({
        userId,
        sessionId,
        now: clock.now(),
        ttlSeconds: config.accessTokenTtl,
        notAfter,
        issuer: config.jwt.issuer,
        audience: config.jwt.audience
      })
    }),
    verify (token, { allowExpired = false } = {}) {
      const now = clock.now()
      // A hit is a token whose signature and claims were already checked; expiry
      // (and, by the caller, revocation) is still checked on every use.
      const known = verified.get(token)
      if (known !== undefined) {
        try {
          return checkExpiry(known, now, { allowExpired })
        } catch (error) {
          verified.delete(token)
          throw error
        }
      }
      if (token.length > MAX_TOKEN_LENGTH) throw new ServiceError('ACCESS_TOKEN_INVALID', 'The access token is too long')
      const verifier = verifiers.get(headerKid(token) ?? '')
      if (verifier === undefined) throw new ServiceError('ACCESS_TOKEN_INVALID')
      let payload: Record<string, unknown>
      try {
        payload = verifier.verify(token)
      } catch {
        throw new ServiceError('ACCESS_TOKEN_INVALID')
      }
      const claims = checkAccessClaims(payload, now, { allowExpired })
      if (claims.exp * 1000 > now) verified.set(token, claims)
      return claims
    },
    get cachedTokens () {
      return verified.size
    }
  }

  fastify.decorate('signingKeys', keys)
  fastify.decorate('accessTokens', accessTokens)
}

export default fp(jwtPlugin, { name: 'jwt', dependencies: ['config'] })
