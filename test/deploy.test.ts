import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, posix } from 'node:path'
import t, { type Test } from 'tap'
import { parse, stringify } from 'yaml'
import { MAIL_KINDS } from '../src/mail-templates.js'
import type { LoginOutcome, MailOutcome, RefreshOutcomeLabel, ServiceMetrics, StoreName } from '../src/metrics.js'
import { projectRoot } from '../src/paths.js'
import type { RevocationKind } from '../src/revocation-list.js'
import { SECURITY_EVENT_TYPES } from '../src/security-events.js'
import { parsePrometheusText } from './fixtures/prometheus-text.js'
import { buildTestApp, signUpAndLogIn } from './helpers.js'

/*
 * The operator's files against the service itself: every metric that a panel
 * of deploy/grafana/dashboards or a rule of deploy/prometheus/alerts.yml
 * queries is one a real scrape of /metrics shows, every label value they
 * match is one the code produces, and docker-compose.yml and
 * deploy/prometheus/prometheus.yml agree on what is scraped, where and with
 * which token. A renamed metric or outcome fails here, not as a blank panel or
 * an alert that can never fire. Where promtool is installed, Prometheus's own
 * parser also reads every expression, and the unit tests of
 * deploy/prometheus/alerts.test.yml run.
 */

const METRICS_TOKEN = 'x'.repeat(24)
/** What every panel names as its data source: the dashboard's variable, so one file serves any Prometheus. */
const DATASOURCE_VARIABLE = '${datasource}' // eslint-disable-line no-template-curly-in-string

// Every value of each label, as the types of src/metrics.ts define them: a Record
// must name each member of its key type, and nothing else, or this file stops compiling.
const LOGIN_OUTCOMES: Record<LoginOutcome, true> = { succeeded: true, invalid_credentials: true, account_disabled: true, email_not_verified: true, busy: true, unavailable: true }
const MAIL_OUTCOMES: Record<MailOutcome, true> = { sent: true, failed: true, throttled: true, retried: true }
const REFRESH_OUTCOMES: Record<RefreshOutcomeLabel, true> = {
  rotated: true, refreshed: true, grace: true, reused: true, expired: true, invalid: true, revoked: true, disabled: true, unavailable: true
}
const REVOCATION_DIRECTIONS: Record<Parameters<ServiceMetrics['revocation']>[0], true> = { published: true, received: true }
const REVOCATION_KINDS: Record<RevocationKind, true> = { session: true, user: true, user_changed: true, user_roles: true }
const STORES: Record<StoreName, true> = { postgres: true, redis: true, memory: true }
const keys = (record: Record<string, true>): string[] => Object.keys(record)

/** The labels whose values the files match on, and what each metric family can carry in them. */
const CHECKED_LABELS = new Set(['outcome', 'store', 'direction', 'kind', 'type'])
const LABEL_VALUES: Record<string, Record<string, readonly string[]>> = {
  auth_logins_total: { outcome: keys(LOGIN_OUTCOMES) },
  auth_mails_total: { kind: MAIL_KINDS, outcome: keys(MAIL_OUTCOMES) },
  auth_refreshes_total: { outcome: keys(REFRESH_OUTCOMES) },
  auth_revocations_total: { direction: keys(REVOCATION_DIRECTIONS), kind: keys(REVOCATION_KINDS) },
  auth_store_operation_duration_seconds: { store: keys(STORES) },
  auth_store_errors_total: { store: keys(STORES) },
  auth_security_events_total: { type: SECURITY_EVENT_TYPES }
}

/** Labels Prometheus itself adds to every scraped series. */
const TARGET_LABELS = ['instance', 'job']

const read = (path: string): string => readFileSync(join(projectRoot, path), 'utf8')
// Merge keys (`<<: *auth-service`) are YAML 1.1; docker compose reads them.
const readYaml = <T>(path: string): T => parse(read(path), { merge: true }) as T

