import type { AccountService } from './accounts.js'
import { ServiceError } from './errors.js'
import { sameRoles } from './roles.js'
import type { EventPosition, SecurityEventPage, SecurityEventRecorder, SecurityEventType } from './security-events.js'
import type { AdminActor, ListedSession, SessionService } from './sessions.js'
import type { UserDirectory, UserPage } from './user-directory.js'
import type { AccessChange, User, UserRepository } from './users.js'

export interface AdminServiceDeps {
  users: UserRepository
  directory: UserDirectory
  sessions: SessionService
  accounts: AccountService
  events: SecurityEventRecorder
  eventStore: { list(filter: EventFilter): Promise<SecurityEventPage> }
}

export interface EventFilter {
  userId?: string
  type?: SecurityEventType
  limit: number
  before?: EventPosition
}

/** A user as an admin sees one, with their live sessions. */
export interface UserWithSessions {
  user: User
  sessions: ListedSession[]
}

/**
 * What admins do to accounts (API.md, "Roles and administration"), over
 * HTTP (routes/admin.ts) or from the command line (src/admin-cli.ts). Every
 * change is a security event with the admin as its actor. No HTTP in it:
 * errors are ServiceErrors from the catalogue.
 */
export class AdminService {
  constructor (private readonly deps: AdminServiceDeps) {}

  listUsers (options: { query?: string, limit: number, cursor?: string }): Promise<UserPage> {
    return this.deps.directory.page(options)
  }

  /** The user and their live sessions; `current` marks the admin's own (`adminSessionId`). */
  async getUser (userId: string, adminSessionId?: string): Promise<UserWithSessions> {
    const user = await this.#find(userId)
    return { user, sessions: await this.deps.sessions.list(userId, adminSessionId ?? '') }
  }

  /** The account of an email (the command line names accounts so); NOT_FOUND when there is none. */
  async findByEmail (email: string): Promise<User> {
    const user = await this.deps.users.findByEmail(email)
    if (user === undefined) throw new ServiceError('NOT_FOUND', 'No account has this email')
    return user
  }

  /**
   * Changes the account's roles and/or disabled flag as `change` computes
   * them from the account as stored (so a grant adds to the roles it has
   * then). Disabling ends every session at once, their access tokens within
   * a second on every instance, and a login in flight. Removing a role
   * refuses the access tokens issued before (the sessions stay); an added
   * one appears from the next refresh. LAST_ADMIN when it would leave no
   * enabled admin; VALIDATION_ERROR past 32 roles.
   *
   * What the change sets is told to every instance even when the account had
   * it already (only a real change is recorded as an event): a retry after a
   * failure to tell them (Redis away) still ends the sessions of an account
   * disabled by the first attempt.
   */
  async updateUser (userId: string, change: AccessChange | ((user: User) => AccessChange), actor: AdminActor): Promise<User> {
    const { users, sessions, events } = this.deps
    let requested: AccessChange = {}
    const outcome = await users.updateAccess(userId, (user) => (requested = typeof change === 'function' ? change(user) : change))
    if (outcome === undefined) throw new ServiceError('NOT_FOUND', 'No such user')
    if (outcome === 'last-admin') throw new ServiceError('LAST_ADMIN')
    if (outcome === 'too-many-roles') throw new ServiceError('VALIDATION_ERROR', 'A user has at most 32 roles')
    const { before, after } = outcome
    const recorded = { userId, actorId: actor.id, ip: actor.ip, userAgent: actor.userAgent }
    if (requested.disabled === true) {
      // Stored already: this ends the sessions, and every instance re-reads the account.
      await sessions.endAllSessions(userId, async () => {})
      if (!before.disabled) events.record({ type: 'account_disabled', ...recorded })
    }
    if (requested.roles !== undefined) {
      await sessions.rolesChanged(userId, after.roles, {
        version: after.accessVersion,
        narrowed: before.roles.some((role) => !after.roles.includes(role))
      })
      if (!sameRoles(before.roles, after.roles)) events.record({ type: 'roles_changed', ...recorded })
    }
    if (requested.disabled === false) {
      await sessions.userChanged(userId)
      if (before.disabled) events.record({ type: 'account_enabled', ...recorded })
    }
    return after
  }

  /** Deletes the account as DELETE /users/me does; LAST_ADMIN for the last enabled admin. */
  async deleteUser (userId: string, actor: AdminActor): Promise<void> {
    await this.deps.accounts.deleteByAdmin(await this.#find(userId), actor)
  }

  /** Revokes every session of the account (refresh tokens at once, access tokens within a second). */
  async revokeSessions (userId: string, actor: AdminActor): Promise<void> {
    await this.#find(userId)
    await this.deps.sessions.revokeAllByAdmin(userId, actor)
  }

  /** Every account's events, newest first, filtered by user and type. */
  listEvents (filter: EventFilter): Promise<SecurityEventPage> {
    return this.deps.eventStore.list(filter)
  }

  async #find (userId: string): Promise<User> {
    const user = await this.deps.users.findById(userId)
    if (user === undefined) throw new ServiceError('NOT_FOUND', 'No such user')
    return user
  }
}
