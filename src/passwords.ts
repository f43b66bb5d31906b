import { randomBytes } from 'node:crypto'
import { availableParallelism } from 'node:os'
import { hash, verify, type Options } from '@node-rs/argon2'
import { ServiceError } from './errors.js'
import { RateLimitedError } from './rate-limited.js'
import { QueueFullError, WorkQueue } from './work-queue.js'

/** OWASP's first argon2id recommendation: 19 MiB, two passes, one lane. */
export const OWASP_ARGON2ID: Options = { memoryCost: 19456, timeCost: 2, parallelism: 1, outputLen: 32 }

/**
 * The most argon2 is ever given, in UTF-8 bytes after normalization. The
 * schemas allow 256 characters; this bounds the work for any caller, and
 * NFKC (which can expand a character many times) cannot get past it.
 */
export const MAX_PASSWORD_BYTES = 4096

/** Hashes waiting for a slot, per slot: at ~20-50 ms a hash, a full line clears in about a second. */
const QUEUED_PER_SLOT = 32

export interface PasswordHasher {
  hash(password: string): Promise<string>
  verify(passwordHash: string, password: string): Promise<boolean>
  /** Does the work of a failed verification, for accounts that do not exist. */
  verifyNothing(password: string): Promise<false>
}

/**
 * argon2 runs on libuv's thread pool (4 threads unless UV_THREADPOOL_SIZE
 * says otherwise, read by Node itself); more hashes at once than cores or
 * threads only slow each other and the event loop down.
 */
export function defaultHashingQueue (): WorkQueue {
  const threads = Number(process.env.UV_THREADPOOL_SIZE) || 4
  const concurrency = Math.max(1, Math.min(availableParallelism(), threads))
  return new WorkQueue({ concurrency, maxQueued: concurrency * QUEUED_PER_SLOT })
}

/**
 * Passwords are NFKC-normalized first, so the same password typed on another
 * keyboard or OS (composed vs decomposed accents) still matches.
 *
 * Every hash and verification goes through `queue`: at most its concurrency
 * run at once, and when its line is full the call fails at once with 429
 * RATE_LIMITED (Retry-After: 1) instead of queueing behind a flood.
 */
export function createPasswordHasher (options: Options = OWASP_ARGON2ID, queue: WorkQueue = defaultHashingQueue()): PasswordHasher {
  // argon2id is @node-rs/argon2's default algorithm; the hash string records it.
  const params = { ...options }
  let decoyHash: Promise<string> | undefined

  async function queued<T> (task: () => Promise<T>): Promise<T> {
    try {
      return await queue.run(task)
    } catch (error) {
      if (error instanceof QueueFullError) {
        throw new RateLimitedError(1, 'Too many password checks at once: retry in a second', { cause: error })
      }
      throw error
    }
  }

  /** The normalized password, or undefined when it is over the cap. */
  function prepare (password: string): string | undefined {
    const normalized = password.normalize('NFKC')
    return Buffer.byteLength(normalized) <= MAX_PASSWORD_BYTES ? normalized : undefined
  }

  async function verifyNothing (password: string): Promise<false> {
    decoyHash ??= hash(randomBytes(32).toString('base64url'), params)
    const decoy = await decoyHash
    // An over-long password still costs one verification, against a short stand-in.
    await queued(() => verify(decoy, prepare(password) ?? password.slice(0, 64)))
    return false
  }

  return {
    async hash (password) {
      const normalized = prepare(password)
      if (normalized === undefined) throw new ServiceError('VALIDATION_ERROR', 'The password is too long')
      return queued(() => hash(normalized, params))
    },
    async verify (passwordHash, password) {
      const normalized = prepare(password)
      if (normalized === undefined) return verifyNothing(password)
      return queued(async () => {
        try {
          return await verify(passwordHash, normalized)
        } catch {
          return false
        }
      })
    },
    verifyNothing
  }
}
