import { and, arrayContains, eq, ne, sql } from 'drizzle-orm'
import { LRUCache } from 'lru-cache'
import { users, type UserRow } from '../drizzle/schema.js'
import type { Database } from './database.js'
import { ADMIN_ROLE, MAX_ROLES, normalizeRoles } from './roles.js'
import { timedQuery, type StoreTiming } from './store-timing.js'

export interface User {
  id: string
  email: string
  passwordHash: string
  /** Raised by every credential change: sessions opened under an older one are over. */
  credentialVersion: number
  /** The address was proven by a mailed link (or a completed password reset). */
  emailVerified: boolean
  /** Role names, sorted and unique: copied into access tokens. */
  roles: string[]
  /** Disabled by an admin: can neither log in nor refresh. */
  disabled: boolean
  /** Raised by every change of roles or disabled: orders them. */
  accessVersion: number
  createdAt: Date
}

/** What the user may see of their own account: no secret. */
export type UserProfile = Pick<User, 'id' | 'email' | 'emailVerified' | 'roles' | 'createdAt'>

/** What an admin may change of an account (PATCH /admin/users/:id). */
export interface AccessChange {
  roles?: string[]
  disabled?: boolean
}

/** An account before and after an access change. */
export interface AccessUpdate {
  before: User
  after: User
}

/**
 * Serializes the changes that could leave no enabled admin (demoting, disabling,
 * deleting): checked and made under it, two admins demoting each other at once
 * cannot both succeed. Any key works as long as every instance uses the same one;
 * this is "authadmn" in ASCII.
 */
const ADMIN_CHANGES_LOCK_KEY = 0x6175746861646d6en

function isEnabledAdmin (user: Pick<User, 'roles' | 'disabled'>): boolean {
  return !user.disabled && user.roles.includes(ADMIN_ROLE)
}

/** Profiles remembered, so /users/me stays off the database on the hot path. */
const PROFILES_KEPT = 10_000

/** Trims and lower-cases, so one mailbox is one account whatever its spelling. */
export function normalizeEmail (email: string): string {
  return email.trim().toLowerCase()
}

/** Accounts whose login lookups are remembered, when that is safe (see `rememberCredentials`). */
const CREDENTIALS_KEPT = 10_000

export interface UserRepositoryOptions {
  /** Bound of the profile cache (PROFILES_KEPT unless given). */
  profilesKept?: number
  /**
   * Remember login lookups (email to account and password hash), so a login
   * costs the event loop no query. Only for a database no other process
   * writes to, the embedded one this instance opened: a password changed
   * elsewhere would otherwise leave the old one working here.
   */
  rememberCredentials?: boolean
  /** Bound of the credentials cache (CREDENTIALS_KEPT unless given). */
  credentialsKept?: number
  /** Told how long each query took, and whether it failed. */
  timing?: StoreTiming
}

/** Users in PostgreSQL. A failure of the database surfaces as STORE_UNAVAILABLE. */
export class UserRepository {
  /*
   * Bounded. A profile changes (email, verification) and a user can be
   * deleted: this instance drops its entry when it makes the change, and
   * every other one when the revocation feed tells it (forgetUser).
   */
  readonly #profiles: LRUCache<string, UserProfile>
  /** By normalized email; only accounts that exist (a signup adds nothing to forget). */
  readonly #credentials: LRUCache<string, User> | undefined
  // Prepared once: drizzle builds their SQL once, and PostgreSQL plans them once per connection.
  readonly #byEmail
  readonly #byId

  readonly #timing: StoreTiming | undefined
  /**
   * Raised by every forget: a read that started before one may have seen the
   * row as it was, and is answered but not remembered (it would put back
   * what was just forgotten).
   */
  #forgets = 0

  constructor (private readonly db: Database, options: UserRepositoryOptions = {}) {
    this.#timing = options.timing
    this.#profiles = new LRUCache({ max: options.profilesKept ?? PROFILES_KEPT })
    if (options.rememberCredentials === true) this.#credentials = new LRUCache({ max: options.credentialsKept ?? CREDENTIALS_KEPT })
    this.#byEmail = db.select().from(users).where(eq(sql`lower(${users.email})`, sql.placeholder('email'))).limit(1).prepare('user_by_email')
    this.#byId = db.select().from(users).where(eq(users.id, sql.placeholder('id'))).limit(1).prepare('user_by_id')
  }

