import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { STATUS_CODES } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { Redis } from 'ioredis'
import pg from 'pg'
import tap, { type Test } from 'tap'
import type { RateLimitSettings } from '../plugins/rate-limit.js'
// The app and the database are imported when first used (below): loading them costs seconds, which a
// file that only wants a FakeClock or a fresh email should not pay.
import type { AppOptions } from '../src/app.js'
import type { Clock } from '../src/clock.js'
import { loadConfig, type Config } from '../src/config.js'
import type { DatabaseHandle } from '../src/database.js'
import { MemorySessionStore } from '../src/memory-session-store.js'
import { createPasswordHasher, type PasswordHasher } from '../src/passwords.js'
import { SessionService, type SessionPolicy, type SessionServiceDeps } from '../src/sessions.js'
import type { MailReaders, MailServer } from './fixtures/mail-server.js'

/*
 * The one helper module of the suite: configuration, storage, apps (mailing
 * to a test SMTP server too), session services, password hashers, users,
 * requests, cookies, tokens, the error shape, logs, polling, and what a
 * variant needs to run (each variant that needs a real server skips, naming
 * what is missing; the browser suites' own check is in fixtures/chromium.ts).
 */

/** Set by CI (.ci/run); without them the real-backend variants skip. */
export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL
export const TEST_REDIS_URL = process.env.TEST_REDIS_URL

/** A test's `skip` option: false when what it needs is there, else a message naming what is missing. */
export function skipUnless (needs: { postgres?: boolean, redis?: boolean, redisServer?: boolean }): false | string {
  const missing = [
    needs.postgres === true && TEST_DATABASE_URL === undefined && 'TEST_DATABASE_URL is not set (no PostgreSQL)',
    needs.redis === true && TEST_REDIS_URL === undefined && 'TEST_REDIS_URL is not set (no Redis)',
    needs.redisServer === true && !hasRedisServer() && 'no redis-server binary on PATH'
  ].filter((reason): reason is string => typeof reason === 'string')
  return missing.length === 0 ? false : `skipped: ${missing.join('; ')}`
}

let redisServerFound: boolean | undefined
function hasRedisServer (): boolean {
  redisServerFound ??= spawnSync('redis-server', ['--version']).status === 0
  return redisServerFound
}

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

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Polls `probe` every `intervalMs` until it holds; false if it never did
 * within `timeoutMs`. For what happens "within a second" on another instance:
 * the assertion is on the outcome, never on how fast the machine got there.
 */
export async function eventually (probe: () => boolean | Promise<boolean>, { timeoutMs = 5_000, intervalMs = 10 } = {}): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await probe()) return true
    if (Date.now() >= deadline) return false
    await sleep(intervalMs)
  }
}

/** A configuration as the service would load it from `env`, with a fresh temporary DATA_DIR. */
export async function testConfig (t: Test, env: Record<string, string> = {}): Promise<Config> {
  return loadConfig({ LOG_LEVEL: 'silent', DATA_DIR: await temporaryDirectory(t), ...env })
}

/** A temporary directory, removed when the test ends. */
async function temporaryDirectory (t: Test, prefix = 'auth-test-'): Promise<string> {
  const directory = await mkdtemp(join(tmpdir(), prefix))
  t.teardown(() => rm(directory, { recursive: true, force: true }))
  return directory
}

let embedded: Promise<DatabaseHandle> | undefined
let real: Promise<DatabaseHandle> | undefined

/**
 * A migrated database shared by every test of this file (tests keep apart by
 * using emails of their own): booting PGlite costs a second or more, so a file
 * boots one, not one per app. `fresh` gives a test one of its own, for a test
 * that closes or breaks it, and so does `onQuery` (told of every statement). On TEST_DATABASE_URL's server (`real`) the shared
 * one is a database of this file's own, dropped when the file ends.
 */
