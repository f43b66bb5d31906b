import { Type, type Static } from 'typebox'
import type { HeadersDocumentation } from '../plugins/shared/openapi.js'
import { MAX_TOKEN_LENGTH } from '../src/access-token.js'
import { MAX_ROLES, ROLE_NAME_PATTERN } from '../src/roles.js'
import { SECURITY_EVENT_TYPES, type SecurityEvent, type SecurityEventType } from '../src/security-events.js'
import type { ListedSession } from '../src/sessions.js'
import type { User, UserProfile } from '../src/users.js'

/*
 * Request and response shapes of the routes. Each one validates, serializes
 * and documents (OpenAPI, via @fastify/swagger) from this single place; the
 * examples are what Swagger UI fills "Try it out" with and shows as sample answers.
 */

const EXAMPLE_USER_ID = '5f1c2a9e-8b3d-4c6f-9a27-3e8d1b0c4f52'
const EXAMPLE_SESSION_ID = '019a9c2e-5b10-7d4e-9f63-2a8c1e7b3d90'
const EXAMPLE_EMAIL = 'ada@example.com'
const EXAMPLE_PASSWORD = 'correct horse battery staple'
/** Shortened: a real one is about 450 characters (header.claims.signature, base64url). */
const EXAMPLE_ACCESS_TOKEN = 'eyJhbGciOiJFZERTQSIsInR5cCI6ImF0K2p3dCIsImtpZCI6Ii4uLiJ9.eyJzdWIiOiI1ZjFjMmE5ZS0uLi4ifQ.c2lnbmF0dXJl'
const EXAMPLE_REFRESH_TOKEN = 'rt2.Xk3q9Zp2LmN8vR4tW7yB1c.3.1796649600.q2mX0b7yJwZc8rT5vN1hL4sK9pD3fG6eA0uI7oY2tRw'

const Email = Type.String({
  format: 'email',
  maxLength: 254,
  description: 'Trimmed and lower-cased before use',
  examples: ['ada@example.com']
})

const NewPassword = Type.String({ minLength: 8, maxLength: 256, description: '8 to 256 characters', examples: [EXAMPLE_PASSWORD] })

export const Credentials = Type.Object({
  email: Email,
  password: Type.String({ minLength: 1, maxLength: 256, examples: [EXAMPLE_PASSWORD] })
}, { additionalProperties: false, examples: [{ email: EXAMPLE_EMAIL, password: EXAMPLE_PASSWORD }] })

export const SignupBody = Type.Object({ email: Email, password: NewPassword }, {
  additionalProperties: false,
  examples: [{ email: EXAMPLE_EMAIL, password: EXAMPLE_PASSWORD }]
})

export const RefreshTokenBody = Type.Object({
  refreshToken: Type.Optional(Type.String({
    minLength: 1,
    // As long as an access token may be: one sent here by mistake is refused as a refresh token (401), not as malformed.
    maxLength: MAX_TOKEN_LENGTH,
    description: 'Omit (send `{}` or no body) to use the refresh_token cookie',
    examples: [EXAMPLE_REFRESH_TOKEN]
  }))
}, {
  additionalProperties: false,
  // From a browser (and Swagger UI) the HttpOnly cookie carries the token: the body is `{}`.
  examples: [{}]
})

const RoleName = Type.String({ pattern: ROLE_NAME_PATTERN, description: 'A lower-case letter, then up to 31 of a-z, 0-9, _ and -', examples: ['admin'] })

const Roles = Type.Array(RoleName, {
  maxItems: MAX_ROLES,
  uniqueItems: true,
  description: `At most ${MAX_ROLES}; copied into the \`roles\` claim of access tokens`,
  examples: [['admin', 'billing']]
})

export const UserResponse = Type.Object({
  id: Type.String({ format: 'uuid', examples: [EXAMPLE_USER_ID] }),
  email: Type.String({ examples: [EXAMPLE_EMAIL] }),
  emailVerified: Type.Boolean({ description: 'Whether the address was proven by a mailed link (or a password reset)' }),
  roles: Roles,
  createdAt: Type.String({ format: 'date-time', examples: ['2030-01-01T09:30:00.000Z'] })
}, { examples: [{ id: EXAMPLE_USER_ID, email: EXAMPLE_EMAIL, emailVerified: true, roles: [], createdAt: '2030-01-01T09:30:00.000Z' }] })

/** A user as the API shows one: no secret, the creation time in ISO 8601. */
export function userResponseOf ({ id, email, emailVerified, roles, createdAt }: UserProfile): Static<typeof UserResponse> {
  return { id, email, emailVerified, roles, createdAt: createdAt.toISOString() }
}

