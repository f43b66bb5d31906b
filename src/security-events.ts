import type { Clock } from './clock.js'
import { decodeCursor, encodeCursor, LAST_TIMESTAMP_MS } from './cursors.js'

/** Every type of security event (API.md, "Security events"). */
export const SECURITY_EVENT_TYPES = [
  'signup', 'login', 'login_failed', 'logout', 'refresh_reuse_detected', 'password_changed',
  'password_reset_requested', 'password_reset', 'email_verified', 'email_changed', 'session_revoked',
  'sessions_revoked', 'account_disabled', 'account_enabled', 'account_deleted', 'roles_changed'
] as const
export type SecurityEventType = typeof SECURITY_EVENT_TYPES[number]

/** An event as the service records it: who, which session, from where. Never a secret. */
export interface SecurityEventRecord {
  type: SecurityEventType
  /** Null for a failed login of an email no account has. */
  userId: string | null
  sessionId?: string | null
  /** The admin who acted on the account; absent when the user acted. */
  actorId?: string | null
  ip?: string | null
  userAgent?: string | null
}

/** A recorded event, as it is read back. */
export interface SecurityEvent {
  id: string
  type: SecurityEventType
  at: Date
  userId: string | null
  sessionId: string | null
  actorId: string | null
  ip: string | null
  userAgent: string | null
}

/** A record stamped with its time, waiting to be written. */
export type TimedSecurityEventRecord = SecurityEventRecord & { at: Date }

/** Where an event sits in the newest-first order: pages continue after it. */
export interface EventPosition {
  at: Date
  id: string
}

export interface SecurityEventPage {
  events: SecurityEvent[]
  /** The cursor of the next (older) page; null on the last one. */
  next: string | null
}

/** What records events: the session lifecycle, the routes, and later the account and admin work. */
export interface SecurityEventRecorder {
  /** Takes the event and returns at once: it never waits for the database and never fails the caller. */
  record(event: SecurityEventRecord): void
}

/** Where recorded events are written in batches (src/security-event-store.ts). */
export interface SecurityEventSink {
  insert(events: TimedSecurityEventRecord[]): Promise<void>
  prune(olderThan: Date): Promise<number>
}

/** What the log tells metrics about itself. */
export interface SecurityEventLogObserver {
  recorded?(type: SecurityEventType): void
  writeFailed?(error: unknown): void
  dropped?(count: number): void
}

export interface SecurityEventLogOptions {
  clock: Clock
  /** How long events are kept (AUDIT_RETENTION), in ms. */
  retentionMs: number
  /** The longest an event waits before it is written (ms). */
  flushIntervalMs?: number
  /** Events written by one INSERT; a buffer this full is written at once. */
  batchSize?: number
  /** Events held while the database is away; past this, the oldest are dropped (and counted). */
  maxPending?: number
  observer?: SecurityEventLogObserver
}

const FLUSH_INTERVAL_MS = 1000
const BATCH_SIZE = 500
const MAX_PENDING = 50_000

/**
 * Security events, recorded off the request path: `record` only appends to
 * an in-memory buffer, which is written in batches (one multi-row INSERT)
 * within `flushIntervalMs`, or as soon as a batch is full. A write that fails
 * (the database is away) keeps its events for the next attempt, up to
 * `maxPending`. What a process that dies loses: the events of its last
 * `flushIntervalMs` (a crash or SIGKILL); `close` (graceful shutdown) writes
 * everything first.
 */
export class SecurityEventLog implements SecurityEventRecorder {
  #pending: TimedSecurityEventRecord[] = []
  #timer: NodeJS.Timeout | undefined
  #writing: Promise<void> = Promise.resolve()
  /** Closed: no write is scheduled any more (close makes the last one). */
  #closed = false
  readonly #flushIntervalMs: number
  readonly #batchSize: number
  readonly #maxPending: number

  constructor (private readonly sink: SecurityEventSink, private readonly options: SecurityEventLogOptions) {
    this.#flushIntervalMs = options.flushIntervalMs ?? FLUSH_INTERVAL_MS
    this.#batchSize = options.batchSize ?? BATCH_SIZE
    this.#maxPending = options.maxPending ?? MAX_PENDING
  }

  record (event: SecurityEventRecord): void {
    this.#pending.push({ ...event, at: new Date(this.options.clock.now()) })
    this.options.observer?.recorded?.(event.type)
    this.#dropOverflow()
    if (this.#pending.length >= this.#batchSize) this.#flushSoon(0)
    else this.#flushSoon(this.#flushIntervalMs)
  }

  /** Events recorded and not written yet. */
  get pending (): number {
    return this.#pending.length
  }

  /**
   * Writes what is pending, a batch at a time, after any write under way.
   * Never rejects: a failed batch goes back to the front of the line, and is
   * tried again at the next flush.
   */
  flush (): Promise<void> {
    clearTimeout(this.#timer)
    this.#timer = undefined
    this.#writing = this.#writing.then(() => this.#writeAll())
    return this.#writing
  }

  /** Deletes the events older than the retention. */
  async prune (): Promise<number> {
    return this.sink.prune(new Date(this.options.clock.now() - this.options.retentionMs))
  }

  /** Writes everything pending (graceful shutdown); nothing is scheduled afterwards. */
  async close (): Promise<void> {
    this.#closed = true
    await this.flush()
  }

  async #writeAll (): Promise<void> {
    while (this.#pending.length > 0) {
      const batch = this.#pending.splice(0, this.#batchSize)
      try {
        await this.sink.insert(batch)
      } catch (error) {
        this.#pending.unshift(...batch)
        this.#dropOverflow()
        this.options.observer?.writeFailed?.(error)
        this.#flushSoon(this.#flushIntervalMs)
        return
      }
    }
  }

  /** Schedules a flush (flush never rejects); one already scheduled sooner stands. */
  #flushSoon (delayMs: number): void {
    if (this.#closed || (this.#timer !== undefined && delayMs > 0)) return
    clearTimeout(this.#timer)
    this.#timer = setTimeout(() => { this.flush().catch(() => {}) }, delayMs).unref()
  }

  #dropOverflow (): void {
    const excess = this.#pending.length - this.#maxPending
    if (excess <= 0) return
    this.#pending.splice(0, excess)
    this.options.observer?.dropped?.(excess)
  }
}

/** A page's cursor: its last event's position, opaque to clients. */
export function eventCursorOf ({ at, id }: EventPosition): string {
  return encodeCursor(`${at.getTime()}.${id}`)
}

/** Event ids are PostgreSQL bigints. */
const MAX_EVENT_ID = 2n ** 63n - 1n

/** The position a cursor names; VALIDATION_ERROR when it is not one this service could have given. */
export function parseEventCursor (cursor: string): EventPosition {
  return decodeCursor(cursor, (text) => {
    const match = /^(0|[1-9]\d{0,14})\.([1-9]\d{0,18})$/.exec(text)
    if (match === null || Number(match[1]) > LAST_TIMESTAMP_MS || BigInt(match[2]!) > MAX_EVENT_ID) return undefined
    return { at: new Date(Number(match[1])), id: match[2]! }
  }, eventCursorOf)
}
