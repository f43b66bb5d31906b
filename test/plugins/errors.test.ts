import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
import t from 'tap'
import { BACKENDS, FakeClock, PASSWORD, assertErrorShape, buildTestApp, freshEmail, signUpAndLogIn } from '../helpers.js'

/*
 * The error contract (plugins/errors.ts): one JSON shape, no 500 for any
 * input, unknown routes 404, and body handling (415, 400, 413), on every
 * backend, all on one app per backend. /health is in test/routes/health.test.ts,
 * the documentation in test/plugins/swagger.test.ts.
 */

const POST_ROUTES = ['/auth/signup', '/auth/login', '/auth/refresh', '/auth/logout']

for (const backend of BACKENDS) {
  t.test(backend.name, { skip: backend.skip }, async (t) => {
    const clock = new FakeClock()
    const app: FastifyInstance = await buildTestApp(t, {
      realDatabase: backend.realDatabase, realRedis: backend.realRedis, clock, env: { ACCESS_TOKEN_TTL: '60s' }
    })

    const post = (url: string, options: Omit<InjectOptions, 'method' | 'url'> = {}) => app.inject({ method: 'POST', url, ...options })
    const json = (url: string, body: string) => post(url, { headers: { 'content-type': 'application/json' }, payload: body })

    const session = () => signUpAndLogIn(app, 'errors')

    t.test('every error has the one shape', async (t) => {
      const user = await session()
      const expired = await session()
      const revoked = await session()
      await post('/auth/logout', { payload: { refreshToken: revoked.refreshToken } })
      const bearer = (token: string) => ({ authorization: `Bearer ${token}` })

      const cases: Array<[number, string, () => Promise<LightMyRequestResponse>]> = [
        [400, 'VALIDATION_ERROR', () => post('/auth/signup', { payload: { email: 'nope', password: PASSWORD } })],
        [400, 'VALIDATION_ERROR', () => json('/auth/login', '{"email":')],
        [401, 'ACCESS_TOKEN_MISSING', () => app.inject({ method: 'GET', url: '/users/me' })],
        [401, 'ACCESS_TOKEN_INVALID', () => app.inject({ method: 'GET', url: '/users/me', headers: bearer('garbage') })],
        [401, 'ACCESS_TOKEN_REVOKED', () => app.inject({ method: 'GET', url: '/users/me', headers: bearer(revoked.accessToken) })],
        [401, 'REFRESH_TOKEN_MISSING', () => post('/auth/refresh')],
        [401, 'REFRESH_TOKEN_INVALID', () => post('/auth/refresh', { payload: { refreshToken: 'garbage' } })],
        [401, 'REFRESH_TOKEN_REVOKED', () => post('/auth/refresh', { payload: { refreshToken: revoked.refreshToken } })],
        [401, 'INVALID_CREDENTIALS', () => post('/auth/login', { payload: { email: user.email, password: 'wrong password' } })],
        [404, 'NOT_FOUND', () => app.inject({ method: 'GET', url: '/no/such/route' })],
        [409, 'EMAIL_TAKEN', () => post('/auth/signup', { payload: { email: user.email, password: PASSWORD } })],
        [413, 'PAYLOAD_TOO_LARGE', () => post('/auth/login', { payload: { email: user.email, password: 'x'.repeat(2 * 1024 * 1024) } })],
        [415, 'UNSUPPORTED_MEDIA_TYPE', () => post('/auth/login', { headers: { 'content-type': 'text/plain' }, payload: 'hello' })]
      ]
      for (const [status, code, request] of cases) assertErrorShape(t, await request(), status, code)

      clock.advance(61_000)
      assertErrorShape(t, await app.inject({ method: 'GET', url: '/users/me', headers: bearer(expired.accessToken) }), 401, 'ACCESS_TOKEN_EXPIRED')
    })

    t.test('unknown routes are 404 NOT_FOUND, never 401', async (t) => {
      const { accessToken } = await session()
      const requests: Array<[string, InjectOptions]> = [
        ['GET unknown', { method: 'GET', url: '/nope' }],
        ['POST unknown with JSON', { method: 'POST', url: '/admin/users', payload: { a: 1 } }],
        ['unknown under /users', { method: 'GET', url: '/users/me/secrets' }],
        ['/users alone', { method: 'GET', url: '/users' }],
        ['unknown under /auth', { method: 'POST', url: '/auth/nothing', payload: {} }],
        ['wrong method on a protected route', { method: 'PUT', url: '/users/me' }],
        ['wrong method on a public route', { method: 'GET', url: '/auth/login' }],
        ['PUT signup', { method: 'PUT', url: '/auth/signup', payload: { email: freshEmail('errors'), password: PASSWORD } }],
        ['unknown with a garbage token', { method: 'GET', url: '/internal', headers: { authorization: 'Bearer garbage' } }],
        ['unknown with Basic auth', { method: 'GET', url: '/internal', headers: { authorization: 'Basic eHl6' } }],
        ['unknown with a valid token', { method: 'GET', url: '/internal', headers: { authorization: `Bearer ${accessToken}` } }],
        ['a path traversal', { method: 'GET', url: '/docs/../../etc/passwd' }],
        ['a dot-dot JWKS', { method: 'GET', url: '/.well-known/../../package.json' }]
      ]
      for (const [name, request] of requests) assertErrorShape(t, await app.inject(request), 404, 'NOT_FOUND', name)
    })

    t.test('415 UNSUPPORTED_MEDIA_TYPE for bodies that are not JSON', async (t) => {
      const bodies: Array<[string, string]> = [
        ['text/plain', JSON.stringify({ email: freshEmail('errors'), password: PASSWORD })],
        ['text/plain; charset=utf-8', 'hello'],
        ['application/x-www-form-urlencoded', `email=${freshEmail('errors')}&password=${encodeURIComponent(PASSWORD)}`],
        ['multipart/form-data; boundary=x', '--x\r\nContent-Disposition: form-data; name="email"\r\n\r\na@b.co\r\n--x--'],
        ['application/xml', '<email>a@b.co</email>'],
        ['text/html', '<p>hi</p>']
      ]
      for (const url of POST_ROUTES) {
        for (const [type, payload] of bodies) {
          assertErrorShape(t, await post(url, { headers: { 'content-type': type }, payload }), 415, 'UNSUPPORTED_MEDIA_TYPE', `${url} ${type}`)
        }
      }
      const [, form] = bodies[2]!
      const email = /email=([^&]+)/.exec(form)![1]!
      const login = await post('/auth/login', { payload: { email, password: PASSWORD } })
      t.equal(login.statusCode, 401, 'the form signup created no account')
    })

    t.test('400 VALIDATION_ERROR for malformed JSON', async (t) => {
      const bodies = ['{"email":', '{email: "a@b.co"}', "{'email':'a@b.co'}", '{"email":"a@b.co",}', '{"a":1}}', 'nul', '\u0000', '{"email":"a@b.co" "password":"x"}']
      for (const url of POST_ROUTES) {
        for (const body of bodies) {
          assertErrorShape(t, await json(url, body), 400, 'VALIDATION_ERROR', `${url} ${JSON.stringify(body)}`)
        }
      }
    })

    t.test('an empty JSON body is no body: refused where one is required, fine for refresh and logout', async (t) => {
      for (const url of ['/auth/signup', '/auth/login']) {
        assertErrorShape(t, await json(url, ''), 400, 'VALIDATION_ERROR', `${url} with an empty body`)
      }
      assertErrorShape(t, await json('/auth/refresh', ''), 401, 'REFRESH_TOKEN_MISSING', 'refresh with an empty body and no cookie')
      t.equal((await json('/auth/logout', '')).statusCode, 204, 'logout with an empty body')
    })

    t.test('413 PAYLOAD_TOO_LARGE for a 2 MB body; ordinary bodies pass', async (t) => {
      const big = JSON.stringify({ email: freshEmail('errors'), password: 'x'.repeat(2 * 1024 * 1024) })
      for (const url of POST_ROUTES) {
        assertErrorShape(t, await json(url, big), 413, 'PAYLOAD_TOO_LARGE', url)
      }
      const unknownRoute = await json('/no/such/route', big)
      t.ok(unknownRoute.statusCode === 404 || unknownRoute.statusCode === 413, `unknown route: ${unknownRoute.statusCode}`)
      t.equal((await post('/auth/signup', { payload: { email: freshEmail('errors'), password: 'y'.repeat(256) } })).statusCode, 201,
        'the largest valid signup fits')
    })

    t.test('__proto__ and constructor keys are refused with 400, never 500, and pollute nothing', async (t) => {
      const email = freshEmail('errors')
      const bodies = [
        `{"__proto__":{"polluted":true},"email":"${email}","password":"${PASSWORD}"}`,
        `{"email":"${email}","password":"${PASSWORD}","__proto__":{"isAdmin":true}}`,
        `{"constructor":{"prototype":{"polluted":true}},"email":"${email}","password":"${PASSWORD}"}`,
        `{"email":"${email}","password":"${PASSWORD}","constructor":"x"}`,
        `{"email":"${email}","password":"${PASSWORD}","x":{"__proto__":{"polluted":true}}}`,
        '{"__proto__":{"refreshToken":"rt"}}',
        '{"refreshToken":{"__proto__":{"length":1}}}',
        '{"constructor":{"prototype":{"refreshToken":"x"}}}'
      ]
      for (const url of POST_ROUTES) {
        for (const body of bodies) {
          assertErrorShape(t, await json(url, body), 400, 'VALIDATION_ERROR', `${url} ${body.slice(0, 40)}`)
        }
      }
      t.equal(({} as Record<string, unknown>).polluted, undefined, 'Object.prototype is untouched')
      t.equal(({} as Record<string, unknown>).isAdmin, undefined)
      t.equal((await post('/auth/login', { payload: { email, password: PASSWORD } })).statusCode, 401, 'no account was created')
    })

    t.test('arrays, null, strings, numbers and booleans as the JSON body are 400', async (t) => {
      const bodies = ['[]', `[{"email":"${freshEmail('errors')}","password":"${PASSWORD}"}]`, 'null', '"a string"', '42', 'true', 'false']
      for (const url of POST_ROUTES) {
        for (const body of bodies) {
          assertErrorShape(t, await json(url, body), 400, 'VALIDATION_ERROR', `${url} ${body.slice(0, 20)}`)
        }
      }
    })

    t.test('wrongly typed fields are 400, never 500', async (t) => {
      const values: unknown[] = [null, 1, true, [], {}, ['x'], { $gt: '' }, 1e308, -0]
      for (const value of values) {
        for (const [url, field] of [['/auth/signup', 'email'], ['/auth/signup', 'password'], ['/auth/login', 'email'], ['/auth/login', 'password'], ['/auth/refresh', 'refreshToken'], ['/auth/logout', 'refreshToken']] as const) {
          const payload: Record<string, unknown> = url.startsWith('/auth/sign') || url === '/auth/login'
            ? { email: freshEmail('errors'), password: PASSWORD, [field]: value }
            : { [field]: value }
          assertErrorShape(t, await post(url, { payload }), 400, 'VALIDATION_ERROR', `${url} ${field}=${JSON.stringify(value)}`)
        }
      }
    })

    t.test('odd requests never produce a 500', async (t) => {
      const requests: Array<[string, InjectOptions]> = [
        ['deeply nested JSON', { method: 'POST', url: '/auth/signup', headers: { 'content-type': 'application/json' }, payload: '['.repeat(5000) + ']'.repeat(5000) }],
        ['invalid UTF-8', { method: 'POST', url: '/auth/login', headers: { 'content-type': 'application/json' }, payload: Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]) }],
        ['JSON with a BOM', { method: 'POST', url: '/auth/login', headers: { 'content-type': 'application/json' }, payload: `\ufeff{"email":"${freshEmail('errors')}","password":"x"}` }],
        ['a long email', { method: 'POST', url: '/auth/login', payload: { email: `${'a'.repeat(10000)}@example.com`, password: PASSWORD } }],
        ['a very long password on login', { method: 'POST', url: '/auth/login', payload: { email: freshEmail('errors'), password: 'p'.repeat(10000) } }],
        ['a long refresh token', { method: 'POST', url: '/auth/refresh', payload: { refreshToken: 'r'.repeat(10000) } }],
        ['a long refresh cookie', { method: 'POST', url: '/auth/refresh', cookies: { refresh_token: 'r'.repeat(10000) } }],
        ['a malformed cookie header', { method: 'POST', url: '/auth/refresh', headers: { cookie: 'refresh_token=%E0%A4%A; =; ;;' } }],
        ['an undecodable path', { method: 'GET', url: '/users/%E0%A4%A' }],
        ['a query string on a route', { method: 'GET', url: '/health?x[__proto__][a]=1&y=%00' }],
        ['a content type with parameters', { method: 'POST', url: '/auth/login', headers: { 'content-type': 'application/json; charset=utf-8; foo=bar' }, payload: '{}' }],
        ['a mistyped JSON content type', { method: 'POST', url: '/auth/login', headers: { 'content-type': 'application/jsonx' }, payload: '{}' }],
        ['a bearer token with control characters', { method: 'GET', url: '/users/me', headers: { authorization: 'Bearer a\u0001b.c\u007fd.e' } }],
        ['a bearer token of unicode', { method: 'GET', url: '/users/me', headers: { authorization: 'Bearer ☃.☃.☃' } }]
      ]
      for (const [name, request] of requests) {
        const response = await app.inject(request)
        t.ok(response.statusCode < 500, `${name}: ${response.statusCode}`)
        if (response.statusCode >= 400) {
          const body = response.json()
          t.same(Object.keys(body).sort(), ['code', 'error', 'message', 'statusCode'], `${name}: error shape`)
        }
      }
    })
  })
}
