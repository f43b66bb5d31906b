import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { availableParallelism, cpus, tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { parseArgs } from 'node:util'
import type autocannon from 'autocannon'
import { Redis } from 'ioredis'
import { projectRoot } from '../src/paths.js'
import type { HashLimitResult } from './hash-limit.js'
import { runLoad, Series, type LoadOptions, type Measurement } from './load.js'
import { affinityOf, cpuIndexes, placeProcesses, startLineChild, startServer, stopServer, type LineChild, type Placement, type ServerProcess } from './processes.js'
import { formatProfile, readProfile, summarizeProfile, type ProfileSummary } from './profile.js'
import { deleteKeysUnder, keysUnder, keysWithoutTtl, measureRedisMemory } from './redis-memory.js'
import { chartOf, formatTable, rowsOf, type ResetResults, type Results, type StoreName, type StoreResults } from './report.js'
import { ServiceMetrics } from './service-metrics.js'

const HELP = `npm run bench [-- options]

Measures the service against a bare Fastify route and against the argon2
hashing limit, and a password-reset request for an account's email against
one for an email no account has, in one run: prints a table, writes JSON and
an SVG chart.

  --duration <s>            measured seconds per workload (default 5)
  --warmup <s>              warm-up seconds before each workload (default 2)
  --rounds <n>              slices each measurement is cut into, alternating with its yardstick
                            (bare route, hashing limit, idle probe, unknown email) so a drifting load hits both (default 3)
  --connections <n>         connections for me, refresh and the bare route (default 100)
  --login-connections <n>   connections for login and the login flood (default: 8, or 4 per hashing slot if more)
  --reset-connections <n>   connections for reset, known and unknown emails alike (default 16: each request is a database write)
  --probe-connections <n>   back-to-back /users/me clients measuring latency in "mixed" (default 1)
  --users <n>               users signed up and logged in first (default 200)
  --only <list>             some of me,refresh,login,mixed,memory,reset (default: all)
  --redis [url]             also run with Redis (default redis://127.0.0.1:6379; REDIS_URL does the same)
  --service-cpus <list>     CPUs for the servers, taskset syntax (default 0)
  --generator-cpu <n>       CPU for this process, the load generator (default 1)
  --no-pin                  do not use taskset
  --log-level <level>       the service's LOG_LEVEL (default warn: no per-request log lines)
  --cpu-prof                profile the service (node --cpu-prof) and summarize where its time went
  --out <dir>               where results go (default bench/results)
  --help
`

const WORKLOADS = ['me', 'refresh', 'login', 'mixed', 'memory', 'reset'] as const
type Workload = typeof WORKLOADS[number]

const PASSWORD = 'correct horse battery staple'
const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379'
/** Distinct client addresses refreshes come from (X-Forwarded-For), so the per-address refresh limit never binds. */
const REFRESH_ADDRESSES = 4096

interface Options {
  duration: number
  warmup: number
  rounds: number
  connections: number
  loginConnections: number | undefined
  resetConnections: number
  probeConnections: number
  users: number
  only: Set<Workload>
  redisUrl: string | undefined
  pin: boolean
  serviceCpus: string
  generatorCpu: string
  logLevel: string
  cpuProf: boolean
  out: string
}

function parseOptions (argv: string[]): Options {
  // `--redis` alone means the local default; parseArgs wants a value, so give it one.
  const args = argv.flatMap((arg, i) => arg === '--redis' && (argv[i + 1] === undefined || argv[i + 1]!.startsWith('--'))
    ? [`--redis=${DEFAULT_REDIS_URL}`]
    : [arg])
  const { values } = parseArgs({
    args,
    options: {
      duration: { type: 'string' },
      warmup: { type: 'string' },
      rounds: { type: 'string' },
      connections: { type: 'string' },
      'login-connections': { type: 'string' },
      'reset-connections': { type: 'string' },
      'probe-connections': { type: 'string' },
      users: { type: 'string' },
      only: { type: 'string' },
      redis: { type: 'string' },
      'service-cpus': { type: 'string' },
      'generator-cpu': { type: 'string' },
      'no-pin': { type: 'boolean' },
      'log-level': { type: 'string' },
      'cpu-prof': { type: 'boolean' },
      out: { type: 'string' },
      help: { type: 'boolean' }
    }
  })
  if (values.help === true) {
    process.stdout.write(HELP)
    process.exit(0)
  }
  const positive = (name: string, text: string | undefined, fallback: number, { allowZero = false } = {}): number => {
    if (text === undefined) return fallback
    const value = Number(text)
    if (!Number.isFinite(value) || value < 0 || (value === 0 && !allowZero)) throw new Error(`--${name}: expected a positive number, got "${text}"`)
    return value
  }
  const only = new Set<Workload>()
  for (const name of (values.only ?? WORKLOADS.join(',')).split(',').map((part) => part.trim()).filter(Boolean)) {
    if (!(WORKLOADS as readonly string[]).includes(name)) throw new Error(`--only: unknown workload "${name}" (expected ${WORKLOADS.join(', ')})`)
    only.add(name as Workload)
  }
  return {
    duration: positive('duration', values.duration, 5),
    warmup: positive('warmup', values.warmup, 2, { allowZero: true }),
    rounds: Math.max(1, Math.round(positive('rounds', values.rounds, 3))),
    connections: Math.round(positive('connections', values.connections, 100)),
    loginConnections: values['login-connections'] === undefined ? undefined : Math.round(positive('login-connections', values['login-connections'], 8)),
    resetConnections: Math.round(positive('reset-connections', values['reset-connections'], 16)),
    probeConnections: Math.round(positive('probe-connections', values['probe-connections'], 1)),
    users: Math.max(8, Math.round(positive('users', values.users, 200))),
    only,
    redisUrl: values.redis ?? (process.env.REDIS_URL?.trim() || undefined),
    pin: values['no-pin'] !== true,
    serviceCpus: values['service-cpus'] ?? '0',
    generatorCpu: values['generator-cpu'] ?? '1',
    logLevel: values['log-level'] ?? 'warn',
    cpuProf: values['cpu-prof'] === true,
    out: values.out ?? join(projectRoot, 'bench', 'results')
  }
}

// ---------------------------------------------------------------- progress

const startedAt = performance.now()
const tty = process.stdout.isTTY === true
const elapsed = (): string => `[${((performance.now() - startedAt) / 1000).toFixed(1).padStart(6)}s]`
let pending = false

/** One line per phase: on a terminal it is written when the phase starts and completed in place when it ends. */
function phaseStart (text: string): void {
  if (tty) {
    process.stdout.write(`${elapsed()} ${text} …`)
    pending = true
  }
}

function phaseEnd (text: string): void {
  process.stdout.write(`${tty && pending ? '\r\x1b[K' : ''}${elapsed()} ${text}\n`)
  pending = false
}

function say (text: string): void {
  if (pending) process.stdout.write('\n')
  pending = false
  process.stdout.write(text + '\n')
}

/** `tails`: p97.5 too, as autocannon prints it. */
const figures = (m: Measurement, { tails = false } = {}): string => {
  const bad = m.errors + m.non2xx === 0 ? '' : `, ${m.errors} errors, ${m.non2xx} non-2xx`
  const others = m.serverCoresBusy === undefined || m.serverCpu === undefined ? '' : ` / others ${Math.round(Math.max(0, m.serverCoresBusy - m.serverCpu))}%`
  const cpu = m.serverCpu === undefined ? '' : `, CPU server ${Math.round(m.serverCpu)}% / generator ${Math.round(m.generatorCpu)}%${others}`
  const tail = tails ? `, p97.5 ${m.p97_5.toFixed(2)} ms` : ''
  return `${Math.round(m.rps).toLocaleString('en-US')} req/s, p50 ${m.p50.toFixed(2)} ms${tail}, p99 ${m.p99.toFixed(2)} ms${bad}${cpu}`
}

// ---------------------------------------------------------------- cleanup

const cleanups: Array<() => Promise<void>> = []

async function cleanUp (): Promise<void> {
  while (cleanups.length > 0) await cleanups.pop()!().catch((error: unknown) => say(`cleanup failed: ${String(error)}`))
}

process.once('SIGINT', () => {
  say('\ninterrupted: stopping the servers and deleting this run\'s keys')
  cleanUp().finally(() => process.exit(130))
})

// ---------------------------------------------------------------- the service's users

interface Session {
  user: number
  accessToken: string
  refreshToken: string
}

const emailOf = (runId: string, user: number): string => `bench-${runId}-${user}@example.com`
/** A client address per user (signups are limited per address). */
const userAddress = (user: number): string => `10.200.${(user >> 8) & 255}.${user & 255}`

async function inParallel (count: number, limit: number, task: (index: number) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(Array.from({ length: Math.min(limit, count) }, async () => {
    while (next < count) await task(next++)
  }))
}

async function post (url: string, body: unknown, address: string): Promise<{ status: number, text: string }> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-forwarded-for': address },
    body: JSON.stringify(body)
  })
  return { status: response.status, text: await response.text() }
}

