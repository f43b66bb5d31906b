import { createHash, randomBytes } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { ConnectionOptions } from 'node:tls'
import type { Cluster, Redis } from 'ioredis'
import nodemailer, { type SendMailOptions } from 'nodemailer'
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible'
import { LINK_MAIL_KINDS, type ComposedMail, type MailKind } from './mail-templates.js'

/** A composed mail and where it goes. */
export interface OutgoingMail extends ComposedMail {
  to: string
  kind: MailKind
}

/**
 * Sends one message: SMTP via nodemailer when smtpUrl is set (smtp://, smtps://,
 * STARTTLS when the server offers it), else writes an .eml file into outboxDir
 * (created 0700 if missing) and answers its path.
 */
export interface MailTransport {
  send (mail: OutgoingMail, from: string): Promise<{ outboxPath?: string }>
  close (): void
}

export interface MailTransportOptions {
  smtpUrl?: string | undefined
  outboxDir: string
  /** Extra TLS options (tests trust a self-signed CA with them); certificates are always verified. */
  tls?: ConnectionOptions | undefined
}

/** Mails sent at once: a burst of signups is not sent one handshake after another. */
const SEND_CONCURRENCY = 4

/**
 * nodemailer's own timeouts are minutes long (10 for an idle socket): one
 * stuck server would hold the whole queue that long. A query parameter of
 * SMTP_URL (`?socketTimeout=60000`) overrides them.
 */
const SMTP_TIMEOUTS = { connectionTimeout: 10_000, greetingTimeout: 10_000, socketTimeout: 30_000 }

/** Marks every mail as machine-sent (RFC 3834), so vacation responders do not answer a no-reply address. */
const HEADERS = { 'Auto-Submitted': 'auto-generated' }

function messageOf (mail: OutgoingMail, from: string): SendMailOptions {
  return { from, to: mail.to, subject: mail.subject, text: mail.text, html: mail.html, headers: HEADERS }
}

/** Outbox files written by this process: with the time, orders files written in the same millisecond. */
let outboxSequence = 0

/** `20300101T003000123Z-000001-password_reset-1a2b3c4d.eml`: sorts by time, unique across processes. */
function outboxFileName (kind: MailKind): string {
  const time = new Date().toISOString().replace(/[-:.]/g, '')
  outboxSequence = (outboxSequence + 1) % 1_000_000
  return `${time}-${String(outboxSequence).padStart(6, '0')}-${kind}-${randomBytes(4).toString('hex')}.eml`
}

export function createMailTransport ({ smtpUrl, outboxDir, tls }: MailTransportOptions): MailTransport {
  if (smtpUrl !== undefined) {
    // STARTTLS is used whenever the server offers it (nodemailer's default); `?requireTLS=true` in SMTP_URL insists on it.
    // Pooled: the queue's concurrent sends reuse a few connections instead of a handshake and a login per mail.
    const smtp = nodemailer.createTransport({ ...SMTP_TIMEOUTS, pool: true, maxConnections: SEND_CONCURRENCY, tls, url: smtpUrl })
    return {
      async send (mail, from) {
        await smtp.sendMail(messageOf(mail, from))
        return {}
      },
      close: () => smtp.close()
    }
  }
  // nodemailer composes the message exactly as it would send it; only the file is ours.
  const composer = nodemailer.createTransport({ streamTransport: true, buffer: true, newline: 'unix' })
  let outboxReady: Promise<unknown> | undefined
  return {
    async send (mail, from) {
      const { message } = await composer.sendMail(messageOf(mail, from))
      // Created once, and again if it failed (a full disk may have recovered); 0700 and 0600: the files hold live links.
      outboxReady ??= mkdir(outboxDir, { recursive: true, mode: 0o700 }).catch((error: unknown) => {
        outboxReady = undefined
        throw error
      })
      await outboxReady
      const outboxPath = join(outboxDir, outboxFileName(mail.kind))
      // A Buffer, as `buffer: true` asks (the type also allows the stream of the default).
      await writeFile(outboxPath, message as Buffer, { mode: 0o600, flag: 'wx' })
      return { outboxPath }
    },
    close: () => composer.close()
  }
}

/** What the queue tells about each mail: the plugin logs it and counts it, never with an address, a link or a body. */
export interface MailQueueObserver {
  sent? (kind: MailKind, outboxPath?: string): void
  /** An attempt failed; `final`: given up (attempt 0: dropped, the queue being closed or full), else it will be tried again. */
  failed? (kind: MailKind, error: unknown, attempt: number, final: boolean): void
  /** A link mail over its recipient's limit, dropped. */
  throttled? (kind: MailKind): void
}