export async function testDatabase (
  t: Test,
  { real: onServer = false, fresh = false, onQuery }: { real?: boolean, fresh?: boolean, onQuery?: (query: string) => void } = {}
): Promise<DatabaseHandle> {
  // A test that counts queries (onQuery: told of each statement) gets a database of its own too.
  if (fresh || onQuery !== undefined) {
    const database = await openMigrated(onServer ? { url: await testDatabaseUrl(t) } : { memory: true }, onQuery)
    t.teardown(() => database.close())
    return database
  }
  if (onServer) {
    real ??= testDatabaseUrl(tap).then((url) => openMigrated({ url })).then((database) => {
      tap.teardown(() => database.close())
      return database
    })
    return real
  }
  // Closed when the file ends: PGlite's own timers would otherwise keep the process alive.
  embedded ??= openMigrated({ memory: true }).then((database) => {
    tap.teardown(() => database.close())
    return database
  })
  return embedded
}

async function openMigrated (location: { url: string } | { memory: true }, onQuery?: (query: string) => void): Promise<DatabaseHandle> {
  // PGlite: restored from a migrated snapshot that files share, a third of the cost of creating one.
  if (!('url' in location)) return await (await import('./fixtures/migrated-pglite.js')).openMigratedPglite({ onQuery })
  const { openDatabase } = await import('../src/database.js')
  const database = await openDatabase(location, { onQuery })
  await database.migrate()
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

/** A redis-server of the test's own on `port`, persisting nothing; killed when the test ends. */
export async function privateRedis (t: Test, port: number): Promise<ChildProcess> {
  const server = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => { server.kill('SIGKILL') })
  let output = ''
  await new Promise<void>((resolve, reject) => {
    server.stdout!.on('data', (chunk) => {
      output += chunk
      if (output.includes('Ready to accept connections')) resolve()
    })
    server.once('exit', (code) => reject(new Error(`redis-server exited with ${code}: ${output}`)))
  })
  return server
}

/** Cheap argon2id parameters for tests that hash many passwords; the real ones are tested in test/src/passwords.test.ts. */
export const fastPasswordHasher: PasswordHasher = createPasswordHasher({ memoryCost: 1024, timeCost: 1, parallelism: 1 })

/** A point the code under test is held at: `reached` once it waits there, until `release()`. */
export interface Pause {
  reached: Promise<void>
  release: () => void
}

/** A Pause, and the `wait()` the held code calls. */
export function pausePoint (): Pause & { wait: () => Promise<void> } {
  let entered!: () => void
  let release!: () => void
  const reached = new Promise<void>((resolve) => { entered = resolve })
  const released = new Promise<void>((resolve) => { release = resolve })
  return { reached, release, wait: async () => { entered(); await released } }
}

/** What instrumentedHasher adds to the hasher it wraps. */
export interface InstrumentedHasher {
  hasher: PasswordHasher
  /** The calls made so far, of each kind. */
  counts: { hash: number, verify: number, decoy: number }
  /** Holds the next verification, once it has checked, until released: a login in flight at a moment the test chooses. */
  pauseNextVerify (): Pause
}

/** `inner` (fastPasswordHasher unless given), counting each kind of call, with a verification it can hold. */
export function instrumentedHasher (inner: PasswordHasher = fastPasswordHasher): InstrumentedHasher {
  const counts = { hash: 0, verify: 0, decoy: 0 }
  let armed: ReturnType<typeof pausePoint> | undefined
  const hasher: PasswordHasher = {
    async hash (password) {
      counts.hash++
      return await inner.hash(password)
    },
    async verify (passwordHash, password) {
      counts.verify++
      const valid = await inner.verify(passwordHash, password)
      const pause = armed
      armed = undefined
      await pause?.wait()
      return valid
    },
    async verifyAgainstDecoy (password) {
      counts.decoy++
      return await inner.verifyAgainstDecoy(password)
    },
    needsRehash: (passwordHash) => inner.needsRehash(passwordHash),
    // `inner` is its owner's to stop: fastPasswordHasher serves every app of the file.
    stopThreads: async () => {},
    get queued () { return inner.queued },
    observe: (listener) => inner.observe(listener)
  }
  return { hasher, counts, pauseNextVerify: () => (armed = pausePoint()) }
}

