import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { bearerToken, type AccessTokenClaims } from '../src/access-token.js'
import { ServiceError } from '../src/errors.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Reachable without an access token. Routes are protected unless they say so. */
    public?: boolean
  }
  interface FastifyRequest {
    /** The verified access token's claims; set on every protected route. */
    auth: AccessTokenClaims | null
  }
}

/** Swagger UI and its assets, registered by @fastify/swagger-ui under this prefix. */
export const DOCS_PREFIX = '/docs'

/** Whether a route (by its url) is Swagger UI's. */
export function isDocsRoute (url: string): boolean {
  return url === DOCS_PREFIX || url.startsWith(`${DOCS_PREFIX}/`)
}

function isPublic (request: FastifyRequest): boolean {
  // routeOptions is built anew on each read: read once.
  const { config, url } = request.routeOptions
  // A 404 has no route url.
  return url === undefined || config.public === true || isDocsRoute(url)
}

/**
 * One onRequest hook verifies the access token on every route except the
 * public ones, so a new route is protected by default. Revocation is checked
 * in memory: no round trip per request.
 */
async function authPlugin (fastify: FastifyInstance): Promise<void> {
  fastify.decorateRequest('auth', null)
  // Callback style: the hot path of every protected request allocates no promise.
  fastify.addHook('onRequest', function authenticate (request, _reply, done) {
    if (isPublic(request)) return done()
    try {
      const claims = fastify.accessTokens.verify(bearerToken(request.headers.authorization))
      if (fastify.revocations.rejects(claims)) throw new ServiceError('ACCESS_TOKEN_REVOKED')
      request.auth = claims
      done()
    } catch (error) {
      done(error as Error)
    }
  })
}

export default fp(authPlugin, { name: 'auth', dependencies: ['jwt', 'revocations'] })
