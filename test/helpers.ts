import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import pg from 'pg'
import type { Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { buildApp, type AppOptions } from '../src/app.js'
import type { Clock } from '../src/clock.js'
import { loadConfig, type Config } from '../src/config.js'
import { openDatabase, type DatabaseHandle } from '../src/database.js'
import type { PasswordHasher } from '../src/passwords.js'
import { createPasswordHasher } from '../src/passwords.js'

/** Set by CI (.ci/run); without them the suites run on the embedded defaults only. */
export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL
export const TEST_REDIS_URL = process.env.TEST_REDIS_URL

/** A clock tests move by hand. */
export class FakeClock implements Clock {
  constructor (public time = Date.UTC(2030, 0, 1)) {}
  now (): number {
    return this.time
  }

  advance (ms: number): void {
    this.time += ms
  }
}

/** A configuration as the service would load it from `env`, with a fresh temporary DATA_DIR. */
export async function testConfig (t: Test, env: Record<string, string> = {}): Promise<Config> {
  const dataDir = await mkdtemp(join(tmpdir(), 'auth-test-'))
  t.teardown(() => rm(dataDir, { recursive: true, force: true }))
  return loadConfig({ LOG_LEVEL: 'silent', DATA_DIR: dataDir, ...env })
}

/**
 * A fresh database: a new PostgreSQL database on TEST_DATABASE_URL's server
 * (dropped afterwards) when `real`, else in-memory PGlite.
 */
export async function testDatabase (t: Test, { real = false } = {}): Promise<DatabaseHandle> {
  if (!real) {
    const database = await openDatabase({ memory: true })
    t.teardown(() => database.close())
    return database
  }
  const database = await openDatabase({ url: await testDatabaseUrl(t) })
  t.teardown(() => database.close())
  return database
}

async function administer (statement: string): Promise<void> {
  const admin = new pg.Client({ connectionString: TEST_DATABASE_URL })
  await admin.connect()
  try {
    await admin.query(statement)
  } finally {
    await admin.end()
  }
}

/** A new, empty database on TEST_DATABASE_URL's server, dropped when the test ends. */
export async function testDatabaseUrl (t: Test): Promise<string> {
  const name = `auth_test_${randomBytes(6).toString('hex')}`
  await administer(`CREATE DATABASE ${name}`)
  // Registered first, so it runs after the teardowns that close connections to it.
  t.teardown(() => administer(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`))
  const url = new URL(TEST_DATABASE_URL!)
  url.pathname = `/${name}`
  return url.toString()
}

/** A connection to TEST_REDIS_URL and a key prefix of this test's own; its keys are deleted afterwards. */
export async function testRedis (t: Test): Promise<{ redis: Redis, prefix: string }> {
  const redis = new Redis(TEST_REDIS_URL!, { lazyConnect: true })
  await redis.connect()
  const prefix = `auth-test:${randomBytes(6).toString('hex')}:`
  t.teardown(async () => {
    let cursor = '0'
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
      if (keys.length > 0) await redis.del(...keys)
      cursor = next
    } while (cursor !== '0')
    redis.disconnect()
  })
  return { redis, prefix }
}

/** Cheap argon2id parameters for tests that hash many passwords; the real ones are tested in passwords.test.ts. */
export const fastPasswordHasher: PasswordHasher = createPasswordHasher({ memoryCost: 1024, timeCost: 1, parallelism: 1 })

export interface TestAppOptions extends Partial<AppOptions> {
  env?: Record<string, string>
  /** Users in a real PostgreSQL (TEST_DATABASE_URL) instead of PGlite. */
  realDatabase?: boolean
  /** Sessions in a real Redis (TEST_REDIS_URL) instead of in process. */
  realRedis?: boolean
  /** The app opens its own embedded database in DATA_DIR, as `npm start` does, instead of being given one. */
  ownDatabase?: boolean
}

/** The service as production builds it, on test storage; closed when the test ends. */
export async function buildTestApp (t: Test, options: TestAppOptions = {}) {
  const { env, realDatabase = false, realRedis = false, ownDatabase = false, ...appOptions } = options
  const config = appOptions.config ?? await testConfig(t, env)
  const database = ownDatabase ? undefined : appOptions.database ?? await testDatabase(t, { real: realDatabase })
  const redis = realRedis ? await testRedis(t) : undefined
  const app = await buildApp({
    passwordHasher: fastPasswordHasher,
    logger: false,
    ...appOptions,
    config,
    database,
    redis: redis?.redis ?? appOptions.redis,
    redisKeyPrefix: redis?.prefix ?? appOptions.redisKeyPrefix
  })
  t.teardown(() => app.close())
  return app
}

/** The storage combinations every HTTP suite runs on: embedded always, real servers when CI provides them. */
export const BACKENDS: Array<{ name: string, realDatabase: boolean, realRedis: boolean }> = [
  { name: 'embedded (PGlite, in-process sessions)', realDatabase: false, realRedis: false },
  ...(TEST_DATABASE_URL !== undefined && TEST_REDIS_URL !== undefined
    ? [{ name: 'real (PostgreSQL, Redis)', realDatabase: true, realRedis: true }]
    : [])
]

export const TEST_PASSWORD = 'password123'
let accounts = 0

/** Signs a new user up (an email no other test uses) and logs them in: their first token pair. */
export async function signUpAndLogIn (app: FastifyInstance, label = 'user'): Promise<{ email: string, accessToken: string, refreshToken: string }> {
  const email = `${label}-${process.pid}-${++accounts}@example.com`
  const signup = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email, password: TEST_PASSWORD } })
  if (signup.statusCode !== 201) throw new Error(`signup failed: ${signup.body}`)
  const login = await app.inject({ method: 'POST', url: '/auth/login', payload: { email, password: TEST_PASSWORD } })
  if (login.statusCode !== 200) throw new Error(`login failed: ${login.body}`)
  return { email, ...login.json() }
}