/** Limits no test reaches: for an app many tests share (all from 127.0.0.1) that is not about rate limits. */
const UNREACHED = { max: 1_000_000, windowSeconds: 60 }
export const NO_RATE_LIMITS: RateLimitSettings = {
  loginPerAccount: UNREACHED,
  loginPerAddress: UNREACHED,
  signupPerAddress: UNREACHED,
  refreshPerAddress: UNREACHED,
  logoutNoopPerAddress: UNREACHED,
  linkRequestPerAccount: UNREACHED,
  linkPerAddress: UNREACHED
}

export interface TestAppOptions extends Partial<AppOptions> {
  env?: Record<string, string>
  /** Users in a real PostgreSQL (TEST_DATABASE_URL) instead of PGlite. */
  realDatabase?: boolean
  /** Sessions in a real Redis (TEST_REDIS_URL) instead of in process. */
  realRedis?: boolean
  /** The app opens its own embedded database in DATA_DIR, as `npm start` does, instead of being given one. */
  ownDatabase?: boolean
}

/** The service as production builds it, on test storage (the file's shared database unless given one); closed when the test ends. */
export async function buildTestApp (t: Test, options: TestAppOptions = {}): Promise<FastifyInstance> {
  const { env, realDatabase = false, realRedis = false, ownDatabase = false, ...appOptions } = options
  const config = appOptions.config ?? await testConfig(t, env)
  const database = ownDatabase ? undefined : appOptions.database ?? await testDatabase(t, { real: realDatabase })
  const redis = realRedis ? await testRedis(t) : undefined
  const { buildApp } = await import('../src/app.js')
  const app = await buildApp({
    passwordHasher: fastPasswordHasher,
    logger: false,
    // A busy test machine lags: load shedding is tested on its own (test/plugins/under-pressure.test.ts),
    // and answers elsewhere must not depend on how loaded the machine is. 0 turns the lag check off.
    underPressure: { maxEventLoopDelay: 0 },
    ...appOptions,
    config,
    database,
    redis: redis?.redis ?? appOptions.redis,
    redisKeyPrefix: redis?.prefix ?? appOptions.redisKeyPrefix
  })
  t.teardown(() => app.close())
  return app
}

/** Holds the next session `app` stores, once stored, until released: a login in flight between opening its session and answering. */
export function pauseNextSessionCreate (app: FastifyInstance): Pause {
  const store = app.sessionStore
  const create = store.create.bind(store)
  const pause = pausePoint()
  store.create = async (...args) => {
    store.create = create
    const created = await create(...args)
    await pause.wait()
    return created
  }
  return pause
}

/** A stream for an app's logger, and the lines written to it. */
export function capturedLog (): { lines: string[], stream: Writable } {
  const lines: string[] = []
  const stream = new Writable({
    write (chunk, _encoding, callback) {
      lines.push(...String(chunk).split('\n').filter(Boolean))
      callback()
    }
  })
  return { lines, stream }
}

export interface Backend {
  name: string
  realDatabase: boolean
  realRedis: boolean
  /** The test's `skip` option: false, or why this backend cannot run here. */
  skip: false | string
}

/** The storage combinations every HTTP suite runs on: embedded always, real servers where CI provides them. */
export const BACKENDS: Backend[] = [
  { name: 'embedded (PGlite, in-process sessions)', realDatabase: false, realRedis: false, skip: false },
  { name: 'real (PostgreSQL, Redis)', realDatabase: true, realRedis: true, skip: skipUnless({ postgres: true, redis: true }) }
]

/** A backend's apps that send mail, and what they sent. */
export interface MailingBackend extends MailReaders {
  /** The SMTP server every app of the backend mails to. */
  server: MailServer
  /** SMTP_URL and the suite's own mail settings: the environment of an app configured by hand. */
  mailEnv: Record<string, string>
  /** An app of the backend mailing to `server`; no rate limit in reach unless `options` sets one. */
  build (t: Test, options?: TestAppOptions): Promise<FastifyInstance>
  /** The backend's default app, built once, for the tests that keep apart by their accounts. */
  shared (): Promise<FastifyInstance>
  /**
   * Two instances on one PostgreSQL and one Redis (this test's key prefix), whatever the backend,
   * each with a Redis connection of its own; `second` is added to the second's options.
   */
  twoInstances (t: Test, second?: TestAppOptions): Promise<[FastifyInstance, FastifyInstance]>
}

