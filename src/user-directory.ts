import { and, desc, sql } from 'drizzle-orm'
import { users } from '../drizzle/schema.js'
import type { Database } from './database.js'
import { decodeCursor, encodeCursor, LAST_TIMESTAMP_MS } from './cursors.js'
import { timedQuery, type StoreTiming } from './store-timing.js'
import { normalizeEmail, toUser, type User } from './users.js'

export interface UserPage {
  users: User[]
  /** The cursor of the next page; null on the last one. */
  next: string | null
}

/** Where a user sits in the newest-first order: creation time in microseconds (PostgreSQL's precision), then id. */
interface UserPosition {
  createdAtUs: bigint
  id: string
}

/** The last microsecond PostgreSQL reads from a four-digit year, in microseconds since the epoch. */
const LAST_CREATED_AT_US = BigInt(LAST_TIMESTAMP_MS) * 1000n + 999n
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

function cursorOf ({ createdAtUs, id }: UserPosition): string {
  return encodeCursor(`${createdAtUs}.${id}`)
}

/** The position a cursor names; VALIDATION_ERROR when this service could not have given it. */
function parseCursor (cursor: string): UserPosition {
  return decodeCursor(cursor, (text) => {
    const match = /^(0|[1-9]\d{0,17})\.(.+)$/.exec(text)
    if (match === null || BigInt(match[1]!) > LAST_CREATED_AT_US || !UUID.test(match[2]!)) return undefined
    return { createdAtUs: BigInt(match[1]!), id: match[2]! }
  }, cursorOf)
}

/** `text` for LIKE, where `%`, `_` and the escape character itself are plain characters. */
function likeLiteral (text: string): string {
  return text.replace(/[\\%_]/g, (character) => `\\${character}`)
}

/**
 * The admin's view of every account: found by part of the email, newest
 * first, a page at a time. Pages continue after a position (keyset), so a
 * user is never skipped or listed twice across pages, whatever is signed up
 * meanwhile.
 */
export class UserDirectory {
  constructor (private readonly db: Database, private readonly timing?: StoreTiming) {}

  async page ({ query = '', limit, cursor }: { query?: string, limit: number, cursor?: string }): Promise<UserPage> {
    const after = cursor === undefined ? undefined : parseCursor(cursor)
    // Emails are stored lower-cased; a search in any case matches.
    const pattern = `%${likeLiteral(normalizeEmail(query))}%`
    const createdAtUs = sql<string>`(extract(epoch from ${users.createdAt}) * 1000000)::bigint::text`
    const rows = await timedQuery(this.timing, 'listUsers', () => this.db.select({ user: users, createdAtUs }).from(users)
      .where(and(
        pattern === '%%' ? undefined : sql`${users.email} like ${pattern} escape '\\'`,
        after === undefined
          ? undefined
          : sql`(${users.createdAt}, ${users.id}) < (timestamptz 'epoch' + ${after.createdAtUs.toString()}::bigint * interval '1 microsecond', ${after.id}::uuid)`
      ))
      .orderBy(desc(users.createdAt), desc(users.id))
      // One more than asked: whether there is a next page, without a count.
      .limit(limit + 1))
    const page = rows.slice(0, limit)
    const last = page.at(-1)
    return {
      users: page.map(({ user }) => toUser(user)),
      next: rows.length > limit && last !== undefined ? cursorOf({ createdAtUs: BigInt(last.createdAtUs), id: last.user.id }) : null
    }
  }
}