export interface MailQueueOptions {
  transport: MailTransport
  from: string
  /** Link mails per recipient: in Redis when given one (every instance counts together), else in process. */
  throttle?: { redis?: Redis | Cluster | undefined, prefix?: string | undefined, perHour?: number | undefined }
  /** The waits before each new attempt of a failed send; once they are used up, the mail is given up. */
  retryDelaysMs?: number[] | undefined
  /** The longest close() spends on its last attempts. */
  closeTimeoutMs?: number | undefined
  /** Mails held at most (a mail server that hangs sends one every few seconds); past it, new mail is dropped and reported. */
  maxPending?: number | undefined
  observer?: MailQueueObserver | undefined
}

const LINK_MAILS_PER_HOUR = 5
const RETRY_DELAYS_MS = [1_000, 5_000, 30_000]
/** Fits in the shutdown's 15 s (src/server.ts) after a drain of up to 5 s. */
const CLOSE_TIMEOUT_MS = 5_000
/** Some tens of MB of composed mail at most. */
const MAX_PENDING = 10_000

interface Job {
  mail: OutgoingMail
  /** Attempts made so far. */
  attempts: number
  /** The recipient's throttle was consumed: a retry does not count again. */
  counted: boolean
  /** Closing: this attempt is its last, whatever the retry delays say. */
  last: boolean
  settled: boolean
  done: () => void
  finished: Promise<void>
}

/** The throttle's key for a recipient: a hash, so the limiter's store (Redis, say) never holds an address. */
const recipientKey = (address: string): string => createHash('sha256').update(address.trim().toLowerCase()).digest('hex')

/**
 * Mail off the request path. `enqueue` only appends to a queue, which
 * background loops send a few at a time, so a request's answer never waits
 * for or depends on the mail server (an answer that must not tell whether an
 * account exists stays the same). Link mails consume their recipient's
 * throttle first: nobody can flood someone else's inbox through the public
 * routes. A failed send is tried again after each of `retryDelaysMs`, then
 * given up. The queue lives in memory: what a process that dies holds is
 * lost (a crash or SIGKILL); `close` (graceful shutdown) gives every pending
 * mail one last attempt first.
 */
export class MailQueue {
  readonly #ready: Job[] = []
  /** Jobs waiting for a retry, with their timers. */
  readonly #waiting = new Map<Job, NodeJS.Timeout>()
  /** Every job enqueued and not yet sent or given up. */
  readonly #unfinished = new Set<Job>()
  readonly #throttle: RateLimiterAbstract
  readonly #retryDelaysMs: number[]
  /** Loops running: at most SEND_CONCURRENCY. */
  #workers = 0
  #closing: Promise<void> | undefined

  constructor (private readonly options: MailQueueOptions) {
    const { redis, prefix = 'mail-throttle:', perHour = LINK_MAILS_PER_HOUR } = options.throttle ?? {}
    // rate-limiter-flexible joins its prefix and the key with a colon of its own.
    const limit = { points: perHour, duration: 3600, keyPrefix: prefix.replace(/:$/, '') }
    // While Redis is away the count goes on in process (its insurance limiter): mail is still sent, and still throttled.
    this.#throttle = redis === undefined
      ? new RateLimiterMemory(limit)
      : new RateLimiterRedis({ ...limit, storeClient: redis, rejectIfRedisNotReady: true, insuranceLimiter: new RateLimiterMemory(limit) })
    this.#retryDelaysMs = options.retryDelaysMs ?? RETRY_DELAYS_MS
  }

  /** Queues a mail and returns at once; never throws. After close, or with maxPending held, the mail is reported failed and dropped. */
  enqueue (mail: OutgoingMail): void {
    const refusal = this.#closing !== undefined
      ? 'the mail queue is closed'
      : this.#unfinished.size >= (this.options.maxPending ?? MAX_PENDING) ? 'the mail queue is full' : undefined
    if (refusal !== undefined) {
      this.#tell((observer) => observer.failed?.(mail.kind, new Error(refusal), 0, true))
      return
    }
    let done = (): void => {}
    const finished = new Promise<void>((resolve) => { done = resolve })
    const job: Job = { mail, attempts: 0, counted: false, last: false, settled: false, done, finished }
    this.#unfinished.add(job)
    this.#ready.push(job)
    this.#run()
  }

  /** Mails queued, in flight or waiting for a retry. */
  get pending (): number {
    return this.#unfinished.size
  }