/** Signs the users up (unless they exist) and logs each in once: one session per user. */
async function prepareUsers (service: ServerProcess, runId: string, users: number, signUp: boolean): Promise<Session[]> {
  if (signUp) {
    await inParallel(users, 8, async (user) => {
      const { status, text } = await post(`${service.url}/auth/signup`, { email: emailOf(runId, user), password: PASSWORD }, userAddress(user))
      if (status !== 201 && status !== 409) throw new Error(`signup answered ${status}: ${text}`)
    })
  }
  const sessions: Session[] = []
  await inParallel(users, 8, async (user) => {
    const { status, text } = await post(`${service.url}/auth/login`, { email: emailOf(runId, user), password: PASSWORD }, userAddress(user))
    if (status !== 200) throw new Error(`login answered ${status}: ${text}`)
    const pair = JSON.parse(text) as { accessToken: string, refreshToken: string }
    sessions.push({ user, accessToken: pair.accessToken, refreshToken: pair.refreshToken })
  })
  return sessions.sort((a, b) => a.user - b.user)
}

// ---------------------------------------------------------------- workloads

/** GET /users/me, one request per token: static requests, cheap for the generator. */
function meRequests (sessions: Session[]): autocannon.Request[] {
  return sessions.map(({ accessToken }) => ({ method: 'GET', path: '/users/me', headers: { authorization: `Bearer ${accessToken}` } }))
}