/** A real SMTP server for `backend`'s apps, which mail to it with `env` (PUBLIC_URL, MAIL_FROM); it closes when `t` ends. */
export async function mailingBackend (t: Test, backend: Backend, env: Record<string, string>): Promise<MailingBackend> {
  const { mailReaders, startMailServer } = await import('./fixtures/mail-server.js')
  const server = await startMailServer(t)
  const mailEnv = { SMTP_URL: server.url, ...env }
  const build = (t: Test, options: TestAppOptions = {}): Promise<FastifyInstance> => buildTestApp(t, {
    realDatabase: backend.realDatabase,
    realRedis: backend.realRedis,
    rateLimits: NO_RATE_LIMITS,
    ...options,
    env: { ...mailEnv, ...options.env }
  })
  let sharedApp: Promise<FastifyInstance> | undefined
  async function twoInstances (t: Test, second: TestAppOptions = {}): Promise<[FastifyInstance, FastifyInstance]> {
    const database = await testDatabase(t, { real: true })
    const { prefix } = await testRedis(t)
    // One DATA_DIR: both sign with the same development key, as instances share theirs.
    const config = await testConfig(t, { ...mailEnv, REDIS_URL: TEST_REDIS_URL!, REDIS_KEY_PREFIX: prefix })
    return await Promise.all([
      buildTestApp(t, { config, database, rateLimits: NO_RATE_LIMITS }),
      buildTestApp(t, { config, database, rateLimits: NO_RATE_LIMITS, ...second })
    ])
  }
  return { server, mailEnv, build, shared: () => (sharedApp ??= build(t)), twoInstances, ...mailReaders(server) }
}

/** The session policy of the default configuration (src/config.ts). */
export const DEFAULT_SESSION_POLICY: SessionPolicy = {
  accessTokenTtl: 600,
  refreshTokenTtl: 14 * 86_400,
  sessionMaxAge: 90 * 86_400,
  rotateRefreshTokens: true,
  refreshReuseGrace: 10,
  refreshBindIp: false,
  maxSessionsPerUser: 100
}

/** SessionService with no HTTP in it, over an in-process store swept until the test ends; DEFAULT_SESSION_POLICY unless `deps` sets one. */
export function inProcessSessionService (
  t: Test, deps: Omit<SessionServiceDeps, 'store' | 'policy'> & { policy?: SessionPolicy }
): { service: SessionService, store: MemorySessionStore } {
  const store = new MemorySessionStore(deps.clock)
  t.teardown(() => store.stopSweeping())
  return { service: new SessionService({ policy: DEFAULT_SESSION_POLICY, ...deps, store }), store }
}

export const PASSWORD = 'correct horse battery'
export const NEW_PASSWORD = 'a brand new passphrase'

let accounts = 0

/** An email no other test of any file uses. */
export function freshEmail (label = 'user'): string {
  return `${label}-${process.pid}-${++accounts}-${randomBytes(3).toString('hex')}@example.com`
}

export interface SignedIn {
  email: string
  accessToken: string
  refreshToken: string
  tokenType: string
  expiresIn: number
  refreshExpiresIn: number
  /** The refresh_token cookie's value, as the login set it. */
  cookie: string
}

/** Signs a new user up; answers their email. */
export async function signUp (app: FastifyInstance, label = 'user', password = PASSWORD): Promise<string> {
  const email = freshEmail(label)
  const signup = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email, password } })
  if (signup.statusCode !== 201) throw new Error(`signup failed: ${signup.body}`)
  return email
}

