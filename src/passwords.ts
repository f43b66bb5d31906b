import { randomBytes } from 'node:crypto'
import { availableParallelism } from 'node:os'
import { parseOptions, type Options } from '@node-rs/argon2'
import { Piscina } from 'piscina'
import { ServiceError } from './errors.js'
import type { PasswordTask, PasswordTaskResult } from './password-worker.js'
import { RateLimitedError } from './rate-limited.js'

/** OWASP's first argon2id recommendation: 19 MiB, two passes, one lane. */
export const OWASP_ARGON2ID: Options = { memoryCost: 19456, timeCost: 2, parallelism: 1, outputLen: 32 }

/**
 * The most argon2 is ever given, in UTF-8 bytes after normalization. The
 * schemas allow 256 characters; this bounds the work for any caller, and
 * NFKC (which can expand a character many times) cannot get past it.
 */
export const MAX_PASSWORD_BYTES = 4096

/** Hashes waiting for a thread, per thread: at ~20-50 ms a hash, a full line clears in about a second. */
const QUEUED_PER_SLOT = 32

export interface PasswordHasher {
  hash(password: string): Promise<string>
  verify(passwordHash: string, password: string): Promise<boolean>
  /** Does the work of a failed verification (against a decoy hash), for accounts that do not exist; always false. */
  verifyAgainstDecoy(password: string): Promise<false>
  /** Whether a stored hash was made with other parameters (or another algorithm) than the ones hashes are made with now. */
  needsRehash(passwordHash: string): boolean
  /** Stops the hashing threads; a hash asked for afterwards starts them again. */
  stopThreads(): Promise<void>
  /** Hashes and checks waiting for a thread now. */
  readonly queued: number
  /** Calls `listener` with each task's wait for a thread (seconds), and with `refused` for each one a full line refused; answers how to stop. */
  observe(listener: HashingListener): () => void
}

export type HashingListener = (event: { waitSeconds: number } | { refused: true }) => void

/** How many hashes run at once, and how many may wait behind them. */
export interface HashingLimits {
  /** Hashes running at once, each on a thread of its own. */
  concurrency: number
  /** Hashes waiting for a thread, first come first served; one more is refused at once (429). */
  maxQueued: number
}

/** The hasher createPasswordHasher makes, with the limits it applies. */
export interface PooledPasswordHasher extends PasswordHasher {
  readonly limits: Readonly<HashingLimits>
}

export interface PasswordHasherOptions extends Partial<HashingLimits> {
  /**
   * The module the hashing threads run, as a file URL or path (default:
   * password-worker next to this file). Tests give one that can hold a thread.
   */
  workerFile?: string
  /**
   * Called with each message a hashing thread posts on its parentPort (Piscina's
   * 'message' event). The real worker posts none; a test's worker reports with it,
   * in order after the thread's "ready" (the same port), so what it reports
   * Piscina already knows.
   */
  onThreadMessage?: (message: unknown) => void
}

/**
 * What @node-rs/argon2 hashes with when an option is not given (its
 * Algorithm.Argon2id, Version.V0x13, and OWASP's numbers), as parseOptions
 * reads them back from a hash.
 */
const ARGON2_DEFAULTS = { algorithm: 2, version: 1, memoryCost: 19456, timeCost: 2, parallelism: 1, outputLen: 32 }

/**
 * Whether `passwordHash` differs from what hashing with `options` makes now:
 * another variant, version, memory, passes, lanes or output length (read by
 * @node-rs/argon2's parseOptions). A hash that cannot be read is left alone
 * (its verification fails anyway).
 */
export function hashNeedsUpgrade (passwordHash: string, options: Options): boolean {
  let stored: ReturnType<typeof parseOptions>
  try {
    stored = parseOptions(passwordHash)
  } catch {
    return false
  }
  const given = Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined))
  const wanted: Record<string, unknown> = { ...ARGON2_DEFAULTS, ...given }
  return (['algorithm', 'version', 'memoryCost', 'timeCost', 'parallelism', 'outputLen'] as const)
    .some((name) => stored[name] !== wanted[name])
}

/** As many hashes at once as cores (more only slow each other and the event loop down), 32 waiting per thread. */
export function defaultHashingLimits (concurrency: number = availableParallelism()): HashingLimits {
  const threads = Math.max(1, concurrency)
  return { concurrency: threads, maxQueued: threads * QUEUED_PER_SLOT }
}

/**
 * How Piscina refuses a task when its queue is full (its dist/errors.js
 * TaskQueueAtLimit; NoTaskQueueAvailable is its answer with maxQueue 0, which
 * createPasswordHasher does not allow). They are plain Errors with no code, so
 * their messages are what tells them from a task's own error;
 * test/hardening-hashing.test.ts fails if a Piscina upgrade changes them.
 */
const PISCINA_QUEUE_FULL = new Set(['Task queue is at limit', 'No task queue available and all Workers are busy'])

