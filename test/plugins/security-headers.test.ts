import type { LightMyRequestResponse } from 'fastify'
import t from 'tap'
import { PASSWORD, buildTestApp, freshEmail, signUpAndLogIn } from '../helpers.js'

/*
 * What browsers see on every answer: a strict CSP on the API (nothing may
 * load or frame it, nothing is cached), and one that lets Swagger UI run on /docs.
 */

t.test('security headers', async (t) => {
  const app = await buildTestApp(t)
  const { accessToken } = await signUpAndLogIn(app, 'browser')

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
    t.same(directives.get('style-src'), ["'self'", "'unsafe-inline'"], 'styles from this origin, and inline ones (Swagger UI\'s logo SVG holds a <style>)')
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
