import type { Cluster, Redis } from 'ioredis'
import { transaction } from './redis-client.js'
import { storeUnavailable } from './errors.js'
import {
  GRACE_GENERATIONS, SPENT_HASH_LENGTH, beyondLimit, initialState, expiresAt,
  type NewSession, type RefreshAttempt, type RefreshOutcome, type SessionInfo, type SessionStore
} from './session-store.js'

/*
 * A session is one Redis hash, `<prefix>session:{<id>}`; the braces are a
 * Cluster hash tag, so every key of a session lands on one node and each
 * script below runs there atomically. Short field names keep a session small:
 *   u user id, c created, l last used, i idle expiry, a absolute expiry,
 *   ua, ua1, … user agent, ip client address, cv credential version,
 *   g current generation, h its token hash, v "1" once revoked;
 *   and for each spent generation kept for the grace, in slot
 *   `generation % GRACE_GENERATIONS`: t<slot> rotated at, k<slot> its
 *   hash (spentHash), s<slot> its sealed successor.
 * A slot holds generation n from n's rotation until n + GRACE_GENERATIONS
 * rotates, or until the rotation after n's grace ended, whichever comes
 * first: a session's size never grows with its rotations.
 * No value is over 64 bytes (the user agent is cut into 64-byte pieces), so
 * Redis keeps the hash in its compact listpack encoding (hash-max-listpack-value),
 * a third of the size of a hashtable.
 * The key's TTL always ends at the session's own expiry, so nothing outlives it.
 *
 * `<prefix>user:{<user id>}:sessions` indexes a user's sessions (a sorted set
 * scored by absolute expiry) for listing, logout-all and the per-user limit;
 * it expires with the longest-lived of them, and members whose session is
 * gone are pruned when read.
 */

/** Every field that holds a token hash or a sealed successor: what revocation forgets. */
const SECRET_FIELDS = ['h', ...Array.from({ length: GRACE_GENERATIONS }, (_, slot) => [`t${slot}`, `k${slot}`, `s${slot}`]).flat()]

/** Lua: marks the session revoked and forgets its token hashes. */
const REVOKE_FIELDS = `redis.call('HSET', KEYS[1], 'v', '1')
  redis.call('HDEL', KEYS[1], ${SECRET_FIELDS.map((field) => `'${field}'`).join(', ')})`

/** Lua: whether ARGV (generation, hash, now, grace) names the spent generation's slot, inside its grace. */
const IN_GRACE = `local function inGrace (generation, current, hash, now, grace)
  if generation >= current or current - generation > ${GRACE_GENERATIONS} then return false end
  local slot = generation % ${GRACE_GENERATIONS}
  local spent = redis.call('HMGET', KEYS[1], 't' .. slot, 'k' .. slot)
  return spent[1] ~= false and now - tonumber(spent[1]) < grace and spent[2] == string.sub(hash, 1, ${SPENT_HASH_LENGTH})
end`

/** The refresh decision of session-store.ts (decideRefresh), in one round trip. */
const REFRESH_SCRIPT = `
${IN_GRACE}
local generation, presented, now, idleTtl, grace = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local successorHash, sealed, clientIp = ARGV[6], ARGV[7], ARGV[8]
local s = redis.call('HMGET', KEYS[1], 'u', 'v', 'i', 'a', 'g', 'h', 'ip', 'cv')
local userId = s[1]
if not userId then return {'unknown'} end
if s[2] == '1' then return {'revoked', userId} end
local idle, absolute = tonumber(s[3]), tonumber(s[4])
if now >= idle or now >= absolute then return {'expired', userId} end
local current = tonumber(s[5])
if generation > current then return {'unknown'} end
local boundElsewhere = clientIp ~= '' and clientIp ~= s[7]
if generation == current and presented == s[6] then
  if boundElsewhere then return {'ip-mismatch', userId} end
  local newIdle = math.min(now + idleTtl, absolute)
  if successorHash ~= '' then
    for slot = 0, ${GRACE_GENERATIONS - 1} do
      local rotatedAt = redis.call('HGET', KEYS[1], 't' .. slot)
      if rotatedAt and now - tonumber(rotatedAt) >= grace then redis.call('HDEL', KEYS[1], 't' .. slot, 'k' .. slot, 's' .. slot) end
    end
    local slot = current % ${GRACE_GENERATIONS}
    current = current + 1
    redis.call('HSET', KEYS[1], 'g', string.format('%d', current), 'h', successorHash,
      't' .. slot, ARGV[3], 'k' .. slot, string.sub(presented, 1, ${SPENT_HASH_LENGTH}), 's' .. slot, sealed)
  end
  redis.call('HSET', KEYS[1], 'l', ARGV[3], 'i', string.format('%d', newIdle))
  redis.call('PEXPIRE', KEYS[1], newIdle - now)
  return {'refreshed', userId, string.format('%d', current), s[8] or '0', string.format('%d', newIdle), s[4]}
end
if inGrace(generation, current, presented, now, grace) then
  if boundElsewhere then return {'ip-mismatch', userId} end
  local reply = {'grace', userId, s[5], s[8] or '0', s[3], s[4], s[6]}
  for spent = generation, current - 1 do
    local link = redis.call('HGET', KEYS[1], 's' .. (spent % ${GRACE_GENERATIONS}))
    -- Later generations were rotated after this one, so are kept as long: never missing.
    if not link then return {'unknown'} end
    reply[#reply + 1] = link
  end
  return reply
end
${REVOKE_FIELDS}
return {'reused', userId}
`

