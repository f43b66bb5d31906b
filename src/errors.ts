import { STATUS_CODES } from 'node:http'

/**
 * The catalogue of every error the API answers with (API.md, "Errors").
 * Clients branch on `code`; messages are for people and may change.
 */
const CATALOGUE = {
  VALIDATION_ERROR: [400, 'The request does not match the expected schema'],
  LINK_TOKEN_INVALID: [400, 'This link is invalid, already used, replaced by a newer one or expired: ask for a new one'],
  ACCESS_TOKEN_MISSING: [401, 'An access token is required: send Authorization: Bearer <token>'],
  ACCESS_TOKEN_EXPIRED: [401, 'The access token has expired: call /auth/refresh for a new one'],
  ACCESS_TOKEN_INVALID: [401, 'The access token is invalid'],
  ACCESS_TOKEN_REVOKED: [401, 'The session of this access token has been revoked'],
  REFRESH_TOKEN_MISSING: [401, 'A refresh token is required in the body or the refresh_token cookie'],
  REFRESH_TOKEN_EXPIRED: [401, 'The refresh token has expired: log in again'],
  REFRESH_TOKEN_INVALID: [401, 'The refresh token is invalid'],
  REFRESH_TOKEN_REVOKED: [401, 'The session of this refresh token has been revoked'],
  REFRESH_TOKEN_REUSED: [401, 'This refresh token was already used: the session has been revoked'],
  INVALID_CREDENTIALS: [401, 'Wrong email or password'],
  FORBIDDEN: [403, 'The access token lacks a role this route requires'],
  ACCOUNT_DISABLED: [403, 'This account has been disabled by an administrator'],
  EMAIL_NOT_VERIFIED: [403, 'Verify your email address first: follow the link mailed to you (POST /auth/verify-email/request sends a new one)'],
  NOT_FOUND: [404, 'Not found'],
  EMAIL_TAKEN: [409, 'An account with this email already exists'],
  LAST_ADMIN: [409, 'This is the last account with the role admin: grant the role to another account first'],
  PAYLOAD_TOO_LARGE: [413, 'The request body is too large'],
  UNSUPPORTED_MEDIA_TYPE: [415, 'The request body must be JSON (Content-Type: application/json)'],
  RATE_LIMITED: [429, 'Too many requests: retry later'],
  INTERNAL_ERROR: [500, 'Internal server error'],
  STORE_UNAVAILABLE: [503, 'A storage backend is unavailable: retry later']
} as const satisfies Record<string, readonly [number, string]>

export type ErrorCode = keyof typeof CATALOGUE

export class ServiceError extends Error {
  readonly statusCode: number
  readonly error: string

  constructor (readonly code: ErrorCode, message?: string, options?: ErrorOptions) {
    const [statusCode, defaultMessage] = CATALOGUE[code]
    super(message ?? defaultMessage, options)
    this.name = 'ServiceError'
    this.statusCode = statusCode
    this.error = STATUS_CODES[statusCode] ?? 'Error'
  }

  toJSON (): ErrorBody {
    return { statusCode: this.statusCode, code: this.code, error: this.error, message: this.message }
  }
}

export interface ErrorBody {
  statusCode: number
  code: ErrorCode
  error: string
  message: string
}

export function statusOf (code: ErrorCode): number {
  return CATALOGUE[code][0]
}

/** Wraps a failure of PostgreSQL or Redis, keeping for the log a cause that names no value (describeStoreError). */
export function storeUnavailable (cause: unknown): ServiceError {
  return new ServiceError('STORE_UNAVAILABLE', undefined, { cause: describeStoreError(cause) })
}

/** What may be logged of a store's error. */
interface StoreErrorFacts {
  name: string
  message: string
  code?: string
  /** The name of the Redis command that failed. */
  command?: string
}

/** Redis quotes the arguments of a command it does not know (a disabled EVALSHA, say) in its reply. */
const QUOTED_ARGUMENTS = /, with args beginning with:.*$/s

function factsOf (error: Error): StoreErrorFacts {
  const { code, command } = error as { code?: unknown, command?: { name?: unknown } }
  return {
    name: error.name,
    message: error.message.replace(QUOTED_ARGUMENTS, ''),
    ...(typeof code === 'string' ? { code } : {}),
    ...(typeof command?.name === 'string' ? { command: command.name } : {})
  }
}

/**
 * A store's error as it may be logged: what failed and why, never the values
 * involved. Drivers attach those: ioredis the failed command's arguments
 * (token hashes, sealed successors, client addresses, user agents), on each
 * error of an aborted transaction (`previousErrors`) too; PostgreSQL a
 * conflicting row's values (`detail`). Kept: name, message, code and command
 * name, also of an aborted transaction's errors and of the last node a
 * Cluster tried (`lastNodeError`).
 */
export function describeStoreError (error: unknown): Error {
  if (!(error instanceof Error)) return new Error('store operation failed')
  const { message, ...facts } = factsOf(error)
  const { previousErrors, lastNodeError } = error as { previousErrors?: unknown, lastNodeError?: unknown }
  return Object.assign(new Error(message), facts,
    Array.isArray(previousErrors) ? { previousErrors: previousErrors.filter((each) => each instanceof Error).map(factsOf) } : {},
    lastNodeError instanceof Error ? { lastNodeError: factsOf(lastNodeError) } : {})
}
