import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { PGlite } from '@electric-sql/pglite'
import { sql } from 'drizzle-orm'
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core'
import { drizzle as drizzlePglite } from 'drizzle-orm/pglite'
import { migrate as migratePglite } from 'drizzle-orm/pglite/migrator'
import { drizzle as drizzlePostgres } from 'drizzle-orm/node-postgres'
import { migrate as migratePostgres } from 'drizzle-orm/node-postgres/migrator'
import pg from 'pg'
import lockfile from 'proper-lockfile'
import * as schema from '../drizzle/schema.js'
import { migrationsFolder } from './paths.js'

export type Database = PgDatabase<PgQueryResultHKT, typeof schema>

export interface DatabaseHandle {
  db: Database
  kind: 'pglite' | 'postgres'
  /** Applies pending migrations; safe when several instances start at once. */
  migrate(): Promise<void>
  ping(): Promise<void>
  close(): Promise<void>
}

/**
 * Where users live: a PostgreSQL server by URL, else PGlite under `dataDir`, or
 * in memory, started from `image` when given (a data directory PGlite dumped:
 * tests start from a migrated one rather than create and migrate a database each time).
 */
export type DatabaseLocation = { url: string } | { dataDir: string } | { memory: true, image?: Blob }

/** Any key works as long as every instance uses the same one; this is "auth-svc" in ASCII. */
const MIGRATION_LOCK_KEY = 0x617574682d737663n

export interface OpenDatabaseOptions {
  /** A connection of the pool that failed while idle (the server restarted, say); it is replaced on demand. */
  onIdleError?: (error: Error) => void
  /** Told of every SQL statement sent (drizzle's query logger): for diagnosis, and for tests that count queries. */
  onQuery?: (query: string) => void
  /** The embedded database's lock was lost (this process stalled past LOCK_STALE_MS, and another may have taken it). */
  onLockCompromised?: (error: Error) => void
}

/**
 * The embedded database's folder is held by another live process (a running
 * service, or the admin command): PGlite is one process's database, and two
 * writing one folder would corrupt it.
 */
export class DatabaseInUseError extends Error {
  constructor (readonly folder: string) {
    super(`the embedded database in ${folder} is in use by another process (is the service running?). ` +
      'Stop it first, or use DATABASE_URL (PostgreSQL), which any number of processes share')
    this.name = 'DatabaseInUseError'
  }
}

/**
 * A lock not refreshed for this long is taken for a dead process's (a crash
 * leaves it behind), so a restart after a crash is not refused for longer.
 */
const LOCK_STALE_MS = 30_000

export async function openDatabase (location: DatabaseLocation, options: OpenDatabaseOptions = {}): Promise<DatabaseHandle> {
  const logger = options.onQuery === undefined ? undefined : { logQuery: options.onQuery }
  return 'url' in location ? openPostgres(location.url, options.onIdleError ?? (() => {}), logger) : openPglite(location, logger, options.onLockCompromised)
}

type QueryLogger = { logQuery: (query: string) => void } | undefined

function openPostgres (url: string, onIdleError: (error: Error) => void, logger: QueryLogger): DatabaseHandle {
  const pool = new pg.Pool({
    connectionString: url,
    max: 10,
    // Bounded waits: an unreachable server yields an error, not a hung request.
    connectionTimeoutMillis: 3000,
    query_timeout: 5000,
    idleTimeoutMillis: 30_000
  })
  // An idle connection dropped by the server must not crash the process.
  pool.on('error', onIdleError)
  const db = drizzlePostgres({ client: pool, schema, logger })
  return {
    db,
    kind: 'postgres',
    async migrate () {
      const client = await pool.connect()
      try {
        // Serializes concurrent start-ups: the second instance waits, then finds nothing to do.
        await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY.toString()])
        try {
          await migratePostgres(drizzlePostgres({ client, schema }), { migrationsFolder })
        } finally {
          await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY.toString()])
        }
      } finally {
        client.release()
      }
    },
    async ping () {
      await db.execute(sql`select 1`)
    },
    close: () => pool.end()
  }
}

async function openPglite (
  location: { dataDir: string } | { memory: true, image?: Blob }, logger: QueryLogger, onLockCompromised = (_error: Error): void => {}
): Promise<DatabaseHandle> {
  let client: PGlite
  let unlock = async (): Promise<void> => {}
  if ('dataDir' in location) {
    const folder = join(location.dataDir, 'pgdata')
    await mkdir(folder, { recursive: true, mode: 0o700 })
    unlock = await lockFolder(folder, onLockCompromised)
    client = new PGlite(folder)
  } else {
    client = new PGlite({ loadDataDir: location.image })
  }
  try {
    await client.waitReady
  } catch (error) {
    // A folder PGlite cannot open is not left locked.
    await unlock()
    throw error
  }
  const db = drizzlePglite({ client, schema, logger })
  return {
    db,
    kind: 'pglite',
    // PGlite is one process's own database: there is no one to race with.
    migrate: () => migratePglite(db, { migrationsFolder }),
    async ping () {
      await db.execute(sql`select 1`)
    },
    async close () {
      try {
        await client.close()
      } finally {
        await unlock()
      }
    }
  }
}

/** Takes the folder's lock (a `.lock` directory beside it, refreshed while held); DatabaseInUseError when a live process has it. */
async function lockFolder (folder: string, onCompromised: (error: Error) => void): Promise<() => Promise<void>> {
  try {
    return await lockfile.lock(folder, { stale: LOCK_STALE_MS, realpath: false, onCompromised })
  } catch (error) {
    if ((error as { code?: unknown }).code === 'ELOCKED') throw new DatabaseInUseError(folder)
    throw error
  }
}
