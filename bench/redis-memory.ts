import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { hashSecret, newFamilyId, newRefreshSecret, sealSuccessor, sessionIdOf } from '../src/refresh-token.js'
import { RedisSessionStore } from '../src/redis-session-store.js'
import { GRACE_GENERATIONS } from '../src/session-store.js'

/**
 * Rotations per session, as a client makes them: one per access-token
 * lifetime (10 minutes), so each is past the grace of the one before. Then
 * GRACE_GENERATIONS more, one second apart (all inside the default 10 s
 * grace): as large as a session gets. Neither grows with the rotations.
 */
const ROTATIONS = 8
const TYPICAL_INTERVAL_MS = 10 * 60_000
const GRACE_MS = 10_000

/** What 10 000 sessions cost in Redis, from MEMORY USAGE of every key they made. */
export interface RedisMemoryResult {
  sessions: number
  /** Keys under the private prefix: one hash per session plus one index per user. */
  keys: number
  /** Right after login: the session hash and its user's index. */
  fresh: { bytes: number, bytesPerSession: number }
  /** After ROTATIONS rotations each, one per access-token lifetime: a typical live session (one spent generation kept). */
  rotated: { bytes: number, bytesPerSession: number, rotations: number }
  /** Then GRACE_GENERATIONS more, inside the grace: the largest a session gets (that many spent generations kept). */
  inGrace: { bytes: number, bytesPerSession: number, spentKept: number }
  /** Keys with no expiry (PTTL -1): must be none. */
  keysWithoutTtl: number
  /** Where the rotated bytes are: per session hash and per user index, with Redis's encoding of each. */
  breakdown: {
    sessionHash: { bytes: number, encoding: string, largestField: { name: string, bytes: number } }
    userIndex: { bytes: number, encoding: string }
    /** hash-max-listpack-value: a hash holding any longer value is stored as a hashtable. */
    listpackValueLimit: number
  }
}

/** A browser's user agent: what the service stores per session (truncated at 256 characters). */
const USER_AGENT = 'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Safari/605.1.15'
const BATCH = 2000
const DAY_MS = 86_400_000

/** Every key under `prefix` (SCAN, never KEYS). */
export async function keysUnder (redis: Redis, prefix: string): Promise<string[]> {
  const keys: string[] = []
  let cursor = '0'
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
    keys.push(...batch)
    cursor = next
  } while (cursor !== '0')
  return keys
}

/** Deletes every key under `prefix` and answers how many; never anything else. */
export async function deleteKeysUnder (redis: Redis, prefix: string): Promise<number> {
  const keys = await keysUnder(redis, prefix)
  for (let i = 0; i < keys.length; i += BATCH) await redis.unlink(...keys.slice(i, i + BATCH))
  return keys.length
}

/** Keys under `prefix` with no TTL. */
export async function keysWithoutTtl (redis: Redis, keys: string[]): Promise<number> {
  let count = 0
  for (let i = 0; i < keys.length; i += BATCH) {
    const ttls = await Promise.all(keys.slice(i, i + BATCH).map((key) => redis.pttl(key)))
    count += ttls.filter((ttl) => ttl === -1).length
  }
  return count
}

async function encodingOf (redis: Redis, key: string): Promise<string> {
  return String(await redis.call('OBJECT', 'ENCODING', key))
}

async function memoryOf (redis: Redis, keys: string[]): Promise<number> {
  let bytes = 0
  for (let i = 0; i < keys.length; i += BATCH) {
    const sizes = await Promise.all(keys.slice(i, i + BATCH).map((key) =>
      redis.call('MEMORY', 'USAGE', key, 'SAMPLES', '0') as Promise<number | null>))
    bytes += sizes.reduce<number>((sum, size) => sum + (size ?? 0), 0)
  }
  return bytes
}

/**
 * Creates `count` sessions (one user each, so every session also pays for a
 * user index) through the service's own RedisSessionStore under a private
 * prefix, measures them fresh and after ROTATIONS rotations, counts
 * keys without a TTL, and deletes everything under the prefix.
 */
