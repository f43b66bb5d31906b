import { randomBytes, randomUUID } from 'node:crypto'
import { sql } from 'drizzle-orm'
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
import fc from 'fast-check'
import t, { type Test } from 'tap'
import {
  BACKENDS, FakeClock, NEW_PASSWORD, NO_RATE_LIMITS, PASSWORD, assertErrorShape, bearer, buildTestApp, claimsOf, codeOf,
  eventually, instrumentedHasher, logIn, loginAttempt, me, pauseNextSessionCreate, refresh, refreshCookie, signUp, testDatabase,
  type EventBody, type SignedIn
} from '../helpers.js'

/*
 * Roles and administration over HTTP (routes/admin.ts, src/admin.ts,
 * plugins/auth.ts; API.md, "Roles and administration", the /admin routes,
 * FORBIDDEN, ACCOUNT_DISABLED, LAST_ADMIN), on every backend: who may call
 * the admin routes (401 before 403), what each answers and refuses, the
 * `roles` claim (a grant from the next refresh, a removal refusing the
 * tokens issued before while the sessions stay), disabling and enabling,
 * the last admin, the search and its pages, deletion and revocation by an
 * admin, and the events an admin's actions leave. The tests that need no
 * other admin in the database (LAST_ADMIN) get a database of their own; the
 * others share one app per backend and keep apart by their accounts.
 * Two instances: admin-instances.test.ts.
 */

const INTROSPECTION_SECRET = 'introspection-secret-for-admin-tests'
/** The command line's actor: how a test makes the first admin. */
const CLI = { id: null, ip: null, userAgent: 'test' }

interface Account extends SignedIn {
  userId: string
}

interface AdminUserBody {
  id: string
  email: string
  emailVerified: boolean
  roles: string[]
  disabled: boolean
  createdAt: string
}

/** A word no other test's emails contain: a test finds its own users by it. */
const marker = (): string => `m${randomBytes(5).toString('hex')}`

const sorted = (roles: readonly string[]): string[] => [...roles].sort()

/** A new account, logged in (with `headers`): its email, id and token pair. */
async function account (app: FastifyInstance, label: string, headers: Record<string, string> = {}): Promise<Account> {
  const email = await signUp(app, label)
  const pair = await logIn(app, email, PASSWORD, headers)
  return { ...pair, userId: claimsOf(pair.accessToken).sub as string }
}

/** A new account made admin (as the command line makes the first one), then logged in: its token carries the role. */
async function adminAccount (app: FastifyInstance, label = 'admin', headers: Record<string, string> = {}): Promise<Account> {
  const email = await signUp(app, label)
  const user = (await app.users.findByEmail(email))!
  await app.admin.updateUser(user.id, { roles: ['admin'] }, CLI)
  const pair = await logIn(app, email, PASSWORD, headers)
  return { ...pair, userId: user.id }
}

/** Grants `roles` as the command line does (no admin needed), then logs in for a token that carries them. */
async function withRoles (app: FastifyInstance, label: string, roles: string[]): Promise<Account> {
  const email = await signUp(app, label)
  const user = (await app.users.findByEmail(email))!
  await app.admin.updateUser(user.id, { roles }, CLI)
  return { ...await logIn(app, email), userId: user.id }
}

function call (app: FastifyInstance, accessToken: string | undefined, options: InjectOptions, headers: Record<string, string> = {}): Promise<LightMyRequestResponse> {
  return app.inject({ ...options, headers: { ...headers, ...(accessToken === undefined ? {} : bearer(accessToken)) } })
}

const query = (parameters: Record<string, string | number | undefined>): string => {
  const defined = Object.entries(parameters).filter((entry): entry is [string, string | number] => entry[1] !== undefined)
  return defined.length === 0 ? '' : `?${new URLSearchParams(defined.map(([name, value]): [string, string] => [name, String(value)])).toString()}`
}

const listUsers = (app: FastifyInstance, token: string, parameters: Record<string, string | number | undefined> = {}) =>
  call(app, token, { method: 'GET', url: `/admin/users${query(parameters)}` })
const getUser = (app: FastifyInstance, token: string, id: string) => call(app, token, { method: 'GET', url: `/admin/users/${id}` })
const patchUser = (app: FastifyInstance, token: string, id: string, payload: unknown, headers: Record<string, string> = {}) =>
  call(app, token, { method: 'PATCH', url: `/admin/users/${id}`, payload: payload as InjectOptions['payload'] }, headers)
const deleteUser = (app: FastifyInstance, token: string, id: string, headers: Record<string, string> = {}) =>
  call(app, token, { method: 'DELETE', url: `/admin/users/${id}` }, headers)
const revokeSessions = (app: FastifyInstance, token: string, id: string, headers: Record<string, string> = {}) =>
  call(app, token, { method: 'DELETE', url: `/admin/users/${id}/sessions` }, headers)
const adminEvents = (app: FastifyInstance, token: string, parameters: Record<string, string | number | undefined> = {}) =>
  call(app, token, { method: 'GET', url: `/admin/events${query(parameters)}` })
const deleteMe = (app: FastifyInstance, token: string, password = PASSWORD) =>
  call(app, token, { method: 'DELETE', url: '/users/me', payload: { password } })
const introspect = (app: FastifyInstance, token: string) =>
  app.inject({ method: 'POST', url: '/auth/introspect', headers: { authorization: `Bearer ${INTROSPECTION_SECRET}` }, payload: { token } })

/** The refresh of `pair`'s session, with its cookie as a browser sends it. */
const refreshWithCookie = (app: FastifyInstance, pair: SignedIn) =>
  app.inject({ method: 'POST', url: '/auth/refresh', cookies: { refresh_token: pair.cookie } })

/** Every admin route, for the user `id`. */
function adminRoutes (id: string): Array<{ name: string, options: InjectOptions }> {
  return [
    { name: 'GET /admin/users', options: { method: 'GET', url: '/admin/users' } },
    { name: 'GET /admin/users/:id', options: { method: 'GET', url: `/admin/users/${id}` } },
    { name: 'PATCH /admin/users/:id', options: { method: 'PATCH', url: `/admin/users/${id}`, payload: { disabled: true } } },
    { name: 'DELETE /admin/users/:id', options: { method: 'DELETE', url: `/admin/users/${id}` } },
    { name: 'DELETE /admin/users/:id/sessions', options: { method: 'DELETE', url: `/admin/users/${id}/sessions` } },
    { name: 'GET /admin/events', options: { method: 'GET', url: '/admin/events' } }
  ]
}

/** The user is as they were: enabled with `roles`, their session working. */
async function assertUntouched (t: Test, app: FastifyInstance, user: Account, roles: string[], name: string): Promise<void> {
  const stored = (await app.users.findById(user.userId))!
  t.ok(stored, `${name}: the account exists`)
  t.strictSame(stored?.roles, roles, `${name}: roles unchanged`)
  t.equal(stored?.disabled, false, `${name}: still enabled`)
  t.equal((await me(app, user.accessToken)).statusCode, 200, `${name}: its access token works`)
}

/** Every page of the users matching `search`, `limit` a page; each page awaits `between` before the next is asked for. */
async function walk (app: FastifyInstance, token: string, search: string, limit: number, between: () => void = () => {}) {
  const pages: AdminUserBody[][] = []
  let cursor: string | undefined
  for (;;) {
    const response = await listUsers(app, token, { query: search, limit, cursor })
    if (response.statusCode !== 200) throw new Error(`GET /admin/users: ${response.body}`)
    const page = response.json()
    pages.push(page.users)
    if (page.next === null) return pages
    if (pages.length > 200) throw new Error('the pages never end')
    cursor = page.next
    between()
  }
}

const userKeys = ['createdAt', 'disabled', 'email', 'emailVerified', 'id', 'roles']
const adminEventKeys = ['actorId', 'at', 'id', 'ip', 'sessionId', 'type', 'userAgent', 'userId']