/** Logs in (with `headers`: a user agent, a forwarded address); answers the token pair and the cookie. */
export async function logIn (app: FastifyInstance, email: string, password = PASSWORD, headers: Record<string, string> = {}): Promise<SignedIn> {
  const login = await app.inject({ method: 'POST', url: '/auth/login', payload: { email, password }, headers })
  if (login.statusCode !== 200) throw new Error(`login failed: ${login.body}`)
  return { email, ...login.json(), cookie: refreshCookieOf(login)! }
}

/** Signs a new user up (an email no other test uses) and logs them in: their first token pair. */
export async function signUpAndLogIn (app: FastifyInstance, label = 'user'): Promise<SignedIn> {
  return logIn(app, await signUp(app, label))
}

// Requests answered as they come back, refusals included (logIn above wants a success).

export function loginAttempt (app: FastifyInstance, email: string, password = PASSWORD): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'POST', url: '/auth/login', payload: { email, password } })
}

export function refresh (app: FastifyInstance, refreshToken: string, remoteAddress?: string): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken }, ...(remoteAddress === undefined ? {} : { remoteAddress }) })
}

export function me (app: FastifyInstance, accessToken: string): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'GET', url: '/users/me', headers: bearer(accessToken) })
}

/** `token` as a client might send it, a string or anything else. */
export function verifyEmail (app: FastifyInstance, token: unknown): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'POST', url: '/auth/verify-email', payload: { token } })
}

export const bearer = (accessToken: string): { authorization: string } => ({ authorization: `Bearer ${accessToken}` })

/** The error `code` an answer carries. */
export const codeOf = (response: LightMyRequestResponse): string | undefined => response.json().code

/** An access token's claims, decoded and unchecked: what a client reads of it. */
export const claimsOf = (accessToken: string): Record<string, unknown> =>
  JSON.parse(Buffer.from(accessToken.split('.')[1]!, 'base64url').toString('utf8'))

export const escapeRegExp = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

/** The refresh_token cookie's value set by a response, if any ('' when the response clears it). */
export function refreshCookieOf (response: LightMyRequestResponse): string | undefined {
  return refreshCookie(response)?.value
}

/** A Set-Cookie header, parsed as app.inject()'s `response.cookies` has it. */
export interface SetCookie {
  name: string
  value: string
  path?: string
  maxAge?: number
  httpOnly?: boolean
  secure?: boolean
  sameSite?: string
}

/** The refresh_token cookie a response sets, value and attributes, if any: of app.inject()'s answer, or of fetch's headers. */
export function refreshCookie (response: LightMyRequestResponse | Headers): SetCookie | undefined {
  if (!(response instanceof Headers)) return response.cookies.find((cookie) => cookie.name === 'refresh_token') as SetCookie | undefined
  const header = response.getSetCookie().find((line) => line.startsWith('refresh_token='))
  if (header === undefined) return undefined
  const [pair, ...attributes] = header.split(';').map((part) => part.trim())
  const cookie: SetCookie = { name: 'refresh_token', value: pair!.slice('refresh_token='.length) }
  for (const attribute of attributes) {
    const [name = '', ...value] = attribute.split('=')
    const key = name.toLowerCase()
    if (key === 'path') cookie.path = value.join('=')
    else if (key === 'max-age') cookie.maxAge = Number(value.join('='))
    else if (key === 'httponly') cookie.httpOnly = true
    else if (key === 'secure') cookie.secure = true
    else if (key === 'samesite') cookie.sameSite = value.join('=')
  }
  return cookie
}