  /** Resolves when every mail enqueued so far is sent or given up (retries included). */
  async flush (): Promise<void> {
    await Promise.all([...this.#unfinished].map((job) => job.finished))
  }

  /**
   * Graceful shutdown: nothing more is accepted or waits for a retry; every
   * pending mail gets one immediate last attempt, for at most closeTimeoutMs
   * in all; what is still unsent then is given up. Then the transport closes.
   */
  close (): Promise<void> {
    this.#closing ??= this.#close()
    return this.#closing
  }

  async #close (): Promise<void> {
    for (const [job, timer] of this.#waiting) {
      clearTimeout(timer)
      this.#ready.push(job)
    }
    this.#waiting.clear()
    for (const job of this.#unfinished) job.last = true
    this.#run()
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<void>((resolve) => { timer = setTimeout(resolve, this.options.closeTimeoutMs ?? CLOSE_TIMEOUT_MS) })
    await Promise.race([this.flush(), timedOut])
    clearTimeout(timer)
    this.#ready.length = 0
    for (const job of this.#unfinished) this.#giveUp(job, new Error('not sent before shutdown'))
    this.options.transport.close()
  }

  /** Starts loops up to SEND_CONCURRENCY; on the next turn, so that not even a connection is opened on the caller's time. */
  #run (): void {
    while (this.#workers < SEND_CONCURRENCY) {
      this.#workers++
      // #attempt never rejects; should a bug make it, the next mail queued starts a new loop.
      setImmediate(() => { this.#work().catch(() => { this.#workers-- }) })
    }
  }

  /** Sends mail after mail; a loop ends in the same step that finds the queue empty, so a mail queued after that starts a new one. */
  async #work (): Promise<void> {
    for (let job = this.#ready.shift(); job !== undefined; job = this.#ready.shift()) await this.#attempt(job)
    this.#workers--
  }

  /** One attempt; never rejects. */
  async #attempt (job: Job): Promise<void> {
    const { mail } = job
    job.attempts++
    try {
      if (LINK_MAIL_KINDS.has(mail.kind) && !job.counted) {
        if (!await this.#allowed(mail.to)) {
          this.#settle(job)
          this.#tell((observer) => observer.throttled?.(mail.kind))
          return
        }
        job.counted = true
      }
      const { outboxPath } = await this.options.transport.send(mail, this.options.from)
      // Given up meanwhile (close ran out of time): already reported.
      if (job.settled) return
      this.#settle(job)
      this.#tell((observer) => observer.sent?.(mail.kind, outboxPath))
    } catch (error) {
      const delay = job.last ? undefined : this.#retryDelaysMs[job.attempts - 1]
      if (delay === undefined) {
        this.#giveUp(job, error)
        return
      }
      this.#tell((observer) => observer.failed?.(mail.kind, error, job.attempts, false))
      this.#waiting.set(job, setTimeout(() => {
        this.#waiting.delete(job)
        this.#ready.push(job)
        this.#run()
      }, delay))
    }
  }

  /** Consumes one of the recipient's link mails; false when none is left this hour. */
  async #allowed (address: string): Promise<boolean> {
    try {
      await this.#throttle.consume(recipientKey(address))
      return true
    } catch (rejection) {
      // Over the limit, the limiter rejects with its result; a store that fails rejects with an Error: a failed attempt.
      if (rejection instanceof RateLimiterRes) return false
      throw rejection
    }
  }

  #giveUp (job: Job, error: unknown): void {
    if (job.settled) return
    this.#settle(job)
    this.#tell((observer) => observer.failed?.(job.mail.kind, error, job.attempts, true))
  }

  #settle (job: Job): void {
    job.settled = true
    this.#unfinished.delete(job)
    job.done()
  }

  /** An observer that throws must not stop the loop. */
  #tell (report: (observer: MailQueueObserver) => void): void {
    try {
      report(this.options.observer ?? {})
    } catch {}
  }
}

/**
 * What a log may say of a failed send: nodemailer's message and SMTP codes,
 * never the message itself. A server's answer may quote the recipient
 * ("550 <ann@example.com>: no such user") or, rarely, the text: addresses
 * and tokens are cut out.
 */
export function describeMailError (error: unknown): { message: string, code?: string, responseCode?: number } {
  if (!(error instanceof Error)) return { message: 'unknown error' }
  const { code, responseCode } = error as Error & { code?: unknown, responseCode?: unknown }
  return {
    message: error.message
      .replace(/#token=[^\s"'<>]*/g, '#token=[redacted]')
      .replace(/[^\s"'<>:;,]+@[^\s"'<>:;,]+/g, '[address]'),
    ...(typeof code === 'string' ? { code } : {}),
    ...(typeof responseCode === 'number' ? { responseCode } : {})
  }
}
