import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { parseEventCursor } from '../src/security-events.js'
import { EventPageQuery, SecurityEventPage, eventResponseOf } from './schemas.js'
import { ACCESS_TOKEN_ERRORS, documented, errorResponses } from '../plugins/shared/openapi.js'

/** The signed-in user's own security events. */
const eventRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  const { securityEventStore } = fastify

  fastify.get('/auth/events', {
    schema: {
      tags: ['sessions'],
      operationId: 'listMyEvents',
      summary: 'My security events',
      description: 'What happened to my account, newest first: sign-ups, logins (and failed ones), logouts, revoked ' +
        'sessions, password changes and detected refresh-token reuse, each with the client address, user agent and ' +
        'session. `limit` events a page (20 unless given, at most 100); pass `next` back as `before` for the page after. ' +
        'Events are written within about a second of happening, and kept for AUDIT_RETENTION.',
      querystring: EventPageQuery,
      response: {
        200: documented(SecurityEventPage, { description: 'A page of my events, newest first' }),
        ...errorResponses(...ACCESS_TOKEN_ERRORS, 'STORE_UNAVAILABLE')
      }
    }
  }, async (request) => {
    const { limit = 20, before } = request.query
    const page = await securityEventStore.list({
      userId: request.auth!.sub,
      limit,
      before: before === undefined ? undefined : parseEventCursor(before)
    })
    return { events: page.events.map(eventResponseOf), next: page.next }
  })
}

export default eventRoutes
