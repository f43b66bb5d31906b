import type { Clock } from './clock.js'
import { hasRoles } from './roles.js'

/**
 * A revocation as instances tell each other: a session, every session of a
 * user that started before `before`, a change to a user (a credential
 * change) that each instance must re-read instead of trusting its cache, or
 * a user's new roles. `until` is when it stops mattering (the last access
 * token it covers has expired), after which it can be forgotten.
 */
export type RevocationEvent =
  | { sessionId: string, until: number }
  | { userId: string, before: number, until: number }
  | { changedUserId: string, until: number }
  | RolesChange

/**
 * A user's roles changed at `changedAt` (ms): a changed user too. While it
 * lasts, an access token of theirs claiming a role they no longer have is
 * refused, whenever it was issued (even by an instance whose cache had not
 * heard yet). `narrowed`: a role was removed, so every token issued before
 * the change is refused too, as logout-all refuses them, while the sessions
 * stay and their next refresh carries the new roles. `version` (the
 * account's, raised by each change under one lock) orders changes, whatever
 * order the feed delivers them in.
 */
export interface RolesChange {
  rolesUserId: string
  roles: string[]
  version: number
  changedAt: number
  narrowed: boolean
  until: number
}

/** What a revocation covers, as metrics count them. */
export type RevocationKind = 'session' | 'user' | 'user_changed' | 'user_roles'

function kindOf (event: RevocationEvent): RevocationKind {
  if ('sessionId' in event) return 'session'
  if ('userId' in event) return 'user'
  return 'rolesUserId' in event ? 'user_roles' : 'user_changed'
}

/** A user's roles as the latest change set them, and the cutoff of the latest that removed one. */
interface UserRoles {
  roles: string[]
  version: number
  before: number
  until: number
}

/** Told of each revocation this instance publishes, and each one the feed delivers. */
export interface RevocationObserver {
  published?(kind: RevocationKind): void
  received?(kind: RevocationKind): void
}

/** Who hears of changed users: the cache of user facts. */
export interface UserChangeListener {
  changed?(userId: string): void
  /** The feed reconnected: changes may have been missed. */
  resynced?(): void
}

/** How instances share revocations (Redis pub/sub in redis-revocation-feed.ts). */
export interface RevocationFeed {
  publish(event: RevocationEvent): Promise<void>
  /**
   * Delivers every event still in force, then each new one as it comes, and
   * again every event in force after each reconnect (then calls `resynced`),
   * so nothing missed while away is ever accepted once back.
   */
  start(deliver: (event: RevocationEvent) => void, resynced: () => void): Promise<void>
  /** Whether every revocation published now reaches this instance (subscribed, and caught up since the last reconnect). */
  readonly connected: boolean
  close(): Promise<void>
}

/**
 * Sessions (and users' older sessions) whose access tokens must no longer be
 * accepted, held in memory so the check costs no round trip. An entry is kept
 * only until every access token it covers has expired. With a feed, each
 * revocation reaches every instance; without one, this instance only.
 */
export class RevocationList {
  readonly #sessionsUntil = new Map<string, number>()
  readonly #usersBefore = new Map<string, { before: number, until: number }>()
  readonly #userRoles = new Map<string, UserRoles>()
  #nextSweep = 0

  constructor (
    private readonly clock: Clock,
    private readonly accessTokenTtlMs: number,
    private readonly feed?: RevocationFeed,
    private readonly users: UserChangeListener = {},
    private readonly observer: RevocationObserver = {}
  ) {}

  /** Starts receiving other instances' revocations. */
  async listen (): Promise<void> {
    await this.feed?.start((event) => {
      this.observer.received?.(kindOf(event))
      this.apply(event)
    }, () => this.users.resynced?.())
  }

  /** Whether revocations from every instance reach this one: always without a feed (there is no other instance). */
  get connected (): boolean {
    return this.feed?.connected ?? true
  }

  async revokeSession (sessionId: string): Promise<void> {
    await this.#revoke({ sessionId, until: this.clock.now() + this.accessTokenTtlMs })
  }

  /** Every session of the user opened before now (logout-all), whether or not the store still lists it. */
  async revokeUser (userId: string): Promise<void> {
    const now = this.clock.now()
    await this.#revoke({ userId, before: now, until: now + this.accessTokenTtlMs })
  }

