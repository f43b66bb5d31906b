import { randomUUID } from 'node:crypto'
import Fastify, { type FastifyInstance, type FastifyPluginAsync, type FastifyRequest, type InjectOptions, type LightMyRequestResponse } from 'fastify'
import fc from 'fast-check'
import fp from 'fastify-plugin'
import t from 'tap'
import authPlugin from '../../plugins/auth.js'
import routeAccessPlugin from '../../plugins/route-access.js'
import type { AccessTokenCallback } from '../../plugins/jwt.js'
import { describeRoles, routeAccessOf, type RouteAccess } from '../../plugins/shared/route-access.js'
import type { AccessTokenClaims } from '../../src/access-token.js'
import { ServiceError } from '../../src/errors.js'
import { ADMIN_ROLE, MAX_ROLES, ROLE_NAME_PATTERN, hasRoles, isRoleName, normalizeRoles, sameRoles } from '../../src/roles.js'
import { NO_RATE_LIMITS, PASSWORD, bearer, buildTestApp, errorShapeProblems, freshEmail, logIn, signUpAndLogIn } from '../helpers.js'

/*
 * Every route of the app is public, authenticated (any valid access token) or
 * role-gated, by its own declaration (plugins/auth.ts; API.md, "Routes" and
 * "Roles and administration"): listed here in one table, compared with what
 * the app records (app.routeAccess) and with the routes Fastify has, then
 * checked by behaviour, one request per route and credential. Then the
 * declarations that contradict themselves stop the app from starting, and the
 * functions of src/roles.ts, by property.
 */

type Access = 'public' | 'authenticated' | readonly string[]
const ADMIN = [ADMIN_ROLE] as const

/**
 * Every route of the app, by "METHOD url" as Fastify registers it. Fastify adds a
 * HEAD route for every GET one (exposeHeadRoutes), with the GET's declaration: listed
 * too, as the app has them. `OPTIONS *` is @fastify/cors's preflight route, public by
 * plugins/cors.ts.
 */
const ROUTES: Record<string, Access> = {
  // Swagger UI and the OpenAPI document: public by their prefix (plugins/shared/docs.ts).
  'GET /docs': 'public',
  'HEAD /docs': 'public',
  'HEAD /docs/': 'public',
  'GET /docs/json': 'public',
  'HEAD /docs/json': 'public',
  'GET /docs/yaml': 'public',
  'HEAD /docs/yaml': 'public',
  'GET /docs/static/index.html': 'public',
  'HEAD /docs/static/index.html': 'public',
  'GET /docs/static/swagger-initializer.js': 'public',
  'HEAD /docs/static/swagger-initializer.js': 'public',
  'GET /docs/static/*': 'public',
  'HEAD /docs/static/*': 'public',

  'POST /auth/signup': 'public',
  'POST /auth/login': 'public',
  'POST /auth/refresh': 'public',
  'POST /auth/logout': 'public',
  'POST /auth/logout-all': 'authenticated',
  'POST /auth/logout-others': 'authenticated',
  'POST /auth/password': 'authenticated',
  'GET /auth/sessions': 'authenticated',
  'HEAD /auth/sessions': 'authenticated',
  'DELETE /auth/sessions/:id': 'authenticated',
  'GET /auth/events': 'authenticated',
  'HEAD /auth/events': 'authenticated',

  'POST /auth/password-reset/request': 'public',
  'POST /auth/password-reset': 'public',
  // An access token, or `{ email }` without one: the route reads the token itself (SELF_GUARDED).
  'POST /auth/verify-email/request': 'public',
  'POST /auth/verify-email': 'public',
  'GET /account/reset-password': 'public',
  'HEAD /account/reset-password': 'public',
  'GET /account/verify-email': 'public',
  'HEAD /account/verify-email': 'public',

  'GET /users/me': 'authenticated',
  'HEAD /users/me': 'authenticated',
  'POST /users/me/email': 'authenticated',
  'DELETE /users/me': 'authenticated',

  'GET /admin/users': ADMIN,
  'HEAD /admin/users': ADMIN,
  'GET /admin/users/:id': ADMIN,
  'HEAD /admin/users/:id': ADMIN,
  'PATCH /admin/users/:id': ADMIN,
  'DELETE /admin/users/:id': ADMIN,
  'DELETE /admin/users/:id/sessions': ADMIN,
  'GET /admin/events': ADMIN,
  'HEAD /admin/events': ADMIN,

  'GET /.well-known/jwks.json': 'public',
  'HEAD /.well-known/jwks.json': 'public',
  // Public to the access-token hook: guarded by INTROSPECTION_SECRET and METRICS_TOKEN instead (SELF_GUARDED).
  'POST /auth/introspect': 'public',
  'GET /health': 'public',
  'HEAD /health': 'public',
  'GET /health/live': 'public',
  'HEAD /health/live': 'public',
  'GET /metrics': 'public',
  'HEAD /metrics': 'public',

  'OPTIONS *': 'public'
}

