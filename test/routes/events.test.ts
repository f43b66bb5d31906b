import { randomUUID } from 'node:crypto'
import { eq, sql } from 'drizzle-orm'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import t from 'tap'
import { securityEvents, users } from '../../drizzle/schema.js'
import { hashSecret, parseRefreshToken } from '../../src/refresh-token.js'
import {
  BACKENDS, FakeClock, NEW_PASSWORD, NO_RATE_LIMITS, PASSWORD, assertErrorShape, buildTestApp, freshEmail, logIn, signUp,
  testDatabase, type EventBody, type SignedIn
} from '../helpers.js'

/*
 * Security events over HTTP (GET /auth/events, routes/events.ts; API.md,
 * "Security events" and the paged lists): each flow records its event, the
 * listing pages and validates, users never see each other's events, no
 * column ever holds a secret, retention prunes, a graceful close writes
 * what is pending, and a failing event write never fails a login. Events
 * are written off the request path: tests flush the log before reading.
 * The log, the cursor and the store on their own: test/src/security-events.test.ts.
 */

interface Pair {
  accessToken: string
  refreshToken: string
}

const bearer = (pair: Pair) => ({ authorization: `Bearer ${pair.accessToken}` })
const agent = (userAgent: string) => ({ 'user-agent': userAgent })
const sidOf = (pair: Pair): string => JSON.parse(Buffer.from(pair.accessToken.split('.')[1]!, 'base64url').toString()).sid
const subOf = (pair: Pair): string => JSON.parse(Buffer.from(pair.accessToken.split('.')[1]!, 'base64url').toString()).sub
const encode = (text: string): string => Buffer.from(text).toString('base64url')

async function listEvents (app: FastifyInstance, pair: Pair, query = ''): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'GET', url: `/auth/events${query}`, headers: bearer(pair) })
}

/** Every page of the caller's events, following `next`; `limit` is added to each request when given. */
async function pagesOf (app: FastifyInstance, pair: Pair, limit?: number): Promise<EventBody[][]> {
  const pages: EventBody[][] = []
  const limitParameter = limit === undefined ? [] : [`limit=${limit}`]
  let query = limitParameter
  for (;;) {
    const url = query.length === 0 ? '' : `?${query.join('&')}`
    const response = await listEvents(app, pair, url)
    if (response.statusCode !== 200) throw new Error(`GET /auth/events${url}: ${response.body}`)
    const page = response.json()
    pages.push(page.events)
    if (page.next === null) return pages
    if (pages.length > 100) throw new Error('the pages never end')
    query = [...limitParameter, `before=${encodeURIComponent(page.next)}`]
  }
}

/** Every event of the caller, newest first. */
async function allEvents (app: FastifyInstance, pair: Pair): Promise<EventBody[]> {
  return (await pagesOf(app, pair)).flat()
}

/** What the lead's fix must make pass: with `coerceTypes: false`, a query string's `limit` is never an integer. */

async function refresh (app: FastifyInstance, refreshToken: string, headers: Record<string, string> = {}): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken }, headers })
}

async function failLogin (app: FastifyInstance, email: string, userAgent: string, password = 'not the password at all'): Promise<void> {
  const response = await app.inject({ method: 'POST', url: '/auth/login', payload: { email, password }, headers: agent(userAgent) })
  if (response.json().code !== 'INVALID_CREDENTIALS') throw new Error(`a failed login answered ${response.body}`)
}

/** Signs up with a user agent; answers the email and the new user's id. */
async function signUpAs (app: FastifyInstance, userAgent: string, label = 'events'): Promise<{ email: string, userId: string }> {
  const email = freshEmail(label)
  const response = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email, password: PASSWORD }, headers: agent(userAgent) })
  if (response.statusCode !== 201) throw new Error(`signup failed: ${response.body}`)
  return { email, userId: response.json().id }
}

/** The event as compared: everything but its id. */
const shapeOf = ({ type, at, ip, userAgent, sessionId, actorId }: EventBody) => ({ type, at, ip, userAgent, sessionId, actorId })

/** The types the service records today (the others come with accounts and administration). */
const RECORDED_NOW = ['signup', 'login', 'login_failed', 'logout', 'refresh_reuse_detected', 'password_changed', 'session_revoked', 'sessions_revoked']