  /** Tells every instance to re-read the user (their cached facts are stale). */
  async userChanged (userId: string): Promise<void> {
    await this.#revoke({ changedUserId: userId, until: this.clock.now() + this.accessTokenTtlMs })
  }

  /**
   * The user's roles are now `roles`, as of the account's `version`
   * (`narrowed`: one was removed): every instance re-reads the user and checks
   * tokens against them. Kept for two token lifetimes: a token issued with
   * the old roles by an instance that had not heard yet (up to one lifetime
   * late) is refused until it expires.
   */
  async rolesChanged (userId: string, roles: string[], { version, narrowed }: { version: number, narrowed: boolean }): Promise<void> {
    const now = this.clock.now()
    await this.#revoke({ rolesUserId: userId, roles, version, changedAt: now, narrowed, until: now + 2 * this.accessTokenTtlMs })
  }

  apply (event: RevocationEvent): void {
    const now = this.clock.now()
    if ('changedUserId' in event) {
      this.users.changed?.(event.changedUserId)
      return
    }
    if ('rolesUserId' in event) this.users.changed?.(event.rolesUserId)
    if (event.until <= now) return
    if ('rolesUserId' in event) {
      this.#applyRoles(event)
    } else if ('sessionId' in event) {
      this.#sessionsUntil.set(event.sessionId, Math.max(event.until, this.#sessionsUntil.get(event.sessionId) ?? 0))
    } else {
      const known = this.#usersBefore.get(event.userId)
      if (known === undefined || known.before < event.before) this.#usersBefore.set(event.userId, { before: event.before, until: event.until })
    }
    if (now >= this.#nextSweep) this.#sweep(now)
  }

  isRevoked (sessionId: string): boolean {
    const until = this.#sessionsUntil.get(sessionId)
    return until !== undefined && this.clock.now() < until
  }

  /** Whether an access token (its sid, sub, iat in seconds and roles) is covered by a revocation. */
  rejects ({ sid, sub, iat, roles }: { sid: string, sub: string, iat: number, roles?: readonly string[] }): boolean {
    if (this.isRevoked(sid)) return true
    const user = this.#usersBefore.get(sub)
    // iat has one-second precision: only tokens certainly issued before the cutoff
    // are refused here; the rest of that second is covered by their sessions' own entries.
    if (user !== undefined && this.clock.now() < user.until && (iat + 1) * 1000 <= user.before) return true
    const current = this.#userRoles.get(sub)
    // The same for a removed role; in the cutoff's own second, a token still claiming it is refused by its roles.
    return current !== undefined && this.clock.now() < current.until &&
      ((iat + 1) * 1000 <= current.before || !hasRoles(current.roles, roles ?? []))
  }

  get size (): number {
    return this.#sessionsUntil.size + this.#usersBefore.size + this.#userRoles.size
  }

  async close (): Promise<void> {
    await this.feed?.close()
  }

  async #revoke (event: RevocationEvent): Promise<void> {
    this.apply(event)
    await this.feed?.publish(event)
    this.observer.published?.(kindOf(event))
  }

  /** The newest roles win, whatever order the feed delivers changes in; a removal's cutoff is never moved back. */
  #applyRoles ({ rolesUserId, roles, version, changedAt, narrowed, until }: RolesChange): void {
    const known = this.#userRoles.get(rolesUserId)
    const newer = known === undefined || known.version <= version
    this.#userRoles.set(rolesUserId, {
      roles: newer ? roles : known.roles,
      version: newer ? version : known.version,
      before: Math.max(known?.before ?? 0, narrowed ? changedAt : 0),
      until: Math.max(known?.until ?? 0, until)
    })
  }

  #sweep (now: number): void {
    for (const [sessionId, until] of this.#sessionsUntil) {
      if (now >= until) this.#sessionsUntil.delete(sessionId)
    }
    for (const [userId, { until }] of this.#usersBefore) {
      if (now >= until) this.#usersBefore.delete(userId)
    }
    for (const [userId, { until }] of this.#userRoles) {
      if (now >= until) this.#userRoles.delete(userId)
    }
    this.#nextSweep = now + this.accessTokenTtlMs
  }
}
