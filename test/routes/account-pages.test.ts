import { createHash } from 'node:crypto'
import t from 'tap'
import { buildTestApp } from '../helpers.js'

/*
 * The built-in account pages (routes/account-pages.ts) as the server sends
 * them: constant HTML, public, under a CSP that allows exactly the page's own
 * inline script and stylesheet (by hash) and nothing from elsewhere. What the
 * pages do in a browser, with real links from real mail, is in
 * account-pages-browser.test.ts.
 */

const PAGES = ['/account/reset-password', '/account/verify-email']

const app = await buildTestApp(t)

/** The CSP's directives by name. */
function directives (csp: string): Map<string, string> {
  return new Map(csp.split(';').map((part) => part.trim()).filter(Boolean).map((directive) => {
    const [name = '', ...values] = directive.split(/\s+/)
    return [name, values.join(' ')]
  }))
}

/** The text of every `<tag>…</tag>` in the page, as the browser hashes it. */
function inline (html: string, tag: 'script' | 'style'): string[] {
  return [...html.matchAll(new RegExp(`<${tag}(\\s[^>]*)?>([\\s\\S]*?)</${tag}>`, 'g'))].map((match) => match[2]!)
}

const sha256 = (text: string): string => `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`

for (const url of PAGES) {
  t.test(`GET ${url}: constant HTML under a strict CSP`, async (t) => {
    t.ok(app.hasRoute({ method: 'GET', url }), 'registered (src/app.ts)')
    const response = await app.inject({ method: 'GET', url })
    t.equal(response.statusCode, 200)
    t.equal(response.headers['content-type'], 'text/html; charset=utf-8')
    t.equal(response.headers['referrer-policy'], 'no-referrer', 'the page sends no Referer')
    t.equal(response.headers['cache-control'], 'no-store')
    t.equal(response.headers['x-frame-options'], 'DENY', 'never framed (the API\'s header kept)')
    t.equal(response.headers['x-content-type-options'], 'nosniff')
    const html = response.body
    t.match(html, /^<!doctype html>/i)
    t.match(html, /<meta name="viewport" content="width=device-width, initial-scale=1">/, 'readable on a phone')
    t.match(html, /<html lang="en">/)

    const csp = directives(String(response.headers['content-security-policy']))
    t.strictSame([...csp.keys()].sort(), ['base-uri', 'connect-src', 'default-src', 'form-action', 'frame-ancestors', 'img-src', 'script-src', 'style-src'],
      `the page's own CSP, not the API's: ${response.headers['content-security-policy']}`)
    t.equal(csp.get('default-src'), "'none'")
    t.equal(csp.get('connect-src'), "'self'", 'fetch to this origin only')
    t.equal(csp.get('img-src'), "'none'")
    t.equal(csp.get('form-action'), "'none'", 'no form is ever submitted by the browser itself (the script posts)')
    t.equal(csp.get('base-uri'), "'none'")
    t.equal(csp.get('frame-ancestors'), "'none'")
    t.notMatch(response.headers['content-security-policy'], /unsafe|nonce|https?:|\*/, 'no unsafe-*, nonce, host or wildcard')

    const scripts = inline(html, 'script')
    const styles = inline(html, 'style')
    t.equal(scripts.length, 1, 'one inline script')
    t.equal(styles.length, 1, 'one inline stylesheet')
    t.equal(csp.get('script-src'), sha256(scripts[0]!), 'script-src is the hash of the page\'s script, and only that')
    t.equal(csp.get('style-src'), sha256(styles[0]!), 'style-src is the hash of the page\'s stylesheet, and only that')

    t.notMatch(html, /\s(src|href|action|srcset|poster|data)\s*=/i, 'no attribute that loads or submits anything')
    t.notMatch(html, /url\(|@import|https?:\/\//i, 'nothing from elsewhere, in the stylesheet or the script')
    t.notMatch(html, /\sstyle\s*=|\son[a-z]+\s*=/i, 'no inline style or handler attributes (the CSP would refuse them)')
    t.notMatch(scripts[0], /innerHTML|outerHTML|insertAdjacentHTML|document\.write/, 'messages are written as text')
    t.match(scripts[0], /location\.hash/, 'the token is read from the fragment')
    t.match(scripts[0], /history\.replaceState/, 'and taken out of the address bar')
    t.match(html, /role="status" aria-live="polite"/, 'messages in a live region')
  })

  t.test(`GET ${url}: public, and nothing from the request reaches the page`, async (t) => {
    const plain = await app.inject({ method: 'GET', url })
    const probes = [
      `${url}?token=${encodeURIComponent('"><script>alert(1)</script>')}`,
      `${url}?utm_source=mail&x=${'y'.repeat(2000)}&x=2`,
      `${url}?%E0%A4%A=1`,
      // Browsers never send the fragment; a broken client that does gets the same page, which reads nothing of it server-side.
      `${url}#token=sent-by-a-broken-client`
    ]
    for (const probe of probes) {
      const response = await app.inject({ method: 'GET', url: probe, headers: { authorization: 'Bearer garbage', referer: 'https://evil.example/<b>' } })
      t.equal(response.statusCode, 200, `${probe.slice(0, 60)}: 200`)
      t.equal(response.body, plain.body, 'the same page, byte for byte')
      t.equal(response.headers['content-security-policy'], plain.headers['content-security-policy'], 'under the same CSP')
    }
  })

  t.test(`HEAD ${url}: the headers without the page`, async (t) => {
    const get = await app.inject({ method: 'GET', url })
    const head = await app.inject({ method: 'HEAD', url })
    t.equal(head.statusCode, 200)
    t.equal(head.body, '')
    for (const name of ['content-type', 'content-security-policy', 'referrer-policy', 'cache-control', 'x-frame-options']) {
      t.equal(head.headers[name], get.headers[name], name)
    }
  })
}

t.test('each page has a script of its own, posting to its own route', async (t) => {
  const [reset, verify] = await Promise.all(PAGES.map((url) => app.inject({ method: 'GET', url })))
  t.not(reset!.headers['content-security-policy'], verify!.headers['content-security-policy'], 'two scripts, two hashes')
  t.match(reset!.body, /autocomplete="new-password"/)
  t.match(reset!.body, /<label for="password">/)
  t.match(reset!.body, /<label for="confirmation">/)
  t.match(inline(reset!.body, 'script')[0], /'auth\/password-reset'/)
  t.match(verify!.body, /<button id="confirm" type="button" hidden>Confirm my email address<\/button>/, 'verification waits for a press')
  t.match(inline(verify!.body, 'script')[0], /'auth\/verify-email'/)
})

t.test('the API keeps its own CSP', async (t) => {
  const health = await app.inject({ method: 'GET', url: '/health/live' })
  t.match(health.headers['content-security-policy'], /^default-src 'none'/)
  t.notMatch(health.headers['content-security-policy'], /sha256/)
})

t.test('the OpenAPI document lists the pages as HTML, public', async (t) => {
  const document = (await app.inject({ method: 'GET', url: '/docs/json' })).json()
  for (const url of PAGES) {
    const operation = document.paths[url]?.get
    t.ok(operation, `${url} is documented`)
    t.strictSame(operation?.tags, ['account'])
    t.ok(operation?.responses['200']?.content?.['text/html'], 'its 200 is text/html')
    t.notOk(operation?.security?.some((requirement: Record<string, unknown>) => 'bearerAuth' in requirement), 'no access token')
    t.notOk(document.paths[url]?.head, 'HEAD is not listed separately')
  }
})
