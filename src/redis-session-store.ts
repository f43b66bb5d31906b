import type { Cluster, Redis } from 'ioredis'
import { storeUnavailable } from './errors.js'
import {
  SPENT_TAG_LENGTH, SPENT_TOKENS_KEPT, initialState, expiresAt,
  type NewSession, type RefreshAttempt, type RefreshOutcome, type SessionInfo, type SessionStore
} from './session-store.js'

/*
 * A session is one Redis hash, `<prefix>session:{<id>}`; the braces are a
 * Cluster hash tag, so every key of a session lands on one node and each
 * script below runs there atomically. Short field names keep a session small:
 *   u user id, c created, l last used, i idle expiry, a absolute expiry,
 *   ua, ua1, … user agent, ip client address, h current token hash,
 *   p previous hash, r rotated at, s sealed successor, x spent tags (8
 *   characters each, newest first, no separator), v "1" once revoked.
 * No value is over 64 bytes (the user agent is cut into 64-byte pieces), so
 * Redis keeps the hash in its compact listpack encoding (hash-max-listpack-value),
 * a third of the size of a hashtable.
 * The key's TTL always ends at the session's own expiry, so nothing outlives it.
 *
 * `<prefix>user:{<user id>}:sessions` indexes a user's sessions (a sorted set
 * scored by absolute expiry) for listing and logout-all; it expires with the
 * longest-lived of them, and members whose session is gone are pruned when read.
 */

/** The refresh decision of session-store.ts (decideRefresh), in one round trip. */
const REFRESH_SCRIPT = `
local key = KEYS[1]
local presented, now, idleTtl, grace = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local successorHash, sealed, clientIp, spentKept, tagLength = ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9])
local s = redis.call('HMGET', key, 'u', 'h', 'p', 'r', 's', 'x', 'i', 'a', 'v', 'ip')
local userId = s[1]
if not userId then return {'unknown'} end
if s[9] == '1' then return {'revoked', userId} end
local idle, absolute = tonumber(s[7]), tonumber(s[8])
if now >= idle or now >= absolute then return {'expired', userId} end
local boundElsewhere = clientIp ~= '' and clientIp ~= s[10]
if presented == s[2] then
  if boundElsewhere then return {'ip-mismatch', userId} end
  local newIdle = math.min(now + idleTtl, absolute)
  if successorHash ~= '' then
    local spent = string.sub(string.sub(presented, 1, tagLength) .. (s[6] or ''), 1, tagLength * spentKept)
    redis.call('HSET', key, 'h', successorHash, 'p', presented, 'r', ARGV[2], 's', sealed, 'x', spent)
  end
  redis.call('HSET', key, 'l', ARGV[2], 'i', string.format('%d', newIdle))
  redis.call('PEXPIRE', key, newIdle - now)
  return {'refreshed', userId, string.format('%d', newIdle), s[8]}
end
if s[3] and presented == s[3] and now - tonumber(s[4]) < grace then
  if boundElsewhere then return {'ip-mismatch', userId} end
  return {'grace', userId, s[7], s[8], s[5], s[2]}
end
if s[6] then
  local tag = string.sub(presented, 1, tagLength)
  for at = 1, #s[6], tagLength do
    if string.sub(s[6], at, at + tagLength - 1) == tag then
      redis.call('HSET', key, 'v', '1')
      redis.call('HDEL', key, 'h', 'p', 's', 'x')
      return {'reused', userId}
    end
  end
end
return {'unknown'}
`

/** Revokes a live session unless a presented hash is given and is neither the current nor the previous token. */
const REVOKE_SCRIPT = `
local s = redis.call('HMGET', KEYS[1], 'u', 'h', 'p', 'i', 'a')
if not s[1] then return false end
local now = tonumber(ARGV[2])
if now >= tonumber(s[4]) or now >= tonumber(s[5]) then return false end
if ARGV[1] ~= '' and ARGV[1] ~= s[2] and ARGV[1] ~= s[3] then return false end
redis.call('HSET', KEYS[1], 'v', '1')
redis.call('HDEL', KEYS[1], 'h', 'p', 's', 'x')
return s[1]
`

