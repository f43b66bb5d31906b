import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { AccessTokenClaims } from '../src/access-token.js'
import { ServiceError } from '../src/errors.js'
import { hasRoles } from '../src/roles.js'
import { isDocsRoute } from './shared/docs.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Reachable without an access token. Routes are protected unless they say so. */
    public?: boolean
    /** Reachable only with an access token carrying every one of these roles (403 FORBIDDEN otherwise). */
    roles?: readonly string[]
  }
  interface FastifyRequest {
    /** The verified access token's claims; set on every protected route. */
    auth: AccessTokenClaims | null
  }
}

/**
 * One onRequest hook verifies the access token on every route except the
 * public ones, so a new route is protected by default, and checks the roles
 * a route requires. Revocation is checked in memory: no round trip per request.
 */
async function authPlugin (fastify: FastifyInstance): Promise<void> {
  fastify.decorateRequest('auth', null)
  // Callback style: the hot path of every protected request allocates no promise.
  fastify.addHook('onRequest', function authenticate (request, _reply, done) {
    // routeOptions is built anew on each read: read once.
    const { config, url } = request.routeOptions
    // A 404 has no route url.
    if (url === undefined || config.public === true || isDocsRoute(url)) return done()
    // The request's bearer token, through request.jwtVerify (plugins/jwt.ts).
    fastify.accessTokens.verify(request, {}, (error, claims) => {
      if (error !== null) return done(error)
      if (fastify.revocations.rejects(claims)) return done(new ServiceError('ACCESS_TOKEN_REVOKED'))
      request.auth = claims
      // After the token: 401 for who is unknown, 403 for who is known and lacks a role.
      if (config.roles !== undefined && !hasRoles(claims.roles, config.roles)) return done(new ServiceError('FORBIDDEN'))
      done()
    })
  })
}

export default fp(authPlugin, { name: 'auth', dependencies: ['jwt', 'revocations', 'route-access'] })