/**
 * Public routes that check a credential of their own, so that a bare request is 401 ACCESS_TOKEN_MISSING from the route
 * itself, not from the access-token hook: what each answers without any access token when given what it asks for.
 * Other services reach introspection and metrics with a bearer secret (RFC 6750: no credentials, no error code);
 * a verification link is asked for with an access token, or with `{ email }` and none.
 */
const INTROSPECTION_SECRET = 'introspection-secret-for-route-access'
const METRICS_TOKEN = 'metrics-token-for-route-access'
const SELF_GUARDED: Record<string, { headers?: Record<string, string>, payload?: Record<string, unknown>, status: number }> = {
  'POST /auth/introspect': { headers: bearer(INTROSPECTION_SECRET), payload: { token: 'not-a-token' }, status: 200 },
  'GET /metrics': { headers: bearer(METRICS_TOKEN), status: 200 },
  'HEAD /metrics': { headers: bearer(METRICS_TOKEN), status: 200 },
  'POST /auth/verify-email/request': { payload: { email: 'nobody-route-access@example.com' }, status: 202 }
}

const accessOf = (access: RouteAccess): Access => access.kind === 'roles' ? access.roles : access.kind
const sortedEntries = <T>(record: Record<string, T>): Array<[string, T]> => Object.entries(record).sort(([a], [b]) => a.localeCompare(b))

/** The routes Fastify has, as "METHOD path", read from its route tree (printRoutes without common prefixes). */
function routerRoutes (app: FastifyInstance): string[] {
  const found: string[] = []
  const prefixes: string[] = []
  for (const line of app.printRoutes({ commonPrefix: false }).split('\n')) {
    const match = /^((?:│ {3}| {4})*)(?:├── |└── )(.*?)(?: \(([A-Z, ]+)\))?$/.exec(line)
    if (match === null) continue
    const depth = match[1]!.length / 4
    const path = (prefixes[depth - 1] ?? '') + match[2]!
    prefixes[depth] = path
    prefixes.length = depth + 1
    for (const method of match[3]?.split(', ') ?? []) found.push(`${method} ${path}`)
  }
  return found
}

/** A route's path with a trailing slash dropped: Fastify serves a prefix's root at both. */
const withoutTrailingSlash = (route: string): string => route.length > 1 && route.endsWith('/') ? route.slice(0, -1) : route

/** A URL that reaches the route: parameters filled in. */
function urlOf (route: string): string {
  const [, path] = route.split(' ') as [string, string]
  if (path === '*') return '/users/me'
  return path.replace(':id', randomUUID()).replace('*', 'swagger-ui.css')
}

const app = await buildTestApp(t, {
  env: { INTROSPECTION_SECRET, METRICS_TOKEN },
  rateLimits: NO_RATE_LIMITS
})

/** A new account with the role admin, signed in: granted as an admin (or the command line) grants it. */
async function signedInAdmin (): Promise<string> {
  const email = freshEmail('route-admin')
  const signup = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email, password: PASSWORD } })
  await app.admin.updateUser(signup.json().id, { roles: [ADMIN_ROLE] }, { id: null, ip: null, userAgent: null })
  return (await logIn(app, email)).accessToken
}