/** Adds a session to its user's index and keeps the index alive as long as its longest session. */
const INDEX_SCRIPT = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local remaining = tonumber(ARGV[2]) - tonumber(ARGV[3])
if redis.call('PTTL', KEYS[1]) < remaining then redis.call('PEXPIRE', KEYS[1], remaining) end
`

/** Redis's default hash-max-listpack-value: a longer value turns the whole hash into a hashtable. */
const COMPACT_VALUE_BYTES = 64
/** Enough pieces for the longest user agent the routes store (256 characters, each at most two UTF-8 bytes). */
const USER_AGENT_FIELDS = ['ua', ...Array.from({ length: 7 }, (_, index) => `ua${index + 1}`)]

/** The user agent as fields of at most COMPACT_VALUE_BYTES, cut between characters (and cut off after the last field). */
function userAgentFields (userAgent: string): Record<string, string> {
  const fields: Record<string, string> = {}
  let field = 0
  let piece = ''
  let pieceBytes = 0
  for (const character of userAgent) {
    const bytes = Buffer.byteLength(character)
    if (pieceBytes + bytes > COMPACT_VALUE_BYTES) {
      fields[USER_AGENT_FIELDS[field]!] = piece
      if (++field === USER_AGENT_FIELDS.length) return fields
      piece = ''
      pieceBytes = 0
    }
    piece += character
    pieceBytes += bytes
  }
  fields[USER_AGENT_FIELDS[field]!] = piece
  return fields
}

interface SessionScripts {
  authIndexSession(key: string, sessionId: string, absoluteExpiresAt: string, now: string): Promise<null>
  authRefreshSession(key: string, ...args: string[]): Promise<string[]>
  authRevokeSession(key: string, presentedHash: string, now: string): Promise<string | null>
}

export interface RedisSessionStoreOptions {
  /** Prepended to every key, so several services (or test runs) share one Redis. */
  prefix?: string
}

export class RedisSessionStore implements SessionStore {
  readonly #prefix: string
  readonly #scripts: SessionScripts

  constructor (private readonly redis: Redis | Cluster, options: RedisSessionStoreOptions = {}) {
    this.#prefix = options.prefix ?? 'auth:'
    redis.defineCommand('authRefreshSession', { numberOfKeys: 1, lua: REFRESH_SCRIPT })
    redis.defineCommand('authRevokeSession', { numberOfKeys: 1, lua: REVOKE_SCRIPT })
    redis.defineCommand('authIndexSession', { numberOfKeys: 1, lua: INDEX_SCRIPT })
    this.#scripts = redis as unknown as SessionScripts
  }

  sessionKey (sessionId: string): string {
    return `${this.#prefix}session:{${sessionId}}`
  }

  userIndexKey (userId: string): string {
    return `${this.#prefix}user:{${userId}}:sessions`
  }

  async create (session: NewSession, now: number): Promise<void> {
    const state = initialState(session)
    const key = this.sessionKey(session.id)
    // Indexed first: a session that exists is always found by logout-all (the
    // two keys may live on different Cluster nodes, so no single transaction).
    await this.#call(() => this.#scripts.authIndexSession(
      this.userIndexKey(session.userId), session.id, String(state.absoluteExpiresAt), String(now)))
    await this.#call(() => this.redis.multi()
      .hset(key, {
        u: state.userId,
        c: state.createdAt,
        l: state.lastUsedAt,
        i: state.idleExpiresAt,
        a: state.absoluteExpiresAt,
        ...userAgentFields(state.userAgent),
        ip: state.ip,
        h: session.tokenHash
      })
      .pexpire(key, Math.max(1, expiresAt(state) - now))
      .exec())
  }

  async refresh (attempt: RefreshAttempt): Promise<RefreshOutcome> {
    const reply = await this.#call(() => this.#scripts.authRefreshSession(
      this.sessionKey(attempt.sessionId),
      attempt.presentedHash,
      String(attempt.now),
      String(attempt.idleTtlMs),
      String(attempt.graceMs),
      attempt.successor?.hash ?? '',
      attempt.successor?.sealed ?? '',
      attempt.clientIp ?? '',
      String(SPENT_TOKENS_KEPT),
      String(SPENT_TAG_LENGTH)
    ))
    const [result, userId = '', idle, absolute, sealed, successorHash] = reply
    switch (result) {
      case 'refreshed':
        return { result, userId, idleExpiresAt: Number(idle), absoluteExpiresAt: Number(absolute) }
      case 'grace':
        return {
          result, userId, idleExpiresAt: Number(idle), absoluteExpiresAt: Number(absolute), sealedSuccessor: sealed!, successorHash: successorHash!
        }
      case 'reused':
      case 'ip-mismatch':
      case 'revoked':
      case 'expired':
        return { result, userId }
      default:
        return { result: 'unknown' }
    }
  }

  async revoke (sessionId: string, now: number, presentedHash?: string): Promise<string | undefined> {
    const userId = await this.#call(() => this.#scripts.authRevokeSession(this.sessionKey(sessionId), presentedHash ?? '', String(now)))
    return userId ?? undefined
  }

  async list (userId: string, now: number): Promise<SessionInfo[]> {
    const indexKey = this.userIndexKey(userId)
    const ids = await this.#call(() => this.redis.zrangebyscore(indexKey, now, '+inf'))
    const rows = await this.#call(() => Promise.all(ids.map((id) =>
      this.redis.hmget(this.sessionKey(id), 'u', 'c', 'l', 'i', 'a', 'ip', 'v', ...USER_AGENT_FIELDS))))
    const sessions: SessionInfo[] = []
    const gone: string[] = []
    rows.forEach(([owner, created, lastUsed, idle, absolute, ip, revoked, ...userAgentPieces], index) => {
      const id = ids[index]!
      const ends = Math.min(Number(idle), Number(absolute))
      if (owner !== userId || revoked === '1' || !(now < ends)) {
        if (owner === null) gone.push(id)
        return
      }
      sessions.push({ id, createdAt: Number(created), lastUsedAt: Number(lastUsed), expiresAt: ends, userAgent: userAgentPieces.join(''), ip: ip ?? '' })
    })
    if (gone.length > 0) await this.#call(() => this.redis.zrem(indexKey, ...gone))
    return sessions.sort((a, b) => a.createdAt - b.createdAt)
  }

  async revokeAll (userId: string, now: number, exceptSessionId?: string): Promise<string[]> {
    const targets = (await this.list(userId, now)).map(({ id }) => id).filter((id) => id !== exceptSessionId)
    const owners = await this.#call(() => Promise.all(targets.map((id) => this.#scripts.authRevokeSession(this.sessionKey(id), '', String(now)))))
    return targets.filter((_id, index) => owners[index] !== null)
  }

  async ping (): Promise<void> {
    await this.#call(() => this.redis.ping())
  }

  /** The connection belongs to whoever created it (the redis plugin or a test). */
  async close (): Promise<void> {}

  async #call<T> (command: () => Promise<T>): Promise<T> {
    try {
      return await command()
    } catch (error) {
      throw storeUnavailable(error)
    }
  }
}
