import { LRUCache } from 'lru-cache'

/**
 * What a refresh must know of its user besides the session: whether a
 * credential change has ended it, whether an admin disabled the account, and
 * what its access token says.
 */
export interface UserFacts {
  credentialVersion: number
  emailVerified: boolean
  roles: string[]
  disabled: boolean
}

/** Users whose facts are remembered per instance. */
const USER_FACTS_KEPT = 10_000

/**
 * A per-instance cache of UserFacts, so a refresh stays one Redis round trip
 * and reads the database (one primary-key lookup) only on a miss. Kept fresh
 * by whoever changes a user: that instance updates its own entry, and every
 * other one forgets it when the revocation feed tells it (and forgets
 * everything when the feed reconnects, since it may have missed a change).
 */
export class UserFactsCache {
  readonly #facts: LRUCache<string, UserFacts>
  /** Raised by every forget and clear (see fresh). */
  #forgets = 0

  constructor (private readonly load: (userId: string) => Promise<UserFacts | undefined>, max = USER_FACTS_KEPT) {
    this.#facts = new LRUCache({ max })
  }

  /** The user's facts, from the cache when it has them; undefined for a user that does not exist. */
  async get (userId: string): Promise<UserFacts | undefined> {
    return this.#facts.get(userId) ?? await this.fresh(userId)
  }

  /** The user's facts as the database has them now, remembered. */
  async fresh (userId: string): Promise<UserFacts | undefined> {
    const forgets = this.#forgets
    const facts = await this.load(userId)
    if (facts === undefined) {
      this.#facts.delete(userId)
      return undefined
    }
    // A read under way when the user changed may hold the old row (a change that keeps the version,
    // a verified address, say): answered, not remembered.
    if (forgets !== this.#forgets) return facts
    // Versions only rise: a slower read that finishes after a newer one does not move the entry back.
    const known = this.#facts.peek(userId)
    if (known === undefined || known.credentialVersion <= facts.credentialVersion) this.#facts.set(userId, facts)
    return facts
  }

  forget (userId: string): void {
    this.#forgets++
    this.#facts.delete(userId)
  }

  clear (): void {
    this.#forgets++
    this.#facts.clear()
  }

  get size (): number {
    return this.#facts.size
  }
}