t.test('one table: every route of the app, as it declares itself', async (t) => {
  const recorded = Object.fromEntries([...app.routeAccess].map(([route, access]) => [route, accessOf(access)]))
  t.strictSame(sortedEntries(recorded), sortedEntries(ROUTES), 'app.routeAccess is the table: every route, the CORS preflight route too')

  const inRouter = new Set(routerRoutes(app).map(withoutTrailingSlash))
  const inTable = new Set(Object.keys(ROUTES).map(withoutTrailingSlash))
  // printRoutes drops the static part just before a wildcard (`/docs/static/*` prints as `*` under `/docs/`): such a
  // line stands for a wildcard route of the table under the same path.
  const covers = (printed: string, listed: string): boolean => printed === listed ||
    (printed.endsWith('*') && listed.endsWith('*') && listed.startsWith(printed.slice(0, -1)))
  t.ok(inRouter.size > 40, `${inRouter.size} routes read from Fastify's router`)
  t.strictSame([...inRouter].filter((printed) => ![...inTable].some((listed) => covers(printed, listed))).sort(), [],
    'every route Fastify has is in the table')
  t.strictSame([...inTable].filter((listed) => ![...inRouter].some((printed) => covers(printed, listed))).sort(), [],
    'and every route of the table is one Fastify has')
  for (const route of Object.keys(ROUTES)) {
    const [method, url] = route.split(' ') as [InjectOptions['method'] & string, string]
    t.ok(app.hasRoute({ method, url: url === '*' ? '/*' : url }), `${route} is registered`)
  }

  // Fastify's HEAD routes are declared as their GET ones.
  for (const [route, access] of Object.entries(ROUTES)) {
    if (!route.startsWith('HEAD ')) continue
    const get = ROUTES[`GET ${route.slice(5)}`] ?? ROUTES[`GET ${withoutTrailingSlash(route.slice(5))}`]
    t.strictSame(access, get, `${route}: as its GET`)
  }
})

/** An answer's status and error code (none for a HEAD, which has no body). */
function answerOf (response: LightMyRequestResponse): string {
  if (response.statusCode < 400 || response.body === '') return String(response.statusCode)
  return `${response.statusCode} ${String(response.json().code)}`
}

t.test('each route behaves as the table says', async (t) => {
  const adminToken = await signedInAdmin()
  const request = (route: string, headers: Record<string, string> = {}) => {
    const [method] = route.split(' ') as [InjectOptions['method']]
    return app.inject({ method, url: urlOf(route), headers })
  }

  for (const [route, access] of sortedEntries(ROUTES)) {
    const isHead = route.startsWith('HEAD ')
    const anonymous = await request(route)
    if (isHead) {
      // No body to read a code from: the same status as the GET with the same credentials.
      const get = await request(`GET ${route.slice(5)}`)
      t.equal(anonymous.statusCode, get.statusCode, `${route} without a token: ${anonymous.statusCode}, as its GET`)
    }

    if (access === 'public') {
      const own = SELF_GUARDED[route]
      if (own !== undefined) {
        const { status, ...given } = own
        const [method] = route.split(' ') as [InjectOptions['method']]
        const enough = await app.inject({ method, url: urlOf(route), ...given })
        t.equal(enough.statusCode, status, `${route} without an access token, given what it asks for: ${status}`)
        if (!isHead) t.equal(answerOf(anonymous), '401 ACCESS_TOKEN_MISSING', `${route} with nothing: the route's own 401`)
        continue
      }
      t.notMatch(answerOf(anonymous), /ACCESS_TOKEN_/, `${route} without a token: ${answerOf(anonymous)}, never an access-token refusal`)
      const garbled = await request(route, bearer('not-a-token'))
      t.notMatch(answerOf(garbled), /ACCESS_TOKEN_/, `${route} with a garbled token: ${answerOf(garbled)}, the access-token hook does not run`)
      continue
    }

    // Protected, by any token or by roles: 401 first, for who is unknown.
    t.equal(isHead ? String(anonymous.statusCode) : answerOf(anonymous), isHead ? '401' : '401 ACCESS_TOKEN_MISSING', `${route} without a token`)
    if (!isHead) t.same(errorShapeProblems(anonymous.statusCode, anonymous.headers['content-type'] as string, anonymous.body), [], `${route}: the error shape`)
    const garbled = await request(route, bearer('not-a-token'))
    t.equal(isHead ? String(garbled.statusCode) : answerOf(garbled), isHead ? '401' : '401 ACCESS_TOKEN_INVALID', `${route} with a garbled token: 401 before any 403`)

    // A fresh account each time: some of these routes end sessions.
    const { accessToken } = await signUpAndLogIn(app, 'route-access')
    const user = await request(route, bearer(accessToken))
    if (access === 'authenticated') {
      t.notMatch(answerOf(user), /^40[13]/, `${route} with an access token: ${answerOf(user)}`)
      continue
    }
    t.equal(isHead ? String(user.statusCode) : answerOf(user), isHead ? '403' : '403 FORBIDDEN', `${route} with a token lacking ${access.join(', ')}: 403`)
    if (!isHead) t.same(errorShapeProblems(user.statusCode, user.headers['content-type'] as string, user.body), [], `${route}: the error shape`)
    const admin = await request(route, bearer(adminToken))
    t.notMatch(answerOf(admin), /^40[13]/, `${route} with the role: ${answerOf(admin)}, the route's own answer`)
  }
})

