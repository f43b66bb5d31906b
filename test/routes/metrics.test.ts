import { randomUUID } from 'node:crypto'
import type { FastifyInstance, HTTPMethods } from 'fastify'
import t from 'tap'
import { SECURITY_EVENT_TYPES } from '../../src/security-events.js'
import { parsePrometheusText, sampleValue, samplesOf, type MetricFamily } from '../fixtures/prometheus-text.js'
import {
  BACKENDS, FakeClock, PASSWORD, assertErrorShape, buildTestApp, eventually, freshEmail, logIn, signUp, signUpAndLogIn, type SignedIn
} from '../helpers.js'

/*
 * GET /metrics (routes/metrics.ts, src/metrics.ts) on every backend: who may
 * scrape it, that a scraper can read all of it, that a scripted flow moves
 * each family by exactly what it did (read before and after, compare), that
 * no label names a user, a session or a raw URL, and that apps in one
 * process keep counts of their own. The tests of a backend share one app
 * (its clock a FakeClock, which the flow moves past the reuse grace and the
 * refresh lifetime).
 */

const METRICS_TOKEN = 'metrics-token-for-tests-0123456789'
const BEARER = `Bearer ${METRICS_TOKEN}`

const getMetrics = (app: FastifyInstance, authorization?: string) =>
  app.inject({ method: 'GET', url: '/metrics', headers: authorization === undefined ? {} : { authorization } })

/** One scrape, parsed (the reader throws on anything a scraper would refuse). */
async function scrape (app: FastifyInstance): Promise<MetricFamily[]> {
  const response = await getMetrics(app, BEARER)
  if (response.statusCode !== 200) throw new Error(`scrape refused: ${response.statusCode} ${response.body}`)
  return parsePrometheusText(response.body)
}

/** How much a sample moved between two scrapes (summed over the labels not given). */
const movedBetween = (before: MetricFamily[], after: MetricFamily[]) =>
  (name: string, labels: Record<string, string> = {}): number => sampleValue(after, name, labels) - sampleValue(before, name, labels)

/** The claims of an access token (its session id, its user id). */
const claimsOf = (token: string): { sub: string, sid: string } => JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString())

const SERVICE_FAMILIES = {
  auth_http_request_duration_seconds: 'histogram',
  auth_logins_total: 'counter',
  auth_refreshes_total: 'counter',
  auth_revocations_total: 'counter',
  auth_password_hashing_wait_seconds: 'histogram',
  auth_password_hashing_refused_total: 'counter',
  auth_password_hashing_queue_depth: 'gauge',
  auth_store_operation_duration_seconds: 'histogram',
  auth_store_errors_total: 'counter',
  auth_revocation_feed_connected: 'gauge',
  auth_revocation_feed_catch_up_seconds: 'histogram',
  auth_security_events_total: 'counter',
  auth_security_event_write_failures_total: 'counter',
  auth_security_events_dropped_total: 'counter',
  auth_security_events_pending: 'gauge',
  // Some of prom-client's process metrics, as a sign that they are served at all.
  process_cpu_seconds_total: 'counter',
  process_resident_memory_bytes: 'gauge',
  nodejs_eventloop_lag_seconds: 'gauge',
  nodejs_heap_size_used_bytes: 'gauge'
}

/** What is wrong with a histogram's series: buckets must be cumulative, +Inf last, and +Inf equal to _count. */
function histogramProblems (family: MetricFamily): string[] {
  const problems: string[] = []
  const seriesKey = (labels: Record<string, string>) => JSON.stringify(Object.entries(labels).filter(([name]) => name !== 'le').sort())
  const buckets = new Map<string, Array<{ le: number, value: number }>>()
  for (const sample of family.samples.filter((sample) => sample.name === `${family.name}_bucket`)) {
    const key = seriesKey(sample.labels)
    buckets.set(key, [...buckets.get(key) ?? [], { le: sample.labels.le === '+Inf' ? Infinity : Number(sample.labels.le), value: sample.value }])
  }
  for (const count of family.samples.filter((sample) => sample.name === `${family.name}_count`)) {
    const key = seriesKey(count.labels)
    const series = buckets.get(key) ?? []
    if (series.at(-1)?.le !== Infinity || series.at(-1)?.value !== count.value) problems.push(`${family.name}${key}: +Inf bucket is not _count`)
    if (series.some((bucket, index) => index > 0 && (bucket.le <= series[index - 1]!.le || bucket.value < series[index - 1]!.value))) {
      problems.push(`${family.name}${key}: buckets not cumulative`)
    }
  }
  return problems
}