/**
 * Spreads `requests` over the connections: each cycles through a few of them
 * (all are used when there are at least as many slots as requests), so every
 * user's token keeps coming back without each connection building them all.
 */
function spread (requests: autocannon.Request[], connections: number): Pick<LoadOptions, 'setupClient'> {
  const perClient = Math.max(2, Math.ceil(requests.length / connections))
  let next = 0
  return {
    setupClient: (client) => {
      const mine = Array.from({ length: perClient }, (_, i) => ({ ...requests[(next + i) % requests.length]! }))
      next = (next + perClient) % requests.length
      client.setRequests(mine)
    }
  }
}

function loginRequests (runId: string, users: number): autocannon.Request[] {
  return Array.from({ length: users }, (_, user) => ({
    method: 'POST',
    path: '/auth/login',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: emailOf(runId, user), password: PASSWORD })
  }))
}

/** What a load should watch besides itself: the server's CPU use and its cores'. */
type Watch = Pick<LoadOptions, 'serverPid' | 'serverCpus'>

const REFRESH_TOKEN_FIELD = /"refreshToken":"([^"]+)"/

/**
 * Closed-loop refresh chains: each connection owns a session and presents the
 * refresh token its previous response carried. A chain that breaks (a
 * non-200) takes a spare session. The chains' current tokens are kept between
 * runs, so each slice continues the chains of the one before.
 */
class RefreshChains {
  restarted = 0
  #address = 0

  constructor (private readonly tokens: string[], private readonly spares: string[]) {}

  get count (): number {
    return this.tokens.length
  }

  async run (series: Series, url: string, seconds: number, watch: Watch = {}): Promise<void> {
    const chains: Array<{ token: string }> = []
    const free = [...this.tokens]
    await series.run({
      url,
      connections: this.tokens.length,
      seconds,
      ...watch,
      setupClient: (client) => {
        const chain = { token: free.shift() ?? this.spares.shift() ?? '' }
        chains.push(chain)
        client.setRequests([{
          method: 'POST',
          path: '/auth/refresh',
          setupRequest: (request) => {
            const n = this.#address++ % REFRESH_ADDRESSES
            return {
              ...request,
              headers: { 'content-type': 'application/json', 'x-forwarded-for': `10.100.${n >> 8}.${n & 255}` },
              body: `{"refreshToken":"${chain.token}"}`
            }
          },
          onResponse: (status, body) => {
            const next = status === 200 ? REFRESH_TOKEN_FIELD.exec(body)?.[1] : undefined
            if (next !== undefined) {
              chain.token = next
            } else {
              this.restarted += 1
              chain.token = this.spares.shift() ?? chain.token
            }
          }
        }])
      }
    })
    this.tokens.splice(0, this.tokens.length, ...chains.map(({ token }) => token))
  }
}

/** The hashing-limit child (bench/hash-limit.ts), measured in slices between the login slices. */
class HashLimit {
  #last: HashLimitResult | undefined

  private constructor (private readonly process: LineChild, readonly concurrency: number) {}

  static async start (placement: Placement): Promise<HashLimit> {
    const child = startLineChild('bench/hash-limit.ts', { BENCH_WARMUP_MS: '1000' }, placement)
    cleanups.push(child.stop)
    const ready = await child.nextLine()
    const concurrency = Number(/^ready (\d+)$/.exec(ready)?.[1])
    if (!(concurrency > 0)) throw new Error(`bench/hash-limit.ts: expected "ready <concurrency>", got "${ready}"`)
    return new HashLimit(child, concurrency)
  }

  async measure (seconds: number): Promise<void> {
    this.process.send(`measure ${Math.round(seconds * 1000)}`)
    this.#last = JSON.parse(await this.process.nextLine()) as HashLimitResult
  }

  get result (): HashLimitResult | undefined {
    return this.#last
  }

  async stop (): Promise<void> {
    await this.process.stop()
    cleanups.splice(cleanups.indexOf(this.process.stop), 1)
  }
}

const sleep = async (seconds: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, seconds * 1000))

// ---------------------------------------------------------------- reset: a known email against an unknown one

const RESET_PATH = '/auth/password-reset/request'

/** Emails no account has (the bench signs up emailOf's only): as many as the users, about as long. */
const unknownEmailOf = (runId: string, index: number): string => `nobody-${runId}-${index}@bench.invalid`

function resetRequests (emails: string[]): autocannon.Request[] {
  return emails.map((email) => ({ method: 'POST', path: RESET_PATH, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email }) }))
}

/** Reset mails of one outcome (sent, throttled…) the service counted. */
const resetMails = (metrics: ServiceMetrics, outcome: string): number => metrics.value('auth_mails_total', { kind: 'password_reset', outcome })

/**
 * Waits until the service has nothing queued (mail to send or drop, security
 * events to write, at most a second away): the next slice then pays for no
 * earlier one's background work.
 */
async function settled (scrape: () => Promise<ServiceMetrics>, timeoutSeconds = 120): Promise<ServiceMetrics> {
  const deadline = performance.now() + timeoutSeconds * 1000
  while (true) {
    const metrics = await scrape()
    const backlog = metrics.value('auth_mail_pending') + metrics.value('auth_security_events_pending')
    if (backlog === 0) return metrics
    if (performance.now() > deadline) throw new Error(`reset: the service still had ${backlog} mails and events queued after ${timeoutSeconds} s`)
    await sleep(0.1)
  }
}

