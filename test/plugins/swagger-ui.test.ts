import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import type { Locator, Page } from 'playwright-core'
import { projectRoot } from '../../src/paths.js'
import { NEW_PASSWORD, PASSWORD, TEST_DATABASE_URL, buildTestApp } from '../helpers.js'
import { browserSkip, launchBrowser, watchPage } from '../fixtures/chromium.js'

/*
 * Swagger UI at /docs, driven in headless Chromium as a person would use it,
 * under the service's own security headers (CSP included): sign up and log
 * in with "Try it out", "Authorize" with the access token, reload (the
 * authorization persists), call /users/me, then every other route, the
 * cookie refresh included. The screenshot of the /users/me answer is saved
 * under test-artifacts/. (examples/client in a page: test/examples/client-browser.test.ts.)
 */

const ARTIFACTS = join(projectRoot, 'test-artifacts')
const SCREENSHOT = join(ARTIFACTS, 'swagger-users-me.png')
const INTROSPECTION_SECRET = 'introspection-secret-for-the-browser'
const EMAIL = 'grace.hopper@example.com'

/** PostgreSQL when CI provides it (quicker to start than PGlite); the storage is not what these suites test. */
const realDatabase = TEST_DATABASE_URL !== undefined

interface Answer { status: number, body: any, requestHeaders: Record<string, string> }

/** One operation of the page, as `#operations-<tag>-<method>_<path>`. */
function operation (page: Page, id: string): Locator {
  return page.locator(`#operations-${id}`)
}

/**
 * Opens an operation, fills its body and path parameters, presses "Execute"
 * and waits for the answer to show on the page. The status and body are read
 * from the page (what a person sees), the request headers from the network.
 */
async function execute (page: Page, id: string, { body, params = {} }: { body?: unknown, params?: Record<string, string> } = {}): Promise<Answer> {
  const block = operation(page, id)
  if (!(await block.getAttribute('class'))?.includes('is-open')) await block.locator('.opblock-summary-control').click()
  // The answer of an earlier run would be read for this one's.
  const clear = block.locator('button.btn-clear')
  if (await clear.count() > 0) await clear.click()
  // tryItOutEnabled: the form is editable at once, no "Try it out" click needed.
  if (body !== undefined) await block.locator('textarea.body-param__text').fill(typeof body === 'string' ? body : JSON.stringify(body))
  for (const [name, value] of Object.entries(params)) {
    await block.locator(`tr[data-param-name="${name}"] input`).fill(value)
  }
  const [response] = await Promise.all([
    page.waitForResponse((candidate) => new URL(candidate.url()).origin === new URL(page.url()).origin && !candidate.url().includes('/docs')),
    block.locator('button.execute').click()
  ])
  await block.locator('.live-responses-table tbody tr.response').waitFor()
  const shown = await page.evaluate(`(() => {
    const row = document.querySelector('#operations-${id} .live-responses-table tbody tr.response')
    return { status: row.querySelector('.response-col_status').innerText, body: row.querySelector('.response-col_description .highlight-code pre')?.innerText ?? '' }
  })()`) as { status: string, body: string }
  return {
    status: Number(shown.status),
    body: shown.body === '' ? undefined : JSON.parse(shown.body),
    requestHeaders: await response.request().allHeaders()
  }
}

/** Pastes a credential into a scheme of the "Authorize" dialog (replacing one already there), and closes it. */
async function authorize (page: Page, scheme: string, value: string): Promise<void> {
  await page.locator('.auth-wrapper button.authorize').click()
  const box = page.locator('.modal-ux .auth-container').filter({ has: page.locator('h4 code', { hasText: new RegExp(`^${scheme}$`) }) })
  const logout = box.locator('button', { hasText: 'Logout' })
  if (await logout.count() > 0) await logout.click()
  await box.locator('input').fill(value)
  await box.locator('button.authorize').click()
  await box.locator('h6', { hasText: 'Authorized' }).waitFor()
  await page.locator('.modal-ux button.btn-done').first().click()
}