  /** The user's profile, from the cache when it can be. */
  async findProfile (id: string): Promise<UserProfile | undefined> {
    const cached = this.#profiles.get(id)
    if (cached !== undefined) return cached
    const forgets = this.#forgets
    const user = await this.findById(id)
    if (user === undefined) return undefined
    const profile = { id: user.id, email: user.email, emailVerified: user.emailVerified, roles: user.roles, createdAt: user.createdAt }
    if (forgets === this.#forgets) this.#profiles.set(id, profile)
    return profile
  }

  /** The profile if it is cached, without waiting for anything. */
  cachedProfile (id: string): UserProfile | undefined {
    return this.#profiles.get(id)
  }

  get cachedProfiles (): number {
    return this.#profiles.size
  }

  /** Inserts a user; undefined when the email is already registered (in any case). */
  async create (email: string, passwordHash: string): Promise<User | undefined> {
    const rows = await this.#query('createUser', () => this.db.insert(users)
      .values({ email: normalizeEmail(email), passwordHash })
      .onConflictDoNothing()
      .returning())
    return rows[0] === undefined ? undefined : toUser(rows[0])
  }

  async findByEmail (email: string): Promise<User | undefined> {
    const normalized = normalizeEmail(email)
    const remembered = this.#credentials?.get(normalized)
    if (remembered !== undefined) return remembered
    const forgets = this.#forgets
    const rows = await this.#query('userByEmail', () => this.#byEmail.execute({ email: normalized }))
    if (rows[0] === undefined) return undefined
    const user = toUser(rows[0])
    if (forgets === this.#forgets) this.#credentials?.set(normalized, user)
    return user
  }

  /**
   * Stores a new password hash and raises the credential version; answers the
   * new version (undefined: no such user). `verifyEmail`: the change proves the
   * address too (a reset through a link mailed to it).
   */
  async updatePassword (id: string, passwordHash: string, { verifyEmail = false } = {}): Promise<number | undefined> {
    const rows = await this.#query('updatePassword', () => this.db.update(users)
      .set({
        passwordHash,
        credentialVersion: sql`${users.credentialVersion} + 1`,
        ...(verifyEmail ? { emailVerified: true } : {}),
        updatedAt: new Date()
      })
      .where(eq(users.id, id))
      .returning({ credentialVersion: users.credentialVersion }))
    this.forgetUser(id)
    return rows[0]?.credentialVersion
  }

