import fastifyFormbody from '@fastify/formbody'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { requireBearerSecret } from '../plugins/shared/bearer-secret.js'
import { errorResponses } from '../plugins/shared/openapi.js'

const IntrospectionBody = Type.Object({
  token: Type.String({ minLength: 1, maxLength: 16384, description: 'An access token (anything else is inactive)' }),
  token_type_hint: Type.Optional(Type.String({ maxLength: 64, description: 'Accepted and ignored (RFC 7662 §2.1)' }))
}, { additionalProperties: false, examples: [{ token: 'eyJhbGciOiJFZERTQSIsInR5cCI6ImF0K2p3dCIsImtpZCI6Ii4uLiJ9.eyJzdWIiOiI1ZjFjMmE5ZS0uLi4ifQ.c2lnbmF0dXJl' }] })

const Introspection = Type.Object({
  active: Type.Boolean(),
  sub: Type.Optional(Type.String()),
  sid: Type.Optional(Type.String()),
  jti: Type.Optional(Type.String()),
  iat: Type.Optional(Type.Integer()),
  exp: Type.Optional(Type.Integer()),
  iss: Type.Optional(Type.String()),
  aud: Type.Optional(Type.String()),
  token_type: Type.Optional(Type.Literal('Bearer')),
  roles: Type.Optional(Type.Array(Type.String(), { description: 'The roles the token carries' }))
}, {
  description: 'RFC 7662: the claims of an active access token, or only `active: false`',
  examples: [{ active: true, sub: '5f1c…', sid: '01a2…', jti: '8ef4…', iat: 1795439013, exp: 1795439613, iss: 'auth-service', aud: 'api', token_type: 'Bearer', roles: ['billing'] }, { active: false }]
})

/**
 * RFC 7662 token introspection for other services, for the operations where a
 * token's signature is not enough and they must know its session is still
 * alive. Off (404) unless INTROSPECTION_SECRET is set.
 */
const introspectionRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  const { config, accessTokens, revocations, sessions } = fastify
  // RFC 7662 clients send forms; accepted on this route only (elsewhere only JSON is, against CSRF).
  await fastify.register(fastifyFormbody)

  fastify.post('/auth/introspect', {
    config: { public: true },
    schema: {
      tags: ['keys'],
      operationId: 'introspect',
      summary: 'Introspect an access token (RFC 7662)',
      description: 'For other services: send `Authorization: Bearer <INTROSPECTION_SECRET>` and the token as JSON or a form. ' +
        'Answers `active: false` for anything invalid, expired or revoked, refresh tokens included. 404 when introspection is off.',
      security: [{ introspectionSecret: [] }],
      consumes: ['application/json', 'application/x-www-form-urlencoded'],
      body: IntrospectionBody,
      response: {
        200: Introspection,
        ...errorResponses('ACCESS_TOKEN_MISSING', 'ACCESS_TOKEN_INVALID', 'NOT_FOUND', 'PAYLOAD_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE', 'STORE_UNAVAILABLE')
      }
    },
    onRequest: requireBearerSecret(config.introspectionSecret, 'Introspection')
  }, async (request, reply) => {
    reply.header('cache-control', 'no-store')

    let claims
    try {
      claims = await accessTokens.verify(request, { token: request.body.token })
    } catch {
      return { active: false }
    }
    if (revocations.rejects(claims)) return { active: false }
    if (!await sessions.isLiveSessionOf(claims.sub, claims.sid)) return { active: false }
    const { sub, sid, jti, iat, exp, iss, aud, roles = [] } = claims
    return { active: true, sub, sid, jti, iat, exp, iss, aud, token_type: 'Bearer' as const, roles }
  })
}

export default introspectionRoutes
