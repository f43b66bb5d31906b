import { Type, type Static, type TSchema } from 'typebox'
import { ERROR_CODES, ServiceError, statusOf, type ErrorCode } from './errors.js'

/*
 * Request and response shapes. Each one validates, serializes and documents
 * (OpenAPI, via @fastify/swagger) from this single place; the examples are
 * what Swagger UI fills "Try it out" with and shows as sample answers.
 */

/** Response headers, as @fastify/swagger documents them. */
export type HeadersDocumentation = Record<string, { type: string, description: string }>

/**
 * The same schema with documentation of its own for one use of it (a
 * route's response, say): a description, other examples, response headers.
 */
export function documented<T extends TSchema> (
  schema: T, documentation: { description: string, examples?: unknown[], headers?: HeadersDocumentation }
): T {
  return { ...schema, ...documentation }
}

const EXAMPLE_USER_ID = '5f1c2a9e-8b3d-4c6f-9a27-3e8d1b0c4f52'
const EXAMPLE_SESSION_ID = '019a9c2e-5b10-7d4e-9f63-2a8c1e7b3d90'
const EXAMPLE_EMAIL = 'ada@example.com'
const EXAMPLE_PASSWORD = 'correct horse battery staple'
/** Shortened: a real one is about 450 characters (header.claims.signature, base64url). */
const EXAMPLE_ACCESS_TOKEN = 'eyJhbGciOiJFZERTQSIsInR5cCI6ImF0K2p3dCIsImtpZCI6Ii4uLiJ9.eyJzdWIiOiI1ZjFjMmE5ZS0uLi4ifQ.c2lnbmF0dXJl'
const EXAMPLE_REFRESH_TOKEN = `rt1.${EXAMPLE_SESSION_ID}.1796649600.q2mX0b7yJwZc8rT5vN1hL4sK9pD3fG6eA0uI7oY2tRw`

export const Email = Type.String({
  format: 'email',
  maxLength: 254,
  description: 'Trimmed and lower-cased before use',
  examples: ['ada@example.com']
})

export const NewPassword = Type.String({ minLength: 8, maxLength: 256, description: '8 to 256 characters', examples: [EXAMPLE_PASSWORD] })

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
    maxLength: 512,
    description: 'Omit (send `{}` or no body) to use the refresh_token cookie',
    examples: [EXAMPLE_REFRESH_TOKEN]
  }))
}, {
  additionalProperties: false,
  // From a browser (and Swagger UI) the HttpOnly cookie carries the token: the body is `{}`.
  examples: [{}]
})

export const User = Type.Object({
  id: Type.String({ format: 'uuid', examples: [EXAMPLE_USER_ID] }),
  email: Type.String({ examples: [EXAMPLE_EMAIL] }),
  createdAt: Type.String({ format: 'date-time', examples: ['2030-01-01T09:30:00.000Z'] })
}, { examples: [{ id: EXAMPLE_USER_ID, email: EXAMPLE_EMAIL, createdAt: '2030-01-01T09:30:00.000Z' }] })

export const PasswordChangeBody = Type.Object({
  currentPassword: Type.String({ minLength: 1, maxLength: 256, examples: [EXAMPLE_PASSWORD] }),
  newPassword: NewPassword
}, {
  additionalProperties: false,
  examples: [{ currentPassword: EXAMPLE_PASSWORD, newPassword: 'a longer and newer passphrase' }]
})

export const Session = Type.Object({
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

export const SessionParams = Type.Object({
  id: Type.String({ format: 'uuid', description: 'A session id from GET /auth/sessions', examples: [EXAMPLE_SESSION_ID] })
})

export const TokenPair = Type.Object({
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

export const Health = Type.Object({
  status: Type.Union([Type.Literal('ok'), Type.Literal('unavailable')]),
  checks: Type.Object({
    database: Type.Union([Type.Literal('ok'), Type.Literal('down')]),
    redis: Type.Union([Type.Literal('ok'), Type.Literal('down'), Type.Literal('disabled')], {
      description: '`disabled` when REDIS_URL is unset (sessions in process)'
    })
  })
})

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

/**
 * What a client should do on each code, shown with the code in the OpenAPI
 * document (the README's error table says the same).
 */
const CLIENT_ACTION: Partial<Record<ErrorCode, string>> = {
  VALIDATION_ERROR: 'fix the request; the message names the field',
  ACCESS_TOKEN_EXPIRED: '`POST /auth/refresh`, then retry once',
  ACCESS_TOKEN_INVALID: 'log in again',
  ACCESS_TOKEN_REVOKED: 'log in again',
  REFRESH_TOKEN_MISSING: 'log in',
  REFRESH_TOKEN_INVALID: 'log in again',
  REFRESH_TOKEN_REVOKED: 'log in again',
  REFRESH_TOKEN_REUSED: 'log in again',
  EMAIL_TAKEN: 'log in instead',
  RATE_LIMITED: 'wait `Retry-After` seconds'
}

/** The example body of an error, as the service answers it. */
export function errorExample (code: ErrorCode): { statusCode: number, code: ErrorCode, error: string, message: string } {
  return new ServiceError(code).toJSON()
}

const errorBody = (codes: ErrorCode[]) => Type.Object({
  statusCode: Type.Integer({ examples: [statusOf(codes[0]!)] }),
  // A plain string, not an enum of literals: serializing an unexpected code must never fail.
  code: Type.String({ description: `One of: ${codes.join(', ')}`, examples: [codes[0]] }),
  error: Type.String({ description: 'The HTTP status text', examples: [errorExample(codes[0]!).error] }),
  message: Type.String({ description: 'For people; may change. Branch on `code`.' })
}, {
  // Markdown, rendered by Swagger UI: one line per code.
  description: codes.map((code) => {
    const action = CLIENT_ACTION[code]
    // Markdown would take `<token>` in a message for an HTML tag.
    const message = errorExample(code).message.replaceAll('<', '&lt;')
    return `- \`${code}\`: ${message}${action === undefined ? '' : ` → ${action}`}`
  }).join('\n'),
  // One example per code; plugins/swagger.ts names each by its code.
  examples: codes.map(errorExample),
  ...(codes.includes('RATE_LIMITED')
    ? { headers: { 'retry-after': { type: 'integer', description: 'Seconds to wait before trying again' } } }
    : {})
})

/** The one shape of every error (API.md, "Errors"). */
export const ErrorBody = errorBody(ERROR_CODES)

/**
 * Errors any route may answer: a malformed request, load shedding
 * (plugins/under-pressure.ts) and the unexpected.
 */
export const ALWAYS_POSSIBLE_ERRORS: ErrorCode[] = ['VALIDATION_ERROR', 'RATE_LIMITED', 'INTERNAL_ERROR']

/**
 * The `response` entries for the errors a route can answer, grouped by
 * status, each documenting its codes (and ALWAYS_POSSIBLE_ERRORS).
 */
export function errorResponses (...codes: ErrorCode[]): Record<number, unknown> {
  const byStatus = new Map<number, ErrorCode[]>()
  for (const code of [...codes, ...ALWAYS_POSSIBLE_ERRORS]) {
    byStatus.set(statusOf(code), [...new Set([...(byStatus.get(statusOf(code)) ?? []), code])])
  }
  return Object.fromEntries([...byStatus].map(([status, statusCodes]) => [status, errorBody(statusCodes)]))
}

export type CredentialsBody = Static<typeof Credentials>
export type RefreshTokenBodyType = Static<typeof RefreshTokenBody>
