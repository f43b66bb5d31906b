import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import type { Browser, Page } from 'playwright-core'
import { projectRoot } from '../../src/paths.js'
import { NEW_PASSWORD, PASSWORD, TEST_DATABASE_URL, buildTestApp, freshEmail, logIn, signUp } from '../helpers.js'
import { browserSkip, launchBrowser, watchPage } from '../fixtures/chromium.js'
import { linkOf, startMailServer } from '../fixtures/mail-server.js'
import { freePort } from '../fixtures/service-process.js'

/*
 * The built-in account pages in headless Chromium, opened from the links of
 * real mail (an SMTP server of the test's own): verify an address, reset a
 * password, a used link, an email change whose address was taken meanwhile,
 * and a page opened without its link. The server must never see a token
 * (it travels in the fragment and is posted in a body), and the pages run
 * under their CSP without a violation. A screenshot of each state is saved
 * under test-artifacts/account-pages/.
 */

const ARTIFACTS = join(projectRoot, 'test-artifacts', 'account-pages')
const PHONE = { width: 390, height: 844 }

/** PostgreSQL when CI provides it (quicker to start than PGlite); the storage is not what this suite tests. */
const realDatabase = TEST_DATABASE_URL !== undefined

interface Opened {
  page: Page
  watched: Awaited<ReturnType<typeof watchPage>>
}