/**
 * Spends the hour's link mails of every known address (the mail queue's
 * per-recipient throttle; signup's verification mail took one of them): a
 * request per address a round, each round's mails written before the next,
 * until a round's are all dropped. From then on a known request still
 * composes and queues its mail, and the throttle drops it: no measured slice
 * writes mail, nor inherits an earlier slice's.
 */
async function spendMailAllowance (url: string, scrape: () => Promise<ServiceMetrics>, emails: string[]): Promise<ResetResults['allowance']> {
  const started = performance.now()
  const first = await settled(scrape)
  let before = first
  for (let round = 1; round <= 20; round++) {
    await inParallel(emails.length, 8, async (index) => {
      const { status, text } = await post(url + RESET_PATH, { email: emails[index] }, userAddress(index))
      if (status !== 202) throw new Error(`reset: ${RESET_PATH} answered ${status}: ${text}`)
    })
    const after = await settled(scrape)
    if (resetMails(after, 'throttled') - resetMails(before, 'throttled') >= emails.length) {
      return { requests: round * emails.length, mailsSent: resetMails(after, 'sent') - resetMails(first, 'sent'), seconds: (performance.now() - started) / 1000 }
    }
    before = after
  }
  throw new Error('reset: 20 requests per address did not exhaust the mail throttle; is it still per recipient and per hour?')
}

/** The two answers, byte for byte: they must not tell whether the account exists. */
async function sameAnswer (url: string, knownEmail: string, unknownEmail: string): Promise<{ same: boolean, known: string, unknown: string }> {
  const known = await post(url + RESET_PATH, { email: knownEmail }, userAddress(0))
  const unknown = await post(url + RESET_PATH, { email: unknownEmail }, userAddress(0))
  const text = ({ status, text }: { status: number, text: string }): string => `${status} ${text}`
  return { same: text(known) === text(unknown), known: text(known), unknown: text(unknown) }
}

/**
 * The reset workload: slices of requests for the users' emails and for
 * emails no account has, on the same connections, in alternating order
 * (known first in even rounds, unknown first in odd ones). The figure is the
 * ratio known/unknown, of req/s and of p50: the two paths should cost the same.
 */
async function resetWorkload (service: ServerProcess, context: StoreContext, watch: Watch): Promise<ResetResults> {
  const { store, options, runId, metricsToken } = context
  const { rounds, warmup, resetConnections: connections } = options
  const slice = options.duration / rounds
  const knownEmails = Array.from({ length: options.users }, (_, user) => emailOf(runId, user))
  const unknownEmails = Array.from({ length: options.users }, (_, index) => unknownEmailOf(runId, index))
  const scrape = async (): Promise<ServiceMetrics> => ServiceMetrics.scrape(service.url, metricsToken)

  phaseStart(`${store}: reset, spending the hour's link mails of ${knownEmails.length} addresses`)
  const allowance = await spendMailAllowance(service.url, scrape, knownEmails)
  phaseEnd(`${store}: reset: ${allowance.requests} requests spent the hour's link mails of ${knownEmails.length} addresses ` +
    `(${allowance.mailsSent} written to the outbox, ${allowance.seconds.toFixed(1)} s): the throttle drops every measured request's mail`)

  const answer = await sameAnswer(service.url, knownEmails[0]!, unknownEmails[0]!)
  if (!answer.same) say(`${elapsed()} ${store}: reset: the answers DIFFER: known "${answer.known}", unknown "${answer.unknown}"`)

  const sides = {
    known: { requests: spread(resetRequests(knownEmails), connections), series: new Series() },
    unknown: { requests: spread(resetRequests(unknownEmails), connections), series: new Series() }
  }
  phaseStart(`${store}: reset, ${connections} connections, ${warmup} s warm-up each, ` +
    `${rounds} × (${slice.toFixed(1)} s known + ${slice.toFixed(1)} s unknown email, the order flipped each round)`)
  if (warmup > 0) {
    for (const side of [sides.known, sides.unknown]) await runLoad({ url: service.url, connections, seconds: warmup, ...side.requests })
  }
  const start = await settled(scrape)
  for (let round = 0; round < rounds; round++) {
    for (const side of round % 2 === 0 ? [sides.known, sides.unknown] : [sides.unknown, sides.known]) {
      await settled(scrape)
      await side.series.run({ url: service.url, connections, seconds: slice, ...side.requests, ...watch })
    }
  }
  const end = await settled(scrape)
  const known = sides.known.series.result()
  const unknown = sides.unknown.series.result()
  const background = {
    mailsSent: resetMails(end, 'sent') - resetMails(start, 'sent'),
    mailsThrottled: resetMails(end, 'throttled') - resetMails(start, 'throttled'),
    eventsRecorded: end.value('auth_security_events_total', { type: 'password_reset_requested' }) -
      start.value('auth_security_events_total', { type: 'password_reset_requested' }),
    eventsDropped: end.value('auth_security_events_dropped_total') - start.value('auth_security_events_dropped_total')
  }
  const ratios = {
    rps: known.rps / unknown.rps,
    p50: known.p50 / unknown.p50,
    serverCpuPerRequest: known.serverCpuMsPerOk === undefined || unknown.serverCpuMsPerOk === undefined
      ? undefined
      : known.serverCpuMsPerOk / unknown.serverCpuMsPerOk
  }
  const indent = ' '.repeat(elapsed().length)
  phaseEnd(`${store}: reset known   ${figures(known, { tails: true })}`)
  say(`${indent} ${store}: reset unknown ${figures(unknown, { tails: true })}`)
  const cpu = ratios.serverCpuPerRequest === undefined
    ? ''
    : `, ${ratios.serverCpuPerRequest.toFixed(2)}× server CPU per request (${known.serverCpuMsPerOk!.toFixed(2)} vs ${unknown.serverCpuMsPerOk!.toFixed(2)} ms)`
  say(`${indent} ${store}: reset known/unknown: ${ratios.rps.toFixed(2)}× req/s, ${ratios.p50.toFixed(2)}× p50${cpu}`)
  say(`${indent} ${store}: reset: ${answer.same ? `the same answer for both (${answer.known})` : 'DIFFERENT answers'}; while measured, ` +
    `${background.mailsSent} reset mails written and ${background.mailsThrottled} dropped by the throttle, ` +
    `${background.eventsRecorded} password_reset_requested events recorded${background.eventsDropped === 0 ? '' : `, ${background.eventsDropped} events dropped`}`)
  return { known, unknown, ratios, connections, sameAnswer: answer.same, allowance, background }
}

