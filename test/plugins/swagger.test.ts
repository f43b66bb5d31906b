import { randomUUID } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { projectRoot } from '../../src/paths.js'
import { FakeClock, buildTestApp } from '../helpers.js'

/*
 * The OpenAPI document (/docs/json, plugins/swagger.ts) is what people and
 * generated clients read first: every operation is described, with examples,
 * and every error it can answer is listed with its codes. The second half
 * provokes errors on every documented operation and checks each answer
 * against the document. One app for the file: the document does not depend
 * on the storage, and each probe uses accounts of its own.
 */

const TAGS = ['auth', 'sessions', 'users', 'account', 'admin', 'keys', 'health']
const INTROSPECTION_SECRET = 'introspection-secret-for-tests'
const PUBLIC = new Set(['POST /auth/signup', 'POST /auth/login', 'POST /auth/refresh', 'POST /auth/logout', 'POST /auth/introspect',
  'GET /health', 'GET /health/live', 'GET /metrics', 'GET /.well-known/jwks.json',
  'POST /auth/password-reset/request', 'POST /auth/password-reset', 'POST /auth/verify-email/request', 'POST /auth/verify-email',
  'GET /account/reset-password', 'GET /account/verify-email'])

interface Media { schema?: unknown, example?: unknown, examples?: Record<string, { summary?: string, value: any }> }
interface Operation {
  operationId?: string
  summary?: string
  description?: string
  tags?: string[]
  security?: Array<Record<string, string[]>>
  requestBody?: { required?: boolean, content?: Record<string, Media> }
  responses: Record<string, { description: string, content?: Record<string, Media>, headers?: Record<string, unknown> }>
}
type Document = { openapi: string, info: { version: string, description?: string }, tags: Array<{ name: string }>, components: any, paths: Record<string, Record<string, Operation>> }

const operationsOf = (document: Document): Array<[method: string, path: string, operation: Operation]> =>
  Object.entries(document.paths).flatMap(([path, methods]) =>
    Object.entries(methods).map(([method, operation]): [string, string, Operation] => [method.toUpperCase(), path, operation]))

/** The codes an error response documents: one example per code, named by its code. */
function documentedCodes (operation: Operation, status: number): string[] {
  const media = operation.responses[String(status)]?.content?.['application/json']
  if (media?.example !== undefined) return [(media.example as { code: string }).code]
  return Object.keys(media?.examples ?? {})
}

const clock = new FakeClock()
const app = await buildTestApp(t, {
  clock,
  env: { INTROSPECTION_SECRET, LOGIN_RATE_LIMIT: '5/1m', ACCESS_TOKEN_TTL: '60s' },
  // The probes sign up and log in a hundred times from one address.
  rateLimits: { signupPerAddress: { max: 10_000, windowSeconds: 600 }, loginPerAddress: { max: 10_000, windowSeconds: 60 } }
})

/** The role-gated operations, by "METHOD /openapi/{path}", with the roles each requires: as the routes declare them (app.routeAccess). */
const ROLE_GATED = new Map([...app.routeAccess]
  .flatMap(([route, access]) => access.kind === 'roles' && !route.startsWith('HEAD ') ? [[route.replace(/:(\w+)/g, '{$1}'), access.roles] as const] : []))

/**
 * The one admin of this file's database (so that it is the last one), granted as an admin or the command line
 * grants it. Its access token is refreshed for each use: the probes move the clock past access tokens' lifetime.
 */
async function signInAdmin (): Promise<{ id: string, accessToken: () => Promise<string> }> {
  const account = { email: `admin-${randomUUID()}@example.com`, password: 'password123' }
  const { id } = (await app.inject({ method: 'POST', url: '/auth/signup', payload: account })).json()
  await app.admin.updateUser(id, { roles: ['admin'] }, { id: null, ip: null, userAgent: null })
  const login = await app.inject({ method: 'POST', url: '/auth/login', payload: account })
  if (login.statusCode !== 200) throw new Error(`admin login: ${login.statusCode} ${login.body}`)
  let { refreshToken } = login.json()
  return {
    id,
    async accessToken () {
      const refreshed = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken } })
      if (refreshed.statusCode !== 200) throw new Error(`admin refresh: ${refreshed.statusCode} ${refreshed.body}`)
      refreshToken = refreshed.json().refreshToken
      return refreshed.json().accessToken
    }
  }
}
const admin = await signInAdmin()
const asAdmin = async () => ({ authorization: `Bearer ${await admin.accessToken()}` })

