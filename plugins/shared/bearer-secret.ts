import { createHash, timingSafeEqual } from 'node:crypto'
import type { onRequestAsyncHookHandler } from 'fastify'
import { bearerToken } from '../../src/access-token.js'
import { ServiceError } from '../../src/errors.js'

const sha256 = (text: string): Buffer => createHash('sha256').update(text).digest()

/**
 * An onRequest hook for a route that other services reach with a shared
 * secret (introspection, metrics): 404 while the secret is not configured,
 * 401 for a missing or wrong one. The caller is authenticated before its body
 * is even read.
 */
export function requireBearerSecret (secret: string | undefined, feature: string): onRequestAsyncHookHandler {
  const expected = secret === undefined ? undefined : sha256(secret)
  return async (request, reply) => {
    if (expected === undefined) throw new ServiceError('NOT_FOUND', `${feature} is not enabled`)
    let presented: string
    try {
      presented = bearerToken(request.headers.authorization)
    } catch (error) {
      // RFC 6750: no credentials, no error code; malformed ones are an invalid token.
      const malformed = error instanceof ServiceError && error.code === 'ACCESS_TOKEN_INVALID'
      reply.header('www-authenticate', malformed ? 'Bearer error="invalid_token"' : 'Bearer')
      throw error
    }
    // Digests of equal length, compared in constant time: the secret's length leaks nothing either.
    if (!timingSafeEqual(sha256(presented), expected)) {
      reply.header('www-authenticate', 'Bearer error="invalid_token"')
      throw new ServiceError('ACCESS_TOKEN_INVALID', `Wrong ${feature.toLowerCase()} secret`)
    }
  }
}
