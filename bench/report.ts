import { renderChart, type ChartRow } from './chart.js'
import type { HashLimitResult } from './hash-limit.js'
import type { Measurement } from './load.js'
import type { ProfileSummary } from './profile.js'
import type { RedisMemoryResult } from './redis-memory.js'

export type StoreName = 'embedded' | 'redis'

/** POST /auth/password-reset/request for the users' emails and for emails no account has: the two should cost the same. */
export interface ResetResults {
  /** Measured in slices alternating with each other's, on the same connections. */
  known: Measurement
  unknown: Measurement
  /** known / unknown: near 1.0 when the two paths cost the same. Server CPU per request is the least disturbed by neighbours. */
  ratios: { rps: number, p50: number, serverCpuPerRequest: number | undefined }
  connections: number
  /** A known and an unknown email got the same status and body (checked once, before the load). */
  sameAnswer: boolean
  /**
   * Before the load, the known addresses' link mails for the hour were spent
   * (written to the outbox): while measured, each known request's mail is
   * composed and queued, then dropped by the throttle.
   */
  allowance: { requests: number, mailsSent: number, seconds: number }
  /** While measured, from the service's metrics: what the known requests left to do off the request path. */
  background: { mailsSent: number, mailsThrottled: number, eventsRecorded: number, eventsDropped: number }
}

export interface StoreResults {
  store: StoreName
  /** `bare`: the bare route, measured in slices alternating with the workload's: its yardstick. */
  me?: Measurement & { bare: Measurement }
  refresh?: Measurement & { bare: Measurement, chains: number, restartedChains: number }
  hashLimit?: HashLimitResult
  login?: Measurement
  mixed?: { idle: Measurement, flood: Measurement, loginFlood: Measurement }
  reset?: ResetResults
  /** Keys the service left under its run's prefix, before they were deleted. */
  serviceKeys?: { keys: number, withoutTtl: number }
  profile?: { file: string, whole: ProfileSummary, phases: Record<string, ProfileSummary> }
}

/** Everything one `npm run bench` measured: written as JSON, drawn as SVG. */
export interface Results {
  version: 1
  startedAt: string
  wallSeconds: number
  machine: { cpus: number, model: string, node: string, platform: string }
  placement: { serviceCpus?: string | undefined, generatorCpu?: string | undefined, notes: string[] }
  options: Record<string, unknown>
  stores: StoreResults[]
  redisMemory?: RedisMemoryResult
  rows: Row[]
}

export interface Target {
  value: number
  direction: 'atLeast' | 'atMost'
}

/** One line of the table (and, with a target, one bar of the chart). */
export interface Row {
  key: string
  label: string
  rps?: number
  p50?: number
  p99?: number
  errors?: number
  non2xx?: number
  serverCpu?: number
  generatorCpu?: number
  /** CPU other processes took on the servers' cores meanwhile, in % of a core: the noise of a shared machine. */
  otherCpu?: number
  ratio?: number
  /** What the ratio is of, e.g. "bare", "hashing limit", "idle p99", "1 KiB". */
  ratioOf?: string
  target?: Target
  /** Drawn in the chart. */
  chart?: boolean
}

export const TARGETS = {
  me: { value: 0.5, direction: 'atLeast' },
  refreshRedis: { value: 0.15, direction: 'atLeast' },
  login: { value: 0.9, direction: 'atLeast' },
  floodP99: { value: 3, direction: 'atMost' },
  memory: { value: 1, direction: 'atMost' }
} satisfies Record<string, Target>

function measured (m: Measurement): Pick<Row, 'rps' | 'p50' | 'p99' | 'errors' | 'non2xx' | 'serverCpu' | 'generatorCpu' | 'otherCpu'> {
  const otherCpu = m.serverCoresBusy === undefined || m.serverCpu === undefined ? undefined : Math.max(0, m.serverCoresBusy - m.serverCpu)
  return { rps: m.rps, p50: m.p50, p99: m.p99, errors: m.errors, non2xx: m.non2xx, serverCpu: m.serverCpu, generatorCpu: m.generatorCpu, otherCpu }
}