t.test('the document: version, tags and security schemes', async (t) => {
  const document: Document = (await app.inject('/docs/json')).json()
  const { version } = JSON.parse(await readFile(join(projectRoot, 'package.json'), 'utf8'))
  t.match(document.openapi, /^3\.0\./)
  t.equal(document.info.version, version, 'the service\'s version, from package.json')
  t.match(document.info.description, /Authorize/, 'the description says how to try it from the page')
  t.strictSame(document.tags.map(({ name }) => name), TAGS)
  t.match(document.components.securitySchemes, {
    bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' },
    refreshCookie: { type: 'apiKey', in: 'cookie', name: 'refresh_token' },
    introspectionSecret: { type: 'http', scheme: 'bearer' },
    metricsToken: { type: 'http', scheme: 'bearer' }
  })
})

t.test('every operation: summary, description, tag, examples, and its errors with their codes', async (t) => {
  const document: Document = (await app.inject('/docs/json')).json()
  const operations = operationsOf(document)
  t.ok(operations.length >= 13, `${operations.length} operations`)
  t.strictSame([...ROLE_GATED.keys()].filter((name) => !operations.some(([method, path]) => `${method} ${path}` === name)), [],
    'every role-gated route is documented')
  t.strictSame([...ROLE_GATED.keys()].sort(), ['DELETE /admin/users/{id}', 'DELETE /admin/users/{id}/sessions', 'GET /admin/events', 'GET /admin/users',
    'GET /admin/users/{id}', 'PATCH /admin/users/{id}'], 'the admin routes are the role-gated ones')
  const operationIds = operations.map(([, , operation]) => operation.operationId)
  t.ok(operationIds.every((id) => id !== undefined && /^[a-z][A-Za-z0-9]*$/.test(id)), `camelCase operationIds: ${operationIds.join(', ')}`)
  t.equal(new Set(operationIds).size, operations.length, 'each its own')
  for (const [method, path, operation] of operations) {
    const name = `${method} ${path}`
    t.ok(operation.summary !== undefined && operation.summary.length > 0, `${name}: a summary`)
    t.ok(operation.description !== undefined && operation.description.length > 20, `${name}: a description`)
    t.ok(operation.tags?.length === 1 && TAGS.includes(operation.tags[0]!), `${name}: one of the tags (${operation.tags})`)

    const roles = ROLE_GATED.get(name)
    if (roles === undefined) {
      t.notMatch(operation.summary, /\(roles? /, `${name}: requires no role, says none`)
      t.notOk(documentedCodes(operation, 403).includes('FORBIDDEN'), `${name}: no FORBIDDEN`)
    } else {
      t.ok(operation.summary?.endsWith(` ${roles.join(', ')})`) && /\(roles? [^()]+\)$/.test(operation.summary), `${name}: the summary names the role (${operation.summary})`)
      t.ok(operation.description?.startsWith(`Requires an access token with the role${roles.length > 1 ? 's' : ''} ${roles.map((role) => `\`${role}\``).join(', ')}`),
        `${name}: the description starts with the role it requires`)
      t.ok(documentedCodes(operation, 403).includes('FORBIDDEN'), `${name}: documents 403 FORBIDDEN`)
      t.notOk(PUBLIC.has(name), `${name}: protected`)
    }

    if (PUBLIC.has(name)) {
      t.notOk(operation.security?.some((requirement) => 'bearerAuth' in requirement && Object.keys(requirement).length === 1) &&
        !operation.security.some((requirement) => Object.keys(requirement).length === 0), `${name}: no access token required`)
    } else {
      t.strictSame(operation.security, [{ bearerAuth: [] }], `${name}: the bearer scheme`)
      t.strictSame(documentedCodes(operation, 401).filter((code) => code.startsWith('ACCESS_TOKEN_')).sort(),
        ['ACCESS_TOKEN_EXPIRED', 'ACCESS_TOKEN_INVALID', 'ACCESS_TOKEN_MISSING', 'ACCESS_TOKEN_REVOKED'], `${name}: every ACCESS_TOKEN_* code`)
    }

    const body = operation.requestBody?.content?.['application/json']
    if (operation.requestBody !== undefined) {
      t.ok(body?.example !== undefined || body?.examples !== undefined, `${name}: a request example`)
    }

    for (const [status, response] of Object.entries(operation.responses)) {
      t.not(response.description, 'Default Response', `${name} ${status}: described`)
      const media = response.content?.['application/json']
      const isError = Number(status) >= 400 && !(path === '/health' && status === '503')
      if (!isError) {
        if (media !== undefined) t.ok(media.example !== undefined || media.examples !== undefined, `${name} ${status}: a response example`)
        continue
      }
      const examples = media?.example === undefined
        ? Object.entries(media?.examples ?? {}).map(([code, { value }]) => [code, value] as const)
        : [[(media.example as { code: string }).code, media.example] as const]
      t.ok(examples.length > 0, `${name} ${status}: an example per code`)
      for (const [code, value] of examples) {
        t.match(value, { statusCode: Number(status), code, error: String, message: String }, `${name} ${status}: ${code} as the service answers it`)
        t.match(response.description, `\`${code}\``, `${name} ${status}: ${code} is described`)
      }
    }
    for (const status of ['400', '429', '500']) t.ok(operation.responses[status], `${name}: documents ${status}`)
  }
  t.equal(document.paths['/auth/refresh']?.post?.requestBody?.required, false, 'refresh may be sent without a body (cookie)')
  t.equal(document.paths['/auth/logout']?.post?.requestBody?.required, false, 'and so may logout')
  t.strictSame(document.paths['/auth/refresh']?.post?.requestBody?.content?.['application/json']?.example, {},
    'Try it out starts refresh with {}: the cookie is used')
  t.ok(document.paths['/auth/login']?.post?.responses['200']?.headers?.['set-cookie'], 'login documents its cookie')
  t.ok(document.paths['/auth/login']?.post?.responses['429']?.headers?.['retry-after'], 'a 429 documents Retry-After')
})

