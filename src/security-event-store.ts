import { and, desc, eq, lt, sql } from 'drizzle-orm'
import { securityEvents, type SecurityEventRow } from '../drizzle/schema.js'
import type { Database } from './database.js'
import {
  eventCursorOf, type EventPosition, type SecurityEvent, type SecurityEventPage, type SecurityEventSink,
  type SecurityEventType, type TimedSecurityEventRecord
} from './security-events.js'
import { timedQuery, type StoreTiming } from './store-timing.js'

/** Rows one prune statement deletes: each statement is a short transaction, so the table is never locked for long. */
const PRUNE_BATCH = 1000

/** Security events in PostgreSQL (or PGlite). A failure of the database surfaces as STORE_UNAVAILABLE. */
export class SecurityEventStore implements SecurityEventSink {
  constructor (private readonly db: Database, private readonly timing?: StoreTiming) {}

  /** Writes a batch in one INSERT. */
  async insert (events: TimedSecurityEventRecord[]): Promise<void> {
    if (events.length === 0) return
    await this.#query('insertEvents', () => this.db.insert(securityEvents).values(events.map((event) => ({
      type: event.type,
      at: event.at,
      userId: event.userId,
      sessionId: event.sessionId ?? null,
      actorId: event.actorId ?? null,
      ip: event.ip ?? null,
      // A client that sent no user agent has none (not an empty one).
      userAgent: event.userAgent === undefined || event.userAgent === '' ? null : event.userAgent
    }))))
  }

  /**
   * Events newest first, `limit` at a time, from after `before` (a previous
   * page's last event): a user's (their own listing), or any (the admin's),
   * of one type or all.
   */
  async list ({ userId, type, limit, before }: { userId?: string, type?: SecurityEventType, limit: number, before?: EventPosition }): Promise<SecurityEventPage> {
    const rows = await this.#query('listEvents', () => this.db.select().from(securityEvents)
      .where(and(
        userId === undefined ? undefined : eq(securityEvents.userId, userId),
        type === undefined ? undefined : eq(securityEvents.type, type),
        before === undefined ? undefined : sql`(${securityEvents.at}, ${securityEvents.id}) < (${before.at.toISOString()}::timestamptz, ${before.id}::bigint)`
      ))
      .orderBy(desc(securityEvents.at), desc(securityEvents.id))
      // One more than asked: whether there is a next page, without a count.
      .limit(limit + 1))
    const events = rows.slice(0, limit).map(toEvent)
    const last = events.at(-1)
    return { events, next: rows.length > limit && last !== undefined ? eventCursorOf(last) : null }
  }

  /**
   * Deletes the events recorded before `olderThan`, a batch per statement
   * (rows another pruner holds are skipped, not waited for); answers how many.
   */
  async prune (olderThan: Date): Promise<number> {
    let deleted = 0
    for (;;) {
      const oldest = this.db.select({ id: securityEvents.id }).from(securityEvents)
        .where(lt(securityEvents.at, olderThan))
        .limit(PRUNE_BATCH)
        .for('update', { skipLocked: true })
      const rows = await this.#query('pruneEvents', () => this.db.delete(securityEvents)
        .where(sql`${securityEvents.id} in ${oldest}`)
        .returning({ id: securityEvents.id }))
      deleted += rows.length
      if (rows.length < PRUNE_BATCH) return deleted
    }
  }

  /** A deleted account's events keep its id, and lose where they came from. */
  async forgetClientDetails (userId: string): Promise<void> {
    await this.#query('forgetEventClients', () => this.db.update(securityEvents)
      .set({ ip: null, userAgent: null })
      .where(eq(securityEvents.userId, userId)))
  }

  #query<T> (operation: string, query: () => Promise<T>): Promise<T> {
    return timedQuery(this.timing, operation, query)
  }
}

function toEvent (row: SecurityEventRow): SecurityEvent {
  return {
    id: row.id.toString(),
    type: row.type as SecurityEventType,
    at: row.at,
    userId: row.userId,
    sessionId: row.sessionId,
    actorId: row.actorId,
    ip: row.ip,
    userAgent: row.userAgent
  }
}