t.test('the exposition reader takes escapes, +Inf and NaN, and refuses what a scraper would', async (t) => {
  const families = parsePrometheusText([
    '# HELP a_total A \\\\ help\\non two lines',
    '# TYPE a_total counter',
    'a_total{path="C:\\\\dir",quote="say \\"hi\\"",lines="one\\ntwo"} 3',
    'a_total{path="x",} 1e3 1700000000000',
    '# TYPE h histogram',
    'h_bucket{le="0.5"} 1',
    'h_bucket{le="+Inf"} 2',
    'h_sum NaN',
    'h_count 2',
    'g -Inf',
    // As prom-client writes a NaN: Prometheus reads it (Go's ParseFloat ignores case).
    'n Nan',
    ''
  ].join('\n'))
  t.strictSame(families.map(({ name, type, help }) => ({ name, type, help })), [
    { name: 'a_total', type: 'counter', help: 'A \\ help\non two lines' },
    { name: 'h', type: 'histogram', help: undefined },
    { name: 'g', type: undefined, help: undefined },
    { name: 'n', type: undefined, help: undefined }
  ])
  t.strictSame(families[0]!.samples[0]!.labels, { path: 'C:\\dir', quote: 'say "hi"', lines: 'one\ntwo' }, 'escaped backslash, quote and line feed')
  t.equal(families[0]!.samples[1]!.timestamp, 1700000000000)
  t.ok(Number.isNaN(sampleValue(families, 'h_sum')) && Number.isNaN(sampleValue(families, 'n')), 'NaN, Nan')
  t.equal(sampleValue(families, 'g'), -Infinity)
  t.equal(sampleValue(families, 'h_bucket', { le: '+Inf' }), 2)
  t.equal(sampleValue(families, 'a_total'), 1003, 'summed over the labels not given')
  t.equal(sampleValue(families, 'a_total', { path: 'x' }), 1000)
  t.equal(sampleValue(families, 'a_total', { path: 'y' }), 0, 'no such series: 0')

  const malformed: Record<string, string> = {
    'an unclosed label value': 'a{b="c} 1',
    'an unknown escape': 'a{b="\\t"} 1',
    'a label twice': 'a{b="c",b="d"} 1',
    'an unquoted label value': 'a{b=c} 1',
    'no value': 'a',
    'a value that is no float': 'a one',
    'a hexadecimal value': 'a 0x10',
    'a word for a value': 'a nah',
    'a field too many': 'a 1 2 3',
    'a bad timestamp': 'a 1 soon',
    'an invalid metric name': '1a 1',
    'a second TYPE': '# TYPE a counter\n# TYPE a counter',
    'an unknown type': '# TYPE a whatever',
    'a TYPE after its samples': 'a 1\n# TYPE a counter',
    'a family split by another': 'a 1\nb 1\na 2',
    'a histogram split by another': '# TYPE h histogram\nh_count 1\nb 1\nh_sum 1',
    'the same series twice': 'a{x="1"} 1\na{x="1"} 2',
    'a bucket without le': '# TYPE h histogram\nh_bucket 1',
    'a plain sample in a histogram': '# TYPE h histogram\nh 1',
    'an unknown escape in HELP': '# HELP a a \\q'
  }
  for (const [why, text] of Object.entries(malformed)) t.throws(() => parsePrometheusText(`${text}\n`), why)
})