/** The table's rows, ratios included, from one run's measurements. */
export function rowsOf (results: Omit<Results, 'rows'>): Row[] {
  const rows: Row[] = []
  for (const store of results.stores) {
    const s = store.store
    for (const [workload, label, target] of [
      ['me', 'GET /users/me', TARGETS.me],
      ['refresh', 'POST /auth/refresh (rotating)', s === 'redis' ? TARGETS.refreshRedis : undefined]
    ] as const) {
      const m = store[workload]
      if (m === undefined) continue
      rows.push({ key: `${s}/bare-${workload}`, label: `${s} · bare Fastify route (alternating with ${workload})`, ...measured(m.bare), ratio: 1, ratioOf: 'bare' })
      rows.push({
        key: `${s}/${workload}`,
        label: `${s} · ${label}`,
        ...measured(m),
        ratio: m.rps / m.bare.rps,
        ratioOf: 'bare',
        ...(target === undefined ? {} : { target }),
        chart: true
      })
    }
    if (store.hashLimit !== undefined) {
      const h = store.hashLimit
      rows.push({ key: `${s}/hash`, label: `${s} · argon2id hashing limit (${h.concurrency} at once)`, rps: h.perSecond, p50: h.p50Ms, p99: h.p99Ms, ratio: 1, ratioOf: 'hashing limit' })
    }
    if (store.login !== undefined) {
      rows.push({
        key: `${s}/login`,
        label: `${s} · POST /auth/login`,
        ...measured(store.login),
        ...(store.hashLimit === undefined ? {} : { ratio: store.login.rps / store.hashLimit.perSecond, ratioOf: 'hashing limit' }),
        target: TARGETS.login,
        chart: store.hashLimit !== undefined
      })
    }
    if (store.mixed !== undefined) {
      const { idle, flood, loginFlood } = store.mixed
      rows.push({ key: `${s}/me-idle`, label: `${s} · /users/me probe, idle`, ...measured(idle), ratio: 1, ratioOf: 'idle p99' })
      rows.push({
        key: `${s}/me-flood`,
        label: `${s} · /users/me probe, login flood`,
        ...measured(flood),
        ratio: idle.p99 === 0 ? 0 : flood.p99 / idle.p99,
        ratioOf: 'idle p99',
        target: TARGETS.floodP99,
        chart: true
      })
      rows.push({
        key: `${s}/login-flood`,
        label: `${s} · the login flood itself`,
        ...measured(loginFlood),
        ...(store.hashLimit === undefined ? {} : { ratio: loginFlood.rps / store.hashLimit.perSecond, ratioOf: 'hashing limit' })
      })
    }
    if (store.reset !== undefined) {
      // No target: the figure is how near 1.0 both ratios are (drawn against the 1.0 line).
      const { known, unknown, ratios } = store.reset
      rows.push({ key: `${s}/reset-unknown`, label: `${s} · reset request, unknown email`, ...measured(unknown), ratio: 1, ratioOf: 'unknown' })
      rows.push({ key: `${s}/reset-known`, label: `${s} · reset request, known email`, ...measured(known), ratio: ratios.rps, ratioOf: 'unknown', chart: true })
      rows.push({ key: `${s}/reset-known-p50`, label: `${s} · reset p50, known email`, ratio: ratios.p50, ratioOf: 'unknown p50', chart: true })
      if (ratios.serverCpuPerRequest !== undefined) {
        rows.push({ key: `${s}/reset-known-cpu`, label: `${s} · reset CPU, known email`, ratio: ratios.serverCpuPerRequest, ratioOf: 'unknown CPU/request' })
      }
    }
  }
  if (results.redisMemory !== undefined) {
    const m = results.redisMemory
    rows.push({
      key: 'redis/memory',
      label: `redis · memory per session (${m.sessions} sessions, rotated ${m.rotated.rotations}×)`,
      ratio: m.rotated.bytesPerSession / 1024,
      ratioOf: '1 KiB',
      target: TARGETS.memory,
      chart: true
    })
  }
  return rows
}