// ---- the scrape --------------------------------------------------------------------------

interface Exposition {
  /** Family name to its type (counter, gauge, histogram, summary, untyped). */
  types: Map<string, string>
  /** Family name to the label names and values its samples carry. */
  labels: Map<string, Map<string, Set<string>>>
  /** Whether the app has a route of this pattern (the `route` label's values). */
  hasRoute: (pattern: string) => boolean
}

/** The families of a Prometheus text exposition (read strictly, as a scraper would), and the labels of their samples. */
function readExposition (text: string): Omit<Exposition, 'hasRoute'> {
  const families = parsePrometheusText(text)
  const types = new Map(families.map((family): [string, string] => [family.name, family.type ?? 'untyped']))
  const labels = new Map(families.map((family): [string, Map<string, Set<string>>] => {
    const byName = new Map<string, Set<string>>()
    for (const [name, value] of family.samples.flatMap((sample) => Object.entries(sample.labels))) {
      byName.set(name, (byName.get(name) ?? new Set()).add(value))
    }
    return [family.name, byName]
  }))
  return { types, labels }
}

/** The family a series name belongs to: itself, or a histogram's (or summary's) _bucket, _count or _sum. */
function familyOf (series: string, types: Map<string, string>): string | undefined {
  const type = types.get(series)
  // A classic histogram has no series of the family's own name.
  if (type !== undefined) return type === 'histogram' ? undefined : series
  const match = /^(.+)_(bucket|count|sum)$/.exec(series)
  if (match === null) return undefined
  const [, family, suffix] = match
  const familyType = types.get(family!)
  if (familyType === 'histogram' || (familyType === 'summary' && suffix !== 'bucket')) return family
  return undefined
}

