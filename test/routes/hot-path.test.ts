import type { FastifyInstance } from 'fastify'
import type { Command } from 'ioredis'
import t from 'tap'
import { parsePrometheusText, sampleValue } from '../fixtures/prometheus-text.js'
import { buildTestApp, logIn, signUp, skipUnless, testDatabase, testRedis, type SignedIn } from '../helpers.js'

/*
 * Refresh and /users/me make no database write or extra Redis trip because
 * of events or metrics: every SQL statement the app sends is counted (the
 * database's query logger), and every command on its Redis connection (the
 * client's sendCommand; the revocation feed's subscriber is a connection of
 * its own, and only listens). Security events are written later, in batches,
 * never during a login. Serving /metrics changes none of it.
 */

const METRICS_TOKEN = 'metrics-token-for-tests-0123456789'
/** Requests of each kind per count. */
const N = 5

/** The hourly prune of old security events (its first run 10 s after start) is no request's work. */
const isPrune = (query: string) => /^delete from "security_events"/i.test(query)
const isEventInsert = (query: string) => /^insert into "security_events"/i.test(query)

for (const real of [false, true]) {
  const backend = real ? 'real (PostgreSQL, Redis)' : 'embedded (PGlite, in-process sessions)'
  const name = `${backend}: refresh and /users/me send no SQL and no Redis command but the refresh's own, events and metrics on`
  t.test(name, { skip: real ? skipUnless({ postgres: true, redis: true }) : false }, async (t) => {
    const queries: string[] = []
    const commands: Command[] = []
    const database = await testDatabase(t, { real, onQuery: (query) => { queries.push(query) } })
    let redisOptions = {}
    if (real) {
      const { redis, prefix } = await testRedis(t)
      const send = redis.sendCommand.bind(redis)
      // Every command of the connection passes here: each command, each script call, each command of a MULTI.
      redis.sendCommand = (command, stream) => {
        commands.push(command)
        return send(command, stream)
      }
      redisOptions = { redis, redisKeyPrefix: prefix }
    }
    // Events are written when the test says (flush), never by the log's timer in the middle of a count.
    const app: FastifyInstance = await buildTestApp(t, { database, ...redisOptions, env: { METRICS_TOKEN }, securityEvents: { flushIntervalMs: 600_000 } })

    /** The SQL statements and Redis commands (by name as sent) that `work` caused. */
    async function sentBy (work: () => Promise<unknown>): Promise<{ sql: string[], redis: string[] }> {
      queries.length = 0
      commands.length = 0
      await work()
      // Read once sent: ioredis names a script call EVAL the first time on a connection, EVALSHA after.
      return { sql: queries.filter((query) => !isPrune(query)), redis: commands.map((command) => command.name) }
    }

    const email = await signUp(app, 'hot-path')
    let pair: SignedIn = await logIn(app, email)
    const refresh = async () => {
      const response = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: pair.refreshToken } })
      if (response.statusCode !== 200) throw new Error(`refresh failed: ${response.body}`)
      pair = { ...pair, ...response.json() }
    }
    const readMe = async () => {
      const response = await app.inject({ method: 'GET', url: '/users/me', headers: { authorization: `Bearer ${pair.accessToken}` } })
      if (response.statusCode !== 200) throw new Error(`/users/me failed: ${response.body}`)
    }
    // Warm: the user's facts and profile cached, the refresh script loaded on the connection.
    await refresh()
    await readMe()
    // The warm-up's events (signup, login) written now.
    await app.securityEvents.flush()

    const hotPath = async (when: string) => {
      const refreshes = await sentBy(async () => {
        for (let i = 0; i < N; i++) await refresh()
      })
      t.strictSame(refreshes.sql, [], `${when}: ${N} refreshes send no SQL`)
      // The refresh decision is one Lua script (RedisSessionStore's authRefreshSession), already loaded: EVALSHA.
      if (real) t.strictSame(refreshes.redis, Array(N).fill('evalsha'), `${when}: ${N} refreshes send one EVALSHA each, nothing else`)
      const reads = await sentBy(async () => {
        for (let i = 0; i < N; i++) await readMe()
      })
      t.strictSame(reads.sql, [], `${when}: ${N} GET /users/me send no SQL`)
      if (real) t.strictSame(reads.redis, [], `${when}: ${N} GET /users/me send no Redis command`)
    }

    await hotPath('before any scrape')

    let scraped = ''
    const scrape = await sentBy(async () => {
      const response = await app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${METRICS_TOKEN}` } })
      t.equal(response.statusCode, 200)
      scraped = response.body
    })
    t.strictSame(scrape, { sql: [], redis: [] }, 'a scrape sends no SQL and no Redis command')
    // The refreshes counted above were all observed: metrics were on while nothing was sent for them.
    t.equal(sampleValue(parsePrometheusText(scraped), 'auth_refreshes_total', { outcome: 'rotated' }), 1 + N)

    await hotPath('after a scrape')

    const logins = await sentBy(() => Promise.all([1, 2, 3].map(() => logIn(app, email))))
    t.strictSame(logins.sql.filter(isEventInsert), [], 'logins write no security event while answering')
    t.equal(app.securityEvents.pending, 3, 'their events wait in memory')
    const flushed = await sentBy(() => app.securityEvents.flush())
    t.equal(flushed.sql.filter(isEventInsert).length, 1, 'written by one INSERT')
    t.strictSame(flushed.redis, [], 'and no Redis command')
    t.equal(app.securityEvents.pending, 0)
  })
}