/** A page of its own (phone-sized), watched for errors and CSP violations, checked for both when the test ends. */
async function openPage (t: Test, browser: Browser, url: string): Promise<Opened> {
  const context = await browser.newContext({ viewport: PHONE, deviceScaleFactor: 2 })
  t.teardown(() => context.close())
  const page = await context.newPage()
  page.setDefaultTimeout(10_000)
  const watched = await watchPage(page)
  const response = await page.goto(url)
  t.equal(response?.status(), 200, `${new URL(url).pathname}: 200`)
  t.notMatch(page.url(), /#/, 'the fragment left the address bar at once')
  return { page, watched }
}

/** The message the page shows, once it says `kind` (success or error). */
async function messageOf (page: Page, kind: 'success' | 'error'): Promise<string> {
  const message = page.getByRole('status')
  await page.locator(`#message.${kind}`).waitFor()
  return message.innerText()
}

async function screenshot (t: Test, page: Page, name: string): Promise<void> {
  const path = join(ARTIFACTS, `${name}.png`)
  await page.screenshot({ path, fullPage: true })
  t.comment(`screenshot: ${path}`)
}

function noComplaints (t: Test, { watched }: Opened): void {
  t.strictSame(watched.cspViolations, [], 'nothing blocked by the Content-Security-Policy')
  t.strictSame(watched.errors, [], 'no page or console errors')
}

t.test('the account pages in Chromium, from the links of real mail', { skip: browserSkip }, async (t) => {
  await mkdir(ARTIFACTS, { recursive: true })
  const mail = await startMailServer(t)
  // The links are built on PUBLIC_URL: the port is chosen before the app starts, and the app listens on it.
  const port = await freePort()
  const publicUrl = `http://127.0.0.1:${port}`
  const app = await buildTestApp(t, { env: { PORT: String(port), PUBLIC_URL: publicUrl, SMTP_URL: mail.url }, realDatabase })
  // Every request line and Referer the server receives: no token may ever be among them.
  const seen: string[] = []
  app.server.on('request', (request) => { seen.push(`${request.method} ${request.url} ${request.headers.referer ?? ''}`) })
  await app.listen({ host: '127.0.0.1', port })
  const browser = await launchBrowser(t)
  const tokens: string[] = []
  /** The link of the newest mail to `to` with `subject`: a link to the built-in page, its token in the fragment. */
  async function linkTo (t: Test, to: string, subject: RegExp, path: string): Promise<string> {
    const link = linkOf(await mail.waitFor(to, { subject }))
    t.match(link, new RegExp(`^${publicUrl}${path}#token=[^&#]+$`), `the mail links to ${path}, the token in the fragment`)
    tokens.push(new URLSearchParams(new URL(link).hash.slice(1)).get('token')!)
    return link
  }

  t.test('verify an address: press the button, then the used link is refused', async (t) => {
    const email = await signUp(app, 'verify-page')
    const link = await linkTo(t, email, /verify your email/i, '/account/verify-email')

    const first = await openPage(t, browser, link)
    const confirm = first.page.getByRole('button', { name: 'Confirm my email address' })
    await confirm.waitFor()
    await screenshot(t, first.page, 'verify-form')
    const { accessToken: before } = await logIn(app, email)
    const unverified = await app.inject({ method: 'GET', url: '/users/me', headers: { authorization: `Bearer ${before}` } })
    t.equal(unverified.json().emailVerified, false, 'opening the page alone verifies nothing (mail scanners open links)')

    await confirm.click()
    t.match(await messageOf(first.page, 'success'), /email address is confirmed/)
    t.ok(await confirm.isHidden(), 'the button is gone')
    await screenshot(t, first.page, 'verify-success')
    const { accessToken } = await logIn(app, email)
    const me = await app.inject({ method: 'GET', url: '/users/me', headers: { authorization: `Bearer ${accessToken}` } })
    t.equal(me.json().emailVerified, true, 'GET /users/me: emailVerified')
    noComplaints(t, first)

    const again = await openPage(t, browser, link)
    await again.page.getByRole('button', { name: 'Confirm my email address' }).click()
    t.match(await messageOf(again.page, 'error'), /link no longer works[\s\S]*already used[\s\S]*newer link[\s\S]*expired/)
    await screenshot(t, again.page, 'verify-used-link')
    noComplaints(t, again)
  })

  t.test('reset a password: the new one logs in, the old one not, the used link is refused', async (t) => {
    const email = await signUp(app, 'reset-page')
    const request = await app.inject({ method: 'POST', url: '/auth/password-reset/request', payload: { email } })
    t.equal(request.statusCode, 202, 'POST /auth/password-reset/request: 202')
    const link = await linkTo(t, email, /reset your password/i, '/account/reset-password')

    const opened = await openPage(t, browser, link)
    const { page } = opened
    const password = page.getByLabel('New password', { exact: true })
    const confirmation = page.getByLabel('New password again')
    const submit = page.getByRole('button', { name: 'Set the new password' })
    t.equal(await password.getAttribute('autocomplete'), 'new-password')
    await screenshot(t, page, 'reset-form')

    const posted = (): number => seen.filter((line) => line.startsWith('POST /auth/password-reset ')).length
    await password.fill(NEW_PASSWORD)
    await confirmation.fill(`${NEW_PASSWORD}!`)
    await submit.click()
    t.match(await messageOf(page, 'error'), /not the same/, 'two different passwords: said on the page')
    t.equal(posted(), 0, 'and nothing sent')
    t.equal(await confirmation.getAttribute('aria-invalid'), 'true')
    await screenshot(t, page, 'reset-mismatch')

    // The service out of reach: the page says so and the link stays usable.
    await page.route('**/auth/password-reset', (route) => route.abort('connectionrefused'))
    await confirmation.fill(NEW_PASSWORD)
    await submit.click()
    t.match(await messageOf(page, 'error'), /cannot be reached/)
    t.ok(await submit.isEnabled(), 'the form can be sent again')
    await screenshot(t, page, 'reset-unreachable')
    await page.unroute('**/auth/password-reset')
    // The browser logs the refused connection the test caused: that one, and nothing else, is expected.
    t.strictSame(opened.watched.errors.splice(0), ['console: Failed to load resource: net::ERR_CONNECTION_REFUSED'])

    await submit.click()
    t.match(await messageOf(page, 'success'), /new password is set[\s\S]*every session[\s\S]*signed out[\s\S]*log in now/)
    t.ok(await password.isHidden(), 'the form is gone')
    t.equal(posted(), 1, 'one POST reached the server (the refused one never left the browser)')
    await screenshot(t, page, 'reset-success')
    t.equal((await app.inject({ method: 'POST', url: '/auth/login', payload: { email, password: NEW_PASSWORD } })).statusCode, 200,
      'the new password logs in')
    t.equal((await app.inject({ method: 'POST', url: '/auth/login', payload: { email, password: PASSWORD } })).statusCode, 401,
      'the old one does not')
    noComplaints(t, opened)

    const again = await openPage(t, browser, link)
    await again.page.getByLabel('New password', { exact: true }).fill('yet another passphrase')
    await again.page.getByLabel('New password again').fill('yet another passphrase')
    await again.page.getByRole('button', { name: 'Set the new password' }).click()
    t.match(await messageOf(again.page, 'error'), /link no longer works[\s\S]*already used[\s\S]*newer link[\s\S]*expired[\s\S]*request a new/i)
    await screenshot(t, again.page, 'reset-used-link')
    t.equal((await app.inject({ method: 'POST', url: '/auth/login', payload: { email, password: NEW_PASSWORD } })).statusCode, 200,
      'the password is still the one the link set')
    noComplaints(t, again)
  })

  t.test('an email change whose address was taken meanwhile: EMAIL_TAKEN on the page', async (t) => {
    const email = await signUp(app, 'change-page')
    const { accessToken } = await logIn(app, email)
    const newEmail = freshEmail('taken-meanwhile')
    const change = await app.inject({
      method: 'POST', url: '/users/me/email', headers: { authorization: `Bearer ${accessToken}` }, payload: { newEmail, password: PASSWORD }
    })
    t.equal(change.statusCode, 202, 'POST /users/me/email: 202')
    const link = await linkTo(t, newEmail, /confirm your new email/i, '/account/verify-email')
    const signup = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: newEmail, password: PASSWORD } })
    t.equal(signup.statusCode, 201, 'someone else signs up with the new address first')

    const opened = await openPage(t, browser, link)
    await opened.page.getByRole('button', { name: 'Confirm my email address' }).click()
    t.match(await messageOf(opened.page, 'error'), /already taken[\s\S]*keeps its current address/)
    await screenshot(t, opened.page, 'verify-email-taken')
    const me = await app.inject({ method: 'GET', url: '/users/me', headers: { authorization: `Bearer ${accessToken}` } })
    t.equal(me.json().email, email, 'the account kept its address')
    noComplaints(t, opened)
  })

  t.test('a page opened without the link\'s fragment says to open the link from the mail', async (t) => {
    for (const [path, name] of [['/account/reset-password', 'reset-no-token'], ['/account/verify-email', 'verify-no-token']] as const) {
      const opened = await openPage(t, browser, `${publicUrl}${path}`)
      t.match(await messageOf(opened.page, 'error'), /needs the link from your email[\s\S]*Open the [a-z-]+ link from the mail/)
      t.equal(await opened.page.locator('form, button').filter({ visible: true }).count(), 0, 'nothing to submit')
      await screenshot(t, opened.page, name)
      noComplaints(t, opened)
    }
  })

  t.test('no token ever reached the server in a URL or a Referer', async (t) => {
    t.ok(tokens.length >= 3, `${tokens.length} tokens followed`)
    t.ok(seen.some((line) => line.startsWith('GET /account/')), 'the pages were requested from the server')
    for (const token of tokens) t.notOk(seen.some((line) => line.includes(token)), `token …${token.slice(-6)} never in a request line or a Referer`)
  })
})