t.test('Swagger UI in Chromium: sign up, log in, authorize, /users/me, and every other route', { skip: browserSkip }, async (t) => {
  const app = await buildTestApp(t, { env: { INTROSPECTION_SECRET }, realDatabase })
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  const browser = await launchBrowser(t)
  const context = await browser.newContext({ viewport: { width: 1280, height: 1400 } })
  const page = await context.newPage()
  page.setDefaultTimeout(10_000)
  const watched = await watchPage(page)

  const docs = await page.goto(`${url}/docs`)
  t.equal(docs?.status(), 200, '/docs answers')
  t.match(docs?.headers()['content-security-policy'], /default-src/, 'under the service\'s CSP')
  await page.locator('.opblock').first().waitFor()
  t.match(await page.locator('.info .title').innerText(), /Authentication service/)

  const signup = await execute(page, 'auth-signup', { body: { email: EMAIL, password: PASSWORD } })
  t.equal(signup.status, 201, 'signed up from "Try it out"')
  t.equal(signup.body.email, EMAIL)

  const login = await execute(page, 'auth-login', { body: { email: EMAIL, password: PASSWORD } })
  t.equal(login.status, 200, 'logged in')
  t.match(login.body, { accessToken: String, refreshToken: String, tokenType: 'Bearer' })
  const cookie = (await context.cookies()).find(({ name }) => name === 'refresh_token')
  t.match(cookie, { path: '/auth', httpOnly: true, sameSite: 'Strict' }, 'the browser holds the refresh cookie')

  await authorize(page, 'bearerAuth', login.body.accessToken)
  await page.reload()
  await page.locator('.opblock').first().waitFor()
  t.match(await page.locator('.auth-wrapper button.authorize').getAttribute('class'), /\blocked\b/, 'the authorization persists across a reload')

  const me = await execute(page, 'users-getMe')
  t.equal(me.status, 200, 'GET /users/me: 200')
  t.equal(me.body.email, EMAIL, 'with the email')
  t.equal(me.requestHeaders.authorization, `Bearer ${login.body.accessToken}`, 'sent with the token from Authorize')
  // The operation from its title down to the live answer (the documented responses below are left out).
  await mkdir(ARTIFACTS, { recursive: true })
  await page.evaluate('document.getElementById("operations-users-getMe").scrollIntoView()')
  const top = (await operation(page, 'users-getMe').boundingBox())!
  const answer = (await operation(page, 'users-getMe').locator('.live-responses-table').boundingBox())!
  await page.screenshot({ path: SCREENSHOT, clip: { x: top.x, y: top.y, width: top.width, height: answer.y + answer.height - top.y + 8 } })
  t.comment(`screenshot: ${SCREENSHOT}`)

  // The cookie refresh: the body left empty, or {} as the example fills it in.
  const refreshed = await execute(page, 'auth-refresh', { body: '' })
  t.equal(refreshed.status, 200, 'POST /auth/refresh with no body: the cookie is used')
  t.equal(refreshed.requestHeaders['content-type'], undefined, 'sent without a Content-Type')
  t.match(refreshed.requestHeaders.cookie, /refresh_token=/, 'the browser sent the cookie')
  t.not(refreshed.body.refreshToken, login.body.refreshToken, 'the refresh token rotated')
  const rotatedCookie = (await context.cookies()).find(({ name }) => name === 'refresh_token')
  t.equal(rotatedCookie?.value, refreshed.body.refreshToken, 'and the cookie with it')
  const example = await execute(page, 'auth-refresh', { body: '{}' })
  t.equal(example.status, 200, 'POST /auth/refresh with {}: the cookie is used')

  const sessions = await execute(page, 'sessions-listSessions')
  t.equal(sessions.status, 200)
  t.match(sessions.body, [{ current: true }], 'one session, this one')
  t.equal((await execute(page, 'keys-getJwks')).status, 200, 'the JWKS')
  t.equal((await execute(page, 'health-getHealth')).status, 200, 'health')

  await authorize(page, 'introspectionSecret', INTROSPECTION_SECRET)
  const introspection = await execute(page, 'keys-introspect', { body: { token: example.body.accessToken } })
  t.equal(introspection.status, 200)
  t.match(introspection.body, { active: true, sid: sessions.body[0].id }, 'introspection with its own secret')

  t.equal((await execute(page, 'sessions-logoutOthers')).status, 204, 'logout-others')
  const password = await execute(page, 'auth-changePassword', { body: { currentPassword: PASSWORD, newPassword: NEW_PASSWORD } })
  t.equal(password.status, 204, 'password changed')
  t.equal((await execute(page, 'sessions-deleteSession', { params: { id: sessions.body[0].id } })).status, 204, 'this session deleted')
  t.equal((await execute(page, 'users-getMe')).body.code, 'ACCESS_TOKEN_REVOKED', 'its token is refused at once')

  const again = await execute(page, 'auth-login', { body: { email: EMAIL, password: NEW_PASSWORD } })
  t.equal(again.status, 200, 'logged in with the new password')
  await authorize(page, 'bearerAuth', again.body.accessToken)
  t.equal((await execute(page, 'sessions-logoutAll')).status, 204, 'logout-all')
  t.equal((await execute(page, 'users-getMe')).body.code, 'ACCESS_TOKEN_REVOKED')

  const last = await execute(page, 'auth-login', { body: { email: EMAIL, password: NEW_PASSWORD } })
  await authorize(page, 'bearerAuth', last.body.accessToken)
  t.equal((await execute(page, 'auth-logout', { body: '{}' })).status, 204, 'logout with the cookie')
  t.notOk((await context.cookies()).some(({ name }) => name === 'refresh_token'), 'the cookie is cleared')
  t.equal((await execute(page, 'auth-refresh', { body: '{}' })).body.code, 'REFRESH_TOKEN_MISSING', 'so a refresh has nothing to send')

  // What the CSP blocked, if anything, said precisely: directive, what, and which script tried.
  t.strictSame(watched.cspViolations, [], 'nothing blocked by the Content-Security-Policy')
  t.strictSame(watched.errors, [], 'no page or console errors')
})
