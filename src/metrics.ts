import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type LabelValues } from 'prom-client'
import { MAIL_KINDS, type MailKind } from './mail-templates.js'
import type { RevocationKind } from './revocation-list.js'
import { SECURITY_EVENT_TYPES, type SecurityEventType } from './security-events.js'
import type { StoreTiming } from './store-timing.js'

/** How a login attempt ended (rate-limited attempts never reach the check: they show as 429s of the route). */
const LOGIN_OUTCOMES = ['succeeded', 'invalid_credentials', 'account_disabled', 'email_not_verified', 'busy', 'unavailable'] as const
export type LoginOutcome = typeof LOGIN_OUTCOMES[number]

/** How a refresh ended: `rotated` (a new refresh token), `refreshed` (rotation off), `grace` (a token rotated moments ago), or why it failed. */
const REFRESH_OUTCOMES = ['rotated', 'refreshed', 'grace', 'reused', 'expired', 'invalid', 'revoked', 'disabled', 'unavailable'] as const
export type RefreshOutcomeLabel = typeof REFRESH_OUTCOMES[number]

const REVOCATION_KINDS: RevocationKind[] = ['session', 'user', 'user_changed', 'user_roles']

/** What became of a mail: `sent`, `throttled` (its recipient had too many links this hour), `failed` (given up); `retried` counts failed attempts that will be tried again. */
const MAIL_OUTCOMES = ['sent', 'failed', 'throttled', 'retried'] as const
export type MailOutcome = typeof MAIL_OUTCOMES[number]

export type StoreName = 'postgres' | 'redis' | 'memory'

/** What the gauges read when Prometheus scrapes: the live state of parts other plugins own. */
export interface MetricSources {
  /** Hashes waiting for a thread. */
  hashingQueueDepth?: () => number
  /** Whether this instance hears every revocation (true without Redis: there is nobody else to hear from). */
  revocationFeedConnected?: () => boolean
  /** Security events recorded and not yet written. */
  securityEventsPending?: () => number
  /** Mails queued, being sent or waiting for a retry. */
  mailPending?: () => number
}

/**
 * The process's own metrics (CPU, memory, heap, event loop, GC), collected
 * once per process however many apps it runs (tests build many): each
 * collector starts observers that live as long as the process.
 */
let processRegistry: Registry | undefined

function processMetrics (): Registry {
  if (processRegistry === undefined) {
    processRegistry = new Registry()
    collectDefaultMetrics({ register: processRegistry })
  }
  return processRegistry
}

/** Latency buckets (seconds) of requests and store operations: a hot path answers in under a millisecond, a login in tens. */
const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

type RequestLabel = 'route' | 'method' | 'status'

/** One series of the request histogram, counted in place. */
interface RequestSeries {
  labels: Record<RequestLabel, string>
  /** Observations per bucket (not cumulative), the last one past every bound. */
  perBucket: Float64Array
  sum: number
  count: number
}

/**
 * The histogram of every request, recorded without allocating anything:
 * prom-client's own observe builds and hashes a label object each time, which
 * the bench showed as garbage-collection time on the hot path. Each series is
 * found once (by route, method and status) and counted in place; Prometheus
 * reads it as any histogram, the samples being built when it scrapes.
 */
class RequestHistogram extends Histogram<RequestLabel> {
  /** Series by route, method and status: three lookups, and no key to build. */
  readonly #series = new Map<string, Map<string, Map<number, RequestSeries>>>()

  constructor (private readonly bounds: number[], registers: Registry[]) {
    super({
      name: 'auth_http_request_duration_seconds',
      help: 'Requests by route pattern, method and status, and how long they took (its _count is the request count)',
      labelNames: ['route', 'method', 'status'],
      buckets: bounds,
      registers
    })
  }

  record (route: string, method: string, status: number, seconds: number): void {
    let byMethod = this.#series.get(route)
    if (byMethod === undefined) {
      byMethod = new Map()
      this.#series.set(route, byMethod)
    }
    let byStatus = byMethod.get(method)
    if (byStatus === undefined) {
      byStatus = new Map()
      byMethod.set(method, byStatus)
    }
    let series = byStatus.get(status)
    if (series === undefined) {
      series = { labels: { route, method, status: String(status) }, perBucket: new Float64Array(this.bounds.length + 1), sum: 0, count: 0 }
      byStatus.set(status, series)
    }
    let bucket = 0
    while (bucket < this.bounds.length && seconds > this.bounds[bucket]!) bucket++
    series.perBucket[bucket]! += 1
    series.sum += seconds
    series.count += 1
  }

