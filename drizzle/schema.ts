import { sql } from 'drizzle-orm'
import { integer, pgTable, text, timestamp, uniqueIndex, uuid } from 'drizzle-orm/pg-core'

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