for (const backend of BACKENDS) {
  t.test(backend.name, { skip: backend.skip }, async (t) => {
    const storage = { realDatabase: backend.realDatabase, realRedis: backend.realRedis }
    const env = { INTROSPECTION_SECRET }
    let defaultApp: Promise<FastifyInstance> | undefined
    /** This backend's app (INTROSPECTION_SECRET set), built on first use, shared by the tests that keep apart by their accounts. */
    const shared = () => (defaultApp ??= buildTestApp(t, { ...storage, env, rateLimits: NO_RATE_LIMITS }))
    let lastAdminApp: Promise<FastifyInstance> | undefined
    /**
     * An app on a database of the LAST_ADMIN tests' own (built once), where
     * no account is an admin when each of them starts: the ones of the test
     * before lose the role (in the table: their tokens are never used again).
     */
    const isolated = async () => {
      lastAdminApp ??= testDatabase(t, { real: backend.realDatabase, fresh: true })
        .then((database) => buildTestApp(t, { ...storage, env, rateLimits: NO_RATE_LIMITS, database }))
      const app = await lastAdminApp
      await app.database.db.execute(sql`update users set roles = array_remove(roles, 'admin')`)
      return app
    }

    t.test('every admin route: 401 without an access token or with a bad one, before 403 FORBIDDEN without the role; nothing is done', async (t) => {
      const app = await shared()
      const target = await account(app, 'forbidden-target')
      const plain = await account(app, 'forbidden-plain')
      const others = await withRoles(app, 'forbidden-others', ['admins', 'administrator', 'billing'])
      // A token of the user's own with `roles: ['admin']` written in: the signature no longer holds.
      const [header, , signature] = plain.accessToken.split('.')
      const forged = [header, Buffer.from(JSON.stringify({ ...claimsOf(plain.accessToken), roles: ['admin'] })).toString('base64url'), signature].join('.')

      for (const { name, options } of adminRoutes(target.userId)) {
        assertErrorShape(t, await call(app, undefined, options), 401, 'ACCESS_TOKEN_MISSING', `${name}, no token`)
        assertErrorShape(t, await call(app, 'not-a-token', options), 401, 'ACCESS_TOKEN_INVALID', `${name}, a malformed token`)
        assertErrorShape(t, await call(app, forged, options), 401, 'ACCESS_TOKEN_INVALID', `${name}, a token with the role written in`)
        assertErrorShape(t, await call(app, target.refreshToken, options), 401, 'ACCESS_TOKEN_INVALID', `${name}, a refresh token`)
        assertErrorShape(t, await call(app, plain.accessToken, options), 403, 'FORBIDDEN', `${name}, a valid token without roles`)
        assertErrorShape(t, await call(app, others.accessToken, options), 403, 'FORBIDDEN', `${name}, a token with other roles only`)
      }
      // The role is checked before the request is: whoever lacks it learns nothing of what is valid.
      const invalid = { method: 'PATCH', url: '/admin/users/not-a-uuid', payload: { roles: ['Not A Role'] } } as const
      assertErrorShape(t, await call(app, undefined, invalid), 401, 'ACCESS_TOKEN_MISSING', 'an invalid request without a token')
      assertErrorShape(t, await call(app, plain.accessToken, invalid), 403, 'FORBIDDEN', 'an invalid request without the role')
      assertErrorShape(t, await call(app, plain.accessToken, { method: 'GET', url: '/admin/users?limit=0' }), 403, 'FORBIDDEN', 'an invalid query without the role')
      const head = await call(app, plain.accessToken, { method: 'HEAD', url: '/admin/users' })
      t.equal(head.statusCode, 403, 'HEAD /admin/users without the role: 403')

      await assertUntouched(t, app, target, [], 'the target')
      t.equal((await refresh(app, target.refreshToken)).statusCode, 200, 'the target\'s session goes on')
      t.equal((await loginAttempt(app, target.email)).statusCode, 200, 'the target logs in')
      await app.securityEvents.flush()
      const { events } = await app.securityEventStore.list({ userId: target.userId, limit: 100 })
      t.strictSame(events.filter(({ actorId }) => actorId !== null), [], 'no admin event was recorded for the target')
    })

    t.test('an expired admin token is 401 ACCESS_TOKEN_EXPIRED, not 403', async (t) => {
      const clock = new FakeClock(Date.now())
      const app = await buildTestApp(t, { ...storage, clock, rateLimits: NO_RATE_LIMITS, env: { ACCESS_TOKEN_TTL: '5m' } })
      const admin = await adminAccount(app, 'expired-admin')
      const plain = await account(app, 'expired-plain')
      t.equal((await listUsers(app, admin.accessToken)).statusCode, 200, 'before: 200')
      clock.advance(5 * 60_000 + 1_000)
      assertErrorShape(t, await listUsers(app, admin.accessToken), 401, 'ACCESS_TOKEN_EXPIRED', 'the admin\'s expired token')
      assertErrorShape(t, await listUsers(app, plain.accessToken), 401, 'ACCESS_TOKEN_EXPIRED', 'a non-admin\'s expired token: 401, not 403')
      const renewed = await refresh(app, admin.refreshToken)
      t.equal(renewed.statusCode, 200)
      t.equal((await listUsers(app, renewed.json().accessToken)).statusCode, 200, 'after a refresh: 200')
    })

    t.test('GET /admin/users: the users whose email contains the query, newest first, in the documented shape', async (t) => {
      const app = await shared()
      const admin = await adminAccount(app)
      const word = marker()
      const emails: string[] = []
      for (let i = 0; i < 3; i++) emails.push(await signUp(app, `${word}-list`))
      const first = (await app.users.findByEmail(emails[0]!))!
      await app.admin.updateUser(first.id, { roles: ['billing'] }, CLI)

      const response = await listUsers(app, admin.accessToken, { query: word })
      t.equal(response.statusCode, 200)
      t.match(response.headers['content-type'], /^application\/json/)
      const body = response.json()
      t.strictSame(Object.keys(body).sort(), ['next', 'users'], '{ users, next }')
      t.equal(body.next, null, 'one page: next is null')
      t.strictSame(body.users.map((user: AdminUserBody) => user.email), [...emails].reverse(), 'newest first')
      for (const user of body.users as AdminUserBody[]) {
        t.strictSame(Object.keys(user).sort(), userKeys, `${user.email}: exactly ${userKeys.join(', ')}`)
        t.match(user.id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, 'a uuid')
        t.equal(user.emailVerified, false)
        t.equal(user.disabled, false)
        t.equal(new Date(user.createdAt).toISOString(), user.createdAt, 'createdAt in ISO 8601')
      }
      t.strictSame(body.users.map((user: AdminUserBody) => user.roles), [[], [], ['billing']], 'with their roles')
      t.equal(body.users[2].id, first.id)
      t.notOk(/password|hash/i.test(response.body), 'no password hash')

      const all = await listUsers(app, admin.accessToken)
      t.equal(all.statusCode, 200, 'no query: every user')
      t.ok(all.json().users.length > 0 && all.json().users.length <= 20, 'at most 20 a page by default')
    })

    t.test('GET /admin/users: 20 a page unless limit says otherwise (1 to 100); next leads to the rest', async (t) => {
      const app = await shared()
      const admin = await adminAccount(app)
      const word = marker()
      await Promise.all(Array.from({ length: 21 }, () => signUp(app, `${word}-limit`)))
      const first = (await listUsers(app, admin.accessToken, { query: word })).json()
      t.equal(first.users.length, 20, 'the default page: 20')
      t.type(first.next, 'string', 'and a next cursor')
      const rest = (await listUsers(app, admin.accessToken, { query: word, cursor: first.next })).json()
      t.equal(rest.users.length, 1, 'the next page: the 21st')
      t.equal(rest.next, null, 'the last page')
      t.equal((await listUsers(app, admin.accessToken, { query: word, limit: 1 })).json().users.length, 1, 'limit 1')
      t.equal((await listUsers(app, admin.accessToken, { query: word, limit: 100 })).json().users.length, 21, 'limit 100')
    })

    t.test('GET /admin/users: limit 0 or 101, a forged cursor, an over-long query, an unknown parameter: 400 VALIDATION_ERROR', async (t) => {
      const app = await shared()
      const admin = await adminAccount(app)
      for (const limit of ['0', '101', '-1', '1.5', 'ten', '']) {
        assertErrorShape(t, await listUsers(app, admin.accessToken, { limit }), 400, 'VALIDATION_ERROR', `limit=${limit}`)
      }
      const uuid = randomUUID()
      const encoded = (text: string) => Buffer.from(text).toString('base64url')
      const forged = {
        empty: '',
        'not base64 of a position': 'garbage',
        'a position with no uuid': encoded('1796649600000000.not-a-uuid'),
        'an upper-case uuid': encoded(`1796649600000000.${uuid.toUpperCase()}`),
        'a negative time': encoded(`-1.${uuid}`),
        'a leading zero': encoded(`01796649600000000.${uuid}`),
        'past the year 9999': encoded(`999999999999999999.${uuid}`),
        'too many digits': encoded(`1${'0'.repeat(20)}.${uuid}`),
        'padded base64': `${Buffer.from(`1796649600000000.${uuid}`).toString('base64')}==`,
        'a cursor of events': encoded('1796649600000.1042'),
        'over 128 characters': 'A'.repeat(129)
      }
      for (const [name, cursor] of Object.entries(forged)) {
        assertErrorShape(t, await listUsers(app, admin.accessToken, { cursor }), 400, 'VALIDATION_ERROR', `cursor: ${name}`)
      }
      assertErrorShape(t, await listUsers(app, admin.accessToken, { query: 'x'.repeat(255) }), 400, 'VALIDATION_ERROR', 'a query over 254 characters')
      assertErrorShape(t, await listUsers(app, admin.accessToken, { before: 'x' }), 400, 'VALIDATION_ERROR', 'before= (the events\' parameter)')
      assertErrorShape(t, await listUsers(app, admin.accessToken, { role: 'admin' }), 400, 'VALIDATION_ERROR', 'an unknown parameter')

      // Anything at all as a cursor: refused or answered, never a 500.
      const problems: string[] = []
      await fc.assert(fc.asyncProperty(fc.string({ minLength: 1, maxLength: 128 }), async (cursor) => {
        const response = await listUsers(app, admin.accessToken, { cursor })
        if (response.statusCode !== 400 || codeOf(response) !== 'VALIDATION_ERROR') problems.push(`${JSON.stringify(cursor)}: ${response.statusCode} ${response.body}`)
      }), { seed: 4242, numRuns: 60 })
      t.strictSame(problems, [], 'random cursors: 400 VALIDATION_ERROR')
    })

    t.test('GET /admin/users/:id: the user with their sessions as /auth/sessions lists them', async (t) => {
      const app = await shared()
      const admin = await adminAccount(app)
      const user = await account(app, 'detail', { 'user-agent': 'Laptop/1.0' })
      await logIn(app, user.email, PASSWORD, { 'user-agent': 'Phone/2.0' })

      const response = await getUser(app, admin.accessToken, user.userId)
      t.equal(response.statusCode, 200)
      const body = response.json()
      t.strictSame(Object.keys(body).sort(), [...userKeys, 'sessions'].sort(), 'the user\'s fields and sessions')
      t.equal(body.id, user.userId)
      t.equal(body.email, user.email)
      t.strictSame(body.roles, [])
      t.equal(body.disabled, false)
      const own = (await call(app, user.accessToken, { method: 'GET', url: '/auth/sessions' })).json()
      t.strictSame(body.sessions, own.map((session: { current: boolean }) => ({ ...session, current: false })),
        'the sessions as the user sees them, none of them the admin\'s')
      t.strictSame(body.sessions.map((session: { userAgent: string }) => session.userAgent), ['Laptop/1.0', 'Phone/2.0'])

      const self = (await getUser(app, admin.accessToken, admin.userId)).json()
      t.strictSame(self.roles, ['admin'], 'the admin sees their own role')
      t.strictSame(self.sessions.map((session: { current: boolean }) => session.current), [true], 'and their own session, current')
    })

    t.test('the :id routes: 404 NOT_FOUND for an unknown user, 400 VALIDATION_ERROR for an id that is no uuid', async (t) => {
      const app = await shared()
      const admin = await adminAccount(app)
      const unknown = randomUUID()
      const routes = (id: string): Array<[string, InjectOptions]> => [
        ['GET', { method: 'GET', url: `/admin/users/${id}` }],
        ['PATCH', { method: 'PATCH', url: `/admin/users/${id}`, payload: { roles: ['billing'] } }],
        ['DELETE', { method: 'DELETE', url: `/admin/users/${id}` }],
        ['DELETE sessions', { method: 'DELETE', url: `/admin/users/${id}/sessions` }]
      ]
      for (const [name, options] of routes(unknown)) {
        assertErrorShape(t, await call(app, admin.accessToken, options), 404, 'NOT_FOUND', `${name}: an unknown uuid`)
      }
      for (const id of ['not-a-uuid', '123', `${unknown}0`, encodeURIComponent("1' or '1'='1")]) {
        for (const [name, options] of routes(id)) {
          assertErrorShape(t, await call(app, admin.accessToken, options), 400, 'VALIDATION_ERROR', `${name}: id ${id}`)
        }
      }
      const deleted = await account(app, 'detail-deleted')
      t.equal((await deleteMe(app, deleted.accessToken)).statusCode, 204)
      for (const [name, options] of routes(deleted.userId)) {
        assertErrorShape(t, await call(app, admin.accessToken, options), 404, 'NOT_FOUND', `${name}: a deleted user`)
      }
    })

    t.test('PATCH /admin/users/:id: 200 with the user; roles are replaced as a whole, at most 32', async (t) => {
      const app = await shared()
      const admin = await adminAccount(app)
      const user = await account(app, 'patch')
      const patched = await patchUser(app, admin.accessToken, user.userId, { roles: ['support', 'billing'] })
      t.equal(patched.statusCode, 200)
      const body = patched.json()
      t.strictSame(Object.keys(body).sort(), userKeys, 'the user, as GET /admin/users lists one')
      t.equal(body.id, user.userId)
      t.equal(body.email, user.email)
      t.equal(body.disabled, false)
      t.strictSame(sorted(body.roles), ['billing', 'support'])
      t.strictSame(sorted((await getUser(app, admin.accessToken, user.userId)).json().roles), ['billing', 'support'], 'GET shows them')

      t.strictSame((await patchUser(app, admin.accessToken, user.userId, { roles: ['ops'] })).json().roles, ['ops'], 'replaced, not added to')
      t.strictSame((await patchUser(app, admin.accessToken, user.userId, { disabled: false })).json().roles, ['ops'], 'a patch without roles keeps them')
      t.strictSame((await patchUser(app, admin.accessToken, user.userId, { roles: [] })).json().roles, [], 'and [] removes them all')

      // The most a token can carry: 32 roles of 32 characters.
      const most = Array.from({ length: 32 }, (_, i) => `r${String(i).padStart(2, '0')}-${'x'.repeat(28)}`)
      const full = await patchUser(app, admin.accessToken, user.userId, { roles: most })
      t.equal(full.statusCode, 200, '32 roles of 32 characters: 200')
      t.strictSame(sorted(full.json().roles), most)
      const pair = await logIn(app, user.email)
      t.strictSame(sorted(claimsOf(pair.accessToken).roles as string[]), most, 'all of them in the token')
      t.equal((await me(app, pair.accessToken)).statusCode, 200, 'which is accepted')
      t.equal((await refresh(app, pair.refreshToken)).statusCode, 200, 'and refreshed')
      for (const role of ['a', 'z9', 'a_b-c', 'x-']) {
        t.equal((await patchUser(app, admin.accessToken, user.userId, { roles: [role] })).statusCode, 200, `the role name ${role}`)
      }
    })

    t.test('PATCH /admin/users/:id refuses a bad body with 400 VALIDATION_ERROR and changes nothing', async (t) => {
      const app = await shared()
      const admin = await adminAccount(app)
      const user = await withRoles(app, 'patch-invalid', ['billing'])
      const userId = user.userId
      const cases: Array<[string, unknown]> = [
        ['an upper-case role', { roles: ['Billing'] }],
        ['a role of 33 characters', { roles: [`a${'b'.repeat(32)}`] }],
        ['a role starting with a digit', { roles: ['1billing'] }],
        ['a role starting with a dash', { roles: ['-billing'] }],
        ['an empty role', { roles: [''] }],
        ['a role with a space', { roles: ['bil ling'] }],
        ['a role with a dot', { roles: ['bil.ling'] }],
        ['a role with a non-ASCII letter', { roles: ['rôle'] }],
        ['a role with a newline', { roles: ['billing\n'] }],
        ['33 roles', { roles: Array.from({ length: 33 }, (_, i) => `role-${i}`) }],
        ['duplicate roles', { roles: ['billing', 'billing'] }],
        ['roles as a string', { roles: 'admin' }],
        ['roles as null', { roles: null }],
        ['a role as a number', { roles: [1] }],
        ['disabled as a string', { disabled: 'true' }],
        ['disabled as a number', { disabled: 1 }],
        ['disabled as null', { disabled: null }],
        ['an unknown field beside roles', { roles: ['billing'], email: 'new@example.com' }],
        ['only an unknown field', { admin: true }],
        ['an empty patch', {}],
        ['an array', [{ roles: [] }]],
        ['a string', 'roles'],
        ['no body at all', undefined]
      ]
      for (const [name, payload] of cases) {
        const response = payload === undefined
          ? await call(app, admin.accessToken, { method: 'PATCH', url: `/admin/users/${userId}` })
          : await patchUser(app, admin.accessToken, userId, JSON.stringify(payload), { 'content-type': 'application/json' })
        assertErrorShape(t, response, 400, 'VALIDATION_ERROR', name)
      }
      assertErrorShape(t, await patchUser(app, admin.accessToken, userId, '{"roles": [', { 'content-type': 'application/json' }), 400, 'VALIDATION_ERROR',
        'malformed JSON')
      assertErrorShape(t, await patchUser(app, admin.accessToken, userId, 'roles=admin', { 'content-type': 'application/x-www-form-urlencoded' }), 415,
        'UNSUPPORTED_MEDIA_TYPE', 'a form body')
      assertErrorShape(t, await patchUser(app, admin.accessToken, randomUUID(), { roles: ['Admin'] }), 400, 'VALIDATION_ERROR',
        'an unknown user with a bad body: the body is checked first')
      await assertUntouched(t, app, user, ['billing'], 'after every refusal')
      t.strictSame(claimsOf((await refresh(app, user.refreshToken)).json().accessToken).roles, ['billing'], 'the next refresh carries the same roles')
    })

    t.test('PATCH /admin/users/:id with any body: 200 exactly for a valid one (stored as sent), else 400 VALIDATION_ERROR', async (t) => {
      const app = await shared()
      const admin = await adminAccount(app)
      const user = await account(app, 'patch-fuzz')
      const roleName = fc.stringMatching(/^[a-z][a-z0-9_-]{0,31}$/)
      const body = fc.oneof(
        fc.record({ roles: fc.uniqueArray(roleName, { maxLength: 34 }), disabled: fc.boolean() }, { requiredKeys: [] }),
        fc.record({ roles: fc.array(fc.oneof(roleName, fc.string({ maxLength: 40 })), { maxLength: 4 }) }),
        fc.dictionary(fc.string({ maxLength: 10 }), fc.jsonValue(), { maxKeys: 3 }),
        fc.jsonValue()
      )
      const problems: string[] = []
      await fc.assert(fc.asyncProperty(body, async (payload) => {
        const response = await patchUser(app, admin.accessToken, user.userId, JSON.stringify(payload), { 'content-type': 'application/json' })
        const valid = typeof payload === 'object' && payload !== null && !Array.isArray(payload) && Object.keys(payload).length > 0 &&
          Object.entries(payload).every(([key, value]) => key === 'disabled'
            ? typeof value === 'boolean'
            : key === 'roles' && Array.isArray(value) && value.length <= 32 && new Set(value).size === value.length &&
              value.every((role) => typeof role === 'string' && /^[a-z][a-z0-9_-]{0,31}$/.test(role)))
        const expected = valid ? 200 : 400
        if (response.statusCode !== expected || (!valid && codeOf(response) !== 'VALIDATION_ERROR')) {
          problems.push(`${JSON.stringify(payload)}: ${response.statusCode} ${codeOf(response) ?? ''} (expected ${expected})`)
          return
        }
        if (valid) {
          const stored = (await app.users.findById(user.userId))!
          const { roles, disabled } = payload as { roles?: string[], disabled?: boolean }
          if (roles !== undefined && JSON.stringify(stored.roles) !== JSON.stringify(sorted(roles))) problems.push(`${JSON.stringify(payload)}: stored ${JSON.stringify(stored.roles)}`)
          if (disabled !== undefined && stored.disabled !== disabled) problems.push(`${JSON.stringify(payload)}: stored disabled ${stored.disabled}`)
        }
      }), { seed: 99, numRuns: 50 })
      t.strictSame(problems, [], 'random bodies')
    })

    t.test('a login after a grant carries the role; /users/me shows the roles; a new account has none', async (t) => {
      const app = await shared()
      const admin = await adminAccount(app)
      const user = await account(app, 'granted')
      t.strictSame(claimsOf(user.accessToken).roles, [], 'a new account\'s token: roles []')
      t.strictSame((await me(app, user.accessToken)).json().roles, [], '/users/me: roles []')
      t.equal((await patchUser(app, admin.accessToken, user.userId, { roles: ['billing'] })).statusCode, 200)
      const pair = await logIn(app, user.email)
      t.strictSame(claimsOf(pair.accessToken).roles, ['billing'], 'the next login\'s token carries the role')
      const profile = (await me(app, pair.accessToken)).json()
      t.strictSame(Object.keys(profile).sort(), ['createdAt', 'email', 'emailVerified', 'id', 'roles'], '/users/me: API.md\'s fields')
      t.strictSame(profile.roles, ['billing'], '/users/me shows the role')
      t.strictSame(claimsOf(admin.accessToken).roles, ['admin'], 'an admin\'s token carries admin')
    })

    t.test('an added role appears from the next refresh only: the token before keeps working without it', async (t) => {
      const app = await shared()
      const admin = await adminAccount(app)
      const user = await account(app, 'added')
      t.equal((await patchUser(app, admin.accessToken, user.userId, { roles: ['admin', 'billing'] })).statusCode, 200)
      t.equal((await me(app, user.accessToken)).statusCode, 200, 'the token issued before is still accepted')
      t.strictSame(claimsOf(user.accessToken).roles, [], 'and still claims no role')
      t.strictSame(sorted((await me(app, user.accessToken)).json().roles), ['admin', 'billing'], '/users/me shows the roles the account has now')
      assertErrorShape(t, await listUsers(app, user.accessToken), 403, 'FORBIDDEN', 'the token before: still no admin route')

      const refreshed = await refresh(app, user.refreshToken)
      t.equal(refreshed.statusCode, 200)
      const next = refreshed.json()
      t.strictSame(sorted(claimsOf(next.accessToken).roles as string[]), ['admin', 'billing'], 'the next refresh carries the new roles')
      t.equal((await listUsers(app, next.accessToken)).statusCode, 200, 'and opens the admin routes')
      t.equal((await me(app, user.accessToken)).statusCode, 200, 'the older token is still accepted: nothing was removed')
    })

    t.test('a removed role refuses the access tokens issued before (ACCESS_TOKEN_REVOKED) within a second; the sessions stay', async (t) => {
      const app = await shared()
      const admin = await adminAccount(app)
      const user = await withRoles(app, 'removed', ['billing', 'support'])
      const other = await logIn(app, user.email, PASSWORD, { 'user-agent': 'Other/1.0' })
      t.equal((await me(app, user.accessToken)).statusCode, 200, 'before: accepted')

      const patched = await patchUser(app, admin.accessToken, user.userId, { roles: ['support'] })
      t.equal(patched.statusCode, 200)
      t.strictSame(patched.json().roles, ['support'])
      for (const [name, pair] of [['the session\'s token', user], ['another session\'s token', other]] as const) {
        t.ok(await eventually(async () => codeOf(await me(app, pair.accessToken)) === 'ACCESS_TOKEN_REVOKED'), `${name}: refused within a second`)
        assertErrorShape(t, await me(app, pair.accessToken), 401, 'ACCESS_TOKEN_REVOKED', name)
      }
      const sessions = await app.admin.getUser(user.userId)
      t.equal(sessions.sessions.length, 2, 'both sessions stay')

      const refreshed = await refresh(app, user.refreshToken)
      t.equal(refreshed.statusCode, 200, 'the session refreshes')
      const next = refreshed.json()
      t.strictSame(claimsOf(next.accessToken).roles, ['support'], 'its new token lacks the removed role')
      t.equal((await me(app, next.accessToken)).statusCode, 200, 'and is accepted')
      t.strictSame((await me(app, next.accessToken)).json().roles, ['support'], '/users/me shows the roles now')
      await new Promise((resolve) => setTimeout(resolve, 1_100))
      t.equal((await me(app, next.accessToken)).statusCode, 200, 'still accepted a second later')
      const otherRefreshed = await refresh(app, other.refreshToken)
      t.equal(otherRefreshed.statusCode, 200, 'the other session refreshes too')
      t.equal((await me(app, otherRefreshed.json().accessToken)).statusCode, 200)
      t.strictSame(claimsOf((await logIn(app, user.email)).accessToken).roles, ['support'], 'a new login: the roles now')
    })

    t.test('a demoted admin\'s token is refused on the admin routes (401), then refreshed, is 403 FORBIDDEN', async (t) => {
      const app = await shared()
      const admin = await adminAccount(app)
      const demoted = await adminAccount(app, 'demoted')
      t.equal((await listUsers(app, demoted.accessToken)).statusCode, 200, 'before: an admin')
      t.equal((await patchUser(app, admin.accessToken, demoted.userId, { roles: [] })).statusCode, 200, 'demoted by another admin')
      t.ok(await eventually(async () => codeOf(await listUsers(app, demoted.accessToken)) === 'ACCESS_TOKEN_REVOKED'), 'its token: ACCESS_TOKEN_REVOKED')
      assertErrorShape(t, await patchUser(app, demoted.accessToken, admin.userId, { roles: [] }), 401, 'ACCESS_TOKEN_REVOKED', 'it cannot act any more')
      const next = (await refresh(app, demoted.refreshToken)).json()
      t.strictSame(claimsOf(next.accessToken).roles, [])
      assertErrorShape(t, await listUsers(app, next.accessToken), 403, 'FORBIDDEN', 'its refreshed token')
      t.equal((await me(app, next.accessToken)).statusCode, 200, 'which is an ordinary token')
      t.strictSame((await app.users.findById(admin.userId))!.roles, ['admin'], 'the other admin is untouched')
    })

    t.test('POST /auth/introspect answers the roles; a removed role makes the older token inactive', async (t) => {
      const app = await shared()
      const admin = await adminAccount(app)
      const user = await withRoles(app, 'introspected', ['billing', 'support'])
      const claims = claimsOf(user.accessToken)
      const active = await introspect(app, user.accessToken)
      t.equal(active.statusCode, 200)
      // The rest of the answer is introspect.test.ts's.
      t.match(active.json(), { active: true, sub: claims.sub, jti: claims.jti, roles: ['billing', 'support'] }, 'RFC 7662 with the roles')
      const plain = await account(app, 'introspected-plain')
      t.strictSame((await introspect(app, plain.accessToken)).json().roles, [], 'no roles: []')

      t.equal((await patchUser(app, admin.accessToken, user.userId, { roles: ['support'] })).statusCode, 200)
      t.ok(await eventually(async () => (await introspect(app, user.accessToken)).json().active === false), 'the older token: active false')
      t.strictSame((await introspect(app, user.accessToken)).json(), { active: false })
      const next = (await refresh(app, user.refreshToken)).json()
      const now = await introspect(app, next.accessToken)
      t.equal(now.json().active, true, 'the refreshed one is active')
      t.strictSame(now.json().roles, ['support'], 'with the roles now')

      t.equal((await patchUser(app, admin.accessToken, user.userId, { disabled: true })).statusCode, 200)
      t.ok(await eventually(async () => (await introspect(app, next.accessToken)).json().active === false), 'disabled: inactive')
    })

    t.test('disabling ends every session at once: refresh 403 ACCOUNT_DISABLED with the cookie cleared, access tokens refused within a second', async (t) => {
      const app = await shared()
      const admin = await adminAccount(app)
      const user = await account(app, 'disabled')
      const other = await logIn(app, user.email)
      const patched = await patchUser(app, admin.accessToken, user.userId, { disabled: true })
      t.equal(patched.statusCode, 200)
      t.equal(patched.json().disabled, true, 'the answer says disabled')

      const byCookie = await refreshWithCookie(app, user)
      assertErrorShape(t, byCookie, 403, 'ACCOUNT_DISABLED', 'a refresh with the cookie')
      const cleared = refreshCookie(byCookie)
      t.equal(cleared?.value, '', 'the refresh cookie is cleared')
      t.equal(cleared?.maxAge, 0, 'at once')
      assertErrorShape(t, await refresh(app, other.refreshToken), 403, 'ACCOUNT_DISABLED', 'a refresh with the token in the body')
      assertErrorShape(t, await refresh(app, other.refreshToken), 403, 'ACCOUNT_DISABLED', 'and again')
      for (const [name, pair] of [['the first session', user], ['the second session', other]] as const) {
        t.ok(await eventually(async () => codeOf(await me(app, pair.accessToken)) === 'ACCESS_TOKEN_REVOKED'), `${name}: its access token is refused`)
      }
      const detail = (await getUser(app, admin.accessToken, user.userId)).json()
      t.equal(detail.disabled, true, 'GET shows it disabled')
      t.strictSame(detail.sessions, [], 'with no session')
      const listed = (await listUsers(app, admin.accessToken, { query: user.email })).json().users
      t.strictSame(listed.map((listedUser: AdminUserBody) => listedUser.disabled), [true], 'and so does the listing')
    })

    t.test('a disabled account: a wrong password 401 INVALID_CREDENTIALS, the right one 403 ACCOUNT_DISABLED; enabled, it logs in again', async (t) => {
      const app = await shared()
      const admin = await adminAccount(app)
      const user = await account(app, 'disabled-login')
      t.equal((await patchUser(app, admin.accessToken, user.userId, { disabled: true })).statusCode, 200)
      assertErrorShape(t, await loginAttempt(app, user.email, 'not the password'), 401, 'INVALID_CREDENTIALS', 'a wrong password')
      assertErrorShape(t, await loginAttempt(app, user.email), 403, 'ACCOUNT_DISABLED', 'the right password')
      assertErrorShape(t, await loginAttempt(app, `  ${user.email.toUpperCase()} `), 403, 'ACCOUNT_DISABLED', 'the email in capitals')
      t.equal((await patchUser(app, admin.accessToken, user.userId, { disabled: true })).statusCode, 200, 'disabling again: 200')

      const enabled = await patchUser(app, admin.accessToken, user.userId, { disabled: false })
      t.equal(enabled.statusCode, 200)
      t.equal(enabled.json().disabled, false, 'enabled')
      const login = await loginAttempt(app, user.email)
      t.equal(login.statusCode, 200, 'the user logs in again')
      t.equal((await me(app, login.json().accessToken)).statusCode, 200, 'with a working token')
      t.equal((await refresh(app, login.json().refreshToken)).statusCode, 200, 'and session')
      assertErrorShape(t, await refresh(app, user.refreshToken), 401, 'REFRESH_TOKEN_REVOKED', 'the session the disabling ended stays ended')
      assertErrorShape(t, await me(app, user.accessToken), 401, 'ACCESS_TOKEN_REVOKED', 'and so does its access token')
    })

    t.test('with REQUIRE_VERIFIED_EMAIL=true, a disabled account answers ACCOUNT_DISABLED before EMAIL_NOT_VERIFIED', async (t) => {
      const app = await buildTestApp(t, { ...storage, rateLimits: NO_RATE_LIMITS, env: { REQUIRE_VERIFIED_EMAIL: 'true' } })
      const verified = async (label: string) => {
        const email = await signUp(app, label)
        const user = (await app.users.findByEmail(email))!
        await app.users.markEmailVerified(user.id, email)
        return { email, userId: user.id }
      }
      const adminUser = await verified('verified-admin')
      await app.admin.updateUser(adminUser.userId, { roles: ['admin'] }, CLI)
      const admin = await logIn(app, adminUser.email)
      const unverified = await signUp(app, 'unverified')
      const unverifiedId = (await app.users.findByEmail(unverified))!.id
      const checked = await verified('verified-user')
      assertErrorShape(t, await loginAttempt(app, unverified), 403, 'EMAIL_NOT_VERIFIED', 'enabled and unverified')
      for (const id of [unverifiedId, checked.userId]) t.equal((await patchUser(app, admin.accessToken, id, { disabled: true })).statusCode, 200)
      assertErrorShape(t, await loginAttempt(app, unverified, 'not the password'), 401, 'INVALID_CREDENTIALS', 'disabled, a wrong password')
      assertErrorShape(t, await loginAttempt(app, unverified), 403, 'ACCOUNT_DISABLED', 'disabled and unverified')
      assertErrorShape(t, await loginAttempt(app, checked.email), 403, 'ACCOUNT_DISABLED', 'disabled and verified')
    })

    t.test('a login in flight when the account is disabled (its session opened, not yet answered) is refused', async (t) => {
      const app = await shared()
      const admin = await adminAccount(app)
      const user = await account(app, 'disabled-inflight')
      const paused = pauseNextSessionCreate(app)
      const inFlight = loginAttempt(app, user.email)
      await paused.reached
      t.equal((await patchUser(app, admin.accessToken, user.userId, { disabled: true })).statusCode, 200, 'disabled while the login waits')
      paused.release()
      const login = await inFlight
      assertErrorShape(t, login, 403, 'ACCOUNT_DISABLED', 'the login in flight')
      t.strictSame(await app.sessions.list(user.userId, ''), [], 'no session is left open')
    })

    t.test('a login whose password was checked before the disabling and whose session opens after is refused', async (t) => {
      const { hasher, pauseNextVerify } = instrumentedHasher()
      const app = await buildTestApp(t, { ...storage, rateLimits: NO_RATE_LIMITS, passwordHasher: hasher })
      const admin = await adminAccount(app)
      const user = await account(app, 'disabled-verified')
      const paused = pauseNextVerify()
      const inFlight = loginAttempt(app, user.email)
      await paused.reached
      t.equal((await patchUser(app, admin.accessToken, user.userId, { disabled: true })).statusCode, 200, 'disabled after the password was checked')
      paused.release()
      const login = await inFlight
      if (login.statusCode === 200) {
        // Answered before it saw the change: then nothing it answered may work.
        assertErrorShape(t, await refresh(app, login.json().refreshToken), 403, 'ACCOUNT_DISABLED', 'its refresh token')
        assertErrorShape(t, await me(app, login.json().accessToken), 401, 'ACCESS_TOKEN_REVOKED', 'its access token')
      } else {
        assertErrorShape(t, login, 403, 'ACCOUNT_DISABLED', 'the login in flight')
      }
      t.strictSame(await app.sessions.list(user.userId, ''), [], 'no session is left open')
    })

    t.test('DELETE /admin/users/:id: 204, as DELETE /users/me (sessions end, login fails, the email is free, account_deleted with the admin)', async (t) => {
      const app = await shared()
      const admin = await adminAccount(app)
      const user = await account(app, 'admin-deleted')
      const other = await logIn(app, user.email)
      const deleted = await deleteUser(app, admin.accessToken, user.userId)
      t.equal(deleted.statusCode, 204)
      t.equal(deleted.body, '')
      for (const [name, pair] of [['a session', user], ['another session', other]] as const) {
        assertErrorShape(t, await refresh(app, pair.refreshToken), 401, 'REFRESH_TOKEN_REVOKED', `${name}: refresh`)
        t.ok(await eventually(async () => codeOf(await me(app, pair.accessToken)) === 'ACCESS_TOKEN_REVOKED'), `${name}: its access token is refused`)
      }
      assertErrorShape(t, await loginAttempt(app, user.email), 401, 'INVALID_CREDENTIALS', 'login')
      t.equal(await app.users.findById(user.userId), undefined, 'the row is gone')
      assertErrorShape(t, await getUser(app, admin.accessToken, user.userId), 404, 'NOT_FOUND', 'GET after')
      assertErrorShape(t, await deleteUser(app, admin.accessToken, user.userId), 404, 'NOT_FOUND', 'a second DELETE')
      t.strictSame((await listUsers(app, admin.accessToken, { query: user.email })).json().users, [], 'no longer listed')

      await app.securityEvents.flush()
      const events = (await adminEvents(app, admin.accessToken, { userId: user.userId, type: 'account_deleted' })).json().events
      t.equal(events.length, 1, 'one account_deleted event')
      t.equal(events[0]?.actorId, admin.userId, 'with the admin\'s id')
      t.equal(events[0]?.userId, user.userId, 'and the user\'s')
      const kept = (await adminEvents(app, admin.accessToken, { userId: user.userId, limit: 100 })).json().events as EventBody[]
      t.ok(kept.some(({ type }) => type === 'login'), 'the account\'s events are kept')
      t.strictSame(kept.filter(({ ip, userAgent }) => ip !== null || userAgent !== null), [], 'with the id only, as after DELETE /users/me')

      const again = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: user.email, password: NEW_PASSWORD } })
      t.equal(again.statusCode, 201, 'the email signs up again')
      t.not(again.json().id, user.userId, 'as a new account')
      t.equal((await loginAttempt(app, user.email, NEW_PASSWORD)).statusCode, 200, 'which logs in')
      t.equal((await me(app, admin.accessToken)).statusCode, 200, 'the admin is untouched')
    })

    t.test('DELETE /admin/users/:id/sessions: 204, every session ends (refresh REFRESH_TOKEN_REVOKED, tokens refused), login still works', async (t) => {
      const app = await shared()
      const admin = await adminAccount(app)
      const user = await account(app, 'revoked')
      const other = await logIn(app, user.email)
      const bystander = await account(app, 'revoked-bystander')
      const revoked = await revokeSessions(app, admin.accessToken, user.userId)
      t.equal(revoked.statusCode, 204)
      t.equal(revoked.body, '')
      for (const [name, pair] of [['a session', user], ['another session', other]] as const) {
        assertErrorShape(t, await refresh(app, pair.refreshToken), 401, 'REFRESH_TOKEN_REVOKED', `${name}: refresh`)
        t.ok(await eventually(async () => codeOf(await me(app, pair.accessToken)) === 'ACCESS_TOKEN_REVOKED'), `${name}: its access token is refused`)
      }
      t.strictSame((await getUser(app, admin.accessToken, user.userId)).json().sessions, [], 'no session left')
      const login = await loginAttempt(app, user.email)
      t.equal(login.statusCode, 200, 'the user logs in again')
      t.equal((await me(app, login.json().accessToken)).statusCode, 200)
      t.equal((await revokeSessions(app, admin.accessToken, user.userId)).statusCode, 204, 'again: 204')
      t.equal((await me(app, bystander.accessToken)).statusCode, 200, 'another user\'s session goes on')
      t.equal((await me(app, admin.accessToken)).statusCode, 200, 'and the admin\'s')
    })

    t.test('admin actions are recorded with the admin\'s id; GET /admin/events filters by user and type', async (t) => {
      const app = await shared()
      const agent = { 'user-agent': 'AdminConsole/1.0' }
      const admin = await adminAccount(app, 'events-admin', agent)
      const user = await account(app, 'events-user', { 'user-agent': 'UserAgent/1.0' })
      const act = async (name: string, response: Promise<LightMyRequestResponse>, status: number) => t.equal((await response).statusCode, status, name)
      await act('grant', patchUser(app, admin.accessToken, user.userId, { roles: ['billing'] }, agent), 200)
      await act('disable', patchUser(app, admin.accessToken, user.userId, { disabled: true }, agent), 200)
      await act('enable', patchUser(app, admin.accessToken, user.userId, { disabled: false }, agent), 200)
      await act('nothing to change', patchUser(app, admin.accessToken, user.userId, { disabled: false, roles: ['billing'] }, agent), 200)
      const again = await logIn(app, user.email, PASSWORD, { 'user-agent': 'UserAgent/1.0' })
      await act('revoke sessions', revokeSessions(app, admin.accessToken, user.userId, agent), 204)
      await app.securityEvents.flush()

      const response = await adminEvents(app, admin.accessToken, { userId: user.userId })
      t.equal(response.statusCode, 200)
      const body = response.json()
      t.strictSame(Object.keys(body).sort(), ['events', 'next'])
      const events = body.events as EventBody[]
      for (const event of events) t.strictSame(Object.keys(event).sort(), adminEventKeys, `${event.type}: with userId`)
      t.ok(events.every(({ userId }) => userId === user.userId), 'only the user\'s')
      const byAdmin = events.filter(({ actorId }) => actorId !== null)
      t.strictSame(byAdmin.map(({ type }) => type), ['sessions_revoked', 'account_enabled', 'account_disabled', 'roles_changed'],
        'each action once, newest first (a patch that changes nothing records nothing)')
      for (const event of byAdmin) {
        t.equal(event.actorId, admin.userId, `${event.type}: the admin's id`)
        t.equal(event.ip, '127.0.0.1', `${event.type}: the admin's address, for admins`)
        t.equal(event.userAgent, 'AdminConsole/1.0', `${event.type}: the admin's user agent`)
      }
      const times = events.map(({ at }) => Date.parse(at))
      t.strictSame(times, [...times].sort((a, b) => b - a), 'newest first')

      const typed = (await adminEvents(app, admin.accessToken, { userId: user.userId, type: 'roles_changed' })).json().events as EventBody[]
      t.strictSame(typed.map(({ type, actorId }) => [type, actorId]), [['roles_changed', admin.userId]], 'userId and type together')
      const ofType = (await adminEvents(app, admin.accessToken, { type: 'account_disabled', limit: 100 })).json().events as EventBody[]
      t.ok(ofType.length >= 1 && ofType.every(({ type }) => type === 'account_disabled'), 'type alone: that type, of every user')
      t.ok(ofType.some(({ userId }) => userId === user.userId), 'this user\'s among them')
      const granted = (await adminEvents(app, admin.accessToken, { userId: admin.userId, type: 'roles_changed' })).json().events as EventBody[]
      t.strictSame(granted.map(({ actorId }) => actorId), [null], 'the grant from the command line: no actor id')

      // What the user sees of it: who, not from where.
      const own = (await call(app, again.accessToken, { method: 'GET', url: '/auth/events?limit=100' }))
      t.equal(own.statusCode, 401, 'the revoked session cannot list (it ended)')
      const fresh = await logIn(app, user.email, PASSWORD, { 'user-agent': 'UserAgent/1.0' })
      await app.securityEvents.flush()
      const mine = (await call(app, fresh.accessToken, { method: 'GET', url: '/auth/events?limit=100' })).json().events as EventBody[]
      const madeByAdmin = mine.filter(({ actorId }) => actorId !== null)
      t.strictSame(madeByAdmin.map(({ type }) => type), ['sessions_revoked', 'account_enabled', 'account_disabled', 'roles_changed'],
        'GET /auth/events lists what the admin did')
      for (const event of madeByAdmin) {
        t.equal(event.actorId, admin.userId, `${event.type}: with the admin's id`)
        t.equal(event.ip, null, `${event.type}: not the admin's address`)
        t.equal(event.userAgent, null, `${event.type}: nor user agent`)
        t.notOk('userId' in event, `${event.type}: the user's own listing has no userId`)
      }
      const logins = mine.filter(({ type }) => type === 'login')
      t.ok(logins.length >= 1 && logins.every(({ ip, userAgent }) => ip === '127.0.0.1' && userAgent === 'UserAgent/1.0'), 'the user\'s own logins keep theirs')

      await act('delete', deleteUser(app, admin.accessToken, user.userId, agent), 204)
      await app.securityEvents.flush()
      const deleted = (await adminEvents(app, admin.accessToken, { userId: user.userId, type: 'account_deleted' })).json().events as EventBody[]
      t.strictSame(deleted.map(({ type, actorId, userId }) => ({ type, actorId, userId })), [{ type: 'account_deleted', actorId: admin.userId, userId: user.userId }],
        'account_deleted with the admin\'s id')
      const kept = (await adminEvents(app, admin.accessToken, { userId: user.userId, limit: 100 })).json().events as EventBody[]
      t.ok(kept.length >= events.length + 1, 'the deleted account\'s events are kept')
    })

    t.test('GET /admin/events pages with limit and before; bad parameters are 400 VALIDATION_ERROR', async (t) => {
      const app = await shared()
      const admin = await adminAccount(app)
      const user = await account(app, 'events-pages')
      for (const roles of [['a'], ['b'], ['c'], ['d'], ['e']]) t.equal((await patchUser(app, admin.accessToken, user.userId, { roles })).statusCode, 200)
      await app.securityEvents.flush()
      const all = (await adminEvents(app, admin.accessToken, { userId: user.userId, limit: 100 })).json().events as EventBody[]
      const seen: EventBody[] = []
      let before: string | undefined
      for (let pages = 0; pages < 20; pages++) {
        const page = (await adminEvents(app, admin.accessToken, { userId: user.userId, limit: 2, before })).json()
        t.ok(page.events.length <= 2, 'at most 2 a page')
        seen.push(...page.events)
        if (page.next === null) break
        before = page.next
      }
      t.strictSame(seen.map(({ id }) => id), all.map(({ id }) => id), 'the pages list every event once, in order')
      t.ok(all.length >= 7, 'signup, login and five role changes')

      const bad: Record<string, Record<string, string>> = {
        'limit 0': { limit: '0' },
        'limit 101': { limit: '101' },
        'an unknown type': { type: 'everything' },
        'a userId that is no uuid': { userId: 'me' },
        'a forged before': { before: Buffer.from('1.x').toString('base64url') },
        'a users cursor as before': { cursor: 'x' },
        'an unknown parameter': { actorId: admin.userId }
      }
      for (const [name, parameters] of Object.entries(bad)) {
        assertErrorShape(t, await adminEvents(app, admin.accessToken, parameters), 400, 'VALIDATION_ERROR', name)
      }
      t.strictSame((await adminEvents(app, admin.accessToken, { userId: randomUUID() })).json(), { events: [], next: null }, 'an unknown user: no events')
    })

    t.test('search: a part of the email in any case; `_` and `%` match only themselves', async (t) => {
      const app = await shared()
      const admin = await adminAccount(app)
      const word = marker()
      const underscore = await signUp(app, `${word}a_b`)
      const anyChar = await signUp(app, `${word}axb`)
      const percent = await signUp(app, `${word}c%d`)
      const anyRun = await signUp(app, `${word}cyyyd`)
      const found = async (search: string) => {
        const response = await listUsers(app, admin.accessToken, { query: search, limit: 100 })
        t.equal(response.statusCode, 200, `query ${JSON.stringify(search)}: 200`)
        return (response.json().users as AdminUserBody[]).map(({ email }) => email)
      }
      t.strictSame(sorted(await found(word)), sorted([underscore, anyChar, percent, anyRun]), 'the common part: all four')
      t.strictSame(sorted(await found(word.toUpperCase())), sorted([underscore, anyChar, percent, anyRun]), 'in capitals: all four')
      t.strictSame(await found(`${word}a_b`), [underscore], '`_` is no wildcard: only the address with `_`')
      t.strictSame(await found(`${word}A_B`), [underscore], 'in any case')
      t.strictSame(await found(`${word}c%d`), [percent], '`%` is no wildcard: only the address with `%`')
      t.strictSame(await found(anyRun.slice(word.length + 2, word.length + 14)), [anyRun], 'a part from the middle')
      t.strictSame(await found(`${word}\\`), [], 'a backslash matches only itself')
      t.strictSame(await found(`${word}a\\_b`), [], 'and does not escape what follows')
      const percentOnly = await found('%')
      t.ok(percentOnly.includes(percent), '`%` alone: the address with `%`')
      t.ok(percentOnly.every((email) => email.includes('%')), '`%` alone: only addresses with `%`')
      const underscoreOnly = await found('_')
      t.ok(underscoreOnly.includes(underscore) && underscoreOnly.every((email) => email.includes('_')), '`_` alone: only addresses with `_`')
      const plus = await signUp(app, `${word}p+q`)
      t.strictSame(await found(`${word}p+q`), [plus], '`+` matches itself')
      t.strictSame(await found(marker()), [], 'no match: an empty page')

      t.equal((await listUsers(app, admin.accessToken, { query: '' })).statusCode, 200, 'an empty query: 200')
    })

    t.test('search: any text as the query (a NUL character too) is answered or refused as invalid, never a 5xx', async (t) => {
      const app = await shared()
      const admin = await adminAccount(app)
      const word = marker()
      const nul = await listUsers(app, admin.accessToken, { query: `${word}\u0000` })
      t.ok(nul.statusCode === 200 || codeOf(nul) === 'VALIDATION_ERROR', `a NUL character: 200 or 400 VALIDATION_ERROR (${nul.statusCode} ${codeOf(nul) ?? ''})`)
      if (nul.statusCode === 200) t.strictSame(nul.json().users, [], 'no email holds one')
      const problems: string[] = []
      const texts = fc.oneof(fc.string({ unit: 'binary', maxLength: 40 }), fc.string({ maxLength: 40 }), fc.constantFrom('\u0000', `${word}\u0000`, '\uD800', '\\%_'))
      await fc.assert(fc.asyncProperty(texts, async (text) => {
        const response = await listUsers(app, admin.accessToken, { query: text })
        if (response.statusCode !== 200 && codeOf(response) !== 'VALIDATION_ERROR') problems.push(`${JSON.stringify(text)}: ${response.statusCode} ${codeOf(response)}`)
      }), { seed: 7, numRuns: 80 })
      t.strictSame([...new Set(problems)], [], 'random queries: 200 or 400 VALIDATION_ERROR')
      t.equal((await listUsers(app, admin.accessToken, { query: word })).statusCode, 200, 'and the next search is answered')
    })

    t.test('paging: walking pages of 2 to 5 while others sign up lists every earlier user exactly once, newest first', async (t) => {
      const app = await shared()
      const admin = await adminAccount(app)
      const word = marker()
      for (let i = 0; i < 13; i++) await signUp(app, `${word}-page`)
      for (const limit of [2, 3, 4, 5]) {
        const before = (await listUsers(app, admin.accessToken, { query: word, limit: 100 })).json().users as AdminUserBody[]
        const late: Array<Promise<string>> = []
        const pages = await walk(app, admin.accessToken, word, limit, () => {
          // Signed up while the walk goes on: each between two pages.
          late.push(signUp(app, `${word}-late`), signUp(app, `${word}-late`))
        })
        await Promise.all(late)
        const listed = pages.flat()
        t.ok(pages.slice(0, -1).every((page) => page.length === limit), `limit ${limit}: every page but the last is full`)
        t.ok(pages.at(-1)!.length <= limit, `limit ${limit}: the last is not over`)
        const ids = listed.map(({ id }) => id)
        t.equal(new Set(ids).size, ids.length, `limit ${limit}: no user twice`)
        const earlier = new Set(before.map(({ id }) => id))
        t.strictSame(ids.filter((id) => earlier.has(id)), before.map(({ id }) => id), `limit ${limit}: every earlier user once, in the same order`)
        const times = listed.map(({ createdAt }) => Date.parse(createdAt))
        t.ok(times.every((time, i) => i === 0 || time <= times[i - 1]!), `limit ${limit}: newest first`)
        t.ok(listed.every(({ email }) => email.includes(word)), `limit ${limit}: only matching users`)
        t.ok(before.length >= 13, `limit ${limit}: ${before.length} users walked`)
      }
    })

    t.test('paging: users created within one millisecond, or at one instant, are each listed once, newest first', async (t) => {
      const app = await shared()
      const admin = await adminAccount(app)
      const word = marker()
      const ids: string[] = []
      for (let i = 0; i < 8; i++) ids.push((await app.users.findByEmail(await signUp(app, `${word}-instant`)))!.id)
      // Four a microsecond apart inside one millisecond (what a JavaScript Date cannot tell apart), four at the same instant.
      const instants = ['2029-06-01 12:00:00.123401+00', '2029-06-01 12:00:00.123402+00', '2029-06-01 12:00:00.123403+00', '2029-06-01 12:00:00.123404+00']
      for (const [i, id] of ids.entries()) {
        const at = i < 4 ? instants[i]! : '2029-06-01 12:00:00.5+00'
        await app.database.db.execute(sql`update users set created_at = ${at}::timestamptz where id = ${id}::uuid`)
      }
      const expected = [...ids.slice(4).sort().reverse(), ...ids.slice(0, 4).reverse()]
      t.strictSame((await listUsers(app, admin.accessToken, { query: word, limit: 100 })).json().users.map(({ id }: AdminUserBody) => id), expected,
        'one page: newest first, the same instant by id')
      for (const limit of [1, 2, 3]) {
        const listed = (await walk(app, admin.accessToken, word, limit)).flat().map(({ id }) => id)
        t.strictSame(listed, expected, `pages of ${limit}: each once, in the same order`)
      }
    })

    t.test('LAST_ADMIN: the last enabled admin cannot be demoted, disabled or deleted (409), and nothing changes', async (t) => {
      const app = await isolated()
      const admin = await adminAccount(app, 'last')
      const refused: Array<[string, () => Promise<LightMyRequestResponse>]> = [
        ['PATCH roles []', () => patchUser(app, admin.accessToken, admin.userId, { roles: [] })],
        ['PATCH roles without admin', () => patchUser(app, admin.accessToken, admin.userId, { roles: ['billing'] })],
        ['PATCH disabled', () => patchUser(app, admin.accessToken, admin.userId, { disabled: true })],
        ['PATCH disabled with admin kept', () => patchUser(app, admin.accessToken, admin.userId, { roles: ['admin'], disabled: true })],
        ['DELETE /admin/users/:id', () => deleteUser(app, admin.accessToken, admin.userId)],
        ['DELETE /users/me', () => deleteMe(app, admin.accessToken)]
      ]
      for (const [name, request] of refused) assertErrorShape(t, await request(), 409, 'LAST_ADMIN', name)
      assertErrorShape(t, await deleteMe(app, admin.accessToken, 'not the password'), 401, 'INVALID_CREDENTIALS', 'DELETE /users/me, a wrong password')

      await assertUntouched(t, app, admin, ['admin'], 'the last admin')
      t.equal((await listUsers(app, admin.accessToken)).statusCode, 200, 'its token still opens the admin routes')
      const refreshed = await refresh(app, admin.refreshToken)
      t.equal(refreshed.statusCode, 200, 'its session goes on')
      t.strictSame(claimsOf(refreshed.json().accessToken).roles, ['admin'])
      t.equal((await loginAttempt(app, admin.email)).statusCode, 200, 'it logs in')
      await app.securityEvents.flush()
      const types = (await app.securityEventStore.list({ userId: admin.userId, limit: 100 })).events.map(({ type }) => type)
      t.strictSame(types.filter((type) => ['roles_changed', 'account_disabled', 'account_deleted', 'sessions_revoked'].includes(type)), ['roles_changed'],
        'no event but the first grant')

      const kept = await patchUser(app, admin.accessToken, admin.userId, { roles: ['admin', 'billing'] })
      t.equal(kept.statusCode, 200, 'a change that keeps the role: 200')
      t.strictSame(sorted(kept.json().roles), ['admin', 'billing'])

      // A disabled admin is no admin that counts.
      const dormant = await signUp(app, 'last-dormant')
      const dormantId = (await app.users.findByEmail(dormant))!.id
      await app.admin.updateUser(dormantId, { roles: ['admin'], disabled: true }, CLI)
      assertErrorShape(t, await patchUser(app, admin.accessToken, admin.userId, { roles: [] }), 409, 'LAST_ADMIN', 'with only a disabled admin beside')
      t.equal((await patchUser(app, admin.accessToken, dormantId, { disabled: false })).statusCode, 200, 'the other admin enabled')
      const demoted = await patchUser(app, admin.accessToken, admin.userId, { roles: [] })
      t.equal(demoted.statusCode, 200, 'now the first may demote itself')
      t.strictSame(demoted.json().roles, [])
      t.ok(await eventually(async () => codeOf(await listUsers(app, admin.accessToken)) === 'ACCESS_TOKEN_REVOKED'), 'and its admin token is refused')
    })

    t.test('LAST_ADMIN: with two admins, one may demote, disable or delete the other; then it is the last', async (t) => {
      const app = await isolated()
      const first = await adminAccount(app, 'pair-first')
      let second = await adminAccount(app, 'pair-second')
      t.equal((await patchUser(app, first.accessToken, second.userId, { roles: [] })).statusCode, 200, 'the first demotes the second')
      t.ok(await eventually(async () => codeOf(await listUsers(app, second.accessToken)) === 'ACCESS_TOKEN_REVOKED'), 'the second\'s admin token is refused')
      assertErrorShape(t, await patchUser(app, first.accessToken, first.userId, { roles: [] }), 409, 'LAST_ADMIN', 'the first is now the last')

      await app.admin.updateUser(second.userId, { roles: ['admin'] }, CLI)
      second = { ...await logIn(app, second.email), userId: second.userId }
      t.equal((await patchUser(app, second.accessToken, first.userId, { disabled: true })).statusCode, 200, 'the second disables the first')
      assertErrorShape(t, await loginAttempt(app, first.email), 403, 'ACCOUNT_DISABLED', 'the first cannot log in')
      assertErrorShape(t, await deleteMe(app, second.accessToken), 409, 'LAST_ADMIN', 'the second is now the last enabled admin')
      t.equal((await patchUser(app, second.accessToken, first.userId, { disabled: false })).statusCode, 200, 'the first enabled again')
      const firstAgain = { ...await logIn(app, first.email), userId: first.userId }
      t.equal((await deleteUser(app, firstAgain.accessToken, second.userId)).statusCode, 204, 'the first deletes the second')
      assertErrorShape(t, await deleteMe(app, firstAgain.accessToken), 409, 'LAST_ADMIN', 'and cannot delete itself')
      t.strictSame((await app.users.findById(first.userId))!.roles, ['admin'], 'one admin remains')
    })

    t.test('LAST_ADMIN: two admins demoting each other at once: exactly one succeeds, the other 409, and one admin remains (repeated)', async (t) => {
      const app = await isolated()
      const emails = [await signUp(app, 'race-a'), await signUp(app, 'race-b')]
      const ids = await Promise.all(emails.map(async (email) => (await app.users.findByEmail(email))!.id))
      /** What each of the two does at once, to the other (`other`) or to itself; `self`: the one that succeeds is the one that goes. */
      const rounds: Array<{ name: string, success: number, self?: true, act: (token: string, other: string) => Promise<LightMyRequestResponse> }> = [
        { name: 'demote each other', success: 200, act: (token, other) => patchUser(app, token, other, { roles: [] }) },
        { name: 'disable each other', success: 200, act: (token, other) => patchUser(app, token, other, { disabled: true }) },
        { name: 'demote each other', success: 200, act: (token, other) => patchUser(app, token, other, { roles: ['billing'] }) },
        { name: 'delete each other', success: 204, act: (token, other) => deleteUser(app, token, other) },
        { name: 'demote each other', success: 200, act: (token, other) => patchUser(app, token, other, { roles: [] }) },
        { name: 'demote themselves', success: 200, self: true, act: (token) => patchUser(app, token, claimsOf(token).sub as string, { roles: [] }) },
        { name: 'delete themselves (DELETE /users/me)', success: 204, self: true, act: (token) => deleteMe(app, token) },
        { name: 'demote each other', success: 200, act: (token, other) => patchUser(app, token, other, { roles: [] }) }
      ]
      for (const [index, { name, success, self, act }] of rounds.entries()) {
        const round = `round ${index + 1} (${name})`
        // Both admins, enabled, with tokens that say so.
        for (const [i, email] of emails.entries()) {
          if (await app.users.findById(ids[i]!) === undefined) ids[i] = (await app.inject({ method: 'POST', url: '/auth/signup', payload: { email, password: PASSWORD } })).json().id
          await app.admin.updateUser(ids[i]!, { roles: ['admin'], disabled: false }, CLI)
        }
        const [a, b] = await Promise.all(emails.map((email) => logIn(app, email)))
        const answers = await Promise.all([act(a!.accessToken, ids[1]!), act(b!.accessToken, ids[0]!)])
        const statuses = answers.map(({ statusCode }) => statusCode)
        t.strictSame(sorted(statuses.map(String)), sorted([String(success), '409']), `${round}: one ${success}, one 409 (${statuses.join(', ')})`)
        const conflict = answers.find(({ statusCode }) => statusCode === 409)
        if (conflict !== undefined) assertErrorShape(t, conflict, 409, 'LAST_ADMIN', `${round}: the other`)
        const accounts = await Promise.all(ids.map((id) => app.users.findById(id)))
        const enabledAdmins = accounts.filter((user) => user !== undefined && !user.disabled && user.roles.includes('admin'))
        t.equal(enabledAdmins.length, 1, `${round}: one enabled admin remains`)
        const succeeded = statuses[0] === success ? 0 : 1
        t.equal(enabledAdmins[0]?.id, ids[self === true ? 1 - succeeded : succeeded], `${round}: the one left is the one expected`)
      }
    })
  })
}