// ---------------------------------------------------------------- one store

/** The main thread's profile among those Node wrote (CPU.<date>.<time>.<pid>.<thread id>.<n>.cpuprofile; the main thread is 0). */
async function mainThreadProfile (dir: string): Promise<string> {
  const files = (await readdir(dir)).filter((name) => name.endsWith('.cpuprofile'))
  const main = files.find((name) => /^CPU\.\d+\.\d+\.\d+\.0\.\d+\.cpuprofile$/.test(name))
  if (main === undefined) throw new Error(`no main-thread profile in ${dir} (found ${files.join(', ') || 'none'})`)
  return join(dir, main)
}

interface StoreContext {
  store: StoreName
  options: Options
  placement: Placement
  runId: string
  dataDir: string
  usersExist: boolean
  redisPrefix: string | undefined
  metricsToken: string
}

/** Starts a server child and registers its stop with the cleanups; answers a stop that unregisters it. */
async function startTracked (options: Parameters<typeof startServer>[0]): Promise<{ server: ServerProcess, stop: () => Promise<void> }> {
  const server = await startServer(options)
  const kill = async (): Promise<void> => stopServer(server)
  cleanups.push(kill)
  return {
    server,
    stop: async () => {
      await kill()
      cleanups.splice(cleanups.indexOf(kill), 1)
    }
  }
}

/**
 * One store's run: the service (and, for the ratios, the bare route and the
 * hashing-limit child, all on the servers' cores), its users, then each
 * workload. Every ratio's two sides are measured in alternating slices
 * (`--rounds`), so a neighbour's load drifting over the run weighs on both.
 */