  /**
   * What the registry writes out (and what get() reads): prom-client's own
   * samples of this histogram, none, and this one's. prom-client does not
   * declare the method in its types; test/routes/metrics.test.ts fails if an
   * upgrade stops the registry from reading a histogram through it.
   */
  async getForPromString (): ReturnType<Histogram<RequestLabel>['get']> {
    const metric = await (Histogram.prototype as unknown as { getForPromString: Histogram<RequestLabel>['get'] }).getForPromString.call(this)
    const { name } = metric
    for (const byMethod of this.#series.values()) {
      for (const byStatus of byMethod.values()) {
        for (const { labels, perBucket, sum, count } of byStatus.values()) {
          let cumulative = 0
          for (let bucket = 0; bucket <= this.bounds.length; bucket++) {
            cumulative += perBucket[bucket]!
            const le = bucket < this.bounds.length ? this.bounds[bucket]! : '+Inf'
            // `le` is the histogram's own label, which prom-client's types leave out of the series' labels.
            metric.values.push({ labels: { ...labels, le } as LabelValues<RequestLabel>, value: cumulative, metricName: `${name}_bucket` })
          }
          metric.values.push({ labels, value: sum, metricName: `${name}_sum` }, { labels, value: count, metricName: `${name}_count` })
        }
      }
    }
    return metric
  }
}

/**
 * The service's Prometheus metrics, on a registry of its own (several apps
 * in one process, as in tests, never mix their counts). Labels are bounded:
 * route patterns, methods, statuses, outcomes, operation names; never a
 * user, an email, an address or a raw URL.
 */
export class ServiceMetrics {
  /** This app's metrics, and the process's. */
  readonly registry: Registry
  readonly #requests: RequestHistogram
  readonly #logins: Counter<'outcome'>
  readonly #refreshes: Counter<'outcome'>
  readonly #revocations: Counter<'direction' | 'kind'>
  readonly #hashingWait: Histogram
  readonly #hashingRefused: Counter
  readonly #storeDuration: Histogram<'store' | 'operation'>
  readonly #storeErrors: Counter<'store' | 'operation'>
  readonly #feedCatchUp: Histogram
  readonly #events: Counter<'type'>
  readonly #eventWriteFailures: Counter
  readonly #eventsDropped: Counter
  readonly #mails: Counter<'kind' | 'outcome'>
  #sources: MetricSources = {}

