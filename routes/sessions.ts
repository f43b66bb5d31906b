import type { FastifyRequest } from 'fastify'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { SET_REFRESH_COOKIE_HEADER, SessionList, SessionParams, sessionResponseOf } from './schemas.js'
import { clientOf } from '../plugins/shared/client.js'
import { ACCESS_TOKEN_ERRORS, documented, errorResponses } from '../plugins/shared/openapi.js'
import type { Caller } from '../src/sessions.js'

const ACCESS_ERRORS = [...ACCESS_TOKEN_ERRORS, 'STORE_UNAVAILABLE'] as const
/** These routes take no body, but a POST or DELETE may come with one: too large or not JSON, it is refused. */
const BODY_ERRORS = ['PAYLOAD_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE'] as const
const callerOf = (request: FastifyRequest): Caller => ({ ...clientOf(request), sessionId: request.auth!.sid })

/** The signed-in user's sessions: list them, end one, end all, or end all others. */
const sessionRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  const { sessions } = fastify

  fastify.get('/auth/sessions', {
    schema: {
      tags: ['sessions'],
      operationId: 'listSessions',
      summary: 'List my sessions',
      description: 'Every live session of the signed-in user (neither logged out nor expired), oldest first, with the ' +
        'device (user agent) and client address that opened it; `current` marks the one this access token belongs to.',
      response: { 200: documented(SessionList, { description: 'The live sessions' }), ...errorResponses(...ACCESS_ERRORS) }
    }
  }, async (request) => {
    const { sub, sid } = request.auth!
    return (await sessions.list(sub, sid)).map(sessionResponseOf)
  })

  fastify.delete('/auth/sessions/:id', {
    schema: {
      tags: ['sessions'],
      operationId: 'deleteSession',
      summary: 'End one of my sessions',
      description: 'Revokes one of my sessions (an `id` from `GET /auth/sessions`; this one too): its refresh token at ' +
        'once, its access tokens within a second on every instance. `NOT_FOUND` when it is not a live session of mine.',
      params: SessionParams,
      response: { 204: Type.Null({ description: 'The session is revoked' }), ...errorResponses(...ACCESS_ERRORS, ...BODY_ERRORS, 'NOT_FOUND') }
    }
  }, async (request, reply) => {
    await sessions.revokeOwned(request.auth!.sub, request.params.id, clientOf(request))
    return reply.code(204).send(null)
  })

  fastify.post('/auth/logout-all', {
    schema: {
      tags: ['sessions'],
      operationId: 'logoutAll',
      summary: 'Log out everywhere',
      description: 'Revokes every session of the signed-in user, this one included (on every device), and clears the cookie.',
      response: {
        204: Type.Null({ description: 'Every session is revoked; the refresh_token cookie is cleared', headers: SET_REFRESH_COOKIE_HEADER }),
        ...errorResponses(...ACCESS_ERRORS, ...BODY_ERRORS)
      }
    }
  }, async (request, reply) => {
    await sessions.revokeAll(request.auth!.sub, callerOf(request))
    return reply.clearRefreshCookie().code(204).send(null)
  })

  fastify.post('/auth/logout-others', {
    schema: {
      tags: ['sessions'],
      operationId: 'logoutOthers',
      summary: 'Log out every other session',
      description: 'Revokes every session of the signed-in user except this one (sign out the other devices).',
      response: { 204: Type.Null({ description: 'Every other session is revoked' }), ...errorResponses(...ACCESS_ERRORS, ...BODY_ERRORS) }
    }
  }, async (request, reply) => {
    await sessions.revokeAll(request.auth!.sub, callerOf(request), { keepCallerSession: true })
    return reply.code(204).send(null)
  })
}

export default sessionRoutes
