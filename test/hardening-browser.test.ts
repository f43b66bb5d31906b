import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
import t from 'tap'
import { buildTestApp } from './helpers.js'
import { PASSWORD, assertErrorShape, refreshCookieOf } from './hardening-helpers.js'

/*
 * What browsers see: security headers (a strict CSP on the API, one that lets
 * Swagger UI run on /docs), CORS for CORS_ORIGINS only, and CSRF: the refresh
 * cookie cannot be used from a page on another origin.
 */

const APP_ORIGIN = 'https://app.example.com'
const SERVICE_HOST = 'auth.example.com'

let emails = 0
const freshEmail = (): string => `browser-${++emails}@example.com`

async function loggedIn (app: FastifyInstance): Promise<{ accessToken: string, refreshToken: string, cookie: string }> {
  const email = freshEmail()
  await app.inject({ method: 'POST', url: '/auth/signup', payload: { email, password: PASSWORD } })
  const login = await app.inject({ method: 'POST', url: '/auth/login', payload: { email, password: PASSWORD } })
  return { ...login.json(), cookie: refreshCookieOf(login)! }
}

/** Whether the session of `cookie` still refreshes (from no browser at all), which spends the cookie. */
async function stillAlive (app: FastifyInstance, cookie: string): Promise<boolean> {
  const response = await app.inject({ method: 'POST', url: '/auth/refresh', cookies: { refresh_token: cookie } })
  return response.statusCode === 200 && response.json().refreshToken !== cookie
}

