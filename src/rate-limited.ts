import { ServiceError } from './errors.js'

/**
 * 429 RATE_LIMITED with the number of seconds the client should wait, which
 * the error handler sends as Retry-After. Used by the rate limits, a full
 * password-hashing queue and event-loop or heap pressure alike: API.md's one
 * answer for "too much at once, come back in a moment".
 */
export class RateLimitedError extends ServiceError {
  readonly retryAfterSeconds: number

  constructor (retryAfterSeconds: number, message?: string, options?: ErrorOptions) {
    super('RATE_LIMITED', message, options)
    this.retryAfterSeconds = Math.max(1, Math.ceil(retryAfterSeconds))
  }
}