/** The service after a small flow (a login, a rotation, a reuse, a failed login), scraped as Prometheus would. */
async function scrape (t: Test): Promise<Exposition> {
  // No grace: presenting a spent token again is reuse at once.
  const app = await buildTestApp(t, { env: { METRICS_TOKEN, REFRESH_REUSE_GRACE: '0s' } })
  const { email, refreshToken } = await signUpAndLogIn(app, 'deploy')
  const refresh = (token: string) => app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: token } })
  t.equal((await refresh(refreshToken)).statusCode, 200, 'a refresh')
  t.equal((await refresh(refreshToken)).json().code, 'REFRESH_TOKEN_REUSED', 'the spent token again: reuse')
  const failed = await app.inject({ method: 'POST', url: '/auth/login', payload: { email, password: 'not the password at all' } })
  t.equal(failed.json().code, 'INVALID_CREDENTIALS', 'a failed login')
  const metrics = await app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${METRICS_TOKEN}` } })
  t.equal(metrics.statusCode, 200, 'scraped with the token')
  t.match(metrics.headers['content-type'], /^text\/plain/, 'in the text format')
  const methods = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] as const
  return { ...readExposition(metrics.body), hasRoute: (url) => methods.some((method) => app.hasRoute({ method, url })) }
}

// ---- PromQL, as much as our own files use --------------------------------------------------

interface Matcher { label: string, op: string, value: string }
interface Selector { metric: string, matchers: Matcher[] }

const PROMQL_KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'inf', 'nan'])

/**
 * The series selectors of a PromQL expression: each metric name, with its
 * label matchers. Not a parser: enough for the expressions of our files (a
 * name followed by `(` is a function; grouping labels, ranges and offsets are
 * no names; Grafana's variables are dropped).
 */
function selectorsOf (expr: string): Selector[] {
  const selectors: Selector[] = []
  let rest = expr.replace(/\$\{?\w+\}?/g, '')
  rest = rest.replace(/([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}/g, (_whole, metric: string | undefined, body: string) => {
    const matchers = [...body.matchAll(/(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"/g)].map(([, label, op, value]) => ({ label: label!, op: op!, value: value! }))
    selectors.push({ metric: metric ?? '', matchers })
    return ' '
  })
  rest = rest
    .replace(/"(?:[^"\\]|\\.)*"/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\boffset\s+-?\w+/g, ' ')
  for (const match of rest.matchAll(/\d+(?:\.\d+)?(?:e[+-]?\d+)?|[a-zA-Z_:][\w:]*/gi)) {
    const token = match[0]
    if (/^\d/.test(token) || PROMQL_KEYWORDS.has(token.toLowerCase())) continue
    if (/^\s*\(/.test(rest.slice(match.index + token.length))) continue
    selectors.push({ metric: token, matchers: [] })
  }
  return selectors
}

/** What is wrong with an expression's selectors against the scrape: names the service does not expose, label values it never produces. */
function problemsOf (expr: string, exposition: Exposition): string[] {
  const selectors = selectorsOf(expr)
  if (selectors.length === 0) return ['no metric found']
  const problems: string[] = []
  for (const { metric, matchers } of selectors) {
    // `up` is Prometheus's own: whether the scrape of a target worked.
    const family = metric === 'up' ? 'up' : familyOf(metric, exposition.types)
    if (family === undefined) {
      problems.push(`${metric || '(a selector without a name)'} is not exposed`)
      continue
    }
    const known = new Set([...TARGET_LABELS, ...exposition.labels.get(family)?.keys() ?? [], ...Object.keys(LABEL_VALUES[family] ?? {})])
    if (metric.endsWith('_bucket')) known.add('le')
    for (const { label, op, value } of matchers) {
      if (!known.has(label)) problems.push(`${metric} has no label ${label}`)
      if (label === 'route' && !op.includes('~') && !exposition.hasRoute(value)) problems.push(`${metric}{route${op}"${value}"}: the app has no such route`)
      if (!CHECKED_LABELS.has(label)) continue
      const allowed = LABEL_VALUES[family]?.[label]
      if (allowed === undefined) {
        problems.push(`${metric}{${label}}: no known values`)
        continue
      }
      // A regex matcher here is an alternation of plain values: each must be one the code produces.
      const values = op.includes('~') ? value.split('|') : [value]
      for (const each of values) {
        if (!allowed.includes(each)) problems.push(`${metric}{${label}${op}"${value}"}: ${each} is not one of ${allowed.join(', ')}`)
      }
    }
  }
  return problems
}

// ---- the files -----------------------------------------------------------------------------

interface Panel { id: number, type: string, title: string, targets?: Array<{ expr?: string, refId?: string }>, datasource?: { uid?: string } }
interface Rule { alert?: string, record?: string, expr?: unknown, for?: string, labels?: Record<string, string>, annotations?: Record<string, string> }

const dashboard = JSON.parse(read('deploy/grafana/dashboards/auth-service.json')) as {
  panels: Panel[]
  templating: { list: Array<{ name: string, type: string, query: string | { query?: string } }> }
}
const alerts = readYaml<{ groups: Array<{ name: string, rules: Rule[] }> }>('deploy/prometheus/alerts.yml')
const rules = alerts.groups.flatMap((group) => group.rules)

/** Alerts that fire on the first evaluation that sees the condition: any store error, any dropped event. */
const IMMEDIATE_ALERTS = new Set(['AuthStoreErrors', 'AuthSecurityEventsDropped'])

t.test('what the dashboard and the alerts query is what the service exposes', async (t) => {
  const exposition = await scrape(t)

  t.test('the scrape carries the label values the flow produced, each one the code can produce', async (t) => {
    for (const [family, byLabel] of Object.entries(LABEL_VALUES)) {
      for (const [label, allowed] of Object.entries(byLabel)) {
        const seen = [...exposition.labels.get(family)?.get(label) ?? []]
        t.same(seen.filter((value) => !allowed.includes(value)), [], `${family}{${label}}: only known values (${seen.join(', ') || 'none yet'})`)
      }
    }
    t.ok(exposition.labels.get('auth_logins_total')?.get('outcome')?.has('invalid_credentials'), 'the failed login is counted')
    t.ok(exposition.labels.get('auth_refreshes_total')?.get('outcome')?.has('reused'), 'the reuse is counted')
    t.ok(exposition.labels.get('auth_security_events_total')?.get('type')?.has('refresh_reuse_detected'), 'and recorded as a security event')
  })

  t.test('the dashboard', async (t) => {
    const ids = dashboard.panels.map((panel) => panel.id)
    t.equal(new Set(ids).size, ids.length, 'panel ids are unique')
    const titles = dashboard.panels.map((panel) => panel.title)
    t.equal(new Set(titles).size, titles.length, 'panel titles are unique')
    for (const panel of dashboard.panels) {
      // A row only groups the panels below it.
      if (panel.type === 'row') {
        t.notOk(panel.targets?.length, `row "${panel.title}" queries nothing`)
        continue
      }
      t.ok((panel.targets ?? []).length > 0, `"${panel.title}" has a query`)
      t.equal(panel.datasource?.uid, DATASOURCE_VARIABLE, `"${panel.title}" uses the dashboard's data source variable`)
      for (const target of panel.targets ?? []) {
        t.type(target.expr, 'string', `"${panel.title}" ${target.refId}: an expression`)
        t.same(problemsOf(target.expr ?? '', exposition), [], `"${panel.title}" ${target.refId}: ${target.expr}`)
      }
    }
    const variables = new Map(dashboard.templating.list.map((variable) => [variable.name, variable]))
    t.equal(variables.get('datasource')?.type, 'datasource', 'a data source variable')
    const instance = variables.get('instance')
    const query = typeof instance?.query === 'string' ? instance.query : instance?.query.query ?? ''
    const labelValues = /^label_values\(\s*([\w:]+)\s*,\s*instance\s*\)$/.exec(query)
    t.ok(labelValues, `the instance variable lists instances: ${query}`)
    t.same(problemsOf(labelValues?.[1] ?? '', exposition), [], 'of a metric the service exposes')
  })

  t.test('the alert rules', async (t) => {
    t.ok(rules.length > 0, 'there are rules')
    const names = rules.map((rule) => rule.alert)
    t.equal(new Set(names).size, names.length, 'alert names are unique')
    for (const rule of rules) {
      const name = rule.alert ?? '(no name)'
      t.type(rule.alert, 'string', `${name}: an alert (no recording rules here)`)
      t.type(rule.expr, 'string', `${name}: an expression`)
      t.same(problemsOf(String(rule.expr), exposition), [], `${name}: ${String(rule.expr)}`)
      if (IMMEDIATE_ALERTS.has(name)) t.equal(rule.for, undefined, `${name}: fires at once`)
      else t.match(rule.for, /^\d+[smh]$/, `${name}: a for duration`)
      t.ok(['critical', 'warning'].includes(rule.labels?.severity ?? ''), `${name}: severity ${rule.labels?.severity}`)
      t.ok((rule.annotations?.description ?? '').length > 80, `${name}: a description of what it means and what to do first`)
    }
    for (const name of IMMEDIATE_ALERTS) t.ok(names.includes(name), `immediate alert ${name} exists`)
  })
})

