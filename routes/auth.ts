import type { FastifyReply, FastifyRequest } from 'fastify'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { ServiceError } from '../src/errors.js'
import type { LoginOutcome } from '../src/metrics.js'
import { RateLimitedError } from '../src/rate-limited.js'
import { Credentials, NewUserResponse, PasswordChangeBody, RefreshTokenBody, SET_REFRESH_COOKIE_HEADER, SignupBody, TokenPairResponse, userResponseOf } from './schemas.js'
import { ACCESS_TOKEN_ERRORS, documented, errorResponses } from '../plugins/shared/openapi.js'
import { clientOf } from '../plugins/shared/client.js'
import { defaultToEmptyBody, normalizeEmailField } from '../plugins/shared/request-body.js'
import { deadRefreshTokenOutcome, type TokenPair } from '../src/sessions.js'

function sendPair (reply: FastifyReply, pair: TokenPair): TokenPair {
  reply.setRefreshCookie(pair.refreshToken, pair.refreshExpiresIn)
  return pair
}

/** How a failed login counts: a wrong password, a full hashing line, or a store away. */
function loginOutcomeOf (error: unknown): LoginOutcome {
  if (error instanceof ServiceError && error.code === 'INVALID_CREDENTIALS') return 'invalid_credentials'
  if (error instanceof ServiceError && error.code === 'EMAIL_NOT_VERIFIED') return 'email_not_verified'
  if (error instanceof ServiceError && error.code === 'ACCOUNT_DISABLED') return 'account_disabled'
  return error instanceof RateLimitedError ? 'busy' : 'unavailable'
}

const authRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  const { users, passwords, sessions, accessTokens, rateLimits, securityEvents, metrics, accounts, config } = fastify

  fastify.post('/auth/signup', {
    config: { public: true, rateLimitPolicy: 'signup' },
    preValidation: normalizeEmailField,
    schema: {
      tags: ['auth'],
      operationId: 'signup',
      summary: 'Create an account',
      description: 'The email is trimmed and lower-cased (and compared so: one account per address); the password ' +
        '(8 to 256 characters) is hashed with argon2id and never returned. A link to verify the address is mailed to it ' +
        '(`POST /auth/verify-email`). Then log in with `POST /auth/login`.',
      body: SignupBody,
      response: {
        201: documented(NewUserResponse, { description: 'The account was created; a verification link is on its way' }),
        ...errorResponses('EMAIL_TAKEN', 'PAYLOAD_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE', 'STORE_UNAVAILABLE')
      }
    }
  }, async (request, reply) => {
    const { email, password } = request.body
    const user = await users.create(email, await passwords.hash(password))
    if (user === undefined) throw new ServiceError('EMAIL_TAKEN')
    securityEvents.record({ type: 'signup', userId: user.id, ...clientOf(request) })
    await accounts.signedUp(user.id)
    return reply.code(201).send(userResponseOf(user))
  })

  fastify.post('/auth/login', {
    config: { public: true, rateLimitPolicy: 'login' },
    preValidation: normalizeEmailField,
    schema: {
      tags: ['auth'],
      operationId: 'login',
      summary: 'Log in',
      description: 'Opens a session: answers a token pair and sets the refresh_token cookie. Send the `accessToken` as ' +
        '`Authorization: Bearer <accessToken>` (in Swagger UI: "Authorize"). A wrong email and a wrong password get the ' +
        'same answer, in the same time. Attempts are limited per client address and per email (LOGIN_RATE_LIMIT). ' +
        'A disabled account gets `ACCOUNT_DISABLED`; with REQUIRE_VERIFIED_EMAIL=true, an account whose address is not ' +
        'verified yet gets `EMAIL_NOT_VERIFIED` (both only after a correct password). The access token carries the ' +
        'user\'s `roles`.',
      body: Credentials,
      response: {
        200: documented(TokenPairResponse, { description: 'Logged in: a token pair, and the refresh_token cookie', headers: SET_REFRESH_COOKIE_HEADER }),
        ...errorResponses('INVALID_CREDENTIALS', 'ACCOUNT_DISABLED', 'EMAIL_NOT_VERIFIED', 'PAYLOAD_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE', 'STORE_UNAVAILABLE')
      }
    }
  }, async (request, reply) => {
    const { email, password } = request.body
    const client = clientOf(request)
    try {
      const user = await users.findByEmail(email)
      // An unknown email costs the same hashing work as a wrong password: timing tells nothing.
      const valid = user === undefined
        ? await passwords.verifyAgainstDecoy(password)
        : await passwords.verify(user.passwordHash, password)
      if (!valid || user === undefined) {
        // Recorded with its account when there is one; an unknown email, without a user (and never the email itself).
        securityEvents.record({ type: 'login_failed', userId: user?.id ?? null, ...client })
        throw new ServiceError('INVALID_CREDENTIALS')
      }
      // Only after a correct password: a 403 tells nothing to whoever does not know it.
      if (user.disabled) throw new ServiceError('ACCOUNT_DISABLED')
      if (config.requireVerifiedEmail && !user.emailVerified) throw new ServiceError('EMAIL_NOT_VERIFIED')
      accounts.upgradeHash(user, password)
      const pair = await sessions.open(user, client)
      metrics.login('succeeded')
      return sendPair(reply, pair)
    } catch (error) {
      metrics.login(loginOutcomeOf(error))
      throw error
    }
  })

  fastify.post('/auth/refresh', {
    config: { public: true, rateLimitPolicy: 'refresh' },
    preValidation: defaultToEmptyBody,
    schema: {
      tags: ['auth'],
      operationId: 'refresh',
      summary: 'Trade a refresh token for a new token pair',
      description: 'Takes the refresh token from the body, else from the refresh_token cookie: send `{}` (or no body) ' +
        'and the browser sends the cookie by itself. Call it when a request answers `ACCESS_TOKEN_EXPIRED` (an expired ' +
        'access token never blocks it). With rotation on (ROTATE_REFRESH_TOKENS), the refresh token is replaced and the ' +
        'old one is spent: presented again after REFRESH_REUSE_GRACE, it revokes the whole session (`REFRESH_TOKEN_REUSED`). ' +
        'A refresh token that fails is dropped from the cookie. Two refresh_token cookies are refused ' +
        '(`REFRESH_TOKEN_INVALID`), whatever the body holds, and neither is cleared.',
      security: [{ refreshCookie: [] }, {}],
      body: Type.Optional(RefreshTokenBody),
      response: {
        200: documented(TokenPairResponse, { description: 'A new token pair, and the refresh_token cookie', headers: SET_REFRESH_COOKIE_HEADER }),
        ...errorResponses('REFRESH_TOKEN_MISSING', 'REFRESH_TOKEN_EXPIRED', 'REFRESH_TOKEN_INVALID',
          'REFRESH_TOKEN_REVOKED', 'REFRESH_TOKEN_REUSED', 'ACCOUNT_DISABLED', 'PAYLOAD_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE', 'STORE_UNAVAILABLE')
      }
    }
  }, async (request, reply) => {
    // Read whatever the body holds, and outside the try below: two cookies are refused, neither cleared.
    const cookie = request.refreshCookie()
    const fromCookie = request.body?.refreshToken === undefined
    const token = request.body?.refreshToken ?? cookie
    if (token === undefined || token === '') throw new ServiceError('REFRESH_TOKEN_MISSING')
    try {
      return sendPair(reply, await sessions.refresh(token, clientOf(request), request.log))
    } catch (error) {
      // A dead cookie is dropped, so the browser stops sending it.
      if (fromCookie && deadRefreshTokenOutcome(error) !== undefined) reply.clearRefreshCookie()
      throw error
    }
  })

  fastify.post('/auth/logout', {
    config: { public: true },
    preValidation: defaultToEmptyBody,
    schema: {
      tags: ['auth'],
      operationId: 'logout',
      summary: 'Log out',
      description: 'Revokes the session named by the refresh token (body or cookie) and/or the access token (expired or ' +
        'not), and clears the cookie: its refresh token at once, its access tokens within a second on every instance. ' +
        'Idempotent: 204 even when there was nothing to revoke; such logouts are limited per client address (429). ' +
        'Two refresh_token cookies are refused (`REFRESH_TOKEN_INVALID`): nothing is revoked and the cookie is kept.',
      security: [{ refreshCookie: [] }, { bearerAuth: [] }, {}],
      body: Type.Optional(RefreshTokenBody),
      response: {
        204: Type.Null({ description: 'Logged out; the refresh_token cookie is cleared', headers: SET_REFRESH_COOKIE_HEADER }),
        ...errorResponses('REFRESH_TOKEN_INVALID', 'RATE_LIMITED', 'PAYLOAD_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE', 'STORE_UNAVAILABLE')
      }
    }
  }, async (request, reply) => {
    // Read whatever the body holds: with two cookies, nothing is revoked.
    const cookie = request.refreshCookie()
    const refreshToken = request.body?.refreshToken ?? cookie
    const revoked = await sessions.logout({ refreshToken, sessionId: await sessionOfBearer(request) }, clientOf(request))
    // A logout that revokes nothing is the one a probe or a flood sends; a real one is never held back.
    if (!revoked) await rateLimits.consume('logout-noop', request, reply)
    return reply.clearRefreshCookie().code(204).send()
  })

  fastify.post('/auth/password', {
    config: { rateLimitPolicy: 'password' },
    schema: {
      tags: ['auth'],
      operationId: 'changePassword',
      summary: 'Change my password',
      description: 'Verifies the current password, stores the new one (8 to 256 characters), and revokes every other ' +
        'session of the user; this one stays signed in. A pending email change is cancelled, and the account is mailed ' +
        'that its password changed. A wrong current password answers `INVALID_CREDENTIALS`.',
      body: PasswordChangeBody,
      response: {
        204: Type.Null({ description: 'Password changed; the other sessions are revoked' }),
        ...errorResponses('INVALID_CREDENTIALS', ...ACCESS_TOKEN_ERRORS, 'PAYLOAD_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE', 'STORE_UNAVAILABLE')
      }
    }
  }, async (request, reply) => {
    const { sub, sid } = request.auth!
    const user = await users.findById(sub)
    if (user === undefined || !await passwords.verify(user.passwordHash, request.body.currentPassword)) {
      throw new ServiceError('INVALID_CREDENTIALS', 'The current password is wrong')
    }
    const passwordHash = await passwords.hash(request.body.newPassword)
    await accounts.changePassword(user, { ...clientOf(request), sessionId: sid }, passwordHash)
    return reply.code(204).send(null)
  })

  /** The session of a genuine access token, expired or not; anything else names no session. */
  async function sessionOfBearer (request: FastifyRequest): Promise<string | undefined> {
    if (request.headers.authorization === undefined) return undefined
    try {
      return (await accessTokens.verify(request, { allowExpired: true })).sid
    } catch {
      return undefined
    }
  }
}

export default authRoutes