  /**
   * Replaces a hash made with older parameters by one of the same password
   * made with the current ones, unless the password changed meanwhile (the
   * stored hash is no longer `previousHash`): no credential change, no
   * session ends. Answers whether it was replaced.
   */
  async rehashPassword (id: string, previousHash: string, passwordHash: string): Promise<boolean> {
    const rows = await this.#query('rehashPassword', () => this.db.update(users)
      .set({ passwordHash, updatedAt: new Date() })
      .where(and(eq(users.id, id), eq(users.passwordHash, previousHash)))
      .returning({ id: users.id }))
    this.forgetUser(id)
    return rows.length > 0
  }

  /** Marks the address verified, if it is still `email`; answers whether the account has it (verified now or before). */
  async markEmailVerified (id: string, email: string): Promise<boolean> {
    const rows = await this.#query('markEmailVerified', () => this.db.update(users)
      .set({ emailVerified: true, updatedAt: new Date() })
      .where(and(eq(users.id, id), eq(users.email, email)))
      .returning({ id: users.id }))
    this.forgetUser(id)
    return rows.length > 0
  }

  /**
   * Moves the account to a new (verified) address. Answers the old address,
   * undefined when there is no such user, or 'taken' when another account has
   * the new one (the unique index decides, so racing changes and signups
   * cannot both win).
   */
  async changeEmail (id: string, newEmail: string): Promise<{ previousEmail: string } | 'taken' | undefined> {
    const email = normalizeEmail(newEmail)
    const result = await this.#query('changeEmail', async () => {
      try {
        // node-postgres and PGlite both answer a raw statement with its `rows`.
        const answer = await this.db.execute(sql`
          update ${users} set email = ${email}, email_verified = true, updated_at = now()
          from (select id, email from ${users} where id = ${id} for update) as previous
          where ${users.id} = previous.id
          returning previous.email as "previousEmail"`) as unknown as { rows: Array<{ previousEmail: string }> }
        return answer.rows
      } catch (error) {
        // Not a store failure: the answer.
        if (isUniqueViolation(error)) return 'taken' as const
        throw error
      }
    })
    this.forgetUser(id)
    return result === 'taken' ? result : result[0]
  }

  /**
   * Deletes the account (its links go with it): 'not-found' when there is no
   * such account, 'last-admin' (and nothing deleted) when it is the last
   * enabled admin.
   */
  async delete (id: string): Promise<'deleted' | 'not-found' | 'last-admin'> {
    const outcome = await this.#query('deleteUser', () => this.#underAdminLock(id, async (tx, user) => {
      if (user === undefined) return 'not-found' as const
      if (isEnabledAdmin(user) && !await hasOtherEnabledAdmin(tx, id)) return 'last-admin' as const
      await tx.delete(users).where(eq(users.id, id))
      return 'deleted' as const
    }))
    this.forgetUser(id)
    return outcome
  }

  /**
   * Changes an account's roles and/or disabled flag, as `change` computes from
   * the account as it is (read and written in one transaction, so a grant
   * never loses a concurrent one). Answers the account before and after,
   * undefined when there is no such account, 'too-many-roles' past MAX_ROLES,
   * or 'last-admin' when it would leave no enabled account with the role
   * admin (nothing changes then).
   */
  async updateAccess (id: string, change: (user: User) => AccessChange): Promise<AccessUpdate | 'too-many-roles' | 'last-admin' | undefined> {
    const outcome = await this.#query('updateAccess', () => this.#underAdminLock(id, async (tx, before) => {
      if (before === undefined) return undefined
      const { roles = before.roles, disabled = before.disabled } = change(before)
      const after = { ...before, roles: normalizeRoles(roles), disabled, accessVersion: before.accessVersion + 1 }
      if (after.roles.length > MAX_ROLES) return 'too-many-roles' as const
      if (isEnabledAdmin(before) && !isEnabledAdmin(after) && !await hasOtherEnabledAdmin(tx, id)) return 'last-admin' as const
      await tx.update(users).set({ roles: after.roles, disabled: after.disabled, accessVersion: after.accessVersion, updatedAt: new Date() })
        .where(eq(users.id, id))
      return { before, after }
    }))
    this.forgetUser(id)
    return outcome
  }

  /**
   * Runs `work` in a transaction holding the lock of changes that could
   * remove the last admin, with the account `id` as it is then (row-locked;
   * undefined when there is none).
   */
  #underAdminLock<T> (id: string, work: (tx: Transaction, user: User | undefined) => Promise<T>): Promise<T> {
    return this.db.transaction(async (tx) => {
      await tx.execute(sql`select pg_advisory_xact_lock(${ADMIN_CHANGES_LOCK_KEY.toString()}::bigint)`)
      const [row] = await tx.select().from(users).where(eq(users.id, id)).for('update')
      return work(tx, row === undefined ? undefined : toUser(row))
    })
  }

  /**
   * Drops what this instance remembers of the user: after it changes the row,
   * and when another instance says it did. A lookup still under way then is
   * not remembered when it answers (#forgets).
   */
  forgetUser (id: string): void {
    this.#forgets++
    this.#forgetCredentials(id)
    this.#profiles.delete(id)
  }

  get cachedCredentials (): number {
    return this.#credentials?.size ?? 0
  }

  /** Drops everything remembered: changes may have been missed (the revocation feed reconnected). */
  forgetAll (): void {
    this.#forgets++
    this.#credentials?.clear()
    this.#profiles.clear()
  }

  #forgetCredentials (id: string): void {
    if (this.#credentials === undefined) return
    for (const [email, user] of this.#credentials.entries()) {
      if (user.id === id) this.#credentials.delete(email)
    }
  }

  async findById (id: string): Promise<User | undefined> {
    const rows = await this.#query('userById', () => this.#byId.execute({ id }))
    return rows[0] === undefined ? undefined : toUser(rows[0])
  }

  #query<T> (operation: string, query: () => Promise<T>): Promise<T> {
    return timedQuery(this.#timing, operation, query)
  }
}

type Transaction = Parameters<Parameters<Database['transaction']>[0]>[0]

/** Whether an enabled account other than `id` has the role admin (the GIN index on roles finds them). */
async function hasOtherEnabledAdmin (tx: Transaction, id: string): Promise<boolean> {
  const others = await tx.select({ id: users.id }).from(users)
    .where(and(arrayContains(users.roles, [ADMIN_ROLE]), eq(users.disabled, false), ne(users.id, id)))
    .limit(1)
  return others.length > 0
}

export function toUser (row: UserRow): User {
  const { id, email, passwordHash, credentialVersion, emailVerified, roles, disabled, accessVersion, createdAt } = row
  return { id, email, passwordHash, credentialVersion, emailVerified, roles, disabled, accessVersion, createdAt }
}

/** PostgreSQL's unique_violation, as node-postgres and PGlite report it (possibly wrapped by drizzle as the cause). */
function isUniqueViolation (error: unknown): boolean {
  for (let current = error; typeof current === 'object' && current !== null; current = (current as { cause?: unknown }).cause) {
    if ((current as { code?: unknown }).code === '23505') return true
  }
  return false
}