// ---------------------------------------------------------------------------
// Declarations that contradict themselves stop the app

/** The route-access and auth plugins on a Fastify of their own, with stand-ins for what auth depends on: every token verifies, with `roles`. */
async function smallApp (routes: FastifyPluginAsync, roles: string[] = []): Promise<{ fastify: FastifyInstance }> {
  const fastify = Fastify({ logger: false })
  fastify.setErrorHandler((error, _request, reply) => {
    if (error instanceof ServiceError) return reply.code(error.statusCode).send(error.toJSON())
    return reply.send(error)
  })
  await fastify.register(fp(async (instance) => {
    const claims = { sub: 'user', sid: 'session', jti: 'jti', iat: 0, exp: 0, iss: 'i', aud: 'a', email_verified: true, roles } as unknown as AccessTokenClaims
    const accessTokens = {
      verify: (request: FastifyRequest, _options: unknown, done: AccessTokenCallback) => {
        if (request.headers.authorization === undefined) return done(new ServiceError('ACCESS_TOKEN_MISSING'), undefined)
        done(null, claims)
      }
    }
    instance.decorate('accessTokens', accessTokens as unknown as FastifyInstance['accessTokens'])
  }, { name: 'jwt' }))
  await fastify.register(fp(async (instance) => {
    instance.decorate('revocations', { rejects: () => false } as unknown as FastifyInstance['revocations'])
  }, { name: 'revocations' }))
  await fastify.register(routeAccessPlugin)
  await fastify.register(authPlugin)
  // Loaded when the app starts (ready), where a contradiction must stop it. (Wrapped: a Fastify instance is a thenable.)
  fastify.register(routes)
  return { fastify }
}

const answer = async () => ({ ok: true })

t.test('a route that contradicts itself stops the app from starting', async (t) => {
  const bad: Array<[string, Record<string, unknown>, RegExp]> = [
    ['public and role-gated', { public: true, roles: [ADMIN_ROLE] }, /public and role-gated at once/],
    ['an empty list of roles', { roles: [] }, /config\.roles must list role names/],
    ['an upper-case role', { roles: ['Admin'] }, /config\.roles must list role names/],
    ['a role with a space', { roles: ['ad min'] }, /config\.roles must list role names/],
    ['a role starting with a digit', { roles: ['1admin'] }, /config\.roles must list role names/],
    ['an empty role name', { roles: [''] }, /config\.roles must list role names/],
    ['a role name of 33 characters', { roles: [`a${'b'.repeat(32)}`] }, /config\.roles must list role names/],
    ['one good role and one bad', { roles: [ADMIN_ROLE, 'BAD'] }, /config\.roles must list role names/]
  ]
  for (const [what, config, message] of bad) {
    const { fastify } = await smallApp(async (instance) => {
      instance.get('/probe', { config }, answer)
    })
    await t.rejects(async () => { await fastify.ready() }, message, `${what}: the app does not start`)
    await fastify.close().catch(() => {})
  }

  // The real app's plugins read the same declarations: its swagger plugin refuses them too.
  t.throws(() => routeAccessOf('/probe', { public: true, roles: [ADMIN_ROLE] } as never), /public and role-gated/)

  const { fastify: fine } = await smallApp(async (instance) => {
    instance.get('/anyone', { config: { public: true } }, answer)
    instance.get('/someone', answer)
    instance.get('/admins', { config: { roles: [ADMIN_ROLE] } }, answer)
    instance.get('/longest', { config: { roles: [`a${'b'.repeat(31)}`] } }, answer)
    instance.route({ method: ['GET', 'POST'], url: '/two', config: { roles: ['ops', ADMIN_ROLE] }, handler: answer })
  }, [ADMIN_ROLE])
  await t.resolves(async () => { await fine.ready() }, 'consistent declarations start')
  t.teardown(() => fine.close())
  t.strictSame(Object.fromEntries([...fine.routeAccess].filter(([route]) => !route.startsWith('HEAD ')).map(([route, access]) => [route, accessOf(access)])), {
    'GET /anyone': 'public',
    'GET /someone': 'authenticated',
    'GET /admins': [ADMIN_ROLE],
    'GET /longest': [`a${'b'.repeat(31)}`],
    'GET /two': ['ops', ADMIN_ROLE],
    'POST /two': ['ops', ADMIN_ROLE]
  }, 'each method of a route recorded with its declaration')
  t.equal((await fine.inject('/anyone')).statusCode, 200)
  t.equal((await fine.inject('/someone')).json().code, 'ACCESS_TOKEN_MISSING')
  t.equal((await fine.inject({ url: '/someone', headers: bearer('x') })).statusCode, 200)
  t.equal((await fine.inject('/admins')).json().code, 'ACCESS_TOKEN_MISSING', 'role-gated, without a token: 401')
  t.equal((await fine.inject({ url: '/admins', headers: bearer('x') })).statusCode, 200, 'a token with the role: through')
  t.equal((await fine.inject({ url: '/longest', headers: bearer('x') })).json().code, 'FORBIDDEN', 'a token without the role: 403')
  t.equal((await fine.inject({ method: 'POST', url: '/two', headers: bearer('x') })).json().code, 'FORBIDDEN', 'every role listed is required')
})

