import { sql } from 'drizzle-orm'
import { bigint, boolean, check, index, integer, pgTable, primaryKey, text, timestamp, uniqueIndex, uuid } from 'drizzle-orm/pg-core'

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
  // Proven by following a link mailed to the address (or by completing a password reset).
  emailVerified: boolean('email_verified').notNull().default(false),
  // Role names (API.md, "Roles and administration"), sorted and unique; copied into access tokens.
  roles: text('roles').array().notNull().default(sql`'{}'::text[]`),
  // Set by an admin: the account can neither log in nor refresh.
  disabled: boolean('disabled').notNull().default(false),
  // Raised by every change of roles or disabled, made under one lock: orders the
  // changes instances tell each other, whatever order they arrive in.
  accessVersion: integer('access_version').notNull().default(0),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow()
}, (table) => [
  uniqueIndex('users_email_lower_key').on(sql`lower(${table.email})`),
  // "Users with role X" (roles @> '{X}'), the last-admin check among them.
  index('users_roles_idx').using('gin', table.roles),
  // The admin listing, newest first, paged by (created_at, id).
  index('users_created_at_id_idx').on(table.createdAt.desc(), table.id.desc()),
  check('users_roles_limit', sql`cardinality(${table.roles}) <= 32`)
])

export type UserRow = typeof users.$inferSelect

/**
 * The links mailed to an account (API.md, "Accounts, mail and links"): one
 * live link per account and kind, so a newer one replaces (supersedes) the
 * older. Only the token's SHA-256 is stored; redeeming deletes the row, so a
 * link works once. Bound to the address it was mailed to: a link for an
 * address the account no longer has does not work. Deleted with the account.
 */
export const linkTokens = pgTable('link_tokens', {
  userId: uuid('user_id').notNull().references(() => users.id, { onDelete: 'cascade' }),
  // password_reset, email_verification (the current address) or email_change (a new one).
  kind: text('kind').notNull(),
  tokenHash: text('token_hash').notNull(),
  // The address mailed: the account's own, or for email_change the new one.
  email: text('email').notNull(),
  expiresAt: timestamp('expires_at', { withTimezone: true, precision: 3 }).notNull(),
  createdAt: timestamp('created_at', { withTimezone: true, precision: 3 }).notNull()
}, (table) => [
  primaryKey({ columns: [table.userId, table.kind] }),
  uniqueIndex('link_tokens_token_hash_key').on(table.tokenHash),
  // Expired links are deleted by time.
  index('link_tokens_expires_at_idx').on(table.expiresAt)
])

export type LinkTokenRow = typeof linkTokens.$inferSelect

/**
 * What a link request for an email no account has writes instead of a link:
 * one row in one of a fixed number of slots, overwritten. The request then
 * commits a write like one for an account does (on PostgreSQL a commit that
 * wrote nothing skips the WAL flush, and its speed would tell that the account
 * does not exist), and the row is shaped and indexed like a link, so writing
 * it costs the same. Holds nothing about the request: a random slot, and the
 * hash of a token nobody was given.
 */
export const linkDecoys = pgTable('link_decoys', {
  slot: integer('slot').primaryKey(),
  tokenHash: text('token_hash').notNull(),
  expiresAt: timestamp('expires_at', { withTimezone: true, precision: 3 }).notNull(),
  createdAt: timestamp('created_at', { withTimezone: true, precision: 3 }).notNull()
}, (table) => [
  uniqueIndex('link_decoys_token_hash_key').on(table.tokenHash),
  index('link_decoys_expires_at_idx').on(table.expiresAt)
])

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
  index('security_events_at_idx').on(table.at.desc(), table.id.desc()),
  // The admin listing filtered by type.
  index('security_events_type_at_idx').on(table.type, table.at.desc(), table.id.desc())
])

export type SecurityEventRow = typeof securityEvents.$inferSelect
