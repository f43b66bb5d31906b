import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import ts from 'typescript'
import { projectRoot } from '../../src/paths.js'
import { FakeClock, TEST_DATABASE_URL, buildTestApp } from '../helpers.js'
import { browserSkip, launchBrowser, watchPage } from '../fixtures/chromium.js'

/*
 * examples/client in headless Chromium, as a web application would use it:
 * served from the service's origin, with the refresh token in the HttpOnly
 * cookie (never readable by a script), a reload brought back by one refresh,
 * a burst of calls after expiry sharing one refresh, and logout.
 */

/** PostgreSQL when CI provides it (quicker to start than PGlite); the storage is not what this suite tests. */
const realDatabase = TEST_DATABASE_URL !== undefined

t.test('examples/client in Chromium: the refresh token stays in the HttpOnly cookie', { skip: browserSkip }, async (t) => {
  const clock = new FakeClock(Date.now())
  const app = await buildTestApp(t, { clock, env: { ACCESS_TOKEN_TTL: '60s' }, realDatabase })
  let refreshes = 0
  app.server.on('request', (request) => { if (request.url === '/auth/refresh') refreshes++ })
  const url = await app.listen({ host: '127.0.0.1', port: 0 })

  // The client, compiled as a bundler would, served from the service's origin (as a web app behind the same proxy).
  const source = await readFile(join(projectRoot, 'examples', 'client', 'src', 'auth-client.ts'), 'utf8')
  const compiled = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 } }).outputText
  const browser = await launchBrowser(t)
  const page = await (await browser.newContext()).newPage()
  page.setDefaultTimeout(10_000)
  const watched = await watchPage(page)
  await page.route(`${url}/app/**`, (route) => route.fulfill(route.request().url().endsWith('.js')
    ? { contentType: 'text/javascript', body: compiled }
    : { contentType: 'text/html', body: '<!doctype html><title>app</title>' }))
  await page.exposeFunction('advanceClock', (ms: number) => clock.advance(ms))

  /*
   * In-page steps are JavaScript text, as a web application would ship it
   * (and tsx's compiled functions would not survive the trip into the page).
   */
  const inPage = <T>(script: string): Promise<T> => page.evaluate(`(async () => { const { client, loginRequired } = globalThis.demo; ${script} })()`)
  /** A fresh page of the app: nothing in memory, a client made anew. */
  const openApp = async (): Promise<void> => {
    await page.goto(`${url}/app/`)
    await page.evaluate(`(async () => {
      const { AuthClient } = await import('/app/auth-client.js')
      const loginRequired = []
      const client = new AuthClient({ baseUrl: location.origin, onLoginRequired: (code) => loginRequired.push(code) })
      globalThis.demo = { client, loginRequired }
    })()`)
  }

  await openApp()
  const email = 'ada.lovelace@example.com'
  const me = await inPage<{ email: string }>(`
    await client.signup('${email}', 'correct horse battery staple')
    await client.login('${email}', 'correct horse battery staple')
    return client.me()`)
  t.equal(me.email, email, 'signed up, logged in and called /users/me from the page')
  t.notMatch(await page.evaluate('document.cookie'), /refresh_token/, 'no script can read the refresh cookie')
  t.ok((await page.context().cookies()).some(({ name, httpOnly }) => name === 'refresh_token' && httpOnly), 'the browser holds it')

  await openApp()
  const afterReload = await inPage<{ email: string }>('return client.me()')
  t.equal(afterReload.email, email, 'after a reload (no token in memory), the cookie brought the session back')
  t.equal(refreshes, 1, 'with one refresh')

  await page.evaluate('advanceClock(61000)')
  const burst = await inPage<Array<{ email: string }>>('return Promise.all(Array.from({ length: 20 }, () => client.me()))')
  t.ok(burst.length === 20 && burst.every((user) => user.email === email), '20 concurrent calls after the access token expired all answered')
  t.equal(refreshes, 2, 'with exactly one more refresh')

  await inPage('await client.logout()')
  t.notOk((await page.context().cookies()).some(({ name }) => name === 'refresh_token'), 'logout cleared the cookie')
  await openApp()
  const ended = await inPage(`
    try {
      await client.me()
      return { failed: false, loginRequired }
    } catch (error) {
      return { failed: true, name: error.name, code: error.code, loginRequired }
    }`)
  t.match(ended, { failed: true, name: 'LoginRequiredError', code: 'REFRESH_TOKEN_MISSING', loginRequired: ['REFRESH_TOKEN_MISSING'] },
    'after logout, a call sends the application to its login page')
  t.strictSame(watched.errors, [], 'no page errors')
})
