import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { ServiceError } from '../src/errors.js'
import { User, documented, errorResponses } from '../src/schemas.js'

const userRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/users/me', {
    schema: {
      tags: ['users'],
      operationId: 'getMe',
      summary: 'The signed-in user',
      description: 'The account of the access token in `Authorization: Bearer <accessToken>` (in Swagger UI: "Authorize" ' +
        'with the `accessToken` from `POST /auth/login`).',
      response: {
        200: documented(User, { description: 'The signed-in user\'s account' }),
        ...errorResponses('ACCESS_TOKEN_MISSING', 'ACCESS_TOKEN_EXPIRED', 'ACCESS_TOKEN_INVALID', 'ACCESS_TOKEN_REVOKED', 'STORE_UNAVAILABLE')
      }
    }
  }, async (request) => {
    const user = await fastify.users.findProfile(request.auth!.sub)
    // A token outliving its account is as good as revoked.
    if (user === undefined) throw new ServiceError('ACCESS_TOKEN_REVOKED')
    return { id: user.id, email: user.email, createdAt: user.createdAt.toISOString() }
  })
}

export default userRoutes