// ---- docker-compose.yml and Prometheus's configuration ------------------------------------------

interface Service {
  image?: string
  command?: string[]
  environment?: Record<string, string>
  volumes?: string[]
  configs?: Array<{ source: string, target: string }>
  ports?: string[]
  networks?: string[] | Record<string, unknown>
}

const compose = readYaml<{ services: Record<string, Service>, configs?: Record<string, { content?: string }> }>('docker-compose.yml')
const networksOf = (service: Service): string[] => Array.isArray(service.networks) ? service.networks : Object.keys(service.networks ?? {})

/** The project path a bind mount of the service shows at `containerPath`, if one does. */
function hostPathOf (service: Service, containerPath: string): string | undefined {
  for (const volume of service.volumes ?? []) {
    const [source = '', target = ''] = volume.split(':')
    if (!source.startsWith('.')) continue
    if (containerPath === target || containerPath.startsWith(`${target}/`)) return posix.join(source, containerPath.slice(target.length))
  }
  return undefined
}

t.test('docker-compose.yml: every instance is scraped, with the token, by the Prometheus it runs', async (t) => {
  const instances = Object.keys(compose.services).filter((name) => /^auth-\d+$/.test(name))
  t.ok(instances.length >= 2, `instances: ${instances.join(', ')}`)
  for (const name of instances) {
    const environment = compose.services[name]!.environment ?? {}
    t.match(environment.METRICS_TOKEN, /^\$\{METRICS_TOKEN:\?/, `${name} gets METRICS_TOKEN, required`)
    t.equal(environment.PORT, '3000', `${name} listens on 3000`)
  }

  const prometheus = compose.services.prometheus
  t.ok(prometheus, 'a prometheus service')
  if (prometheus === undefined) return
  t.match(prometheus.image, /^prom\/prometheus:v\d+\.\d+\.\d+$/, 'a pinned image')
  const configFile = prometheus.command?.find((argument) => argument.startsWith('--config.file='))?.slice('--config.file='.length) ?? ''
  t.equal(hostPathOf(prometheus, configFile), 'deploy/prometheus/prometheus.yml', 'its configuration is deploy/prometheus/prometheus.yml, mounted')
  t.ok(instances.every((name) => networksOf(compose.services[name]!).some((network) => networksOf(prometheus).includes(network))), 'it shares a network with the instances')
  for (const port of prometheus.ports ?? []) t.match(port, /^127\.0\.0\.1:/, `port ${port}: this machine only`)

  const config = readYaml<{
    rule_files?: string[]
    scrape_configs: Array<{
      job_name: string
      metrics_path?: string
      authorization?: { type?: string, credentials?: string, credentials_file?: string }
      static_configs: Array<{ targets: string[] }>
    }>
  }>('deploy/prometheus/prometheus.yml')
  const ruleFiles = (config.rule_files ?? []).map((file) => hostPathOf(prometheus, posix.resolve(posix.dirname(configFile), file)))
  t.same(ruleFiles, ['deploy/prometheus/alerts.yml'], 'the rules are deploy/prometheus/alerts.yml, mounted')

  const job = config.scrape_configs.find((each) => each.job_name === 'auth-service')
  t.ok(job, 'a scrape job auth-service')
  if (job === undefined) return
  t.equal(job.metrics_path, '/metrics', 'at /metrics')
  t.same(job.static_configs.flatMap((each) => each.targets).sort(), instances.map((name) => `${name}:3000`).sort(), 'it scrapes every auth-N service on port 3000, and only those')
  t.equal(job.authorization?.type, 'Bearer', 'with a bearer token')
  t.equal(job.authorization?.credentials, undefined, 'not written in the configuration')
  const tokenFile = prometheus.configs?.find((each) => each.target === job.authorization?.credentials_file)
  t.ok(tokenFile, `read from ${job.authorization?.credentials_file}, which compose provides`)
  t.match(compose.configs?.[tokenFile?.source ?? '']?.content, /^\$\{METRICS_TOKEN(:\?[^}]*)?\}$/, 'holding METRICS_TOKEN, and nothing else')
})