async function benchStore (context: StoreContext): Promise<StoreResults> {
  const { store, options, placement } = context
  const results: StoreResults = { store }
  const env: Record<string, string> = {
    DATA_DIR: context.dataDir,
    LOG_LEVEL: options.logLevel,
    // Logins are what is measured: the per-account and per-address limits must not bind.
    LOGIN_RATE_LIMIT: '1000000/1s',
    // Behind a trusted local proxy: X-Forwarded-For gives each simulated client its own address.
    TRUST_PROXY: '127.0.0.1',
    ROTATE_REFRESH_TOKENS: 'true',
    // The reset workload reads the mail queue and the security events from /metrics.
    METRICS_TOKEN: context.metricsToken
  }
  if (store === 'redis') {
    env.REDIS_URL = options.redisUrl!
    env.REDIS_KEY_PREFIX = context.redisPrefix!
  }
  // Node writes one profile per thread (tsx's loader hooks have one): each run and store gets its own folder.
  const profileDir = join(options.out, 'profiles', `${context.runId}-${store}`)
  if (options.cpuProf) await mkdir(profileDir, { recursive: true })

  phaseStart(`${store}: starting the service`)
  const serviceOptions = {
    name: `service (${store})`,
    script: 'src/server.ts',
    env,
    placement,
    nodeArgs: options.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [],
    readyPath: '/health'
  }
  let started: Awaited<ReturnType<typeof startTracked>>
  try {
    started = await startTracked(serviceOptions)
  } catch (error) {
    // On a busy machine one core may not bring PGlite up within Fastify's plugin timeout: say so, try once more.
    const firstLine = (error instanceof Error ? error.message : String(error)).split('\n').find((line) => /Error|error/.test(line)) ?? String(error)
    phaseEnd(`${store}: the service did not start (${firstLine.trim()}); trying once more`)
    phaseStart(`${store}: starting the service again`)
    started = await startTracked(serviceOptions)
  }
  const { server: service, stop: stopService } = started
  const pid = service.child.pid
  const serverCpus = placement.serviceCpus === undefined ? undefined : cpuIndexes(placement.serviceCpus)
  const watch: Watch = { serverPid: pid, serverCpus }
  phaseEnd(`${store}: service ready on ${service.url} (pid ${pid}, CPUs ${affinityOf(pid!) ?? 'unknown'})`)

  phaseStart(`${store}: ${context.usersExist ? '' : 'signing up and '}logging in ${options.users} users`)
  const sessions = await prepareUsers(service, context.runId, options.users, !context.usersExist)
  context.usersExist = true
  phaseEnd(`${store}: ${sessions.length} users logged in, one session each`)

  const { duration, warmup, connections, rounds } = options
  const slice = duration / rounds
  // The probe's sessions are never refreshed, so no chain failure can revoke them.
  const probeSessions = sessions.slice(-Math.max(1, Math.min(20, Math.floor(sessions.length / 10))))
  const chainSessions = sessions.slice(0, sessions.length - probeSessions.length)
  const me = meRequests(sessions)

  if (options.only.has('me') || options.only.has('refresh')) {
    const bare = await startTracked({ name: 'bare route', script: 'bench/bare-server.ts', env: {}, placement, readyPath: '/users/me' })
    const bareWatch: Watch = { serverPid: bare.server.child.pid, serverCpus }
    const bareSlice = async (series: Series): Promise<void> => series.run({ url: bare.server.url, connections, seconds: slice, ...spread(me, connections), ...bareWatch })
    phaseStart(`${store}: bare route warm-up`)
    if (warmup > 0) await runLoad({ url: bare.server.url, connections, seconds: Math.min(warmup, 1), ...spread(me, connections) })
    phaseEnd(`${store}: bare route ready on ${bare.server.url} (pid ${bare.server.child.pid}), its requests are the me workload's`)

    if (options.only.has('me')) {
      phaseStart(`${store}: me, ${connections} connections, ${warmup} s warm-up, ${rounds} × (${slice.toFixed(1)} s bare + ${slice.toFixed(1)} s me)`)
      if (warmup > 0) await runLoad({ url: service.url, connections, seconds: warmup, ...spread(me, connections) })
      const series = new Series()
      const yardstick = new Series()
      for (let round = 0; round < rounds; round++) {
        await bareSlice(yardstick)
        await series.run({ url: service.url, connections, seconds: slice, ...spread(me, connections), ...watch })
      }
      results.me = { ...series.result(), bare: yardstick.result() }
      phaseEnd(`${store}: me       ${figures(results.me)} = ${(results.me.rps / results.me.bare.rps).toFixed(2)}× bare`)
      say(`${' '.repeat(elapsed().length)} ${store}: bare     ${figures(results.me.bare)}`)
    }

    if (options.only.has('refresh')) {
      const count = Math.min(connections, Math.max(1, Math.floor(chainSessions.length / 2)))
      const chains = new RefreshChains(
        chainSessions.slice(0, count).map(({ refreshToken }) => refreshToken),
        chainSessions.slice(count).map(({ refreshToken }) => refreshToken))
      phaseStart(`${store}: refresh, ${count} chains, ${warmup} s warm-up, ${rounds} × (${slice.toFixed(1)} s bare + ${slice.toFixed(1)} s refresh)`)
      if (warmup > 0) await chains.run(new Series(), service.url, warmup)
      const before = chains.restarted
      const series = new Series()
      const yardstick = new Series()
      for (let round = 0; round < rounds; round++) {
        await bareSlice(yardstick)
        await chains.run(series, service.url, slice, watch)
      }
      results.refresh = { ...series.result(), bare: yardstick.result(), chains: count, restartedChains: chains.restarted - before }
      phaseEnd(`${store}: refresh  ${figures(results.refresh)} = ${(results.refresh.rps / results.refresh.bare.rps).toFixed(2)}× bare ` +
        `(${count} chains, ${results.refresh.restartedChains} restarted)`)
      say(`${' '.repeat(elapsed().length)} ${store}: bare     ${figures(results.refresh.bare)}`)
    }
    await bare.stop()
  }

  let loginConnections = options.loginConnections ?? 8
  const logins = loginRequests(context.runId, options.users)
  if (options.only.has('login') || options.only.has('mixed')) {
    phaseStart(`${store}: starting the hashing-limit child (pinned like the service)`)
    const hashLimit = await HashLimit.start(placement)
    loginConnections = options.loginConnections ?? Math.max(8, 4 * hashLimit.concurrency)
    phaseEnd(`${store}: hashing-limit child ready: ${hashLimit.concurrency} verification${hashLimit.concurrency === 1 ? '' : 's'} at once, as the service's queue allows`)

    if (options.only.has('login')) {
      phaseStart(`${store}: login, ${loginConnections} connections, ${warmup} s warm-up, ${rounds} × (${slice.toFixed(1)} s hashing + ${slice.toFixed(1)} s login)`)
      if (warmup > 0) await runLoad({ url: service.url, connections: loginConnections, seconds: warmup, requests: logins })
      const series = new Series()
      for (let round = 0; round < rounds; round++) {
        await hashLimit.measure(slice)
        await series.run({ url: service.url, connections: loginConnections, seconds: slice, requests: logins, ...watch })
      }
      results.login = series.result()
    }
    await hashLimit.stop()
    const h = hashLimit.result
    if (h !== undefined && results.login !== undefined) {
      results.hashLimit = h
      phaseEnd(`${store}: login    ${figures(results.login)} = ${(results.login.rps / h.perSecond).toFixed(2)}× the hashing limit`)
      say(`${' '.repeat(elapsed().length)} ${store}: hashing  ${h.perSecond.toFixed(1)} argon2id verifications/s with ${h.concurrency} at once ` +
        `(${h.params.memoryCost} KiB, t=${h.params.timeCost}, p=${h.params.parallelism}; ${h.availableParallelism} CPU visible, ` +
        `${h.threadpoolSize} libuv threads), p50 ${h.p50Ms.toFixed(1)} ms each`)
    }
  }

  if (options.only.has('mixed')) {
    const probe = meRequests(probeSessions)
    const probeConnections = options.probeConnections
    phaseStart(`${store}: mixed, /users/me probe (${probeConnections} connection${probeConnections === 1 ? '' : 's'}, back to back), ` +
      `${rounds} × (${slice.toFixed(1)} s idle + ${slice.toFixed(1)} s during a login flood of ${loginConnections} connections)`)
    const idle = new Series()
    const flood = new Series()
    const loginFlood = new Series()
    for (let round = 0; round < rounds; round++) {
      await idle.run({ url: service.url, connections: probeConnections, seconds: slice, requests: probe, ...watch })
      // Half a second fills the hashing queue; the flood outlasts the probe's slice.
      const floodRun = loginFlood.run({ url: service.url, connections: loginConnections, seconds: slice + 1, requests: logins })
      await sleep(0.5)
      await flood.run({ url: service.url, connections: probeConnections, seconds: slice, requests: probe, ...watch })
      await floodRun
    }
    results.mixed = { idle: idle.result(), flood: flood.result(), loginFlood: loginFlood.result() }
    const m = results.mixed
    phaseEnd(`${store}: me idle  ${figures(m.idle)}`)
    say(`${elapsed()} ${store}: me flood ${figures(m.flood)}; p99 ${(m.flood.p99 / m.idle.p99).toFixed(2)}× idle (logins meanwhile: ${m.loginFlood.rps.toFixed(1)}/s)`)
  }

  // Last: its database writes and security events are no other workload's load.
  if (options.only.has('reset')) results.reset = await resetWorkload(service, context, watch)

  await stopService()
  if (options.cpuProf) {
    try {
      const file = await mainThreadProfile(profileDir)
      const profile = readProfile(file)
      const phases: Record<string, ProfileSummary> = {}
      const measured: Array<[string, Measurement | undefined]> = [
        ['me', results.me], ['refresh', results.refresh], ['login', results.login], ['me during the login flood', results.mixed?.flood],
        ['reset, known email', results.reset?.known], ['reset, unknown email', results.reset?.unknown]
      ]
      say(`${store}: CPU profile ${relative(projectRoot, file)} (main thread; argon2 runs on libuv threads, not sampled), cut to each measured window:`)
      for (const [phase, measurement] of measured) {
        if (measurement === undefined) continue
        phases[phase] = summarizeProfile(profile, 15, measurement.windows)
        say(`  ${phase}:\n${formatProfile(phases[phase], { indent: '  ' })}`)
      }
      results.profile = { file: relative(projectRoot, file), whole: summarizeProfile(profile, 15), phases }
    } catch (error) {
      say(`${store}: no CPU profile (${String(error)})`)
    }
  }
  return results
}

