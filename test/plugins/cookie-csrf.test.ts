import type { FastifyInstance, InjectOptions } from 'fastify'
import t from 'tap'
import { assertErrorShape, buildTestApp, refreshCookieOf, signUpAndLogIn } from '../helpers.js'

/*
 * CSRF: the refresh cookie cannot be used from a page on another origin (the
 * cookie plugin's origin guard, and JSON-only bodies).
 */

const APP_ORIGIN = 'https://app.example.com'
const SERVICE_HOST = 'auth.example.com'

/** Whether the session of `cookie` still refreshes (from no browser at all), which spends the cookie. */
async function stillAlive (app: FastifyInstance, cookie: string): Promise<boolean> {
  const response = await app.inject({ method: 'POST', url: '/auth/refresh', cookies: { refresh_token: cookie } })
  return response.statusCode === 200 && response.json().refreshToken !== cookie
}

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
        const { cookie } = await signUpAndLogIn(app, 'browser')
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
      const { cookie } = await signUpAndLogIn(app, 'browser')
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
      const { cookie, accessToken } = await signUpAndLogIn(app, 'browser')
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
    const { refreshToken } = await signUpAndLogIn(app, 'browser')
    const response = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { host: SERVICE_HOST, origin: 'https://evil.example' }, payload: { refreshToken } })
    t.equal(response.statusCode, 200)
    t.notOk(response.headers['set-cookie'], 'but no cookie is set for that origin')
  })
})
