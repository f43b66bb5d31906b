import { ServiceError } from './errors.js'

/*
 * Page cursors: where a page ends, as text the service writes and clients
 * pass back unread (base64url). Shared by the paged lists (security events,
 * the admin's users).
 */

/** The last instant PostgreSQL reads from an ISO date with a four-digit year, in ms since the epoch. */
export const LAST_TIMESTAMP_MS = Date.UTC(9999, 11, 31, 23, 59, 59, 999)

export function encodeCursor (text: string): string {
  return Buffer.from(text).toString('base64url')
}

/**
 * The position a cursor names, as `read` finds it in the cursor's text
 * (undefined: none); VALIDATION_ERROR unless the service could have given it,
 * that is unless `write` encodes the position back to the very same cursor.
 * A client can spell any text: it must never reach the database as a value it refuses.
 */
export function decodeCursor<T> (cursor: string, read: (text: string) => T | undefined, write: (position: T) => string): T {
  const position = read(Buffer.from(cursor, 'base64url').toString())
  if (position === undefined || write(position) !== cursor) {
    throw new ServiceError('VALIDATION_ERROR', 'The cursor is not one this service gave: pass `next` from the previous page')
  }
  return position
}