const EXAMPLE_ADMIN_USER = {
  id: EXAMPLE_USER_ID, email: EXAMPLE_EMAIL, emailVerified: true, roles: ['billing'], disabled: false, createdAt: '2030-01-01T09:30:00.000Z'
}

/** A user as an admin sees one. */
export const AdminUser = Type.Object({
  id: Type.String({ format: 'uuid' }),
  email: Type.String(),
  emailVerified: Type.Boolean(),
  roles: Roles,
  disabled: Type.Boolean({ description: 'Disabled accounts can neither log in nor refresh (`ACCOUNT_DISABLED`)' }),
  createdAt: Type.String({ format: 'date-time' })
}, { examples: [EXAMPLE_ADMIN_USER] })

export function adminUserResponseOf ({ id, email, emailVerified, roles, disabled, createdAt }: User): Static<typeof AdminUser> {
  return { id, email, emailVerified, roles, disabled, createdAt: createdAt.toISOString() }
}

export const AdminUserPage = Type.Object({
  users: Type.Array(AdminUser),
  next: Type.Union([Type.String(), Type.Null()], { description: 'Pass as `cursor` for the next page; null on the last page' })
}, { examples: [{ users: [EXAMPLE_ADMIN_USER], next: 'MTc5NjY0OTYwMDAwMDAwMC41ZjFjMmE5ZQ' }] })

export const AdminUserQuery = Type.Object({
  query: Type.Optional(Type.String({
    maxLength: 254,
    // No email holds a NUL, and PostgreSQL refuses one in text.
    pattern: '^[^\\u0000]*$',
    description: 'Part of the email, any case; `%` and `_` are plain characters. Empty or absent: every user',
    examples: ['example.com']
  })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 20, description: 'Users a page: 20 unless given, at most 100' })),
  cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 128, description: 'The `next` of the previous page' }))
}, { additionalProperties: false })

export const AdminUserParams = Type.Object({
  id: Type.String({ format: 'uuid', description: 'The user\'s id', examples: [EXAMPLE_USER_ID] })
})

export const AdminUserPatch = Type.Object({
  roles: Type.Optional(Roles),
  disabled: Type.Optional(Type.Boolean({ description: '`true` ends every session of the account at once' }))
}, {
  additionalProperties: false,
  minProperties: 1,
  description: '`roles` replaces the whole set',
  examples: [{ roles: ['admin', 'billing'] }, { disabled: true }]
})

/** A new user, as signup answers it: API.md's `{ id, email, createdAt }` (a new address is never verified yet). */
export const NewUserResponse = Type.Object({
  id: Type.String({ format: 'uuid', examples: [EXAMPLE_USER_ID] }),
  email: Type.String({ examples: [EXAMPLE_EMAIL] }),
  createdAt: Type.String({ format: 'date-time', examples: ['2030-01-01T09:30:00.000Z'] })
}, { examples: [{ id: EXAMPLE_USER_ID, email: EXAMPLE_EMAIL, createdAt: '2030-01-01T09:30:00.000Z' }] })

/** Shortened in the examples: a real one is 43 characters. */
const EXAMPLE_LINK_TOKEN = 'q2mX0b7yJwZc8rT5vN1hL4sK9pD3fG6eA0uI7oY2tRw'

/** The token of a mailed link, from its `#token=` fragment. Anything that is not a live one is LINK_TOKEN_INVALID, malformed included. */
const LinkToken = Type.String({
  minLength: 1,
  maxLength: 512,
  description: 'The `token` of the link\'s fragment (`…#token=<token>`)',
  examples: [EXAMPLE_LINK_TOKEN]
})

export const EmailBody = Type.Object({ email: Email }, { additionalProperties: false, examples: [{ email: EXAMPLE_EMAIL }] })

export const OptionalEmailBody = Type.Object({ email: Type.Optional(Email) }, {
  additionalProperties: false,
  description: 'Without an access token, the email of the account; with one, `{}` (or no body)',
  examples: [{ email: EXAMPLE_EMAIL }, {}]
})

export const PasswordResetBody = Type.Object({ token: LinkToken, newPassword: NewPassword }, {
  additionalProperties: false,
  examples: [{ token: EXAMPLE_LINK_TOKEN, newPassword: 'a longer and newer passphrase' }]
})

export const LinkTokenBody = Type.Object({ token: LinkToken }, { additionalProperties: false, examples: [{ token: EXAMPLE_LINK_TOKEN }] })

