import type { FastifyRequest } from 'fastify'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { ADMIN_ROLE } from '../src/roles.js'
import { parseEventCursor } from '../src/security-events.js'
import type { AdminActor } from '../src/sessions.js'
import {
  AdminEventPage, AdminEventQuery, AdminUser, AdminUserDetail, AdminUserPage, AdminUserParams, AdminUserPatch, AdminUserQuery,
  adminEventResponseOf, adminUserResponseOf, sessionResponseOf
} from './schemas.js'
import { clientOf } from '../plugins/shared/client.js'
import { ACCESS_TOKEN_ERRORS, documented, errorResponses } from '../plugins/shared/openapi.js'

/** Every admin route: the role, declared where the route is (plugins/auth.ts checks it). */
const ADMIN_ONLY = { roles: [ADMIN_ROLE] }
const ACCESS_ERRORS = [...ACCESS_TOKEN_ERRORS, 'FORBIDDEN', 'STORE_UNAVAILABLE'] as const
/** A DELETE may come with a body: too large or not JSON, it is refused. */
const BODY_ERRORS = ['PAYLOAD_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE'] as const

function actorOf (request: FastifyRequest): AdminActor {
  return { id: request.auth!.sub, ...clientOf(request) }
}

/** Users and events for the accounts with the role admin (API.md, "Roles and administration"). */
const adminRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  const { admin } = fastify

  fastify.get('/admin/users', {
    config: ADMIN_ONLY,
    schema: {
      tags: ['admin'],
      operationId: 'listUsers',
      summary: 'Find users',
      description: 'Users whose email contains `query` (any case; `%` and `_` match only themselves), newest first, `limit` ' +
        'a page (20 unless given, at most 100). Pass `next` back as `cursor` for the next page: no user is skipped or ' +
        'repeated across pages, whatever signs up meanwhile.',
      querystring: AdminUserQuery,
      response: {
        200: documented(AdminUserPage, { description: 'A page of users, newest first' }),
        ...errorResponses('VALIDATION_ERROR', ...ACCESS_ERRORS)
      }
    }
  }, async (request) => {
    const { query, limit = 20, cursor } = request.query
    const page = await admin.listUsers({ query, limit, cursor })
    return { users: page.users.map(adminUserResponseOf), next: page.next }
  })

  fastify.get('/admin/users/:id', {
    config: ADMIN_ONLY,
    schema: {
      tags: ['admin'],
      operationId: 'getUser',
      summary: 'A user, with their sessions',
      description: 'The account and its live sessions, as `GET /auth/sessions` lists them.',
      params: AdminUserParams,
      response: {
        200: documented(AdminUserDetail, { description: 'The user' }),
        ...errorResponses('VALIDATION_ERROR', 'NOT_FOUND', ...ACCESS_ERRORS)
      }
    }
  }, async (request) => {
    const { user, sessions } = await admin.getUser(request.params.id, request.auth!.sid)
    return { ...adminUserResponseOf(user), sessions: sessions.map(sessionResponseOf) }
  })

  fastify.patch('/admin/users/:id', {
    config: ADMIN_ONLY,
    schema: {
      tags: ['admin'],
      operationId: 'updateUser',
      summary: 'Change a user\'s roles, or disable or enable the account',
      description: '`roles` replaces the user\'s roles. A removed role refuses the user\'s access tokens issued before, within ' +
        'a second on every instance; the sessions stay, and their next refresh carries the new roles. An added role appears ' +
        'from the next refresh. `disabled: true` ends every session at once (access tokens within a second) and refuses ' +
        'login and refresh with `ACCOUNT_DISABLED`; `false` lets the user log in again. `LAST_ADMIN` when no enabled ' +
        'account would keep the role admin.',
      params: AdminUserParams,
      body: AdminUserPatch,
      response: {
        200: documented(AdminUser, { description: 'The user, changed' }),
        ...errorResponses('VALIDATION_ERROR', 'NOT_FOUND', 'LAST_ADMIN', ...ACCESS_ERRORS, ...BODY_ERRORS)
      }
    }
  }, async (request) => {
    const { roles, disabled } = request.body
    return adminUserResponseOf(await admin.updateUser(request.params.id, { roles, disabled }, actorOf(request)))
  })

  fastify.delete('/admin/users/:id', {
    config: ADMIN_ONLY,
    schema: {
      tags: ['admin'],
      operationId: 'deleteUser',
      summary: 'Delete a user',
      description: 'As `DELETE /users/me`: every session ends (access tokens within a second), the account and its links go, ' +
        'its events keep its id only, and the address is mailed a notice. `LAST_ADMIN` for the last enabled admin.',
      params: AdminUserParams,
      response: {
        204: Type.Null({ description: 'The account is deleted' }),
        ...errorResponses('VALIDATION_ERROR', 'NOT_FOUND', 'LAST_ADMIN', ...ACCESS_ERRORS, ...BODY_ERRORS)
      }
    }
  }, async (request, reply) => {
    await admin.deleteUser(request.params.id, actorOf(request))
    return reply.code(204).send(null)
  })

  fastify.delete('/admin/users/:id/sessions', {
    config: ADMIN_ONLY,
    schema: {
      tags: ['admin'],
      operationId: 'revokeUserSessions',
      summary: 'End every session of a user',
      description: 'Refresh tokens at once, access tokens within a second on every instance. The user can log in again ' +
        '(disable the account to prevent it).',
      params: AdminUserParams,
      response: {
        204: Type.Null({ description: 'Every session of the user is revoked' }),
        ...errorResponses('VALIDATION_ERROR', 'NOT_FOUND', ...ACCESS_ERRORS, ...BODY_ERRORS)
      }
    }
  }, async (request, reply) => {
    await admin.revokeSessions(request.params.id, actorOf(request))
    return reply.code(204).send(null)
  })

  fastify.get('/admin/events', {
    config: ADMIN_ONLY,
    schema: {
      tags: ['admin'],
      operationId: 'listEvents',
      summary: 'Security events of every account',
      description: 'Newest first, optionally of one user (`userId`) and one type (`type`); `limit` a page (20 unless given, ' +
        'at most 100); pass `next` back as `before` for older events. Admin actions carry the admin\'s id as `actorId`.',
      querystring: AdminEventQuery,
      response: {
        200: documented(AdminEventPage, { description: 'A page of events, newest first' }),
        ...errorResponses('VALIDATION_ERROR', ...ACCESS_ERRORS)
      }
    }
  }, async (request) => {
    const { userId, type, limit = 20, before } = request.query
    const page = await admin.listEvents({ userId, type, limit, before: before === undefined ? undefined : parseEventCursor(before) })
    return { events: page.events.map(adminEventResponseOf), next: page.next }
  })
}

export default adminRoutes