for (const backend of BACKENDS) {
  t.test(backend.name, { skip: backend.skip }, async (t) => {
    const storage = { realDatabase: backend.realDatabase, realRedis: backend.realRedis }
    const sessionStore = backend.realRedis ? 'redis' : 'memory'
    const clock = new FakeClock()
    const app = await buildTestApp(t, { ...storage, clock, env: { METRICS_TOKEN } })
    const post = (url: string, payload: object) => app.inject({ method: 'POST', url, payload })

    t.test('off (404 NOT_FOUND) unless METRICS_TOKEN is set, whatever the bearer', async (t) => {
      const off = await buildTestApp(t, storage)
      assertErrorShape(t, await getMetrics(off), 404, 'NOT_FOUND', 'no bearer')
      assertErrorShape(t, await getMetrics(off, BEARER), 404, 'NOT_FOUND', 'a bearer')
    })

    t.test('only METRICS_TOKEN is let in: 401 without it or with anything else', async (t) => {
      const missing = await getMetrics(app)
      assertErrorShape(t, missing, 401, 'ACCESS_TOKEN_MISSING', 'no Authorization')
      t.equal(missing.headers['www-authenticate'], 'Bearer')
      assertErrorShape(t, await getMetrics(app, `Basic ${Buffer.from(`prometheus:${METRICS_TOKEN}`).toString('base64')}`), 401, 'ACCESS_TOKEN_MISSING', 'another scheme')

      const { accessToken } = await signUpAndLogIn(app, 'scraper')
      const wrong = {
        'a token of the same length': `${METRICS_TOKEN.slice(0, -1)}${METRICS_TOKEN.endsWith('x') ? 'y' : 'x'}`,
        'the token and more': `${METRICS_TOKEN}x`,
        'the token but its last byte': METRICS_TOKEN.slice(0, -1),
        "a user's access token": accessToken
      }
      for (const [why, token] of Object.entries(wrong)) {
        const response = await getMetrics(app, `Bearer ${token}`)
        assertErrorShape(t, response, 401, 'ACCESS_TOKEN_INVALID', why)
        t.equal(response.headers['www-authenticate'], 'Bearer error="invalid_token"', `${why}: WWW-Authenticate`)
      }

      const ok = await getMetrics(app, BEARER)
      t.equal(ok.statusCode, 200)
      t.equal(ok.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8')
      t.equal(ok.headers['cache-control'], 'no-store')
      // Refused scrapes are requests like any other: counted under the route, with their status.
      const families = await scrape(app)
      t.equal(sampleValue(families, 'auth_http_request_duration_seconds_count', { route: '/metrics', method: 'GET', status: '401' }), 6)
    })

    t.test('a scraper reads all of it: every family with HELP and TYPE, histograms consistent', async (t) => {
      const families = await scrape(app)
      t.strictSame(families.filter((family) => family.help === undefined || family.help === '' || family.type === undefined).map((family) => family.name), [],
        'every family has HELP and TYPE')
      const types = Object.fromEntries(families.map((family) => [family.name, family.type]))
      t.strictSame(Object.fromEntries(Object.keys(SERVICE_FAMILIES).map((name) => [name, types[name]])), SERVICE_FAMILIES, 'the families and their types')
      t.strictSame(families.filter((family) => family.type === 'histogram').flatMap(histogramProblems), [])
    })

    t.test('/health reports the revocation feed, the gauge says it is connected, /health/live needs nothing', async (t) => {
      t.equal(sampleValue(await scrape(app), 'auth_revocation_feed_connected'), 1)
      const health = await app.inject({ method: 'GET', url: '/health' })
      t.equal(health.statusCode, 200)
      const expected = backend.realRedis ? 'ok' : 'disabled'
      t.strictSame(health.json(), { status: 'ok', checks: { database: 'ok', redis: expected, revocationFeed: expected } })
      for (const headers of [{}, { authorization: 'Bearer garbage' }]) {
        const live = await app.inject({ method: 'GET', url: '/health/live', headers })
        t.equal(live.statusCode, 200)
        t.strictSame(live.json(), { status: 'ok' })
      }
    })

    /** What the flow below touched, for the label scan after it. */
    const seen = { emails: [] as string[], userIds: [] as string[], sessionIds: [] as string[], urls: [] as string[] }

    t.test('a scripted flow moves each family by what it did', async (t) => {
      // Made once per hasher (the file's apps share one): made before counting, so the count of hashing tasks is exact.
      await app.passwords.verifyAgainstDecoy('warm-up')
      const before = await scrape(app)

      const email = await signUp(app, 'metrics')
      const first = await logIn(app, email)
      assertErrorShape(t, await post('/auth/login', { email, password: 'not the password' }), 401, 'INVALID_CREDENTIALS', 'a wrong password')
      const stranger = freshEmail('nobody')
      assertErrorShape(t, await post('/auth/login', { email: stranger, password: PASSWORD }), 401, 'INVALID_CREDENTIALS', 'an unknown email')

      t.equal((await post('/auth/refresh', { refreshToken: first.refreshToken })).statusCode, 200, 'rotated')
      t.equal((await post('/auth/refresh', { refreshToken: first.refreshToken })).statusCode, 200, 'the spent token again, within the grace')
      clock.advance(11_000) // past REFRESH_REUSE_GRACE (10 s)
      assertErrorShape(t, await post('/auth/refresh', { refreshToken: first.refreshToken }), 401, 'REFRESH_TOKEN_REUSED', 'the spent token after the grace')
      assertErrorShape(t, await post('/auth/refresh', { refreshToken: 'garbage' }), 401, 'REFRESH_TOKEN_INVALID', 'garbage')

      const second = await logIn(app, email)
      t.equal((await post('/auth/logout', { refreshToken: second.refreshToken })).statusCode, 204)
      assertErrorShape(t, await post('/auth/refresh', { refreshToken: second.refreshToken }), 401, 'REFRESH_TOKEN_REVOKED', 'after logout')

      const third = await logIn(app, email)
      const fourth = await logIn(app, email)
      const bearer = { authorization: `Bearer ${fourth.accessToken}` }
      const ended = await app.inject({ method: 'DELETE', url: `/auth/sessions/${claimsOf(third.accessToken).sid}`, headers: bearer })
      t.equal(ended.statusCode, 204, 'DELETE /auth/sessions/:id')
      assertErrorShape(t, await app.inject({ method: 'DELETE', url: `/auth/sessions/${randomUUID()}`, headers: bearer }), 404, 'NOT_FOUND', 'no such session')
      const me = await app.inject({ method: 'GET', url: '/users/me', headers: bearer })
      t.equal(me.statusCode, 200)

      // No route has these URLs (there is no GET of a session): they count as unmatched, never by their URL.
      const unmatched = [`/nowhere/${claimsOf(fourth.accessToken).sid}`, `/auth/sessions/${claimsOf(fourth.accessToken).sid}`]
      for (const url of unmatched) t.equal((await app.inject({ method: 'GET', url, headers: bearer })).statusCode, 404, `GET ${url}`)

      clock.advance(15 * 24 * 3600_000) // past REFRESH_TOKEN_TTL (14 days)
      assertErrorShape(t, await post('/auth/refresh', { refreshToken: fourth.refreshToken }), 401, 'REFRESH_TOKEN_EXPIRED', 'past its lifetime')

      await app.securityEvents.flush()
      const after = await scrape(app)
      const moved = movedBetween(before, after)
      const pairs: SignedIn[] = [first, second, third, fourth]
      seen.emails.push(email, stranger)
      seen.userIds.push(me.json().id)
      seen.sessionIds.push(...pairs.map((pair) => claimsOf(pair.accessToken).sid))
      seen.urls.push(...unmatched)

      // [route, method, status, requests]; the one GET /metrics is the scrape before (a request counts once answered).
      const requests: Array<[string, string, number, number]> = [
        ['/auth/signup', 'POST', 201, 1],
        ['/auth/login', 'POST', 200, 4],
        ['/auth/login', 'POST', 401, 2],
        ['/auth/refresh', 'POST', 200, 2],
        ['/auth/refresh', 'POST', 401, 4],
        ['/auth/logout', 'POST', 204, 1],
        ['/auth/sessions/:id', 'DELETE', 204, 1],
        ['/auth/sessions/:id', 'DELETE', 404, 1],
        ['/users/me', 'GET', 200, 1],
        ['unmatched', 'GET', 404, 2],
        ['/metrics', 'GET', 200, 1]
      ]
      const line = (route: string, method: string, status: number, count: number) => `${method} ${route} ${status}: ${count}`
      t.strictSame(
        requests.map(([route, method, status]) => line(route, method, status, moved('auth_http_request_duration_seconds_count', { route, method, status: String(status) }))),
        requests.map(([route, method, status, count]) => line(route, method, status, count)),
        'requests by route pattern, method and status')
      t.equal(moved('auth_http_request_duration_seconds_count'), 20, 'and no other request')

      const outcomes = (name: string, labels: string[]) => Object.fromEntries(labels.map((outcome) => [outcome, moved(name, { outcome })]))
      t.strictSame(outcomes('auth_logins_total', ['succeeded', 'invalid_credentials', 'busy', 'unavailable']),
        { succeeded: 4, invalid_credentials: 2, busy: 0, unavailable: 0 }, 'logins by outcome')
      t.strictSame(outcomes('auth_refreshes_total', ['rotated', 'refreshed', 'grace', 'reused', 'expired', 'invalid', 'revoked', 'unavailable']),
        { rotated: 1, refreshed: 0, grace: 1, reused: 1, expired: 1, invalid: 1, revoked: 1, unavailable: 0 }, 'refreshes by outcome')
      t.equal(moved('auth_revocations_total', { direction: 'published', kind: 'session' }), 3, 'revocations published: the reuse, the logout, the DELETE')
      t.equal(moved('auth_revocations_total', { direction: 'published' }), 3, 'of sessions only')

      // A signup's hash, and six password checks (an unknown email's against the decoy).
      t.equal(moved('auth_password_hashing_wait_seconds_count'), 7, 'one hashing wait per hash or check')
      t.equal(moved('auth_password_hashing_refused_total'), 0)

      const operations = (store: string, names: string[]) => Object.fromEntries(names.map((operation) =>
        [operation, moved('auth_store_operation_duration_seconds_count', { store, operation })]))
      t.strictSame(operations('postgres', ['createUser', 'userByEmail']), { createUser: 1, userByEmail: 6 }, 'PostgreSQL queries by operation')
      t.ok(moved('auth_store_operation_duration_seconds_count', { store: 'postgres', operation: 'insertEvents' }) >= 1, 'the events written')
      // Refresh reaches the store unless the token does not even parse (garbage).
      t.strictSame(operations(sessionStore, ['create', 'refresh']), { create: 4, refresh: 5 }, `${sessionStore} session operations`)
      t.strictSame([...new Set(samplesOf(after, 'auth_store_operation_duration_seconds_count').map((sample) => sample.labels.store))].sort(),
        ['postgres', sessionStore].sort(), 'no other store')
      t.equal(moved('auth_store_errors_total'), 0, 'no store failed')

      const events = ['signup', 'login', 'login_failed', 'refresh_reuse_detected', 'logout', 'session_revoked']
      t.strictSame(Object.fromEntries(events.map((type) => [type, moved('auth_security_events_total', { type })])),
        { signup: 1, login: 4, login_failed: 2, refresh_reuse_detected: 1, logout: 1, session_revoked: 1 }, 'security events by type')
      t.equal(moved('auth_security_events_total'), 10, 'and no other')
      t.equal(sampleValue(after, 'auth_security_events_pending'), 0, 'nothing pending once flushed')
      t.equal(moved('auth_security_event_write_failures_total') + moved('auth_security_events_dropped_total'), 0)

      if (backend.realRedis) {
        // This instance hears its own revocations back from the feed, a moment after publishing them.
        let received = 0
        t.ok(await eventually(async () => {
          received = movedBetween(before, await scrape(app))('auth_revocations_total', { direction: 'received', kind: 'session' })
          return received >= 3
        }), 'the feed delivers them back')
        t.equal(received, 3, 'each once')
      } else {
        t.equal(moved('auth_revocations_total', { direction: 'received' }), 0, 'no feed: nothing received')
      }
    })

    t.test('no label names a user, an email, a session or a raw URL', async (t) => {
      t.ok(seen.sessionIds.length > 0 && seen.emails.length > 0, 'the flow ran')
      const families = await scrape(app)
      const labelled = families.flatMap((family) => family.samples).flatMap((sample) => Object.values(sample.labels))
      const personal = [...seen.emails, ...seen.userIds, ...seen.sessionIds, ...seen.urls].map((text) => text.toLowerCase())
      t.strictSame(labelled.filter((value) => personal.some((text) => value.toLowerCase().includes(text))), [], 'none of what the flow used')
      t.strictSame(labelled.filter((value) => value.includes('@') || /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-/i.test(value)), [], 'no email or UUID at all')
      // Every route label is a route's own pattern (or "unmatched"): never a URL.
      const routes = samplesOf(families, 'auth_http_request_duration_seconds_count')
        .filter(({ labels }) => labels.route !== 'unmatched' && !app.hasRoute({ method: labels.method as HTTPMethods, url: labels.route! }))
        .map(({ labels }) => `${labels.method} ${labels.route}`)
      t.strictSame(routes, [], 'route labels are route patterns')
      t.ok(samplesOf(families, 'auth_http_request_duration_seconds_count', { route: '/auth/sessions/:id' }).length > 0, 'a parameterized route shows as its pattern')
    })
  })
}

t.test('two apps in one process keep counts of their own', async (t) => {
  const one = await buildTestApp(t, { env: { METRICS_TOKEN } })
  const other = await buildTestApp(t, { env: { METRICS_TOKEN } })
  const before = { one: await scrape(one), other: await scrape(other) }
  await signUpAndLogIn(one, 'one-of-two')
  t.equal((await one.inject({ method: 'GET', url: '/nowhere' })).statusCode, 404)
  const moved = { one: movedBetween(before.one, await scrape(one)), other: movedBetween(before.other, await scrape(other)) }

  // The password-hashing histogram is left out: both apps observe the one hasher tests share (fastPasswordHasher).
  const counts = (move: ReturnType<typeof movedBetween>) => ({
    signups: move('auth_http_request_duration_seconds_count', { route: '/auth/signup' }),
    unmatched: move('auth_http_request_duration_seconds_count', { route: 'unmatched' }),
    scrapes: move('auth_http_request_duration_seconds_count', { route: '/metrics' }),
    logins: move('auth_logins_total', { outcome: 'succeeded' }),
    events: move('auth_security_events_total'),
    sessionsCreated: move('auth_store_operation_duration_seconds_count', { operation: 'create' })
  })
  t.strictSame(counts(moved.one), { signups: 1, unmatched: 1, scrapes: 1, logins: 1, events: 2, sessionsCreated: 1 }, 'the app that served them')
  t.strictSame(counts(moved.other), { signups: 0, unmatched: 0, scrapes: 1, logins: 0, events: 0, sessionsCreated: 0 }, 'the other: only its own scrape')
})

t.test('a fresh app shows every outcome, revocation kind and event type at 0: rate() and alerts have data before the first', async (t) => {
  const families = await scrape(await buildTestApp(t, { env: { METRICS_TOKEN } }))
  const series = (name: string, ...labels: string[]) => samplesOf(families, name).map((sample) => labels.map((label) => sample.labels[label]).join(' ')).sort()
  const zeros = (name: string) => samplesOf(families, name).filter((sample) => sample.value !== 0).map((sample) => JSON.stringify(sample.labels))
  t.strictSame(series('auth_logins_total', 'outcome'), ['account_disabled', 'busy', 'email_not_verified', 'invalid_credentials', 'succeeded', 'unavailable'])
  t.strictSame(series('auth_refreshes_total', 'outcome'),
    ['disabled', 'expired', 'grace', 'invalid', 'refreshed', 'reused', 'revoked', 'rotated', 'unavailable'])
  t.strictSame(series('auth_revocations_total', 'direction', 'kind'), [
    'published session', 'published user', 'published user_changed', 'published user_roles',
    'received session', 'received user', 'received user_changed', 'received user_roles'
  ])
  t.strictSame(series('auth_security_events_total', 'type'), [...SECURITY_EVENT_TYPES].sort())
  t.strictSame(['auth_logins_total', 'auth_refreshes_total', 'auth_revocations_total', 'auth_security_events_total'].flatMap(zeros), [], 'all at 0')
})
