import { DrizzleQueryError } from 'drizzle-orm/errors'
import { storeUnavailable } from './errors.js'

/** Told of every store operation: how long it took and whether it failed (the metrics' store latency and errors). */
export type StoreTiming = (operation: string, seconds: number, failed: boolean) => void

/**
 * Runs one database query, timed; a failure surfaces as STORE_UNAVAILABLE,
 * keeping only what may be logged of the driver's error.
 */
export async function timedQuery<T> (timing: StoreTiming | undefined, operation: string, query: () => Promise<T>): Promise<T> {
  const started = performance.now()
  try {
    const result = await query()
    timing?.(operation, (performance.now() - started) / 1000, false)
    return result
  } catch (error) {
    timing?.(operation, (performance.now() - started) / 1000, true)
    throw storeUnavailable(driverError(error))
  }
}

/**
 * The driver's own error of a failed query: drizzle wraps it in one whose
 * message quotes the statement and its parameters (emails, password hashes).
 */
function driverError (error: unknown): unknown {
  return error instanceof DrizzleQueryError && error.cause !== undefined ? error.cause : error
}

/**
 * The same object, with each of `operations` timed: a call that rejects
 * counts as failed. Everything is read from the original, with the original
 * as `this` (a class's private fields and getters keep working).
 */
export function withTiming<T extends object> (target: T, operations: ReadonlyArray<keyof T & string>, timing: StoreTiming): T {
  const timed = new Map<PropertyKey, { method: unknown, timed: unknown }>()
  for (const operation of operations) {
    const method = target[operation]
    if (typeof method !== 'function') continue
    timed.set(operation, {
      method,
      timed: async (...args: unknown[]) => {
        const started = performance.now()
        try {
          const result = await (method as (...args: unknown[]) => Promise<unknown>).apply(target, args)
          timing(operation, (performance.now() - started) / 1000, false)
          return result
        } catch (error) {
          timing(operation, (performance.now() - started) / 1000, true)
          throw error
        }
      }
    })
  }
  return new Proxy(target, {
    get (object, key) {
      const value: unknown = Reflect.get(object, key, object)
      const operation = timed.get(key)
      // A method replaced on the original since (a test's stand-in) is served as it is.
      if (operation !== undefined && value === operation.method) return operation.timed
      return typeof value === 'function' ? value.bind(object) : value
    }
  })
}