/** Exactly API.md's error shape: statusCode, code, error, message; JSON; nothing internal. */
export function errorShapeProblems (status: number, contentType: string | undefined, text: string): string[] {
  const problems: string[] = []
  if (!/^application\/json/.test(contentType ?? '')) problems.push(`content-type ${contentType}`)
  let body: Record<string, unknown>
  try {
    body = JSON.parse(text)
  } catch {
    return [...problems, `not JSON: ${text.slice(0, 80)}`]
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return [...problems, 'not an object']
  const keys = Object.keys(body).sort().join(',')
  if (keys !== 'code,error,message,statusCode') problems.push(`members ${keys}`)
  if (body.statusCode !== status) problems.push(`statusCode ${String(body.statusCode)} for HTTP ${status}`)
  if (body.error !== STATUS_CODES[status]) problems.push(`error ${String(body.error)}`)
  if (typeof body.code !== 'string' || !/^[A-Z_]+$/.test(body.code)) problems.push(`code ${String(body.code)}`)
  if (typeof body.message !== 'string' || body.message === '') problems.push('no message')
  if (/stack|node_modules|\/work\/|\bat .+:\d+:\d+/.test(text)) problems.push('a stack or a path')
  return problems
}

/** The response is API.md's error `code` with `status`, in exactly the one error shape. */
export function assertErrorShape (t: Test, response: LightMyRequestResponse, status: number, code: string, name = code): void {
  t.equal(response.statusCode, status, `${name}: status ${status}`)
  t.same(errorShapeProblems(response.statusCode, response.headers['content-type'] as string | undefined, response.body), [], `${name}: the error shape`)
  if (response.statusCode === status) t.equal(response.json().code, code, `${name}: code ${code}`)
}

/**
 * Sends `redeem` any token at all (strings, binary, any JSON value; fast-check from `seed`): each must be
 * refused as a link token or as a body, 400 LINK_TOKEN_INVALID or VALIDATION_ERROR.
 */
export async function assertAnyTokenRefused (t: Test, redeem: (token: unknown) => Promise<LightMyRequestResponse>, seed: number): Promise<void> {
  const { default: fc } = await import('fast-check')
  const problems: string[] = []
  await fc.assert(fc.asyncProperty(fc.oneof(fc.string({ maxLength: 600 }), fc.string({ unit: 'binary', maxLength: 80 }), fc.anything()), async (candidate) => {
    const response = await redeem(candidate)
    const code = response.statusCode === 400 ? codeOf(response) : undefined
    if (code !== 'LINK_TOKEN_INVALID' && code !== 'VALIDATION_ERROR') problems.push(`${JSON.stringify(candidate)}: ${response.statusCode} ${response.body}`)
  }), { seed, numRuns: 60 })
  t.strictSame(problems, [], 'random tokens: always 400 LINK_TOKEN_INVALID or VALIDATION_ERROR')
}

/** A login in flight while every session of its account ended: refused, or answered with a pair that no longer works. */
export async function assertNoWorkingSession (t: Test, app: FastifyInstance, login: LightMyRequestResponse): Promise<void> {
  if (login.statusCode !== 200) {
    assertErrorShape(t, login, 401, 'INVALID_CREDENTIALS', 'the in-flight login is refused')
    return
  }
  const pair = login.json()
  assertErrorShape(t, await refresh(app, pair.refreshToken), 401, 'REFRESH_TOKEN_REVOKED', 'the in-flight login\'s refresh token')
  assertErrorShape(t, await me(app, pair.accessToken), 401, 'ACCESS_TOKEN_REVOKED', 'the in-flight login\'s access token')
}

/** A positive integer from the environment (MODEL_RUNS and the like), undefined when unset; anything else stops the run. */
export function positiveIntegerFromEnv (name: string): number | undefined {
  const value = process.env[name]
  if (value === undefined) return undefined
  if (!/^[1-9]\d*$/.test(value)) throw new Error(`${name} must be a positive integer, got ${value}`)
  return Number(value)
}

/**
 * How a model test runs: CI's fixed seed and number of runs, unless
 * MODEL_RUNS asks for a longer search (with a new seed) or MODEL_SEED replays one.
 */
export function modelRuns (ciSeed: number, ciRuns: number): { runs: number, seed: number } {
  const runs = positiveIntegerFromEnv('MODEL_RUNS') ?? ciRuns
  const seed = positiveIntegerFromEnv('MODEL_SEED') ?? (process.env.MODEL_RUNS === undefined ? ciSeed : Date.now() % 2 ** 31)
  return { runs, seed }
}

/** A security event as GET /auth/events lists it; GET /admin/events adds its `userId`. */
export interface EventBody {
  id: string
  type: string
  at: string
  ip: string | null
  userAgent: string | null
  sessionId: string | null
  actorId: string | null
  userId?: string | null
}