function isQueueFull (error: unknown): boolean {
  return error instanceof Error && PISCINA_QUEUE_FULL.has(error.message)
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
 * Every hash and verification is one task of a Piscina pool: at most
 * `concurrency` run at once (one a thread), at most `maxQueued` wait behind
 * them, first come first served, and one more fails at once with 429
 * RATE_LIMITED (Retry-After: 1) instead of queueing behind a flood. Both
 * default to defaultHashingLimits(); `maxQueued` alone defaults to 32 a thread.
 *
 * Threads start on demand and stop when idle. While one is starting, Piscina
 * counts it as a free place in line too (maxQueue + starting threads), so
 * during a warm-up up to `concurrency` more calls may be admitted: the bound
 * stays a bound, and is exact once the threads are up.
 */
export function createPasswordHasher (options: Options = OWASP_ARGON2ID, limits: PasswordHasherOptions = {}): PooledPasswordHasher {
  const concurrency = limits.concurrency ?? defaultHashingLimits().concurrency
  const maxQueued = limits.maxQueued ?? defaultHashingLimits(concurrency).maxQueued
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError('concurrency must be a positive integer')
  // Piscina's maxQueue 0 means "no line", and refuses a task it has already queued (which then still runs).
  if (!Number.isInteger(maxQueued) || maxQueued < 1) throw new RangeError('maxQueued must be a positive integer')
  // argon2id is @node-rs/argon2's default algorithm; the hash string records it.
  const params = { ...options }
  let decoyHash: Promise<string> | undefined
  // argon2 runs in threads of its own, started on first use, at a lower priority than the event loop.
  const listeners = new Set<HashingListener>()
  const threads = new Piscina<PasswordTask, PasswordTaskResult>({
    filename: limits.workerFile ?? WORKER_FILE,
    minThreads: 0,
    maxThreads: concurrency,
    maxQueue: maxQueued,
    idleTimeout: IDLE_THREAD_MS,
    niceIncrement: HASHING_NICE_INCREMENT,
    // A task no thread could take goes back to the front of the line, not the back: first come, first served.
    stricterFIFO: true,
    recordTiming: false
  })
  if (limits.onThreadMessage !== undefined) threads.on('message', limits.onThreadMessage)

  /** One task on the pool; Piscina refuses it at once (synchronously, inside run) when every thread is busy and the line is full. */
  async function run (task: PasswordTask): Promise<string | boolean> {
    const queuedAt = performance.timeOrigin + performance.now()
    let result: PasswordTaskResult
    try {
      result = await threads.run(task)
    } catch (error) {
      if (isQueueFull(error)) {
        for (const listener of listeners) listener({ refused: true })
        throw new RateLimitedError(1, 'Too many password checks at once: retry in a second', { cause: error })
      }
      throw error
    }
    const waitSeconds = Math.max(0, result.startedAt - queuedAt) / 1000
    for (const listener of listeners) listener({ waitSeconds })
    return result.value
  }
  const hash = async (password: string): Promise<string> => await run({ op: 'hash', password, options: params }) as string
  const verify = async (passwordHash: string, password: string): Promise<boolean> =>
    await run({ op: 'verify', passwordHash, password }) as boolean

  /** The normalized password, or undefined when it is over the cap. */
  function prepare (password: string): string | undefined {
    const normalized = password.normalize('NFKC')
    return Buffer.byteLength(normalized) <= MAX_PASSWORD_BYTES ? normalized : undefined
  }

  /**
   * A hash of a random password, made once, the first time it is needed (a
   * task of its own: a full line refuses it like any other, and a failed
   * decoy is not kept, so the next call tries again).
   */
  function decoy (): Promise<string> {
    decoyHash ??= hash(randomBytes(32).toString('base64url')).catch((error: unknown) => {
      decoyHash = undefined
      throw error
    })
    return decoyHash
  }

  async function verifyAgainstDecoy (password: string): Promise<false> {
    // An over-long password still costs one verification, against a short stand-in.
    await verify(await decoy(), prepare(password) ?? password.slice(0, 64))
    return false
  }

  return {
    limits: Object.freeze({ concurrency, maxQueued }),
    async hash (password) {
      const normalized = prepare(password)
      if (normalized === undefined) throw new ServiceError('VALIDATION_ERROR', 'The password is too long')
      return hash(normalized)
    },
    async verify (passwordHash, password) {
      const normalized = prepare(password)
      if (normalized === undefined) return verifyAgainstDecoy(password)
      return verify(passwordHash, normalized)
    },
    verifyAgainstDecoy,
    needsRehash: (passwordHash) => hashNeedsUpgrade(passwordHash, params),
    async stopThreads () {
      await threads.destroy()
    },
    get queued () {
      return threads.queueSize
    },
    observe (listener) {
      listeners.add(listener)
      return () => { listeners.delete(listener) }
    }
  }
}
