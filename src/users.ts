import { eq, sql } from 'drizzle-orm'
import { LRUCache } from 'lru-cache'
import { users, type UserRow } from '../drizzle/schema.js'
import type { Database } from './database.js'
import { timedQuery, type StoreTiming } from './store-timing.js'

export interface User {
  id: string
  email: string
  passwordHash: string
  /** Raised by every credential change: sessions opened under an older one are over. */
  credentialVersion: number
  createdAt: Date
}

/** What the user may see of their own account: no secret. */
export type UserProfile = Pick<User, 'id' | 'email' | 'createdAt'>

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
   * Bounded, and correct on every instance without invalidation messages: a
   * profile's fields (id, email, creation time) never change once written, and
   * users are never deleted. A row change (the password) drops the local entry
   * anyway, so a future mutable field starts from a correct base.
   */
  readonly #profiles: LRUCache<string, UserProfile>
  /** By normalized email; only accounts that exist (a signup adds nothing to forget). */
  readonly #credentials: LRUCache<string, User> | undefined
  // Prepared once: drizzle builds their SQL once, and PostgreSQL plans them once per connection.
  readonly #byEmail
  readonly #byId

  readonly #timing: StoreTiming | undefined

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
    const user = await this.findById(id)
    if (user === undefined) return undefined
    const profile = { id: user.id, email: user.email, createdAt: user.createdAt }
    this.#profiles.set(id, profile)
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
    const rows = await this.#query('userByEmail', () => this.#byEmail.execute({ email: normalized }))
    if (rows[0] === undefined) return undefined
    const user = toUser(rows[0])
    this.#credentials?.set(normalized, user)
    return user
  }

  /** Stores a new password hash and raises the credential version; answers the new version (undefined: no such user). */
  async updatePassword (id: string, passwordHash: string): Promise<number | undefined> {
    const rows = await this.#query('updatePassword', () => this.db.update(users)
      .set({ passwordHash, credentialVersion: sql`${users.credentialVersion} + 1`, updatedAt: new Date() })
      .where(eq(users.id, id))
      .returning({ credentialVersion: users.credentialVersion }))
    // Once the row has changed: a lookup that read the old row before the update has
    // remembered it by now (the embedded database answers in order), and is forgotten too.
    this.#forgetCredentials(id)
    this.#profiles.delete(id)
    return rows[0]?.credentialVersion
  }

  get cachedCredentials (): number {
    return this.#credentials?.size ?? 0
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

function toUser (row: UserRow): User {
  return { id: row.id, email: row.email, passwordHash: row.passwordHash, credentialVersion: row.credentialVersion, createdAt: row.createdAt }
}
