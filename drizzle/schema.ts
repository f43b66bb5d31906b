import { sql } from 'drizzle-orm'
import { bigint, index, integer, pgTable, text, timestamp, uniqueIndex, uuid } from 'drizzle-orm/pg-core'

export const users = pgTable('users', {
  id: uuid('id').primaryKey().defaultRandom(),
  // Stored trimmed and lower-cased by the service; the index below makes
  // uniqueness case-insensitive in the database itself, so racing signups
  // of one address cannot both succeed.
  email: text('email').notNull(),
  passwordHash: text('password_hash').notNull(),
  // Raised by every credential change (password change, later reset, disabling,
  // deletion): a session opened under an older version is over, even one whose
  // login was in flight when the change happened.
  credentialVersion: integer('credential_version').notNull().default(0),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow()
}, (table) => [
  uniqueIndex('users_email_lower_key').on(sql`lower(${table.email})`)
])

export type UserRow = typeof users.$inferSelect

/**
 * Security events (API.md, "Security events"): who did what to an account,
 * from where. No foreign key to users: the events of a deleted account stay,
 * with its id only. Never a password, a token or a hash.
 */
export const securityEvents = pgTable('security_events', {
  // Ordered with `at`: the tie-breaker of events recorded in the same millisecond.
  id: bigint('id', { mode: 'bigint' }).primaryKey().generatedAlwaysAsIdentity(),
  type: text('type').notNull(),
  at: timestamp('at', { withTimezone: true, precision: 3 }).notNull(),
  // Null for a failed login of an email no account has.
  userId: uuid('user_id'),
  sessionId: uuid('session_id'),
  // The admin who acted on the account; null when the user acted themselves.
  actorId: uuid('actor_id'),
  ip: text('ip'),
  userAgent: text('user_agent')
}, (table) => [
  // A user's events newest first, paged by (at, id).
  index('security_events_user_at_idx').on(table.userId, table.at.desc(), table.id.desc()),
  // Pruning and the admin listing read by time.
  index('security_events_at_idx').on(table.at.desc(), table.id.desc())
])

export type SecurityEventRow = typeof securityEvents.$inferSelect