export const EmailChangeBody = Type.Object({
  newEmail: Email,
  password: Type.String({ minLength: 1, maxLength: 256, description: 'The current password', examples: [EXAMPLE_PASSWORD] })
}, { additionalProperties: false, examples: [{ newEmail: 'ada.lovelace@example.org', password: EXAMPLE_PASSWORD }] })

export const PasswordBody = Type.Object({
  password: Type.String({ minLength: 1, maxLength: 256, description: 'The current password', examples: [EXAMPLE_PASSWORD] })
}, { additionalProperties: false, examples: [{ password: EXAMPLE_PASSWORD }] })

/** The answer of a request that mails something, or would: the same whatever the account. */
export const AcceptedResponse = Type.Object({ message: Type.String() }, {
  examples: [{ message: 'If an account has this address, a link is on its way.' }]
})

export const PasswordChangeBody = Type.Object({
  currentPassword: Type.String({ minLength: 1, maxLength: 256, examples: [EXAMPLE_PASSWORD] }),
  newPassword: NewPassword
}, {
  additionalProperties: false,
  examples: [{ currentPassword: EXAMPLE_PASSWORD, newPassword: 'a longer and newer passphrase' }]
})

const Session = Type.Object({
  id: Type.String({ format: 'uuid', description: 'Equal to the sid claim of its access tokens' }),
  createdAt: Type.String({ format: 'date-time', description: 'Login time' }),
  lastUsedAt: Type.String({ format: 'date-time', description: 'Last login or refresh' }),
  expiresAt: Type.String({ format: 'date-time', description: 'When it ends unless refreshed' }),
  userAgent: Type.String(),
  ip: Type.String({ description: 'Client address at login' }),
  current: Type.Boolean({ description: 'The session of the access token used for this request' })
})

export const SessionList = Type.Array(Session, {
  examples: [[{
    id: EXAMPLE_SESSION_ID,
    createdAt: '2030-01-01T09:30:00.000Z',
    lastUsedAt: '2030-01-03T14:05:12.000Z',
    expiresAt: '2030-01-17T14:05:12.000Z',
    userAgent: 'Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0',
    ip: '203.0.113.7',
    current: true
  }]]
})

const iso = (ms: number): string => new Date(ms).toISOString()

/** A session as the API lists it. */
export function sessionResponseOf (session: ListedSession): Static<typeof Session> {
  return { ...session, createdAt: iso(session.createdAt), lastUsedAt: iso(session.lastUsedAt), expiresAt: iso(session.expiresAt) }
}

export const AdminUserDetail = Type.Object({
  ...AdminUser.properties,
  sessions: Type.Array(Session, { description: 'The live sessions, oldest first, as `GET /auth/sessions` lists them (`current`: the admin\'s own)' })
}, { examples: [{ ...EXAMPLE_ADMIN_USER, sessions: [] }] })

export const SessionParams = Type.Object({
  id: Type.String({ format: 'uuid', description: 'A session id from GET /auth/sessions', examples: [EXAMPLE_SESSION_ID] })
})

export const TokenPairResponse = Type.Object({
  accessToken: Type.String({ description: 'JWT, sent as Authorization: Bearer <accessToken>' }),
  refreshToken: Type.String({ description: 'Opaque; also set as the refresh_token cookie' }),
  tokenType: Type.Literal('Bearer'),
  expiresIn: Type.Integer({ description: 'Seconds until the access token expires' }),
  refreshExpiresIn: Type.Integer({ description: 'Seconds until the session ends unless refreshed' })
}, {
  examples: [{
    accessToken: EXAMPLE_ACCESS_TOKEN,
    refreshToken: EXAMPLE_REFRESH_TOKEN,
    tokenType: 'Bearer',
    expiresIn: 600,
    refreshExpiresIn: 1209600
  }]
})

/** The refresh_token cookie a token pair comes with (a response header, documented only). */
export const SET_REFRESH_COOKIE_HEADER: HeadersDocumentation = {
  'set-cookie': {
    type: 'string',
    description: 'refresh_token=<refresh token>; Max-Age=<refreshExpiresIn>; Path=/auth; HttpOnly; SameSite=Strict (Secure per COOKIE_SECURE)'
  }
}

export const HealthResponse = Type.Object({
  status: Type.Union([Type.Literal('ok'), Type.Literal('unavailable')]),
  checks: Type.Object({
    database: Type.Union([Type.Literal('ok'), Type.Literal('down')]),
    redis: Type.Union([Type.Literal('ok'), Type.Literal('down'), Type.Literal('disabled')], {
      description: '`disabled` when REDIS_URL is unset (sessions in process)'
    }),
    revocationFeed: Type.Union([Type.Literal('ok'), Type.Literal('down'), Type.Literal('disabled')], {
      description: 'Whether revocations from the other instances reach this one (Redis pub/sub subscribed, and caught up ' +
        'since its last reconnect); `disabled` without Redis. While it is down, this instance could accept a revoked access token.'
    })
  })
})

