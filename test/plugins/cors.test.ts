import type { FastifyInstance } from 'fastify'
import t from 'tap'
import { assertErrorShape, buildTestApp, signUpAndLogIn } from '../helpers.js'

/*
 * CORS for CORS_ORIGINS only: no cross-origin access without it, credentials
 * for the listed origins only.
 */

const APP_ORIGIN = 'https://app.example.com'

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

    const { accessToken } = await signUpAndLogIn(app, 'browser')
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