// ---------------------------------------------------------------------------
// src/roles.ts

const validName = fc.stringMatching(/^[a-z][a-z0-9_-]{0,31}$/)
const anyName = fc.oneof(validName, fc.string({ maxLength: 40 }), fc.string({ unit: fc.constantFrom('a', 'Z', '0', '_', '-', ' ', '.', 'é', '\n'), maxLength: 34 }))

t.test('src/roles.ts', async (t) => {
  t.equal(ROLE_NAME_PATTERN, '^[a-z][a-z0-9_-]{0,31}$', 'API.md\'s pattern')
  t.equal(MAX_ROLES, 32)
  t.equal(ADMIN_ROLE, 'admin')
  t.ok(isRoleName(ADMIN_ROLE))

  fc.assert(fc.property(anyName, (name) => {
    const expected = name.length >= 1 && name.length <= 32 && /^[a-z]/.test(name) && [...name].every((character) => /[a-z0-9_-]/.test(character))
    return isRoleName(name) === expected
  }), { seed: 20_261_130, numRuns: 2000 })
  t.pass('isRoleName: 1 to 32 characters, a lower-case letter first, then letters, digits, _ and - (no multi-line trick)')
  for (const name of ['admin\n', '\nadmin', 'admin\nx', 'a'.repeat(33)]) t.notOk(isRoleName(name), `${JSON.stringify(name)} is no role name`)

  fc.assert(fc.property(fc.array(anyName, { maxLength: 12 }), (roles) => {
    const normal = normalizeRoles(roles)
    const sorted = [...new Set(roles)].sort()
    return sameRoles(normal, sorted) && sameRoles(normalizeRoles(normal), normal) && normal.every((role) => roles.includes(role)) &&
      roles.every((role) => normal.includes(role)) && sameRoles(normalizeRoles([...roles].reverse()), normal)
  }), { seed: 20_261_130, numRuns: 500 })
  t.pass('normalizeRoles: the same set, unique and sorted, whatever the order; idempotent')

  fc.assert(fc.property(fc.option(fc.array(validName, { maxLength: 6 }), { nil: undefined }), fc.array(validName, { maxLength: 4 }), (held, required) => {
    const expected = held === undefined ? required.length === 0 : required.every((role) => held.includes(role))
    return hasRoles(held, required) === expected
  }), { seed: 20_261_130, numRuns: 1000 })
  t.pass('hasRoles: every required role is held; a token without the claim holds none')
  t.equal(hasRoles(['admin'], []), true, 'nothing required: any token')
  t.equal(hasRoles(undefined, ['admin']), false)

  fc.assert(fc.property(fc.array(validName, { maxLength: 5 }), fc.array(validName, { maxLength: 5 }), (a, b) =>
    sameRoles(a, b) === (JSON.stringify(a) === JSON.stringify(b))), { seed: 20_261_130, numRuns: 500 })
  t.pass('sameRoles: the same roles in the same order (both normalized, the same set)')
  t.equal(sameRoles(['a', 'b'], ['b', 'a']), false, 'order matters: compare normalized sets')

  t.equal(describeRoles([ADMIN_ROLE]), 'Requires an access token with the role `admin` (403 `FORBIDDEN` without it).')
  t.equal(describeRoles(['ops', ADMIN_ROLE]), 'Requires an access token with the roles `ops`, `admin` (403 `FORBIDDEN` without it).')
})