/**
 * Revokes a live session (with a presented generation, only if it was
 * issued). Writes nothing when there is nothing to revoke.
 */
const REVOKE_SCRIPT = `
local s = redis.call('HMGET', KEYS[1], 'u', 'v', 'i', 'a', 'g')
if not s[1] then
  -- Indexed but not written yet (a login in flight), or gone: with ARGV[3], leave a tombstone that the
  -- session, if it is being written, is born revoked into (its writes keep v); it outlives any write in flight.
  if ARGV[3] ~= '' and redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('HSET', KEYS[1], 'v', '1')
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return ''
  end
  return false
end
if s[2] == '1' then return false end
local now = tonumber(ARGV[1])
if now >= tonumber(s[3]) or now >= tonumber(s[4]) then return false end
if ARGV[2] ~= '' and tonumber(ARGV[2]) > tonumber(s[5]) then return false end
${REVOKE_FIELDS}
return s[1]
`

/** Raises a live session's credential version, never lowering it. */
const STAMP_SCRIPT = `
local s = redis.call('HMGET', KEYS[1], 'u', 'v', 'i', 'a', 'cv')
local now = tonumber(ARGV[2])
if not s[1] or s[2] == '1' or now >= tonumber(s[3]) or now >= tonumber(s[4]) then return 0 end
if tonumber(s[5] or '0') < tonumber(ARGV[1]) then redis.call('HSET', KEYS[1], 'cv', ARGV[1]) end
return 1
`

/** Adds a session to its user's index, and keeps the index alive as long as its longest session. */
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
  authRevokeSession(key: string, now: string, generation: string, tombstoneMs: string): Promise<string | null>
  authStampSession(key: string, credentialVersion: string, now: string): Promise<number>
}

export interface RedisSessionStoreOptions {
  /** Prepended to every key, so several services (or test runs) share one Redis. */
  prefix?: string
}

const LISTED_FIELDS = ['u', 'c', 'l', 'i', 'a', 'ip', 'v', ...USER_AGENT_FIELDS] as const

/**
 * A session is indexed before it is written (see create). An index member
 * with no session is left alone for this long, in case its login is still
 * writing it: far longer than two commands can take, with their timeouts.
 */
const WRITE_IN_FLIGHT_MS = 60_000

export class RedisSessionStore implements SessionStore {
  readonly #prefix: string
  readonly #scripts: SessionScripts

