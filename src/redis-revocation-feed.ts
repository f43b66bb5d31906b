import { Cluster, type Redis } from 'ioredis'
import type { Clock } from './clock.js'
import { storeUnavailable } from './errors.js'
import { transaction } from './redis-client.js'
import type { RevocationEvent, RevocationFeed } from './revocation-list.js'
import { isRoleList } from './roles.js'

export interface RedisRevocationFeedOptions {
  prefix?: string
  clock: Clock
  /** Where failures to catch up are reported; the feed retries on its own. */
  onError?: (error: unknown) => void
  /** Told, after each reconnect, how long this instance went without the feed (ms): from losing it to having read what it missed. */
  onCaughtUp?: (lagMs: number) => void
}

const CATCH_UP_RETRY_MS = 500

/**
 * Revocations shared through Redis. Each one is both published (instances
 * online learn of it at once) and kept in a sorted set scored by when it stops
 * mattering (an instance that starts, or reconnects after losing Redis, reads
 * what it missed). The set expires with its newest entry, so it never grows
 * beyond one access-token lifetime of revocations.
 */
export class RedisRevocationFeed implements RevocationFeed {
  readonly #key: string
  readonly #channel: string
  #subscriber: Redis | Cluster | undefined
  #closed = false
  #retry: NodeJS.Timeout | undefined
  #onReconnect: (() => void) | undefined
  /** Subscribed and caught up once: until then the feed is not connected, and nothing was lost yet. */
  #started = false
  /** When the subscription was last lost; undefined once caught up since. */
  #lostAt: number | undefined

  constructor (private readonly redis: Redis | Cluster, private readonly options: RedisRevocationFeedOptions) {
    this.#key = `${options.prefix ?? 'auth:'}revocations`
    this.#channel = this.#key
  }

  async publish (event: RevocationEvent): Promise<void> {
    const now = this.options.clock.now()
    const member = JSON.stringify(event)
    try {
      await transaction(this.redis.multi()
        .zadd(this.#key, event.until, member)
        .zremrangebyscore(this.#key, '-inf', now)
        .pexpire(this.#key, Math.max(1, event.until - now))
        .publish(this.#channel, member))
    } catch (error) {
      throw storeUnavailable(error)
    }
  }

  async start (deliver: (event: RevocationEvent) => void, resynced: () => void): Promise<void> {
    // A connection in subscriber mode serves nothing else, hence a second one. It
    // queues its SUBSCRIBE until connected (the main connection fails fast instead).
    const subscriber = this.redis instanceof Cluster
      ? this.redis.duplicate(undefined, { enableOfflineQueue: true })
      : this.redis.duplicate({ enableOfflineQueue: true })
    this.#subscriber = subscriber
    subscriber.on('error', (error: Error) => this.options.onError?.(error))
    // Messages published from now on are not heard until it is back and has read what it missed.
    subscriber.on('close', () => { if (this.#started) this.#lostAt ??= this.options.clock.now() })
    subscriber.on('message', (_channel: string, message: string) => {
      const event = parseEvent(message)
      if (event !== undefined) deliver(event)
    })
    // After every reconnect: read what was published while this instance was away.
    this.#onReconnect = () => this.#catchUp(deliver, resynced)
    subscriber.on('ready', this.#onReconnect)
    this.redis.on('ready', this.#onReconnect)
    await subscriber.subscribe(this.#channel)
    await this.#readMissed(deliver)
    this.#started = true
  }

  get connected (): boolean {
    return this.#started && this.#lostAt === undefined && this.#subscriber?.status === 'ready'
  }

  async close (): Promise<void> {
    this.#closed = true
    clearTimeout(this.#retry)
    if (this.#onReconnect !== undefined) this.redis.off('ready', this.#onReconnect)
    this.#subscriber?.disconnect()
  }

  async #readMissed (deliver: (event: RevocationEvent) => void): Promise<void> {
    const members = await this.redis.zrangebyscore(this.#key, this.options.clock.now(), '+inf')
    for (const member of members) {
      const event = parseEvent(member)
      if (event !== undefined) deliver(event)
    }
  }

  /** Reads missed revocations, retrying until Redis answers or the feed is closed. */
  #catchUp (deliver: (event: RevocationEvent) => void, resynced: () => void): void {
    if (this.#closed) return
    clearTimeout(this.#retry)
    // The time is taken before reading: a connection lost during the read is caught up on at its own reconnect.
    const lostAt = this.#lostAt
    this.#readMissed(deliver).then(() => {
      if (lostAt !== undefined && this.#lostAt === lostAt && this.#subscriber?.status === 'ready') {
        this.#lostAt = undefined
        this.options.onCaughtUp?.(this.options.clock.now() - lostAt)
      }
      resynced()
    }, (error: unknown) => {
      this.options.onError?.(error)
      this.#retry = setTimeout(() => this.#catchUp(deliver, resynced), CATCH_UP_RETRY_MS).unref()
    })
  }
}

function parseEvent (text: string): RevocationEvent | undefined {
  try {
    const event = JSON.parse(text) as Record<string, unknown>
    if (typeof event.until !== 'number') return undefined
    if (typeof event.sessionId === 'string') return { sessionId: event.sessionId, until: event.until }
    if (typeof event.changedUserId === 'string') return { changedUserId: event.changedUserId, until: event.until }
    const { rolesUserId, roles, version, changedAt, narrowed, until } = event
    if (typeof rolesUserId === 'string' && isRoleList(roles) && typeof version === 'number' && typeof changedAt === 'number' && typeof narrowed === 'boolean') {
      return { rolesUserId, roles, version, changedAt, narrowed, until }
    }
    if (typeof event.userId === 'string' && typeof event.before === 'number') {
      return { userId: event.userId, before: event.before, until: event.until }
    }
  } catch {}
  return undefined
}
