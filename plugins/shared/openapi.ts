import { Type, type TSchema } from 'typebox'
import { ServiceError, statusOf, type ErrorCode } from '../../src/errors.js'

/*
 * OpenAPI documentation shared by routes and plugins: a schema documented for
 * one use, and the error answers of a route, generated from the error
 * catalogue (src/errors.ts) so that the docs and the answers never disagree.
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

/**
 * What a client should do on each code, shown with the code in the OpenAPI
 * document (the README's error table says the same).
 */
const CLIENT_ACTION: Partial<Record<ErrorCode, string>> = {
  VALIDATION_ERROR: 'fix the request; the message names the field',
  ACCESS_TOKEN_EXPIRED: '`POST /auth/refresh`, then retry once',
  ACCESS_TOKEN_INVALID: 'log in again',
  // The session may live on (a role was removed): a refresh tells.
  ACCESS_TOKEN_REVOKED: '`POST /auth/refresh`; if that fails too, log in again',
  REFRESH_TOKEN_MISSING: 'log in',
  REFRESH_TOKEN_INVALID: 'log in again',
  REFRESH_TOKEN_REVOKED: 'log in again',
  REFRESH_TOKEN_REUSED: 'log in again',
  EMAIL_TAKEN: 'log in instead',
  FORBIDDEN: 'an admin grants the role; it appears in tokens from the next refresh',
  ACCOUNT_DISABLED: 'ask an administrator',
  LAST_ADMIN: 'grant the role admin to another account first',
  RATE_LIMITED: 'wait `Retry-After` seconds'
}

/** The example body of an error, as the service answers it. */
function errorExample (code: ErrorCode): { statusCode: number, code: ErrorCode, error: string, message: string } {
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

/**
 * Errors any route may answer: a malformed request, load shedding
 * (plugins/under-pressure.ts) and the unexpected.
 */
const ALWAYS_POSSIBLE_ERRORS: ErrorCode[] = ['VALIDATION_ERROR', 'RATE_LIMITED', 'INTERNAL_ERROR']

/** What the access-token hook answers on a protected route (plugins/auth.ts): every route that takes a token documents them. */
export const ACCESS_TOKEN_ERRORS = ['ACCESS_TOKEN_MISSING', 'ACCESS_TOKEN_EXPIRED', 'ACCESS_TOKEN_INVALID', 'ACCESS_TOKEN_REVOKED'] as const

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