  constructor (private readonly redis: Redis | Cluster, options: RedisSessionStoreOptions = {}) {
    this.#prefix = options.prefix ?? 'auth:'
    redis.defineCommand('authRefreshSession', { numberOfKeys: 1, lua: REFRESH_SCRIPT })
    redis.defineCommand('authRevokeSession', { numberOfKeys: 1, lua: REVOKE_SCRIPT })
    redis.defineCommand('authStampSession', { numberOfKeys: 1, lua: STAMP_SCRIPT })
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
    await this.#call(() => transaction(this.redis.multi()
      .hset(key, {
        u: state.userId,
        c: state.createdAt,
        l: state.lastUsedAt,
        i: state.idleExpiresAt,
        a: state.absoluteExpiresAt,
        ...userAgentFields(state.userAgent),
        ip: state.ip,
        cv: state.credentialVersion,
        g: state.generation,
        h: session.tokenHash
      })
      .pexpire(key, Math.max(1, expiresAt(state) - now))))
  }

  async trim (userId: string, keptSessionId: string, now: number, maxSessions: number): Promise<string[]> {
    const indexKey = this.userIndexKey(userId)
    const [indexed, keptScore] = await this.#call(() => Promise.all([this.redis.zcard(indexKey), this.redis.zscore(indexKey, keptSessionId)]))
    // The index also holds sessions that ended early (idle, revoked elsewhere): read them only when it may be over.
    if (indexed <= maxSessions) return []
    // Members indexed before the kept session by more than a write can take, with no session, are gone: dropped.
    const missingBefore = keptScore === null ? -Infinity : Number(keptScore) - WRITE_IN_FLIGHT_MS
    const others = (await this.#live(userId, now, missingBefore)).filter(({ id }) => id !== keptSessionId)
    const ended = beyondLimit(others, maxSessions).map(({ id }) => id)
    const owners = await Promise.all(ended.map((id) => this.revoke(id, now)))
    return ended.filter((_id, index) => owners[index] !== undefined)
  }

  async refresh (attempt: RefreshAttempt): Promise<RefreshOutcome> {
    const reply = await this.#call(() => this.#scripts.authRefreshSession(
      this.sessionKey(attempt.sessionId),
      String(attempt.generation),
      attempt.hash,
      String(attempt.now),
      String(attempt.idleTtlMs),
      String(attempt.graceMs),
      attempt.successor?.hash ?? '',
      attempt.successor?.sealed ?? '',
      attempt.clientIp ?? ''
    ))
    const [result, userId = '', generation, credentialVersion, idle, absolute, currentHash, ...sealedChain] = reply
    switch (result) {
      case 'refreshed':
      case 'grace': {
        const facts = {
          userId,
          generation: Number(generation),
          credentialVersion: Number(credentialVersion),
          idleExpiresAt: Number(idle),
          absoluteExpiresAt: Number(absolute)
        }
        return result === 'refreshed' ? { result, ...facts } : { result, ...facts, currentHash: currentHash!, sealedChain }
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

  async revoke (sessionId: string, now: number, presented?: { generation: number }): Promise<string | undefined> {
    const userId = await this.#call(() => this.#scripts.authRevokeSession(this.sessionKey(sessionId), String(now),
      presented === undefined ? '' : String(presented.generation), ''))
    if (userId === null) return undefined
    await this.#unindex(userId, [sessionId])
    return userId
  }

  async get (sessionId: string, now: number): Promise<(SessionInfo & { userId: string }) | undefined> {
    const [row] = await this.#read([sessionId])
    return row !== undefined && isLiveRow(row, now) ? { ...infoOf(sessionId, row), userId: row.u! } : undefined
  }

  async list (userId: string, now: number): Promise<SessionInfo[]> {
    return (await this.#live(userId, now)).sort((a, b) => a.createdAt - b.createdAt)
  }

  /**
   * Every indexed session, live or still being written by a login in flight
   * (which then is born revoked): logout-all leaves no way back in.
   */
  async revokeAll (userId: string, now: number, exceptSessionId?: string): Promise<string[]> {
    const indexKey = this.userIndexKey(userId)
    const ids = (await this.#call(() => this.redis.zrangebyscore(indexKey, now, '+inf'))).filter((id) => id !== exceptSessionId)
    const results = await this.#call(() => Promise.all(ids.map((id) =>
      this.#scripts.authRevokeSession(this.sessionKey(id), String(now), '', String(WRITE_IN_FLIGHT_MS)))))
    await this.#unindex(userId, ids)
    return ids.filter((_id, index) => results[index] !== null)
  }

  async stamp (sessionId: string, credentialVersion: number, now: number): Promise<void> {
    await this.#call(() => this.#scripts.authStampSession(this.sessionKey(sessionId), String(credentialVersion), String(now)))
  }

  async ping (): Promise<void> {
    await this.#call(() => this.redis.ping())
  }

  /**
   * The user's live sessions, in index order. Index members whose session has
   * ended (revoked, or expired but not yet evicted) are dropped; so are those
   * with no session at all if indexed with an absolute expiry before
   * `missingBefore` (a member with no session may be a login still writing it).
   */
  async #live (userId: string, now: number, missingBefore = -Infinity): Promise<SessionInfo[]> {
    const indexKey = this.userIndexKey(userId)
    const members = await this.#call(() => this.redis.zrangebyscore(indexKey, now, '+inf', 'WITHSCORES'))
    const ids = members.filter((_member, index) => index % 2 === 0)
    const rows = await this.#read(ids)
    const sessions: SessionInfo[] = []
    const ended: string[] = []
    rows.forEach((row, index) => {
      const id = ids[index]!
      if (row.u === userId && isLiveRow(row, now)) sessions.push(infoOf(id, row))
      else if (row.u !== undefined || Number(members[2 * index + 1]) < missingBefore) ended.push(id)
    })
    await this.#unindex(userId, ended)
    return sessions
  }

  /**
   * Drops ended sessions from their user's index. Best effort: a member left
   * behind is dropped by a later read, while a failure here, once sessions
   * are revoked, would keep their revocation from being published.
   */
  async #unindex (userId: string, sessionIds: string[]): Promise<void> {
    if (sessionIds.length > 0) await this.redis.zrem(this.userIndexKey(userId), ...sessionIds).catch(() => undefined)
  }

  async #read (ids: string[]): Promise<SessionRow[]> {
    const rows = await this.#call(() => Promise.all(ids.map((id) => this.redis.hmget(this.sessionKey(id), ...LISTED_FIELDS))))
    return rows.map((values) => Object.fromEntries(LISTED_FIELDS.flatMap((field, index) => values[index] === null ? [] : [[field, values[index]]])))
  }

  async #call<T> (command: () => Promise<T>): Promise<T> {
    try {
      return await command()
    } catch (error) {
      throw storeUnavailable(error)
    }
  }
}

type SessionRow = Partial<Record<typeof LISTED_FIELDS[number], string>>

function isLiveRow (row: SessionRow, now: number): boolean {
  return row.u !== undefined && row.v !== '1' && now < Math.min(Number(row.i), Number(row.a))
}

function infoOf (id: string, row: SessionRow): SessionInfo {
  return {
    id,
    createdAt: Number(row.c),
    lastUsedAt: Number(row.l),
    expiresAt: Math.min(Number(row.i), Number(row.a)),
    userAgent: USER_AGENT_FIELDS.map((field) => row[field] ?? '').join(''),
    ip: row.ip ?? ''
  }
}