  constructor () {
    const own = new Registry()
    const registers = [own]
    this.#requests = new RequestHistogram(LATENCY_BUCKETS, registers)
    this.#logins = new Counter({ name: 'auth_logins_total', help: 'Login attempts that reached the password check, by outcome', labelNames: ['outcome'], registers })
    this.#refreshes = new Counter({ name: 'auth_refreshes_total', help: 'Refreshes by outcome', labelNames: ['outcome'], registers })
    this.#revocations = new Counter({
      name: 'auth_revocations_total',
      help: 'Revocations this instance published, and received from the feed (its own included)',
      labelNames: ['direction', 'kind'],
      registers
    })
    this.#hashingWait = new Histogram({
      name: 'auth_password_hashing_wait_seconds',
      help: 'How long a password hash or check waited for a hashing thread',
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers
    })
    this.#hashingRefused = new Counter({ name: 'auth_password_hashing_refused_total', help: 'Hashes refused because the line was full (answered 429)', registers })
    const sources = (): MetricSources => this.#sources
    own.registerMetric(new Gauge({
      registers: [],
      name: 'auth_password_hashing_queue_depth',
      help: 'Password hashes and checks waiting for a hashing thread',
      collect () { this.set(sources().hashingQueueDepth?.() ?? 0) }
    }))
    this.#storeDuration = new Histogram({
      name: 'auth_store_operation_duration_seconds',
      help: 'Store operations (PostgreSQL queries, Redis or in-process session operations) and how long they took',
      labelNames: ['store', 'operation'],
      buckets: LATENCY_BUCKETS,
      registers
    })
    this.#storeErrors = new Counter({ name: 'auth_store_errors_total', help: 'Store operations that failed', labelNames: ['store', 'operation'], registers })
    own.registerMetric(new Gauge({
      registers: [],
      name: 'auth_revocation_feed_connected',
      help: '1 while this instance hears every revocation (Redis pub/sub subscribed and caught up), else 0',
      collect () { this.set((sources().revocationFeedConnected?.() ?? true) ? 1 : 0) }
    }))
    this.#feedCatchUp = new Histogram({
      name: 'auth_revocation_feed_catch_up_seconds',
      help: 'From losing the revocation feed to having read what was missed: how long this instance may have accepted revoked tokens',
      buckets: [0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers
    })
    this.#events = new Counter({ name: 'auth_security_events_total', help: 'Security events recorded, by type', labelNames: ['type'], registers })
    this.#eventWriteFailures = new Counter({ name: 'auth_security_event_write_failures_total', help: 'Batches of security events the database refused (kept and retried)', registers })
    this.#eventsDropped = new Counter({ name: 'auth_security_events_dropped_total', help: 'Security events dropped because too many were waiting for the database', registers })
    own.registerMetric(new Gauge({
      registers: [],
      name: 'auth_security_events_pending',
      help: 'Security events recorded and not yet written to the database',
      collect () { this.set(sources().securityEventsPending?.() ?? 0) }
    }))
    this.#mails = new Counter({ name: 'auth_mails_total', help: 'Mails by kind and outcome (retried: a failed attempt that will be tried again)', labelNames: ['kind', 'outcome'], registers })
    own.registerMetric(new Gauge({
      registers: [],
      name: 'auth_mail_pending',
      help: 'Mails queued, being sent or waiting for a retry (lost if the process dies; graceful shutdown tries each once more)',
      collect () { this.set(sources().mailPending?.() ?? 0) }
    }))
    this.#startAtZero()
    this.registry = Registry.merge([processMetrics(), own])
  }

  /**
   * Every series whose labels are known in advance starts at 0, so a rate or
   * an alert on it has data before the first event (a counter that appears
   * only at its first increment hides that increment from rate()).
   */
  #startAtZero (): void {
    for (const outcome of LOGIN_OUTCOMES) this.#logins.inc({ outcome }, 0)
    for (const outcome of REFRESH_OUTCOMES) this.#refreshes.inc({ outcome }, 0)
    for (const direction of ['published', 'received'] as const) {
      for (const kind of REVOCATION_KINDS) this.#revocations.inc({ direction, kind }, 0)
    }
    for (const type of SECURITY_EVENT_TYPES) this.#events.inc({ type }, 0)
    for (const kind of MAIL_KINDS) {
      for (const outcome of MAIL_OUTCOMES) this.#mails.inc({ kind, outcome }, 0)
    }
  }

  /** Tells the gauges where to read from; each plugin adds what it owns. */
  watch (sources: MetricSources): void {
    this.#sources = { ...this.#sources, ...sources }
  }

  request (route: string, method: string, status: number, seconds: number): void {
    this.#requests.record(route, method, status, seconds)
  }

  login (outcome: LoginOutcome): void {
    this.#logins.inc({ outcome })
  }

  refresh (outcome: RefreshOutcomeLabel): void {
    this.#refreshes.inc({ outcome })
  }

  revocation (direction: 'published' | 'received', kind: RevocationKind): void {
    this.#revocations.inc({ direction, kind })
  }

  hashingWaited (seconds: number): void {
    this.#hashingWait.observe(seconds)
  }

  hashingRefused (): void {
    this.#hashingRefused.inc()
  }

  /** The timing callback of one store. */
  storeTiming (store: StoreName): StoreTiming {
    return (operation, seconds, failed) => {
      this.#storeDuration.observe({ store, operation }, seconds)
      if (failed) this.#storeErrors.inc({ store, operation })
    }
  }

  feedCaughtUp (seconds: number): void {
    this.#feedCatchUp.observe(seconds)
  }

  securityEventRecorded (type: SecurityEventType): void {
    this.#events.inc({ type })
  }

  securityEventWriteFailed (): void {
    this.#eventWriteFailures.inc()
  }

  securityEventsDropped (count: number): void {
    this.#eventsDropped.inc(count)
  }

  mail (kind: MailKind, outcome: MailOutcome): void {
    this.#mails.inc({ kind, outcome })
  }

  /** The Prometheus text exposition of every metric. */
  async exposition (): Promise<{ contentType: string, text: string }> {
    return { contentType: this.registry.contentType, text: await this.registry.metrics() }
  }
}
