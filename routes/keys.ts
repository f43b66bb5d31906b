import fastifyEtag from '@fastify/etag'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { Jwks } from './schemas.js'
import { documented, errorResponses } from '../plugins/shared/openapi.js'

/** Consumers refetch on an unknown kid, so caching for up to one access-token lifetime (at most an hour) is safe. */
const MAX_CACHE_SECONDS = 3600

const keyRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  // Registered in this route's own context: ETag and 304 for the key set, no hashing on other routes.
  await fastify.register(fastifyEtag)
  const body = { keys: fastify.signingKeys.published }
  const cacheControl = `public, max-age=${Math.min(fastify.config.accessTokenTtl, MAX_CACHE_SECONDS)}`

  fastify.get('/.well-known/jwks.json', {
    config: { public: true },
    schema: {
      tags: ['keys'],
      operationId: 'getJwks',
      summary: 'Public keys for verifying access tokens',
      description: 'The current signing key and retired keys whose tokens may still be valid, by kid (RFC 7517). ' +
        'Another service verifies an access token with the key its header\'s `kid` names, accepting only that key\'s ' +
        '`alg`, and checks `iss`, `aud`, `exp` and `token_use`. Empty with HS256. Cacheable; answers 304 to a matching If-None-Match.',
      response: {
        200: documented(Jwks, {
          description: 'The public keys',
          headers: {
            'cache-control': { type: 'string', description: 'public, max-age=<at most one access-token lifetime, at most an hour>' },
            etag: { type: 'string', description: 'Send it back as If-None-Match' }
          }
        }),
        304: Type.Null({ description: 'Not modified: the key set matches If-None-Match' }),
        ...errorResponses()
      }
    }
  }, async (_request, reply) => {
    reply.header('cache-control', cacheControl)
    return body
  })
}

export default keyRoutes
