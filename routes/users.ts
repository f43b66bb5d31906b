import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { ServiceError } from '../src/errors.js'
import { AcceptedResponse, EmailChangeBody, PasswordBody, UserResponse, userResponseOf } from './schemas.js'
import { ACCESS_TOKEN_ERRORS, documented, errorResponses } from '../plugins/shared/openapi.js'
import { normalizeEmailField } from '../plugins/shared/request-body.js'

const BODY_ERRORS = ['VALIDATION_ERROR', 'PAYLOAD_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE', 'STORE_UNAVAILABLE'] as const

const userRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/users/me', {
    schema: {
      tags: ['users'],
      operationId: 'getMe',
      summary: 'The signed-in user',
      description: 'The account of the access token in `Authorization: Bearer <accessToken>` (in Swagger UI: "Authorize" ' +
        'with the `accessToken` from `POST /auth/login`). `roles` are the account\'s roles now; access tokens carry them ' +
        'as they were at their issue (refresh for the current ones).',
      response: {
        200: documented(UserResponse, { description: 'The signed-in user\'s account' }),
        ...errorResponses(...ACCESS_TOKEN_ERRORS, 'STORE_UNAVAILABLE')
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

  fastify.post('/users/me/email', {
    config: { rateLimitPolicy: 'password' },
    preValidation: normalizeEmailField,
    schema: {
      tags: ['users'],
      operationId: 'changeEmail',
      summary: 'Change my email address',
      description: 'Needs the current password. Mails a link to the new address (valid EMAIL_VERIFICATION_TTL); the email ' +
        'changes only when it is followed (`POST /auth/verify-email`), and then the old address is told. Until then ' +
        'nothing changes. `EMAIL_TAKEN` when an account has the new address (checked again when the link is followed). ' +
        'Attempts are limited like logins.',
      body: EmailChangeBody,
      response: {
        202: documented(AcceptedResponse, { description: 'A link to confirm the new address is on its way' }),
        ...errorResponses('INVALID_CREDENTIALS', 'EMAIL_TAKEN', ...ACCESS_TOKEN_ERRORS, ...BODY_ERRORS)
      }
    }
  }, async (request, reply) => {
    await fastify.accounts.requestEmailChange(request.auth!.sub, request.body.newEmail, request.body.password)
    return reply.code(202).send({ message: 'A link to confirm the new address is on its way to it.' })
  })

  fastify.delete('/users/me', {
    config: { rateLimitPolicy: 'password' },
    schema: {
      tags: ['users'],
      operationId: 'deleteMe',
      summary: 'Delete my account',
      description: 'Needs the current password. Ends every session (access tokens are refused within a second), deletes ' +
        'the account and its links; its security events keep the account id only. The email can sign up again. ' +
        'Attempts are limited like logins.',
      body: PasswordBody,
      response: {
        204: Type.Null({ description: 'The account is deleted' }),
        ...errorResponses('INVALID_CREDENTIALS', 'LAST_ADMIN', ...ACCESS_TOKEN_ERRORS, ...BODY_ERRORS)
      }
    }
  }, async (request, reply) => {
    await fastify.accounts.deleteAccount(request.auth!.sub, request.body.password)
    return reply.code(204).send(null)
  })
}

export default userRoutes
