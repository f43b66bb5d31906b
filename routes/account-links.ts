import type { FastifyReply, FastifyRequest } from 'fastify'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { AcceptedResponse, EmailBody, LinkTokenBody, OptionalEmailBody, PasswordResetBody } from './schemas.js'
import { clientOf } from '../plugins/shared/client.js'
import { ACCESS_TOKEN_ERRORS, documented, errorResponses } from '../plugins/shared/openapi.js'
import { defaultToEmptyBody, normalizeEmailField } from '../plugins/shared/request-body.js'
import { ServiceError } from '../src/errors.js'

const BODY_ERRORS = ['VALIDATION_ERROR', 'PAYLOAD_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE', 'STORE_UNAVAILABLE'] as const

/** The one answer of a request that mails a link, or would: it tells nobody whether the account exists. */
const ACCEPTED = Object.freeze({ message: 'If an account has this address and may get this link, it is on its way.' })

/** The links mailed to accounts: ask for one, and redeem one (reset a password, verify an address or an email change). */
const accountLinkRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  const { accounts, accessTokens, revocations } = fastify

  /**
   * `POST /auth/verify-email/request` takes an access token or an email: with
   * an Authorization header, the token must be good (as on any protected
   * route), and names the account; without one, the body's email does. Run
   * before the rate limit, which counts per account.
   */
  async function authenticateIfPresented (request: FastifyRequest): Promise<void> {
    if (request.headers.authorization === undefined) {
      const body = request.body
      // A body that is not an object is the schema's to refuse (400).
      if (typeof body === 'object' && body !== null && !('email' in body)) {
        throw new ServiceError('ACCESS_TOKEN_MISSING', 'Send an access token, or the account\'s `email` in the body')
      }
      return
    }
    const claims = await accessTokens.verify(request)
    if (revocations.rejects(claims)) throw new ServiceError('ACCESS_TOKEN_REVOKED')
    request.auth = claims
  }

  fastify.post('/auth/password-reset/request', {
    config: { public: true, rateLimitPolicy: 'link-request' },
    preValidation: normalizeEmailField,
    schema: {
      tags: ['account'],
      operationId: 'requestPasswordReset',
      summary: 'Mail me a password-reset link',
      description: 'Answers 202 whether or not an account has this email, with the same body and in the same time; ' +
        'when one does, a single-use link (valid PASSWORD_RESET_TTL, 30 minutes unless configured) is mailed to it. ' +
        'Only the latest link works. Limited per client address and per email, and at most a few link mails an hour ' +
        'reach one address. Then `POST /auth/password-reset` with the link\'s token.',
      body: EmailBody,
      response: { 202: documented(AcceptedResponse, { description: 'Accepted: a link is mailed if the account exists' }), ...errorResponses(...BODY_ERRORS) }
    }
  }, async (request, reply) => {
    await accounts.requestPasswordReset(request.body.email, clientOf(request))
    return accepted(reply)
  })

  fastify.post('/auth/password-reset', {
    config: { public: true, rateLimitPolicy: 'link-redeem' },
    schema: {
      tags: ['account'],
      operationId: 'resetPassword',
      summary: 'Set a new password with a reset link',
      description: 'The `token` is the one in the link\'s fragment (`#token=…`). Sets the password (8 to 256 characters), ' +
        'marks the address verified (the mail was read), and ends every session of the account: refresh tokens at once, ' +
        'access tokens within a second. Then log in with the new password. A token that is unknown, used, replaced by ' +
        'a newer link or expired is `LINK_TOKEN_INVALID`.',
      body: PasswordResetBody,
      response: { 204: Type.Null({ description: 'The password is set; every session is ended' }), ...errorResponses('LINK_TOKEN_INVALID', ...BODY_ERRORS) }
    }
  }, async (request, reply) => {
    await accounts.resetPassword(request.body.token, request.body.newPassword, clientOf(request))
    return reply.code(204).send(null)
  })

  fastify.post('/auth/verify-email/request', {
    config: { public: true, rateLimitPolicy: 'link-request' },
    preValidation: [defaultToEmptyBody, normalizeEmailField, authenticateIfPresented],
    schema: {
      tags: ['account'],
      operationId: 'requestEmailVerification',
      summary: 'Mail me a new verification link',
      description: 'With an access token (`Authorization: Bearer …`), for the signed-in account, and `{}` or no body; ' +
        'without one, for the account of `{ email }` (a person whose first link expired cannot log in with ' +
        'REQUIRE_VERIFIED_EMAIL=true). Answers 202 whatever the account: a link (valid EMAIL_VERIFICATION_TTL) is ' +
        'mailed to the current address of an unverified account, and to nobody otherwise. Only the latest link works.',
      security: [{ bearerAuth: [] }, {}],
      body: Type.Optional(OptionalEmailBody),
      response: {
        202: documented(AcceptedResponse, { description: 'Accepted: a link is mailed if the account is unverified' }),
        ...errorResponses(...ACCESS_TOKEN_ERRORS, ...BODY_ERRORS)
      }
    }
  }, async (request, reply) => {
    const auth = request.auth
    await accounts.requestVerification(auth === null ? { email: request.body!.email! } : { userId: auth.sub })
    return accepted(reply)
  })

  fastify.post('/auth/verify-email', {
    config: { public: true, rateLimitPolicy: 'link-redeem' },
    schema: {
      tags: ['account'],
      operationId: 'verifyEmail',
      summary: 'Verify an address with a mailed link',
      description: 'The `token` is the one in the link\'s fragment. Verifies the account\'s address; for the link of an ' +
        'email change (`POST /users/me/email`), moves the account to the new address, verified, and tells the old one. ' +
        'Access tokens carry `email_verified: true` from the next refresh. `EMAIL_TAKEN` when another account took the ' +
        'new address meanwhile (the link is spent); `LINK_TOKEN_INVALID` for a token that is unknown, used, replaced or expired.',
      body: LinkTokenBody,
      response: {
        204: Type.Null({ description: 'The address is verified (or the email changed)' }),
        ...errorResponses('LINK_TOKEN_INVALID', 'EMAIL_TAKEN', ...BODY_ERRORS)
      }
    }
  }, async (request, reply) => {
    await accounts.verifyEmail(request.body.token, clientOf(request))
    return reply.code(204).send(null)
  })
}

function accepted (reply: FastifyReply): FastifyReply {
  return reply.code(202).send(ACCEPTED)
}

export default accountLinkRoutes