export const LivenessResponse = Type.Object({ status: Type.Literal('ok') }, { examples: [{ status: 'ok' }] })

export const EventPageQuery = Type.Object({
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 20, description: 'Events a page: 20 unless given, at most 100' })),
  before: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'The `next` of the previous page' }))
}, { additionalProperties: false })

const EXAMPLE_EVENT = {
  id: '1042',
  type: 'login',
  at: '2030-01-03T14:05:12.000Z',
  ip: '203.0.113.7',
  userAgent: 'Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0',
  sessionId: EXAMPLE_SESSION_ID,
  actorId: null
}

const SecurityEventResponse = Type.Object({
  id: Type.String({ description: 'Opaque; unique' }),
  type: Type.Unsafe<SecurityEventType>({ type: 'string', enum: [...SECURITY_EVENT_TYPES] }),
  at: Type.String({ format: 'date-time' }),
  ip: Type.Union([Type.String(), Type.Null()], { description: 'Client address (null once the account is deleted)' }),
  userAgent: Type.Union([Type.String(), Type.Null()]),
  sessionId: Type.Union([Type.String(), Type.Null()], { description: 'The session it happened in, or the one it ended' }),
  actorId: Type.Union([Type.String(), Type.Null()], { description: 'The admin who acted on the account; null when the user did' })
})

export const SecurityEventPage = Type.Object({
  events: Type.Array(SecurityEventResponse),
  next: Type.Union([Type.String(), Type.Null()], { description: 'Pass as `before` for older events; null on the last page' })
}, { examples: [{ events: [EXAMPLE_EVENT], next: 'MTc5NjY0OTYwMDAwMC4xMDQy' }] })

/**
 * An event as the API shows it to its user. Where an admin acted on the
 * account, the admin's address and user agent are the admin's to keep: only
 * the admin's id is shown (the admin listing shows everything).
 */
export function eventResponseOf (event: SecurityEvent): Static<typeof SecurityEventResponse> {
  const { id, type, at, ip, userAgent, sessionId, actorId, userId } = event
  const byAnother = actorId !== null && actorId !== userId
  return { id, type, at: at.toISOString(), ip: byAnother ? null : ip, userAgent: byAnother ? null : userAgent, sessionId, actorId }
}

export const AdminEventQuery = Type.Object({
  userId: Type.Optional(Type.String({ format: 'uuid', description: 'Only this user\'s events' })),
  type: Type.Optional(Type.Unsafe<SecurityEventType>({ type: 'string', enum: [...SECURITY_EVENT_TYPES], description: 'Only events of this type' })),
  ...EventPageQuery.properties
}, { additionalProperties: false })

const AdminSecurityEvent = Type.Object({
  ...SecurityEventResponse.properties,
  userId: Type.Union([Type.String(), Type.Null()], { description: 'The account; null for a failed login or a reset request of an unknown email' })
})

export const AdminEventPage = Type.Object({
  events: Type.Array(AdminSecurityEvent),
  next: Type.Union([Type.String(), Type.Null()], { description: 'Pass as `before` for older events; null on the last page' })
}, { examples: [{ events: [{ ...EXAMPLE_EVENT, userId: EXAMPLE_USER_ID }], next: 'MTc5NjY0OTYwMDAwMC4xMDQy' }] })

export function adminEventResponseOf (event: SecurityEvent): Static<typeof AdminSecurityEvent> {
  const { id, type, at, ip, userAgent, sessionId, actorId, userId } = event
  return { id, type, at: at.toISOString(), ip, userAgent, sessionId, actorId, userId }
}

const EXAMPLE_JWKS = {
  keys: [{
    kid: 'Yq3wT8vR2mN5pL7kJ4hG1fD9sA6zX0cV3bE8uI2oP5c',
    kty: 'OKP',
    alg: 'EdDSA',
    use: 'sig',
    crv: 'Ed25519',
    x: '11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo'
  }]
}

export const Jwks = Type.Object({
  keys: Type.Array(Type.Object({
    kid: Type.String(),
    kty: Type.String(),
    alg: Type.String(),
    use: Type.Literal('sig'),
    crv: Type.Optional(Type.String()),
    x: Type.Optional(Type.String()),
    y: Type.Optional(Type.String()),
    n: Type.Optional(Type.String()),
    e: Type.Optional(Type.String())
  }))
}, { examples: [EXAMPLE_JWKS] })