function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
}

/** Row by row, the median of every figure over several runs (ratios are the median of each run's ratio). */
export function medianRows (runs: Row[][]): Row[] {
  const keys = [...new Set(runs.flat().map((row) => row.key))]
  const numeric = ['rps', 'p50', 'p99', 'errors', 'non2xx', 'serverCpu', 'generatorCpu', 'otherCpu', 'ratio'] as const
  return keys.map((key) => {
    const rows = runs.map((run) => run.find((row) => row.key === key)).filter((row) => row !== undefined)
    const merged: Row = { ...rows[0]! }
    for (const field of numeric) {
      const values = rows.map((row) => row[field]).filter((value) => value !== undefined)
      if (values.length > 0) merged[field] = median(values)
      else delete merged[field]
    }
    return merged
  })
}

const fixed = (value: number | undefined, digits: number): string => value === undefined ? '' : value.toFixed(digits)
const whole = (value: number | undefined): string => value === undefined ? '' : Math.round(value).toLocaleString('en-US')

export function met (row: Row): boolean | undefined {
  if (row.target === undefined || row.ratio === undefined) return undefined
  return row.target.direction === 'atLeast' ? row.ratio >= row.target.value : row.ratio <= row.target.value
}

function ratioText (row: Row): string {
  if (row.ratio === undefined) return ''
  if (row.key === 'redis/memory') return `${Math.round(row.ratio * 1024)} B/session = ${row.ratio.toFixed(2)} KiB`
  return `${row.ratio.toFixed(2)}× ${row.ratioOf}`
}

function targetText (row: Row): string {
  if (row.target === undefined) return ''
  const sign = row.target.direction === 'atLeast' ? '≥' : '≤'
  const verdict = met(row)
  return `${sign} ${row.target.value}${verdict === undefined ? '' : verdict ? '  met' : '  MISSED'}`
}

/** A plain-text table; `markdown` for the README. */
export function formatTable (rows: Row[], { markdown = false } = {}): string {
  const header = ['workload', 'req/s', 'p50 ms', 'p99 ms', 'errors', 'non-2xx', 'CPU % svc/gen/other', 'ratio', 'target']
  const body = rows.map((row) => [
    row.label,
    whole(row.rps),
    fixed(row.p50, 2),
    fixed(row.p99, 2),
    row.errors === undefined ? '' : String(Math.round(row.errors)),
    row.non2xx === undefined ? '' : String(Math.round(row.non2xx)),
    row.serverCpu === undefined && row.generatorCpu === undefined ? '' : [row.serverCpu, row.generatorCpu, row.otherCpu].map((v) => whole(v) || '–').join('/'),
    ratioText(row),
    targetText(row)
  ])
  if (markdown) {
    const line = (cells: string[]): string => `| ${cells.join(' | ')} |`
    return [line(header), line(header.map((_, i) => (i === 0 || i >= 7 ? '---' : '---:'))), ...body.map(line)].join('\n')
  }
  const widths = header.map((title, i) => Math.max(title.length, ...body.map((cells) => cells[i]!.length)))
  const right = new Set([1, 2, 3, 4, 5, 6])
  const line = (cells: string[]): string => cells.map((cell, i) => right.has(i) ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)).join('  ').trimEnd()
  return [line(header), widths.map((w) => '─'.repeat(w)).join('  '), ...body.map(line)].join('\n')
}

/** The SVG chart of the rows that have a ratio worth drawing. */
export function chartOf (rows: Row[], subtitle: string): string {
  const bars: ChartRow[] = rows.filter((row) => row.chart === true && row.ratio !== undefined).map((row) => ({
    label: row.label.replace(' (rotating)', '').replace(/ \(\d+ sessions, rotated \d+×\)/, '').replace('/users/me probe, login flood', '/users/me p99, login flood'),
    value: row.ratio!,
    ...(row.target === undefined ? {} : { target: row.target }),
    text: ratioText(row)
  }))
  return renderChart('auth-service: npm run bench', subtitle, bars)
}