t.test('security headers', async (t) => {
  const app = await buildTestApp(t)
  const { accessToken } = await loggedIn(app)

  t.test('JSON answers: nothing may load, nothing may frame them, nothing is cached', async (t) => {
    const answers: Array<[string, LightMyRequestResponse]> = [
      ['login', await app.inject({ method: 'POST', url: '/auth/login', payload: { email: freshEmail(), password: PASSWORD } })],
      ['/users/me', await app.inject({ method: 'GET', url: '/users/me', headers: { authorization: `Bearer ${accessToken}` } })],
      ['a 404', await app.inject({ method: 'GET', url: '/nowhere' })],
      ['a 401 from the auth hook', await app.inject({ method: 'GET', url: '/users/me' })],
      ['a 400', await app.inject({ method: 'POST', url: '/auth/login', payload: { email: 'not an email' } })],
      ['/health', await app.inject({ method: 'GET', url: '/health' })]
    ]
    for (const [name, response] of answers) {
      const csp = String(response.headers['content-security-policy'])
      t.match(csp, /default-src 'none'/, `${name}: default-src 'none'`)
      t.match(csp, /frame-ancestors 'none'/, `${name}: frame-ancestors 'none'`)
      t.match(csp, /base-uri 'none'/, `${name}: base-uri 'none'`)
      t.match(csp, /form-action 'none'/, `${name}: form-action 'none'`)
      t.equal(response.headers['x-frame-options'], 'DENY', `${name}: X-Frame-Options`)
      t.equal(response.headers['x-content-type-options'], 'nosniff', `${name}: nosniff`)
      t.equal(response.headers['referrer-policy'], 'no-referrer', `${name}: Referrer-Policy`)
      t.match(response.headers['strict-transport-security'], /max-age=\d+; includeSubDomains/, `${name}: HSTS`)
      t.equal(response.headers['cache-control'], 'no-store', `${name}: Cache-Control: no-store`)
      t.notOk(response.headers['x-powered-by'], `${name}: no X-Powered-By`)
      for (const header of ['x-dns-prefetch-control', 'x-download-options', 'x-permitted-cross-domain-policies', 'origin-agent-cluster', 'x-xss-protection']) {
        t.notOk(response.headers[header], `${name}: no ${header}, which concerns HTML documents only`)
      }
    }
    const jwks = await app.inject({ method: 'GET', url: '/.well-known/jwks.json' })
    t.match(jwks.headers['cache-control'], /^public, max-age=\d+$/, 'the JWKS keeps its own Cache-Control')
  })

  t.test('/docs: a CSP that lets Swagger UI run, and nothing it does not need', async (t) => {
    const page = await app.inject({ method: 'GET', url: '/docs/' })
    t.equal(page.statusCode, 200)
    const csp = String(page.headers['content-security-policy'])
    const directives = new Map(csp.split(';').map((part) => part.trim().split(/\s+/)).map(([name, ...values]) => [name!, values]))
    t.same(directives.get('script-src'), ["'self'"], 'scripts from this origin only: no inline, no eval')
    t.same(directives.get('style-src')?.filter((source) => !source.startsWith("'sha256-")), ["'self'"], 'styles from this origin only (and one hashed inline style)')
    t.same(directives.get('connect-src'), ["'self'"], 'it fetches /docs/json and calls the API here')
    t.same(directives.get('img-src'), ["'self'", 'data:'], 'its icons are data: URLs')
    t.same(directives.get('object-src'), ["'none'"])
    t.same(directives.get('frame-ancestors'), ["'self'"])
    t.equal(page.headers['x-frame-options'], 'SAMEORIGIN')
    t.equal(page.headers['x-content-type-options'], 'nosniff')
    t.match(page.headers['strict-transport-security'], /max-age=\d+; includeSubDomains/)
    t.equal(page.headers['referrer-policy'], 'no-referrer')

    // Everything the page loads is covered by 'self': relative URLs only, no inline script or style.
    t.notMatch(page.body, /<script(?![^>]*\bsrc=)[^>]*>/i, 'no inline <script>')
    t.notMatch(page.body, /<style|\sstyle=|\son[a-z]+=/i, 'no inline style or event handler')
    const assets = [...page.body.matchAll(/(?:src|href)="([^"]+)"/g)].map((match) => match[1]!)
    t.ok(assets.length >= 4, `${assets.length} assets`)
    for (const asset of assets) {
      t.notMatch(asset, /^(?:[a-z]+:)?\/\//i, `${asset} is on this origin`)
      const response = await app.inject({ method: 'GET', url: new URL(asset, 'http://localhost/docs/').pathname })
      t.equal(response.statusCode, 200, `${asset} is served`)
    }
    const initializer = await app.inject({ method: 'GET', url: '/docs/static/swagger-initializer.js' })
    t.notMatch(initializer.body, /\beval\(|new Function\(/, 'the initializer needs no eval')
    t.equal((await app.inject({ method: 'GET', url: '/docs/json' })).statusCode, 200)
  })
})

t.test('CORS', async (t) => {
  const preflight = (app: FastifyInstance, origin: string) => app.inject({
    method: 'OPTIONS',
    url: '/auth/refresh',
    headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' }
  })

  t.test('without CORS_ORIGINS: no cross-origin access at all', async (t) => {
    const app = await buildTestApp(t)
    const response = await app.inject({ method: 'GET', url: '/health', headers: { origin: APP_ORIGIN } })
    t.equal(response.statusCode, 200)
    t.notOk(response.headers['access-control-allow-origin'])
    t.notOk(response.headers['access-control-allow-credentials'])
    const refused = await preflight(app, APP_ORIGIN)
    assertErrorShape(t, refused, 404, 'NOT_FOUND', 'a preflight')
    t.notOk(refused.headers['access-control-allow-origin'])
  })

  t.test('with CORS_ORIGINS: credentials for the listed origins only', async (t) => {
    const app = await buildTestApp(t, { env: { CORS_ORIGINS: `${APP_ORIGIN}, https://admin.example.com` } })
    const allowed = await preflight(app, APP_ORIGIN)
    t.equal(allowed.statusCode, 204)
    t.equal(allowed.headers['access-control-allow-origin'], APP_ORIGIN)
    t.equal(allowed.headers['access-control-allow-credentials'], 'true')
    t.match(allowed.headers['access-control-allow-methods'], /POST/)
    t.match(allowed.headers['access-control-allow-headers'], /content-type/)
    t.match(allowed.headers.vary, /Origin/)

    const { accessToken } = await loggedIn(app)
    const me = await app.inject({ method: 'GET', url: '/users/me', headers: { origin: 'https://admin.example.com', authorization: `Bearer ${accessToken}` } })
    t.equal(me.statusCode, 200)
    t.equal(me.headers['access-control-allow-origin'], 'https://admin.example.com')
    t.equal(me.headers['access-control-allow-credentials'], 'true')
    t.match(me.headers['access-control-expose-headers'], /retry-after/, 'scripts may read Retry-After')

    for (const origin of ['https://evil.example', 'https://app.example.com.evil.example', 'http://app.example.com', 'null']) {
      const refused = await preflight(app, origin)
      t.equal(refused.statusCode, 404, `${origin}: the preflight fails`)
      t.notOk(refused.headers['access-control-allow-origin'], `${origin}: no Access-Control-Allow-Origin`)
      const simple = await app.inject({ method: 'GET', url: '/users/me', headers: { origin, authorization: `Bearer ${accessToken}` } })
      t.notOk(simple.headers['access-control-allow-origin'], `${origin}: cannot read an answer`)
      t.notOk(simple.headers['access-control-allow-credentials'], `${origin}: no credentials`)
    }
  })
})

t.test('CSRF: the refresh cookie cannot be used from another origin', async (t) => {
  const app = await buildTestApp(t, { env: { CORS_ORIGINS: APP_ORIGIN } })
  const withCookie = (cookie: string, headers: Record<string, string>, extra: Omit<InjectOptions, 'method' | 'url' | 'headers' | 'cookies'> = {}) =>
    ({ cookies: { refresh_token: cookie }, headers: { host: SERVICE_HOST, ...headers }, ...extra })

  t.test('a cross-site form post (urlencoded, multipart or text/plain) is 415 and changes nothing', async (t) => {
    const forms: Array<[string, string]> = [
      ['application/x-www-form-urlencoded', ''],
      ['application/x-www-form-urlencoded', 'refreshToken=x'],
      ['multipart/form-data; boundary=b', '--b--\r\n'],
      ['text/plain', '{"refreshToken":"x"}']
    ]
    for (const url of ['/auth/refresh', '/auth/logout']) {
      for (const [type, payload] of forms) {
        const { cookie } = await loggedIn(app)
        const response = await app.inject({
          method: 'POST',
          url,
          ...withCookie(cookie, { origin: 'https://evil.example', 'content-type': type, 'sec-fetch-site': 'cross-site' }, { payload })
        })
        assertErrorShape(t, response, 415, 'UNSUPPORTED_MEDIA_TYPE', `${url} ${type}`)
        t.notOk(refreshCookieOf(response), `${url} ${type}: the cookie is neither set nor cleared`)
        t.ok(await stillAlive(app, cookie), `${url} ${type}: the session is untouched`)
      }
    }
  })

  t.test('a body-less credentialed request from an unlisted origin neither refreshes nor logs out', async (t) => {
    const foreign = [
      ['another site', { origin: 'https://evil.example' }],
      ['a sibling subdomain (same site for SameSite)', { origin: 'https://evil.example.com' }],
      ['the service\'s host over another port', { origin: `https://${SERVICE_HOST}:8443` }],
      ['an opaque origin (sandboxed frame)', { origin: 'null' }],
      ['a malformed Origin', { origin: 'not a url' }],
      ['a cross-site fetch with no Origin', { 'sec-fetch-site': 'cross-site' }]
    ] as const
    for (const [name, headers] of foreign) {
      const { cookie } = await loggedIn(app)
      const refresh = await app.inject({ method: 'POST', url: '/auth/refresh', ...withCookie(cookie, headers) })
      assertErrorShape(t, refresh, 401, 'REFRESH_TOKEN_MISSING', `refresh from ${name}`)
      t.notOk(refreshCookieOf(refresh), `refresh from ${name}: no Set-Cookie`)
      t.notOk(refresh.headers['access-control-allow-origin'], `refresh from ${name}: no CORS`)

      const logout = await app.inject({ method: 'POST', url: '/auth/logout', ...withCookie(cookie, headers) })
      t.equal(logout.statusCode, 204, `logout from ${name}: 204, as logout always answers`)
      t.notOk(refreshCookieOf(logout) !== undefined || logout.headers['set-cookie'], `logout from ${name}: the cookie is not cleared`)
      t.ok(await stillAlive(app, cookie), `logout from ${name}: the session is still alive`)
    }
  })

  t.test('the same requests from this origin, a listed origin or a non-browser client work', async (t) => {
    const trusted = [
      ['this service\'s own origin', { origin: `https://${SERVICE_HOST}`, 'sec-fetch-site': 'same-origin' }],
      ['a listed origin', { origin: APP_ORIGIN, 'sec-fetch-site': 'same-site' }],
      ['a client with no Origin (curl, a mobile app)', {}]
    ] as const
    for (const [name, headers] of trusted) {
      const { cookie, accessToken } = await loggedIn(app)
      const refresh = await app.inject({ method: 'POST', url: '/auth/refresh', ...withCookie(cookie, headers) })
      t.equal(refresh.statusCode, 200, `refresh from ${name}`)
      const rotated = refreshCookieOf(refresh)
      t.ok(rotated && rotated !== cookie, `refresh from ${name}: the cookie is rotated`)
      if ('origin' in headers && headers.origin === APP_ORIGIN) t.equal(refresh.headers['access-control-allow-origin'], APP_ORIGIN)

      const logout = await app.inject({ method: 'POST', url: '/auth/logout', ...withCookie(rotated!, headers) })
      t.equal(logout.statusCode, 204, `logout from ${name}`)
      t.equal(refreshCookieOf(logout), '', `logout from ${name}: the cookie is cleared`)
      const me = await app.inject({ method: 'GET', url: '/users/me', headers: { authorization: `Bearer ${accessToken}` } })
      t.equal(me.json().code, 'ACCESS_TOKEN_REVOKED', `logout from ${name}: the session is revoked`)
    }
  })

  t.test('a token sent in the body works from any origin: it is no ambient credential', async (t) => {
    const { refreshToken } = await loggedIn(app)
    const response = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { host: SERVICE_HOST, origin: 'https://evil.example' }, payload: { refreshToken } })
    t.equal(response.statusCode, 200)
    t.notOk(response.headers['set-cookie'], 'but no cookie is set for that origin')
  })
})

t.test('request ids: one per request, in the answer; a proxy\'s id is reused only behind TRUST_PROXY', async (t) => {
  const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
  const direct = await buildTestApp(t)
  const a = await direct.inject({ method: 'GET', url: '/health' })
  const b = await direct.inject({ method: 'GET', url: '/health', headers: { 'x-request-id': 'client-chosen' } })
  t.match(a.headers['x-request-id'], uuid)
  t.match(b.headers['x-request-id'], uuid, 'a client cannot choose its id')
  t.not(a.headers['x-request-id'], b.headers['x-request-id'])

  const proxied = await buildTestApp(t, { env: { TRUST_PROXY: 'true' } })
  t.equal((await proxied.inject({ method: 'GET', url: '/health', headers: { 'x-request-id': 'lb-1234.abcd' } })).headers['x-request-id'], 'lb-1234.abcd')
  const forged = await proxied.inject({ method: 'GET', url: '/health', headers: { 'x-request-id': 'x" injected="1' } })
  t.match(forged.headers['x-request-id'], uuid, 'an id that could forge a log line is replaced')
  const long = await proxied.inject({ method: 'GET', url: '/health', headers: { 'x-request-id': 'a'.repeat(200) } })
  t.match(long.headers['x-request-id'], uuid, 'so is an over-long one')
})