t.test('docker-compose.yml: Grafana gets its data source and the dashboard', async (t) => {
  const grafana = compose.services.grafana
  t.ok(grafana, 'a grafana service')
  if (grafana === undefined) return
  t.match(grafana.image, /^grafana\/grafana-oss:\d+\.\d+\.\d+$/, 'a pinned image')
  t.equal(hostPathOf(grafana, '/etc/grafana/provisioning'), 'deploy/grafana/provisioning', 'provisioned from deploy/grafana/provisioning')
  t.match(grafana.environment?.GF_SECURITY_ADMIN_PASSWORD, /^\$\{\w+:\?/, 'an admin password is required')
  t.equal(grafana.environment?.GF_AUTH_ANONYMOUS_ENABLED, 'false', 'no anonymous access')
  for (const port of grafana.ports ?? []) t.match(port, /^127\.0\.0\.1:/, `port ${port}: this machine only`)

  const provider = readYaml<{ providers: Array<{ options: { path: string } }> }>('deploy/grafana/provisioning/dashboards/auth-service.yml').providers[0]
  const dashboards = hostPathOf(grafana, provider?.options.path ?? '')
  t.equal(dashboards, 'deploy/grafana/dashboards', 'the dashboard provider reads deploy/grafana/dashboards, mounted')
  t.ok(existsSync(join(projectRoot, `${dashboards}/auth-service.json`)), 'which holds the dashboard')

  const datasource = readYaml<{ datasources: Array<{ type: string, url: string }> }>('deploy/grafana/provisioning/datasources/prometheus.yml').datasources[0]
  t.equal(datasource?.type, 'prometheus', 'a Prometheus data source')
  const host = new URL(datasource?.url ?? 'http://missing').hostname
  t.ok(compose.services[host], `its URL names a compose service (${host})`)
  t.ok(networksOf(grafana).some((network) => networksOf(compose.services[host] ?? {}).includes(network)), 'on a network Grafana shares')
})

// ---- Prometheus's own reading ---------------------------------------------------------------

const hasPromtool = spawnSync('promtool', ['--version']).status === 0

t.test('promtool: the configuration, the rules and every dashboard expression parse, and the rules fire as alerts.test.yml says', {
  skip: hasPromtool ? false : 'skipped: no promtool binary on PATH (Debian: apt-get install prometheus)'
}, async (t) => {
  const folder = await mkdtemp(join(tmpdir(), 'auth-deploy-'))
  t.teardown(() => rm(folder, { recursive: true, force: true }))
  // The configuration, with its token file where this machine has one.
  await writeFile(join(folder, 'metrics-token'), METRICS_TOKEN)
  await writeFile(join(folder, 'prometheus.yml'), read('deploy/prometheus/prometheus.yml').replace('/etc/prometheus/metrics-token', join(folder, 'metrics-token')))
  // The rules without their annotations: the unit tests say when each alert fires and with which labels, not its wording.
  const unworded = { groups: alerts.groups.map((group) => ({ ...group, rules: group.rules.map((rule) => ({ ...rule, annotations: undefined })) })) }
  await writeFile(join(folder, 'alerts.yml'), stringify(unworded))
  await writeFile(join(folder, 'alerts.test.yml'), read('deploy/prometheus/alerts.test.yml'))
  // Every dashboard expression as a recording rule, Grafana's variables given values Prometheus accepts.
  const expressions = dashboard.panels.flatMap((panel) => (panel.targets ?? []).map((target) => target.expr ?? ''))
  const dashboardRules = expressions.map((expr, index) => ({
    record: `dashboard:expression_${index + 1}`,
    expr: expr.replaceAll('$__rate_interval', '1m').replaceAll('$instance', '.*')
  }))
  await writeFile(join(folder, 'dashboard.yml'), stringify({ groups: [{ name: 'dashboard', rules: dashboardRules }] }))

  for (const args of [
    ['check', 'config', 'prometheus.yml'],
    ['check', 'rules', join(projectRoot, 'deploy/prometheus/alerts.yml')],
    ['check', 'rules', 'dashboard.yml'],
    ['test', 'rules', 'alerts.test.yml']
  ]) {
    const { status, stdout, stderr } = spawnSync('promtool', args, { cwd: folder, encoding: 'utf8' })
    t.equal(status, 0, `promtool ${args.join(' ')}${status === 0 ? '' : `\n${stdout}${stderr}`}`)
  }
})
