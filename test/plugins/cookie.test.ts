import { request as httpRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import t from 'tap'
import type { Test } from 'tap'
import { BACKENDS, assertErrorShape, buildTestApp, signUpAndLogIn } from '../helpers.js'

/*
 * The refresh cookie (plugins/cookie.ts). Two refresh_token cookies in one request (API.md, "Sessions and revocation"):
 * a sibling subdomain can plant a second one with a longer Path, which the
 * browser sends first. Refresh and logout refuse the request with 401
 * REFRESH_TOKEN_INVALID, revoke nothing and set no cookie, not even a clearing
 * one. With no grace, a refresh token spent by mistake would come back as
 * REFRESH_TOKEN_REUSED: each test ends by refreshing the sessions it used.
 * The tests of a backend share its app, each with accounts of its own.
 */

const NO_GRACE = { REFRESH_REUSE_GRACE: '0s' }

/** The Cookie headers a request may carry two refresh_token cookies in, given two tokens. */
const DUPLICATES: Array<[string, (a: string, b: string) => string]> = [
  ['the same value twice', (a) => `refresh_token=${a}; refresh_token=${a}`],
  ['two sessions\' tokens', (a, b) => `refresh_token=${a}; refresh_token=${b}`],
  ['no space after the semicolon', (a, b) => `refresh_token=${b};refresh_token=${a}`],
  ['spaces and tabs around the names', (a) => ` refresh_token =${a} ;\t refresh_token\t= ${a}`],
  ['among other cookies', (a) => `theme=dark; refresh_token=${a}; lang=en; refresh_token=planted`],
  ['the second one empty', (a) => `refresh_token=${a}; refresh_token=`]
]

for (const backend of BACKENDS) {
  t.test(backend.name, { skip: backend.skip }, async (t) => {
    const app = await buildTestApp(t, { realDatabase: backend.realDatabase, realRedis: backend.realRedis, env: NO_GRACE })

    const post = (app: FastifyInstance, url: string, headers: Record<string, string>, payload?: object) =>
      app.inject({ method: 'POST', url, headers, ...(payload === undefined ? {} : { payload }) })

    /** The refusal: 401 REFRESH_TOKEN_INVALID and no Set-Cookie header at all. */
    function assertRefused (t: Test, response: LightMyRequestResponse, name: string): void {
      assertErrorShape(t, response, 401, 'REFRESH_TOKEN_INVALID', name)
      t.equal(response.headers['set-cookie'], undefined, `${name}: no Set-Cookie header`)
    }

    /** The session of `refreshToken` is live and its token unspent: it refreshes. */
    async function assertLive (t: Test, app: FastifyInstance, refreshToken: string, name: string): Promise<void> {
      const response = await post(app, '/auth/refresh', {}, { refreshToken })
      t.equal(response.statusCode, 200, `${name}: still refreshes (${response.body})`)
    }

    t.test('refresh: refused, whatever the spacing, and nothing is spent or revoked', async (t) => {
      const a = await signUpAndLogIn(app, 'dup-refresh')
      const b = await signUpAndLogIn(app, 'dup-refresh')
      for (const [name, cookieOf] of DUPLICATES) {
        assertRefused(t, await post(app, '/auth/refresh', { cookie: cookieOf(a.refreshToken, b.refreshToken) }), name)
      }
      const withBody = await post(app, '/auth/refresh', { cookie: `refresh_token=${b.refreshToken}; refresh_token=${b.refreshToken}` },
        { refreshToken: a.refreshToken })
      assertRefused(t, withBody, 'a refresh token in the body too')
      await assertLive(t, app, a.refreshToken, 'the first session')
      await assertLive(t, app, b.refreshToken, 'the second session')
    })

    t.test('logout: refused before anything is revoked, the access token\'s session included', async (t) => {
      const a = await signUpAndLogIn(app, 'dup-logout')
      const b = await signUpAndLogIn(app, 'dup-logout')
      for (const [name, cookieOf] of DUPLICATES) {
        const cookie = cookieOf(a.refreshToken, b.refreshToken)
        assertRefused(t, await post(app, '/auth/logout', { cookie }), name)
        assertRefused(t, await post(app, '/auth/logout', { cookie, authorization: `Bearer ${a.accessToken}` }), `${name}, with an access token`)
      }
      const withBody = await post(app, '/auth/logout', { cookie: `refresh_token=${b.refreshToken}; refresh_token=x` },
        { refreshToken: a.refreshToken })
      assertRefused(t, withBody, 'a refresh token in the body too')
      const me = await app.inject({ method: 'GET', url: '/users/me', headers: { authorization: `Bearer ${a.accessToken}` } })
      t.equal(me.statusCode, 200, 'the access token still works')
      await assertLive(t, app, a.refreshToken, 'the first session')
      await assertLive(t, app, b.refreshToken, 'the second session')
    })

    t.test('one refresh_token cookie works as before, next to cookies whose names only look alike', async (t) => {
      const { refreshToken } = await signUpAndLogIn(app, 'one-cookie')
      const lookalikes = 'refresh_token_old=x; Refresh_Token=y; my_refresh_token=z; other=refresh_token=w'
      const refreshed = await post(app, '/auth/refresh', { cookie: `${lookalikes}; refresh_token=${refreshToken}` })
      t.equal(refreshed.statusCode, 200, refreshed.body)
      t.match(refreshed.headers['set-cookie'], /^refresh_token=[^;]+;/, 'a new cookie is set')

      const next = refreshed.json().refreshToken
      const loggedOut = await post(app, '/auth/logout', { cookie: `refresh_token=${next}; ${lookalikes}` })
      t.equal(loggedOut.statusCode, 204)
      t.match(loggedOut.headers['set-cookie'], /^refresh_token=;/, 'the cookie is cleared')
      const after = await post(app, '/auth/refresh', {}, { refreshToken: next })
      t.equal(after.statusCode, 401, 'the session is revoked')
    })

    t.test('from a foreign origin the cookies are ignored as if absent, two as well as one', async (t) => {
      const { refreshToken } = await signUpAndLogIn(app, 'foreign')
      const headers = { origin: 'https://evil.example.com', cookie: `refresh_token=${refreshToken}; refresh_token=planted` }
      const refresh = await post(app, '/auth/refresh', headers)
      assertErrorShape(t, refresh, 401, 'REFRESH_TOKEN_MISSING', 'refresh')
      t.equal(refresh.headers['set-cookie'], undefined, 'refresh: no Set-Cookie header')
      const logout = await post(app, '/auth/logout', headers)
      t.equal(logout.statusCode, 204, 'logout: nothing to revoke')
      t.equal(logout.headers['set-cookie'], undefined, 'logout: no Set-Cookie header')
      await assertLive(t, app, refreshToken, 'the session')
    })

    t.test('two Cookie header lines, over a real socket, are two cookies too', async (t) => {
      const { refreshToken } = await signUpAndLogIn(app, 'two-lines')
      await app.listen({ host: '127.0.0.1', port: 0 })
      const { port } = app.server.address() as AddressInfo
      for (const url of ['/auth/refresh', '/auth/logout']) {
        const { status, setCookie, body } = await new Promise<{ status?: number, setCookie?: string[], body: string }>((resolve, reject) => {
          const request = httpRequest({
            host: '127.0.0.1',
            port,
            method: 'POST',
            path: url,
            // Raw headers, sent line by line as given (Host included: node adds none then); the
            // server joins the two Cookie lines with "; ".
            headers: ['Host', `127.0.0.1:${port}`, 'Content-Length', '0', 'Cookie', `refresh_token=${refreshToken}`, 'Cookie', 'refresh_token=planted']
          }, (response) => {
            let text = ''
            response.on('data', (chunk) => { text += chunk })
            response.on('end', () => resolve({ status: response.statusCode, setCookie: response.headers['set-cookie'], body: text }))
          })
          request.on('error', reject)
          request.end()
        })
        t.equal(status, 401, `${url}: 401`)
        t.equal(JSON.parse(body).code, 'REFRESH_TOKEN_INVALID', `${url}: REFRESH_TOKEN_INVALID`)
        t.equal(setCookie, undefined, `${url}: no Set-Cookie header`)
      }
      await assertLive(t, app, refreshToken, 'the session')
    })
  })
}