for (const backend of BACKENDS) {
  t.test(backend.name, { skip: backend.skip }, async (t) => {
    const storage = { realDatabase: backend.realDatabase, realRedis: backend.realRedis }
    let defaultApp: Promise<FastifyInstance> | undefined
    /** This backend's app with the default configuration, built on first use; tests keep apart by their accounts. */
    const shared = () => (defaultApp ??= buildTestApp(t, { ...storage, rateLimits: NO_RATE_LIMITS }))

    t.test('each flow records its event with the user, session, address, user agent and time', async (t) => {
      // A clock of the test's own: the reuse needs the grace window (10 s) behind it, and every `at` is known.
      const clock = new FakeClock(Date.now())
      const app = await buildTestApp(t, { ...storage, clock, rateLimits: NO_RATE_LIMITS })
      const start = new Date(clock.now()).toISOString()
      const { email, userId } = await signUpAs(app, 'Signup/1.0')
      await failLogin(app, email, 'Typo/1.0')
      const a = await logIn(app, email, PASSWORD, agent('A/1.0'))
      const b = await logIn(app, email, PASSWORD, agent('B/1.0'))
      const c = await logIn(app, email, PASSWORD, agent('C/1.0'))
      const d = await logIn(app, email, PASSWORD, agent('D/1.0'))
      t.equal(subOf(a), userId, 'the token\'s subject is the signed-up user')

      // A refresh records nothing; the rotated token presented again after the grace is reuse.
      t.equal((await refresh(app, a.refreshToken, agent('A/1.0'))).statusCode, 200)
      clock.advance(11_000)
      const later = new Date(clock.now()).toISOString()
      t.equal((await refresh(app, a.refreshToken, agent('Thief/6.6'))).json().code, 'REFRESH_TOKEN_REUSED')

      t.equal((await app.inject({ method: 'DELETE', url: `/auth/sessions/${sidOf(c)}`, headers: { ...bearer(b), ...agent('B/1.0') } })).statusCode, 204)
      t.equal((await app.inject({ method: 'POST', url: '/auth/logout-others', headers: { ...bearer(b), ...agent('B/1.0') } })).statusCode, 204)
      const e = await logIn(app, email, PASSWORD, agent('E/1.0'))
      const change = await app.inject({
        method: 'POST', url: '/auth/password', headers: { ...bearer(b), ...agent('B/1.0') }, payload: { currentPassword: PASSWORD, newPassword: NEW_PASSWORD }
      })
      t.equal(change.statusCode, 204)
      const f = await logIn(app, email, NEW_PASSWORD, agent('F/1.0'))
      t.equal((await app.inject({ method: 'POST', url: '/auth/logout-all', headers: { ...bearer(f), ...agent('F/1.0') } })).statusCode, 204)
      // Logout by refresh token, then again (nothing live: nothing recorded), then by access token alone.
      const g = await logIn(app, email, NEW_PASSWORD, agent('G/1.0'))
      const logout = (headers: Record<string, string>, payload?: object) => app.inject({ method: 'POST', url: '/auth/logout', headers, payload })
      t.equal((await logout(agent('G/1.0'), { refreshToken: g.refreshToken })).statusCode, 204)
      t.equal((await logout(agent('G/1.0'), { refreshToken: g.refreshToken })).statusCode, 204, 'a second logout of the same session')
      t.equal((await logout({ ...bearer(g), ...agent('G/1.0') })).statusCode, 204, 'and one by its (revoked) access token')
      const h = await logIn(app, email, NEW_PASSWORD, agent('H/1.0'))
      t.equal((await logout({ ...bearer(h), ...agent('H/1.0') })).statusCode, 204)
      const reader = await logIn(app, email, NEW_PASSWORD, agent('Reader/1.0'))

      await app.securityEvents.flush()
      // 18 events: one page of the default 20.
      const response = await listEvents(app, reader)
      t.equal(response.statusCode, 200)
      const { events, next } = response.json() as { events: EventBody[], next: string | null }
      t.equal(next, null)
      const event = (type: string, at: string, userAgent: string, sessionId: string | null) =>
        ({ type, at, ip: '127.0.0.1', userAgent, sessionId, actorId: null })
      t.same(events.map(shapeOf), [
        event('signup', start, 'Signup/1.0', null),
        event('login_failed', start, 'Typo/1.0', null),
        event('login', start, 'A/1.0', sidOf(a)),
        event('login', start, 'B/1.0', sidOf(b)),
        event('login', start, 'C/1.0', sidOf(c)),
        event('login', start, 'D/1.0', sidOf(d)),
        event('refresh_reuse_detected', later, 'Thief/6.6', sidOf(a)),
        // The revoked session, not the caller's.
        event('session_revoked', later, 'B/1.0', sidOf(c)),
        // logout-others, logout-all: the caller's session.
        event('sessions_revoked', later, 'B/1.0', sidOf(b)),
        event('login', later, 'E/1.0', sidOf(e)),
        event('password_changed', later, 'B/1.0', sidOf(b)),
        event('login', later, 'F/1.0', sidOf(f)),
        event('sessions_revoked', later, 'F/1.0', sidOf(f)),
        event('login', later, 'G/1.0', sidOf(g)),
        event('logout', later, 'G/1.0', sidOf(g)),
        event('login', later, 'H/1.0', sidOf(h)),
        event('logout', later, 'H/1.0', sidOf(h)),
        event('login', later, 'Reader/1.0', sidOf(reader))
      ].reverse(), 'newest first, one event per flow, nothing for a refresh or a logout that ended nothing')
      t.same([...new Set(events.map((event) => event.type))].sort(), [...RECORDED_NOW].sort(), 'every type recorded today')
      const stored = await app.database.db.select({ userId: securityEvents.userId }).from(securityEvents)
        .where(sql`${securityEvents.id} in (${sql.join(events.map((event) => sql`${event.id}::bigint`), sql`, `)})`)
      t.ok(stored.length === events.length && stored.every((row) => row.userId === userId), 'all stored with the user\'s id')
    })

    t.test('a failed login of an unknown email is stored without a user, and is in nobody\'s list', async (t) => {
      const app = await shared()
      const probe = `Unknown-email/${randomUUID()}`
      const unknown = freshEmail('nobody')
      const { email } = await signUpAs(app, 'Signup/1.0')
      const pair = await logIn(app, email, PASSWORD, agent('Laptop/1.0'))
      const before = Date.now()
      await failLogin(app, unknown, probe)
      const after = Date.now()
      await app.securityEvents.flush()

      const rows = await app.database.db.select().from(securityEvents).where(eq(securityEvents.userAgent, probe))
      t.equal(rows.length, 1, 'one event')
      const [row] = rows
      t.same({ ...row, id: undefined, at: undefined }, {
        id: undefined, at: undefined, type: 'login_failed', userId: null, sessionId: null, actorId: null, ip: '127.0.0.1', userAgent: probe
      }, 'a login_failed without a user')
      t.ok(row!.at.getTime() >= before && row!.at.getTime() <= after, 'recorded at the moment of the attempt')
      t.notOk(Object.values(row!).some((value) => String(value).includes(unknown)), 'the email is not kept')
      const mine = await allEvents(app, pair)
      t.notOk(mine.some((event) => event.id === row!.id.toString() || event.userAgent === probe), 'not in the list of the user who was signed in then')
      t.same(mine.map((event) => event.type), ['login', 'signup'], 'whose list is their own events only')
    })

    t.test('GET /auth/events: newest first, 20 a page unless asked, paged by `before`, `next` null on the last page', async (t) => {
      const app = await shared()
      const { email } = await signUpAs(app, 'Signup/1.0')
      for (let i = 1; i <= 22; i++) await failLogin(app, email, `Try/${i}`)
      const pair = await logIn(app, email, PASSWORD, agent('Laptop/1.0'))
      await app.securityEvents.flush()
      const expected = ['Laptop/1.0', ...Array.from({ length: 22 }, (_, i) => `Try/${22 - i}`), 'Signup/1.0']

      const first = await listEvents(app, pair)
      t.equal(first.statusCode, 200)
      const firstPage = first.json()
      t.equal(firstPage.events.length, 20, '20 without a limit')
      t.type(firstPage.next, 'string')
      const secondPage = (await listEvents(app, pair, `?before=${encodeURIComponent(firstPage.next)}`)).json()
      t.equal(secondPage.events.length, 4, 'the rest on the second page')
      t.equal(secondPage.next, null, 'the last page says so')
      const everything: EventBody[] = [...firstPage.events, ...secondPage.events]
      t.same(everything.map((event) => event.userAgent), expected, 'every event once, newest first')
      const times = everything.map((event) => Date.parse(event.at))
      t.ok(times.every((time, i) => i === 0 || time <= times[i - 1]!), 'times never increase')
      const ids = everything.map((event) => BigInt(event.id))
      t.ok(ids.every((id, i) => i === 0 || id < ids[i - 1]!), 'ids decrease')
      t.same(Object.keys(firstPage).sort(), ['events', 'next'])
      t.same(Object.keys(everything[0]!).sort(), ['actorId', 'at', 'id', 'ip', 'sessionId', 'type', 'userAgent'], 'an event has exactly API.md\'s fields')

      t.test('`limit` sets the page size, 1 to 100', async (t) => {
        for (const limit of [1, 5, 23, 24, 100]) {
          const response = await listEvents(app, pair, `?limit=${limit}`)
          t.equal(response.statusCode, 200, `limit ${limit}: 200`)
          if (response.statusCode !== 200) continue
          const pages = await pagesOf(app, pair, limit)
          t.same(pages.flat(), everything, `limit ${limit}: every event once, in order`)
          t.same(pages.map((page) => page.length), [...Array(Math.floor(24 / limit)).fill(limit), ...(24 % limit > 0 ? [24 % limit] : [])],
            `limit ${limit}: full pages, then the rest; no empty page`)
        }
      })
    })

    t.test('GET /auth/events refuses a bad limit, a bad cursor, an unknown parameter and a missing token', async (t) => {
      const app = await shared()
      const pair = await logIn(app, await signUp(app, 'events'))
      for (const limit of ['0', '101', 'abc', '-1', '1.5', '', '1e3']) {
        assertErrorShape(t, await listEvents(app, pair, `?limit=${limit}`), 400, 'VALIDATION_ERROR', `limit=${limit}`)
      }
      for (const before of ['not-a-cursor', encode('1000.42.7'), encode('01000.42'), `${encode('1000.42')}=`, 'A'.repeat(65), '', encodeURIComponent('MTAwMC40Mg==')]) {
        assertErrorShape(t, await listEvents(app, pair, `?before=${before}`), 400, 'VALIDATION_ERROR', `before=${before.slice(0, 20)}`)
      }
      assertErrorShape(t, await listEvents(app, pair, '?page=2'), 400, 'VALIDATION_ERROR', 'an unknown parameter')
      assertErrorShape(t, await listEvents(app, pair, '?cursor=abc'), 400, 'VALIDATION_ERROR', 'the users\' cursor parameter')
      assertErrorShape(t, await app.inject({ method: 'GET', url: '/auth/events' }), 401, 'ACCESS_TOKEN_MISSING', 'no token')
      assertErrorShape(t, await app.inject({ method: 'GET', url: '/auth/events', headers: { authorization: 'Bearer not.a.jwt' } }), 401, 'ACCESS_TOKEN_INVALID', 'a bad token')
    })

    t.test('GET /auth/events refuses a well-formed cursor no event can have with 400, not 503', async (t) => {
      const app = await shared()
      const pair = await logIn(app, await signUp(app, 'events'))
      for (const position of [`1000.${2n ** 63n}`, '999999999999999.42']) {
        const response = await listEvents(app, pair, `?before=${encode(position)}`)
        t.equal(response.statusCode, 400, `before=${position}: 400`)
        t.equal(response.json().code, 'VALIDATION_ERROR', `before=${position}: VALIDATION_ERROR`)
      }
    })

    t.test('a user never sees another user\'s events, not even with the other\'s cursor', async (t) => {
      const app = await shared()
      // Bob first: his events are older than Alice's, so Alice's cursor points past them.
      const bob = await signUpAs(app, 'Bob/1.0', 'bob')
      const bobPair = await logIn(app, bob.email, PASSWORD, agent('Bob/1.0'))
      const alice = await signUpAs(app, 'Alice/1.0', 'alice')
      // More than a page of hers: her first page has a `next`.
      for (let i = 0; i < 20; i++) await failLogin(app, alice.email, 'Alice/1.0')
      const alicePair = await logIn(app, alice.email, PASSWORD, agent('Alice/1.0'))
      await app.securityEvents.flush()

      const aliceEvents = await allEvents(app, alicePair)
      const bobEvents = await allEvents(app, bobPair)
      t.same(aliceEvents.map((event) => event.type), ['login', ...Array(20).fill('login_failed'), 'signup'])
      t.same(bobEvents.map((event) => [event.type, event.userAgent]), [['login', 'Bob/1.0'], ['signup', 'Bob/1.0']], 'Bob\'s list is his own')
      const aliceIds = new Set(aliceEvents.map((event) => event.id))
      t.notOk(bobEvents.some((event) => aliceIds.has(event.id)), 'none of Alice\'s')

      const aliceFirst = (await listEvents(app, alicePair)).json()
      t.type(aliceFirst.next, 'string')
      const withHerCursor = (await listEvents(app, bobPair, `?before=${encodeURIComponent(aliceFirst.next)}`)).json()
      t.same(withHerCursor.events, bobEvents, 'her cursor only positions Bob in his own events')
    })

    t.test('no column of any event holds a password, a token, a token secret, a hash or the email', async (t) => {
      const clock = new FakeClock(Date.now())
      const app = await buildTestApp(t, { ...storage, clock, rateLimits: NO_RATE_LIMITS })
      const wrongPassword = 'a wrong guess of the password'
      const unknownEmail = freshEmail('nobody')
      const { email, userId } = await signUpAs(app, 'Secrets/1.0')
      const hashOf = async () => (await app.database.db.select({ hash: users.passwordHash }).from(users).where(eq(users.id, userId)))[0]!.hash
      const hashes = [await hashOf()]
      const pairs: Pair[] = []
      const keep = (response: LightMyRequestResponse): Pair => {
        if (response.statusCode !== 200) throw new Error(`expected a token pair: ${response.body}`)
        pairs.push(response.json())
        return response.json()
      }
      const login = async (password: string): Promise<SignedIn> => {
        const pair = await logIn(app, email, password, agent('Secrets/1.0'))
        pairs.push(pair)
        return pair
      }

      const first = await login(PASSWORD)
      keep(await refresh(app, first.refreshToken))
      keep(await refresh(app, first.refreshToken))
      t.equal(pairs.length, 3, 'a refresh, then a grace refresh of the same token')
      clock.advance(11_000)
      t.equal((await refresh(app, first.refreshToken)).json().code, 'REFRESH_TOKEN_REUSED', 'then reuse')
      const second = await login(PASSWORD)
      const change = await app.inject({ method: 'POST', url: '/auth/password', headers: bearer(second), payload: { currentPassword: PASSWORD, newPassword: NEW_PASSWORD } })
      t.equal(change.statusCode, 204)
      hashes.push(await hashOf())
      const third = keep(await refresh(app, (await login(NEW_PASSWORD)).refreshToken))
      await failLogin(app, email, 'Secrets/1.0', wrongPassword)
      await failLogin(app, unknownEmail, 'Secrets/1.0', PASSWORD)
      t.equal((await app.inject({ method: 'POST', url: '/auth/logout', headers: bearer(third), payload: { refreshToken: third.refreshToken } })).statusCode, 204)
      await app.securityEvents.flush()

      const secrets = new Map<string, string>([
        ['the password', PASSWORD], ['the new password', NEW_PASSWORD], ['a wrong password', wrongPassword],
        ['the email', email], ['an unknown email', unknownEmail]
      ])
      hashes.forEach((hash, i) => secrets.set(`password hash ${i + 1}`, hash))
      pairs.forEach((pair, i) => {
        secrets.set(`access token ${i + 1}`, pair.accessToken)
        secrets.set(`access token ${i + 1}'s signature`, pair.accessToken.split('.')[2]!)
        secrets.set(`refresh token ${i + 1}`, pair.refreshToken)
        const parsed = parseRefreshToken(pair.refreshToken)!
        secrets.set(`refresh token ${i + 1}'s secret`, parsed.secret)
        secrets.set(`refresh token ${i + 1}'s secret hash`, hashSecret(parsed.secret))
        secrets.set(`refresh token ${i + 1}'s family`, parsed.familyId)
      })
      t.ok(new Set(pairs.map((pair) => pair.refreshToken)).size >= 5, 'the refresh tokens of four sessions to look for')

      const rows = await app.database.db.select().from(securityEvents)
      const mine = rows.filter((row) => row.userId === userId)
      t.same([...new Set(mine.map((row) => row.type))].sort(), ['login', 'login_failed', 'logout', 'password_changed', 'refresh_reuse_detected', 'signup'],
        'the flow\'s events are there to look at')
      const found: string[] = []
      for (const row of rows) {
        for (const [column, value] of Object.entries(row)) {
          if (value === null) continue
          const text = value instanceof Date ? value.toISOString() : String(value)
          if (text.includes('$argon2')) found.push(`row ${row.id} ${column}: an argon2 hash`)
          for (const [name, secret] of secrets) if (text.includes(secret)) found.push(`row ${row.id} ${column}: ${name}`)
        }
      }
      t.same(found, [], `none in ${rows.length} rows`)
    })

    t.test('events older than AUDIT_RETENTION are pruned, newer ones stay', async (t) => {
      // Pruning reaches every user's events: a database of the test's own.
      const database = await testDatabase(t, { real: backend.realDatabase, fresh: true })
      const clock = new FakeClock(Date.now())
      const app = await buildTestApp(t, { ...storage, database, clock, rateLimits: NO_RATE_LIMITS, env: { AUDIT_RETENTION: '1d' } })
      const { email, userId } = await signUpAs(app, 'Old/1.0')
      await logIn(app, email, PASSWORD, agent('Old/1.0'))
      clock.advance(12 * 3600_000)
      await failLogin(app, email, 'Middle/1.0')
      clock.advance(12 * 3600_000 + 1)
      const pair = await logIn(app, email, PASSWORD, agent('New/1.0'))
      await app.securityEvents.flush()
      t.equal((await allEvents(app, pair)).length, 4, 'four events before pruning')

      t.equal(await app.securityEvents.prune(), 2, 'the two events more than a day old are deleted')
      t.same((await allEvents(app, pair)).map((event) => [event.type, event.userAgent]), [['login', 'New/1.0'], ['login_failed', 'Middle/1.0']],
        'the newer ones stay')
      t.equal(await app.securityEvents.prune(), 0, 'a second prune finds nothing')
      const left = await database.db.select({ userId: securityEvents.userId }).from(securityEvents)
      t.same(left, [{ userId }, { userId }], 'nothing else in the table')
    })

    t.test('a graceful close writes the events still pending', async (t) => {
      // The file's shared database: the apps do not close it.
      const database = await testDatabase(t, { real: backend.realDatabase })
      const first = await buildTestApp(t, { ...storage, database, rateLimits: NO_RATE_LIMITS })
      const { email, userId } = await signUpAs(first, 'Closing/1.0')
      // The signup written now: the log's timer (1 s) starts again from the next event.
      await first.securityEvents.flush()
      await failLogin(first, email, 'Closing/1.0')
      let logins = 0
      // A request takes milliseconds: its event is pending at close. Should a stalled machine let the timer write it, another login is.
      do {
        await logIn(first, email, PASSWORD, agent('Closing/1.0'))
        logins++
      } while (first.securityEvents.pending === 0 && logins < 5)
      t.ok(first.securityEvents.pending > 0, 'events pending when the app closes')
      await first.close()
      t.equal(first.securityEvents.pending, 0, 'nothing left pending')

      const second = await buildTestApp(t, { ...storage, database })
      const { events } = await second.securityEventStore.list({ userId, limit: 100 })
      t.same(events.map((event) => event.type), [...Array(logins).fill('login'), 'login_failed', 'signup'], 'another app reads them all')
    })

    t.test('a failing event write fails no login; the events are written once the table is back', async (t) => {
      // The test breaks the table: a database of its own.
      const database = await testDatabase(t, { real: backend.realDatabase, fresh: true })
      const app = await buildTestApp(t, { ...storage, database, rateLimits: NO_RATE_LIMITS })
      const { email } = await signUpAs(app, 'Outage/1.0')
      await app.securityEvents.flush()
      await database.db.execute(sql`alter table security_events rename to security_events_away`)
      const pair = await logIn(app, email, PASSWORD, agent('Outage/1.0'))
      t.equal((await app.inject({ method: 'GET', url: '/users/me', headers: bearer(pair) })).statusCode, 200, 'the login stands')
      await failLogin(app, email, 'Outage/1.0')
      await app.securityEvents.flush()
      t.equal(app.securityEvents.pending, 2, 'the write failed: both events kept')
      assertErrorShape(t, await listEvents(app, pair), 503, 'STORE_UNAVAILABLE', 'the listing meanwhile')

      await database.db.execute(sql`alter table security_events_away rename to security_events`)
      await app.securityEvents.flush()
      t.equal(app.securityEvents.pending, 0)
      t.same((await allEvents(app, pair)).map((event) => event.type), ['login_failed', 'login', 'signup'], 'written, in order')
    })
  })
}