t.test('every error a probe provokes is documented for its operation, with its code', async (t) => {
  const document: Document = (await app.inject('/docs/json')).json()
  const credentials = () => ({ email: `probe-${randomUUID()}@example.com`, password: 'password123' })

  /** A fresh account and session: some probes end sessions. */
  async function signIn (): Promise<{ accessToken: string, refreshToken: string }> {
    const account = credentials()
    await app.inject({ method: 'POST', url: '/auth/signup', payload: account })
    const login = await app.inject({ method: 'POST', url: '/auth/login', payload: account })
    if (login.statusCode !== 200) throw new Error(`login: ${login.statusCode} ${login.body}`)
    return login.json()
  }
  async function expiredToken (): Promise<string> {
    const { accessToken } = await signIn()
    clock.advance(61_000)
    return accessToken
  }
  async function revokedToken (): Promise<string> {
    const { accessToken } = await signIn()
    await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${accessToken}` }, payload: {} })
    return accessToken
  }

  const answered = new Map<string, Set<string>>()
  for (const [method, path, operation] of operationsOf(document)) {
    const name = `${method} ${path}`
    const url = path.replace('{id}', randomUUID())
    // The role-gated routes with the role, so that the probes reach them (a token without it is refused first: probed too).
    const bearer = async () => {
      const token = path === '/auth/introspect' ? INTROSPECTION_SECRET : ROLE_GATED.has(name) ? await admin.accessToken() : (await signIn()).accessToken
      return { authorization: `Bearer ${token}` }
    }
    const probes: Array<[string, () => Promise<{ headers?: Record<string, string>, body?: string }>]> = [
      ['no credentials, no body', async () => ({})],
      ['an access token without the role', async () => ({ headers: { authorization: `Bearer ${(await signIn()).accessToken}` } })],
      ['a valid access token, no body', async () => ({ headers: await bearer() })],
      ['a malformed bearer token', async () => ({ headers: { authorization: 'Bearer not-a-token' } })],
      ['an expired access token', async () => ({ headers: { authorization: `Bearer ${await expiredToken()}` } })],
      ['a revoked access token', async () => ({ headers: { authorization: `Bearer ${await revokedToken()}` } })],
      ['malformed JSON', async () => ({ headers: { ...await bearer(), 'content-type': 'application/json' }, body: '{"email":' })],
      ['a text body', async () => ({ headers: { ...await bearer(), 'content-type': 'text/plain' }, body: 'hello' })],
      ['a body over 16 KiB', async () => ({ headers: { ...await bearer(), 'content-type': 'application/json' }, body: JSON.stringify({ pad: 'x'.repeat(17 * 1024) }) })],
      ['an unexpected field', async () => ({ headers: { ...await bearer(), 'content-type': 'application/json' }, body: '{"unexpected":true}' })],
      ['a garbage refresh token', async () => ({ headers: { ...await bearer(), 'content-type': 'application/json' }, body: '{"refreshToken":"garbage"}' })]
    ]
    for (const [probe, request] of probes) {
      const { headers = {}, body } = await request()
      const response = await app.inject({ method: method as 'GET', url, headers, ...(body === undefined ? {} : { payload: body }) })
      const status = response.statusCode
      const code = status >= 400 && response.headers['content-type']?.toString().startsWith('application/json') ? response.json().code : undefined
      answered.set(name, (answered.get(name) ?? new Set()).add(`${status}${code === undefined ? '' : ` ${code}`}`))
      t.ok(operation.responses[String(status)], `${name}, ${probe}: ${status} is documented`)
      if (code !== undefined && !(path === '/health' && status === 503)) {
        t.ok(documentedCodes(operation, status).includes(code), `${name}, ${probe}: ${status} ${code} is documented`)
      }
    }
  }
  t.comment([...answered].map(([name, statuses]) => `${name}: ${[...statuses].join(', ')}`).join('\n'))

  // Answers only a particular request gets.
  const account = credentials()
  const signup = document.paths['/auth/signup']!.post!
  await app.inject({ method: 'POST', url: '/auth/signup', payload: account })
  const again = await app.inject({ method: 'POST', url: '/auth/signup', payload: account })
  t.ok(documentedCodes(signup, again.statusCode).includes(again.json().code), `signup twice: ${again.json().code}`)

  const login = document.paths['/auth/login']!.post!
  let attempt = await app.inject({ method: 'POST', url: '/auth/login', payload: { ...account, password: 'wrong-password' } })
  while (attempt.statusCode === 401) {
    t.ok(documentedCodes(login, 401).includes(attempt.json().code), `a wrong password: ${attempt.json().code}`)
    attempt = await app.inject({ method: 'POST', url: '/auth/login', payload: { ...account, password: 'wrong-password' } })
  }
  t.equal(attempt.json().code, 'RATE_LIMITED')
  t.ok(documentedCodes(login, 429).includes('RATE_LIMITED') && attempt.headers['retry-after'] !== undefined, 'the limit: 429 RATE_LIMITED with Retry-After')

  const password = document.paths['/auth/password']!.post!
  const wrongCurrent = await app.inject({
    method: 'POST',
    url: '/auth/password',
    headers: { authorization: `Bearer ${(await signIn()).accessToken}` },
    payload: { currentPassword: 'wrong-password', newPassword: 'password456' }
  })
  t.ok(documentedCodes(password, wrongCurrent.statusCode).includes(wrongCurrent.json().code), `a wrong current password: ${wrongCurrent.json().code}`)

  const refresh = document.paths['/auth/refresh']!.post!
  const { refreshToken } = await signIn()
  const rotated = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken } })
  t.equal(rotated.statusCode, 200)
  clock.advance(11_000)
  const reused = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken } })
  t.ok(documentedCodes(refresh, 401).includes(reused.json().code), `a spent token after the grace: ${reused.json().code}`)
  const revoked = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: rotated.json().refreshToken } })
  t.ok(documentedCodes(refresh, 401).includes(revoked.json().code), `its successor: ${revoked.json().code}`)

  // The admin routes' particular answers: the last admin, and a disabled account.
  const patchUser = document.paths['/admin/users/{id}']!.patch!
  const demoteSelf = await app.inject({ method: 'PATCH', url: `/admin/users/${admin.id}`, headers: await asAdmin(), payload: { roles: [] } })
  t.equal(demoteSelf.json().code, 'LAST_ADMIN', 'the only admin demoting itself')
  t.ok(documentedCodes(patchUser, demoteSelf.statusCode).includes('LAST_ADMIN'), `${demoteSelf.statusCode} LAST_ADMIN is documented`)
  const deleteSelf = await app.inject({ method: 'DELETE', url: `/admin/users/${admin.id}`, headers: await asAdmin() })
  t.equal(deleteSelf.json().code, 'LAST_ADMIN', 'the only admin deleting itself')
  t.ok(documentedCodes(document.paths['/admin/users/{id}']!.delete!, deleteSelf.statusCode).includes('LAST_ADMIN'), `${deleteSelf.statusCode} LAST_ADMIN is documented`)
  const tooMany = await app.inject({
    method: 'PATCH',
    url: `/admin/users/${admin.id}`,
    headers: await asAdmin(),
    payload: { roles: Array.from({ length: 33 }, (_, index) => `role-${index}`) }
  })
  t.ok(documentedCodes(patchUser, tooMany.statusCode).includes(tooMany.json().code), `33 roles: ${tooMany.statusCode} ${tooMany.json().code} is documented`)
  const target = credentials()
  const { id: targetId } = (await app.inject({ method: 'POST', url: '/auth/signup', payload: target })).json()
  const targetLogin = (await app.inject({ method: 'POST', url: '/auth/login', payload: target })).json()
  const disable = await app.inject({ method: 'PATCH', url: `/admin/users/${targetId}`, headers: await asAdmin(), payload: { disabled: true } })
  t.equal(disable.statusCode, 200, 'an admin disables an account')
  const disabledLogin = await app.inject({ method: 'POST', url: '/auth/login', payload: target })
  t.ok(documentedCodes(login, disabledLogin.statusCode).includes(disabledLogin.json().code), `login of a disabled account: ${disabledLogin.json().code}`)
  const disabledRefresh = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: targetLogin.refreshToken } })
  t.ok(documentedCodes(refresh, disabledRefresh.statusCode).includes(disabledRefresh.json().code), `refresh of a disabled account: ${disabledRefresh.json().code}`)

  const jwks = await app.inject('/.well-known/jwks.json')
  const notModified = await app.inject({ url: '/.well-known/jwks.json', headers: { 'if-none-match': String(jwks.headers.etag) } })
  t.equal(notModified.statusCode, 304)
  t.ok(document.paths['/.well-known/jwks.json']!.get!.responses['304'], 'the 304 is documented')
})

t.test('/docs and the OpenAPI document: public, every route of API.md\'s table documented with its security', async (t) => {
  const ui = await app.inject({ method: 'GET', url: '/docs' })
  t.equal(ui.statusCode, 200, 'Swagger UI without a token')
  t.match(ui.headers['content-type'], /^text\/html/)
  t.match(ui.body, /swagger/i)
  for (const url of ['/docs/', '/docs/json', '/docs/yaml', '/docs/static/swagger-initializer.js']) {
    const response = await app.inject({ method: 'GET', url, headers: { authorization: 'Bearer garbage' } })
    t.equal(response.statusCode, 200, `${url} needs no token and ignores a bad one`)
  }

  const document = (await app.inject({ method: 'GET', url: '/docs/json' })).json()
  t.match(document.openapi, /^3\./, 'OpenAPI 3')
  t.type(document.info?.title, 'string')
  // API.md's route table: the first seven exist from the start, the rest once routes/ has them.
  const always = (path: string) => ['/auth/signup', '/auth/login', '/auth/refresh', '/auth/logout', '/users/me', '/.well-known/jwks.json', '/health'].includes(path)
  const table: Array<[method: string, path: string, openApiPath: string, auth: 'access' | 'admin' | 'none']> = [
    ['POST', '/auth/signup', '/auth/signup', 'none'],
    ['POST', '/auth/login', '/auth/login', 'none'],
    ['POST', '/auth/refresh', '/auth/refresh', 'none'],
    ['POST', '/auth/logout', '/auth/logout', 'none'],
    ['POST', '/auth/logout-all', '/auth/logout-all', 'access'],
    ['POST', '/auth/logout-others', '/auth/logout-others', 'access'],
    ['POST', '/auth/password', '/auth/password', 'access'],
    ['GET', '/auth/sessions', '/auth/sessions', 'access'],
    ['DELETE', '/auth/sessions/:id', '/auth/sessions/{id}', 'access'],
    ['GET', '/users/me', '/users/me', 'access'],
    ['POST', '/users/me/email', '/users/me/email', 'access'],
    ['DELETE', '/users/me', '/users/me', 'access'],
    ['GET', '/auth/events', '/auth/events', 'access'],
    ['GET', '/admin/users', '/admin/users', 'admin'],
    ['GET', '/admin/users/:id', '/admin/users/{id}', 'admin'],
    ['PATCH', '/admin/users/:id', '/admin/users/{id}', 'admin'],
    ['DELETE', '/admin/users/:id', '/admin/users/{id}', 'admin'],
    ['DELETE', '/admin/users/:id/sessions', '/admin/users/{id}/sessions', 'admin'],
    ['GET', '/admin/events', '/admin/events', 'admin'],
    ['POST', '/auth/password-reset/request', '/auth/password-reset/request', 'none'],
    ['POST', '/auth/password-reset', '/auth/password-reset', 'none'],
    ['POST', '/auth/verify-email/request', '/auth/verify-email/request', 'none'],
    ['POST', '/auth/verify-email', '/auth/verify-email', 'none'],
    ['GET', '/.well-known/jwks.json', '/.well-known/jwks.json', 'none'],
    ['POST', '/auth/introspect', '/auth/introspect', 'none'],
    ['GET', '/health', '/health', 'none']
  ]
  const present = table.filter(([method, path]) => always(path) || app.hasRoute({ method, url: path }))
  t.ok(present.length >= 7)
  const global = document.security as Array<Record<string, unknown>> | undefined
  t.ok(global === undefined || global.some((requirement) => Object.keys(requirement).length === 0), 'no global requirement')
  const optional = (security: Array<Record<string, unknown>> | undefined) =>
    security === undefined || security.some((requirement) => Object.keys(requirement).length === 0)
  for (const [method, path, openApiPath, auth] of present) {
    const operation = document.paths?.[openApiPath]?.[method.toLowerCase()]
    t.ok(operation, `${method} ${path} is documented`)
    if (auth === 'access' || auth === 'admin') {
      t.same(operation?.security, [{ bearerAuth: [] }], `${method} ${path} requires the bearer token`)
      if (auth === 'admin') t.match(operation?.summary, /\(role admin\)$/, `${method} ${path} says it requires the role admin`)
    } else if (path !== '/auth/introspect') {
      t.ok(optional(operation?.security), `${method} ${path} does not require a token`)
    }
  }
  t.notOk(Object.keys(document.paths).some((path) => path.startsWith('/docs')), 'the docs routes themselves are not')

  t.same(document.components?.securitySchemes?.bearerAuth?.type, 'http')
  t.same(document.components.securitySchemes.bearerAuth.scheme, 'bearer')
  t.match(document.components.securitySchemes.refreshCookie, { type: 'apiKey', in: 'cookie', name: 'refresh_token' })
  const refreshSecurity = document.paths['/auth/refresh'].post.security as Array<Record<string, unknown>>
  t.ok(refreshSecurity.some((requirement) => 'refreshCookie' in requirement), 'refresh documents the cookie')

  const signup = document.paths['/auth/signup'].post
  t.ok(signup.requestBody?.content?.['application/json'], 'request bodies are documented as JSON')
  t.ok(signup.responses?.['201'], 'signup documents its 201')
  t.ok(document.paths['/users/me'].get.responses?.['401'], '/users/me documents its 401')
})
