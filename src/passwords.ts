import { randomBytes } from 'node:crypto'
import { availableParallelism } from 'node:os'
import type { Options } from '@node-rs/argon2'
import { Piscina } from 'piscina'
import { ServiceError } from './errors.js'
import type { PasswordTask } from './password-worker.js'
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
  /** Stops the hashing threads. */
  close(): Promise<void>
}

/** More hashes at once than cores only slow each other and the event loop down. */
export function defaultHashingQueue (): WorkQueue {
  const concurrency = Math.max(1, availableParallelism())
  return new WorkQueue({ concurrency, maxQueued: concurrency * QUEUED_PER_SLOT })
}

/**
 * How much lower than the event loop's the hashing threads' priority is (a
 * nice increment, Linux and macOS). A thread woken by a request then takes
 * the core from a hash at once, so a login flood barely touches the latency
 * of other routes; hashing still gets about a tenth of a core that is busy
 * with them (CFS weights 110 against 1024), and all of an idle one.
 */
const HASHING_NICE_INCREMENT = 10

/** Idle hashing threads stop after this long; the next hash starts one again. */
const IDLE_THREAD_MS = 60_000

/** Where hashing threads load their task from: the compiled .js, or the .ts source under tsx. */
const WORKER_FILE = new URL(`./password-worker${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url).href

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
  // argon2 runs in threads of its own, started on first use, at a lower priority than the event loop.
  const threads = new Piscina<PasswordTask, string | boolean>({
    filename: WORKER_FILE,
    minThreads: 0,
    maxThreads: queue.concurrency,
    idleTimeout: IDLE_THREAD_MS,
    niceIncrement: HASHING_NICE_INCREMENT,
    recordTiming: false
  })
  const hash = async (password: string): Promise<string> => await threads.run({ op: 'hash', password, options: params }) as string
  const verify = async (passwordHash: string, password: string): Promise<boolean> =>
    await threads.run({ op: 'verify', passwordHash, password }) as boolean

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

  /** A hash of a random password, made once (in a hashing slot, the first time it is needed). */
  function decoy (): Promise<string> {
    decoyHash ??= hash(randomBytes(32).toString('base64url')).catch((error: unknown) => {
      decoyHash = undefined
      throw error
    })
    return decoyHash
  }

  async function verifyNothing (password: string): Promise<false> {
    // Admitted first, like any verification: a full line refuses it at once.
    // An over-long password still costs one verification, against a short stand-in.
    await queued(async () => verify(await decoy(), prepare(password) ?? password.slice(0, 64)))
    return false
  }

  return {
    async hash (password) {
      const normalized = prepare(password)
      if (normalized === undefined) throw new ServiceError('VALIDATION_ERROR', 'The password is too long')
      return queued(() => hash(normalized))
    },
    async verify (passwordHash, password) {
      const normalized = prepare(password)
      if (normalized === undefined) return verifyNothing(password)
      return queued(() => verify(passwordHash, normalized))
    },
    verifyNothing,
    async close () {
      await threads.destroy()
    }
  }
}