// ---------------------------------------------------------------- main

async function main (): Promise<void> {
  const options = parseOptions(process.argv.slice(2))
  const runId = randomBytes(4).toString('hex')
  const cpuList = cpus()
  const placement = placeProcesses(cpuList.length, options.serviceCpus, options.generatorCpu, options.pin)
  const machine = { cpus: cpuList.length, model: cpuList[0]?.model.trim() ?? 'unknown', node: process.version, platform: `${process.platform} ${process.arch}` }

  say(`auth-service benchmark ${runId}: ${machine.cpus} × ${machine.model}, Node ${machine.node}`)
  for (const note of placement.notes) say(`  cores: ${note}`)
  say(`  workloads: ${[...options.only].join(', ')}; ${options.warmup} s warm-up + ${options.duration} s each in ${options.rounds} slices; ${options.connections} connections` +
    `${options.only.has('reset') ? ` (reset: ${options.resetConnections})` : ''}` +
    `; stores: embedded${options.redisUrl === undefined ? ' (add --redis or REDIS_URL for Redis)' : `, redis (${options.redisUrl})`}`)
  say(`  service env: LOG_LEVEL=${options.logLevel}, LOGIN_RATE_LIMIT=1000000/1s (the link-request limits follow it), ` +
    `TRUST_PROXY=127.0.0.1 (each refresh from one of ${REFRESH_ADDRESSES} X-Forwarded-For addresses), METRICS_TOKEN (read by reset), fresh DATA_DIR`)

  let redis: Redis | undefined
  const redisPrefix = `bench:${runId}:`
  if (options.redisUrl !== undefined) {
    redis = new Redis(options.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 })
    try {
      await redis.connect()
    } catch (error) {
      throw new Error(`Redis at ${options.redisUrl} is not reachable: ${String(error)}`)
    }
    const info = await redis.info('server')
    const redisPid = Number(/process_id:(\d+)/.exec(info)?.[1])
    const local = /^redis:\/\/(127\.0\.0\.1|localhost|\[::1\])(:|\/|$)/.test(options.redisUrl)
    const affinity = local && Number.isInteger(redisPid) ? affinityOf(redisPid) : undefined
    const where = affinity === undefined ? 'not pinned by the bench' : `CPUs ${affinity}, not pinned by the bench: it shares them`
    placement.notes.push(`redis-server${Number.isInteger(redisPid) ? ` (pid ${redisPid})` : ''}: ${where}`)
    say(`  cores: ${placement.notes.at(-1)}`)
    say(`  redis keys: everything under "${redisPrefix}", deleted at the end (never a flush)`)
    const client = redis
    cleanups.push(async () => {
      const deleted = await deleteKeysUnder(client, redisPrefix)
      if (deleted > 0) say(`${elapsed()} redis: deleted ${deleted} keys under ${redisPrefix}`)
      await client.quit().catch(() => client.disconnect())
    })
  }

  const dataDir = await mkdtemp(join(tmpdir(), 'auth-bench-'))
  cleanups.push(() => rm(dataDir, { recursive: true, force: true }))

  const partial: Omit<Results, 'rows'> = {
    version: 1,
    startedAt: new Date().toISOString(),
    wallSeconds: 0,
    machine,
    placement: { serviceCpus: placement.serviceCpus, generatorCpu: placement.generatorCpu, notes: placement.notes },
    options: { ...options, only: [...options.only], availableParallelism: availableParallelism() },
    stores: []
  }

  const context: StoreContext = {
    store: 'embedded',
    options,
    placement,
    runId,
    dataDir,
    usersExist: false,
    redisPrefix: options.redisUrl === undefined ? undefined : `${redisPrefix}svc:`,
    metricsToken: randomBytes(16).toString('hex')
  }

  const serviceWorkloads = ['me', 'refresh', 'login', 'mixed', 'reset'].some((w) => options.only.has(w as Workload))
  if (serviceWorkloads) {
    partial.stores.push(await benchStore(context))
    if (options.redisUrl !== undefined) {
      context.store = 'redis'
      const results = await benchStore(context)
      const keys = await keysUnder(redis!, context.redisPrefix!)
      results.serviceKeys = { keys: keys.length, withoutTtl: await keysWithoutTtl(redis!, keys) }
      await deleteKeysUnder(redis!, context.redisPrefix!)
      say(`${elapsed()} redis: the service left ${keys.length} keys, ${results.serviceKeys.withoutTtl} without a TTL; deleted`)
      partial.stores.push(results)
    }
  }

  if (options.only.has('memory')) {
    if (options.redisUrl === undefined) {
      say(`${elapsed()} memory: skipped (needs --redis or REDIS_URL)`)
    } else {
      phaseStart('redis: memory of 10 000 sessions through RedisSessionStore (MEMORY USAGE)')
      const memory = await measureRedisMemory(options.redisUrl, `${redisPrefix}mem:`)
      partial.redisMemory = memory
      phaseEnd(`redis: memory   ${memory.fresh.bytesPerSession.toFixed(0)} B/session fresh, ${memory.rotated.bytesPerSession.toFixed(0)} B/session ` +
        `after ${memory.rotated.rotations} rotations, ${memory.inGrace.bytesPerSession.toFixed(0)} B/session at most ` +
        `(${memory.inGrace.spentKept} rotations inside the grace; ${memory.keys} keys incl. user indexes), ${memory.keysWithoutTtl} keys without TTL`)
      const { sessionHash, userIndex, listpackValueLimit } = memory.breakdown
      say(`         session hash ${sessionHash.bytes.toFixed(0)} B (${sessionHash.encoding}; largest field "${sessionHash.largestField.name}" ` +
        `${sessionHash.largestField.bytes} B, listpack limit ${listpackValueLimit} B), user index ${userIndex.bytes.toFixed(0)} B (${userIndex.encoding})`)
    }
  }

  await cleanUp()
  partial.wallSeconds = (performance.now() - startedAt) / 1000
  const results: Results = { ...partial, rows: rowsOf(partial) }

  say('')
  say(formatTable(results.rows))
  say('')
  for (const note of placement.notes) say(`cores: ${note}`)
  say('Ratios are what to quote: absolute req/s depend on the machine and its neighbours. Targets are reported, not asserted.')

  await mkdir(options.out, { recursive: true })
  const stamp = results.startedAt.replace(/[:.]/g, '-')
  const json = JSON.stringify(results, null, 2) + '\n'
  const subtitle = `${machine.cpus} × ${machine.model}, Node ${machine.node}, ${options.duration} s per workload, ${results.startedAt.slice(0, 16).replace('T', ' ')} UTC`
  const svg = chartOf(results.rows, subtitle)
  await writeFile(join(options.out, `run-${stamp}.json`), json)
  await writeFile(join(options.out, 'latest.json'), json)
  await writeFile(join(options.out, 'latest.svg'), svg)
  say(`results: ${relative(projectRoot, join(options.out, 'latest.json'))} (and run-${stamp}.json), chart: ${relative(projectRoot, join(options.out, 'latest.svg'))}; ` +
    `${results.wallSeconds.toFixed(0)} s in all`)
}

try {
  await main()
} catch (error) {
  say(`\nbenchmark failed: ${error instanceof Error ? error.message : String(error)}`)
  await cleanUp()
  process.exitCode = 1
}