export async function measureRedisMemory (url: string, prefix: string, count = 10_000): Promise<RedisMemoryResult> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 })
  await redis.connect()
  try {
    const store = new RedisSessionStore(redis, { prefix })
    const now = Date.now()
    const sessions = Array.from({ length: count }, (_, i) => {
      const id = sessionIdOf(newFamilyId())
      const idleExpiresAt = now + 14 * DAY_MS
      return { id, secret: newRefreshSecret(), generation: 0, userId: randomUUID(), idleExpiresAt, ip: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}` }
    })
    for (let i = 0; i < count; i += BATCH) {
      await Promise.all(sessions.slice(i, i + BATCH).map((session) => store.create({
        id: session.id,
        userId: session.userId,
        tokenHash: hashSecret(session.secret),
        credentialVersion: 0,
        createdAt: now,
        idleExpiresAt: session.idleExpiresAt,
        absoluteExpiresAt: now + 90 * DAY_MS,
        userAgent: USER_AGENT,
        ip: session.ip
      }, now)))
    }
    const keys = await keysUnder(redis, prefix)
    const fresh = await memoryOf(redis, keys)

    /** Rotates every session once, at `at`. */
    const rotateAll = async (at: number): Promise<void> => {
      for (let i = 0; i < count; i += BATCH) {
        await Promise.all(sessions.slice(i, i + BATCH).map(async (session) => {
          const next = newRefreshSecret()
          const outcome = await store.refresh({
            sessionId: session.id,
            generation: session.generation,
            hash: hashSecret(session.secret),
            now: at,
            idleTtlMs: 14 * DAY_MS,
            graceMs: GRACE_MS,
            successor: { hash: hashSecret(next), sealed: sealSuccessor(session.secret, next) }
          })
          if (outcome.result !== 'refreshed') throw new Error(`rotation at ${at} of a benchmark session: ${outcome.result}`)
          session.secret = next
          session.generation = outcome.generation
        }))
      }
    }
    let at = now
    for (let rotation = 1; rotation <= ROTATIONS; rotation++) await rotateAll(at += TYPICAL_INTERVAL_MS)
    const typical = await memoryOf(redis, await keysUnder(redis, prefix))
    for (let rotation = 1; rotation <= GRACE_GENERATIONS; rotation++) await rotateAll(at += 1000)

    const rotatedKeys = await keysUnder(redis, prefix)
    const rotated = await memoryOf(redis, rotatedKeys)
    const sessionKeys = rotatedKeys.filter((key) => key.startsWith(`${prefix}session:`))
    const indexKeys = rotatedKeys.filter((key) => key.startsWith(`${prefix}user:`))
    const sampleSession = sessionKeys[0]!
    const fields = await redis.hgetall(sampleSession)
    const [largestName, largestValue] = Object.entries(fields).sort((a, b) => Buffer.byteLength(b[1]) - Buffer.byteLength(a[1]))[0] ?? ['', '']
    const limit = await redis.config('GET', 'hash-max-listpack-value') as string[]
    const breakdown = {
      sessionHash: {
        bytes: (await memoryOf(redis, sessionKeys)) / Math.max(1, sessionKeys.length),
        encoding: await encodingOf(redis, sampleSession),
        largestField: { name: largestName, bytes: Buffer.byteLength(largestValue) }
      },
      userIndex: {
        bytes: (await memoryOf(redis, indexKeys)) / Math.max(1, indexKeys.length),
        encoding: indexKeys[0] === undefined ? 'none' : await encodingOf(redis, indexKeys[0])
      },
      listpackValueLimit: Number(limit[1])
    }
    return {
      sessions: count,
      keys: rotatedKeys.length,
      fresh: { bytes: fresh, bytesPerSession: fresh / count },
      rotated: { bytes: typical, bytesPerSession: typical / count, rotations: ROTATIONS },
      inGrace: { bytes: rotated, bytesPerSession: rotated / count, spentKept: GRACE_GENERATIONS },
      keysWithoutTtl: await keysWithoutTtl(redis, rotatedKeys),
      breakdown
    }
  } finally {
    await deleteKeysUnder(redis, prefix).catch(() => {})
    await redis.quit().catch(() => redis.disconnect())
  }
}
