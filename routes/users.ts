import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { ServiceError } from '../src/errors.js'
import { UserResponse, userResponseOf } from './schemas.js'
import { documented, errorResponses } from '../plugins/shared/openapi.js'

const userRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/users/me', {
    schema: {
      tags: ['users'],
      operationId: 'getMe',
      summary: 'The signed-in user',
      description: 'The account of the access token in `Authorization: Bearer <accessToken>` (in Swagger UI: "Authorize" ' +
        'with the `accessToken` from `POST /auth/login`).',
      response: {
        200: documented(UserResponse, { description: 'The signed-in user\'s account' }),
        ...errorResponses('ACCESS_TOKEN_MISSING', 'ACCESS_TOKEN_EXPIRED', 'ACCESS_TOKEN_INVALID', 'ACCESS_TOKEN_REVOKED', 'STORE_UNAVAILABLE')
      }
    }
  }, (request, reply) => {
    const { users } = fastify
    const userId = request.auth!.sub
    // Nearly every answer comes from the profile cache: that path makes no promise.
    const cached = users.cachedProfile(userId)
    if (cached !== undefined) {
      reply.send(userResponseOf(cached))
      return
    }
    return users.findProfile(userId).then((user) => {
      // A token outliving its account is as good as revoked.
      if (user === undefined) throw new ServiceError('ACCESS_TOKEN_REVOKED')
      return userResponseOf(user)
    })
  })
}

export default userRoutes
