import fc from 'fast-check'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import t from 'tap'
import { linkOf, tokenOf } from '../fixtures/mail-server.js'
import {
  BACKENDS, FakeClock, NEW_PASSWORD, NO_RATE_LIMITS, PASSWORD, assertAnyTokenRefused, assertErrorShape, assertNoWorkingSession, claimsOf, codeOf,
  escapeRegExp, eventually, freshEmail, instrumentedHasher, logIn, loginAttempt, mailingBackend, me, pauseNextSessionCreate, refresh, signUp,
  testDatabase, verifyEmail
} from '../helpers.js'

/*
 * Password reset over HTTP (routes/account-links.ts, src/accounts.ts; API.md,
 * "Accounts, mail and links" and "Sessions and revocation"), on every
 * backend, with a real SMTP server: every link is read from a mail that
 * arrived and followed as a client would. A reset ends every session (a
 * login in flight too, and on another instance within a second), verifies
 * the address and mails a notice; a link works once, expires, is replaced by
 * a newer one, is bound to its kind and to the address it was mailed to; an
 * unknown email gets the same answer after the same work and no mail; mail
 * to one recipient is throttled. The clock is a FakeClock where time matters.
 */

const SECOND = 1000
const MINUTE = 60 * SECOND
const SEED = 14
const PUBLIC_URL = 'https://auth.example.test'
const MAIL_FROM = 'Accounts <accounts@example.test>'

const RESET = /^Reset your password$/
const RESET_NOTICE = /^Your password was reset$/
const VERIFY = /^Verify your email address$/
const CHANGE = /^Confirm your new email address$/

function requestReset (app: FastifyInstance, email: string, remoteAddress?: string) {
  return app.inject({ method: 'POST', url: '/auth/password-reset/request', payload: { email }, ...(remoteAddress === undefined ? {} : { remoteAddress }) })
}

function resetPassword (app: FastifyInstance, token: unknown, newPassword: unknown = NEW_PASSWORD) {
  return app.inject({ method: 'POST', url: '/auth/password-reset', payload: { token, newPassword } })
}

/** The user's security event types, newest first, once the ones waiting are written. */
async function eventTypes (app: FastifyInstance, userId: string): Promise<string[]> {
  await app.securityEvents.flush()
  return (await app.securityEventStore.list({ userId, limit: 100 })).events.map(({ type }) => type)
}

for (const backend of BACKENDS) {
  t.test(backend.name, { skip: backend.skip }, async (t) => {
    const { server, build, shared, mailsTo, latestToken, twoInstances } = await mailingBackend(t, backend, { PUBLIC_URL, MAIL_FROM })

    /** Signs up and asks for a reset: the email, the user's id, and the mailed token. */
    async function withResetLink (app: FastifyInstance, label: string): Promise<{ email: string, userId: string, token: string }> {
      const email = await signUp(app, label)
      const { accessToken } = await logIn(app, email)
      const requested = await requestReset(app, email)
      if (requested.statusCode !== 202) throw new Error(`reset request: ${requested.body}`)
      return { email, userId: claimsOf(accessToken).sub as string, token: await latestToken(app, email, RESET) }
    }

    t.test('a reset from the mailed link: new password, every session ended, address verified, events and a notice', async (t) => {
      const app = await shared()
      const email = await signUp(app, 'reset')
      const first = await logIn(app, email)
      const second = await logIn(app, email)
      const userId = claimsOf(first.accessToken).sub as string
      t.equal((await me(app, first.accessToken)).json().emailVerified, false, 'unverified before')

      const requested = await requestReset(app, email)
      t.equal(requested.statusCode, 202, 'POST /auth/password-reset/request: 202')
      t.strictSame(Object.keys(requested.json()), ['message'], 'a message and nothing else')

      const mail = await server.waitFor(email, { subject: RESET })
      t.strictSame(mail.to, [email], 'mailed to the account\'s address')
      t.match(mail.from, /accounts@example\.test/, 'from MAIL_FROM')
      const link = linkOf(mail)
      t.match(link, new RegExp(`^${escapeRegExp(PUBLIC_URL)}/account/reset-password#token=[A-Za-z0-9_-]{43}$`),
        'the link opens the built-in page under PUBLIC_URL, a 256-bit token in the fragment')
      t.ok(mail.text.includes(link), 'the plain-text part carries the link')
      t.ok(mail.html.includes(`href="${link}"`), 'the HTML part links to it')
      t.match(mail.text, /expires on/, 'and says when it expires')

      const reset = await resetPassword(app, tokenOf(mail))
      t.equal(reset.statusCode, 204, 'POST /auth/password-reset: 204')
      t.equal(reset.body, '', 'no body')

      assertErrorShape(t, await loginAttempt(app, email), 401, 'INVALID_CREDENTIALS', 'the old password')
      const after = await loginAttempt(app, email, NEW_PASSWORD)
      t.equal(after.statusCode, 200, 'the new password logs in')
      for (const [name, pair] of [['the first session', first], ['the second session', second]] as const) {
        assertErrorShape(t, await refresh(app, pair.refreshToken), 401, 'REFRESH_TOKEN_REVOKED', `${name}: its refresh token`)
        assertErrorShape(t, await me(app, pair.accessToken), 401, 'ACCESS_TOKEN_REVOKED', `${name}: its access token`)
      }
      t.equal((await me(app, after.json().accessToken)).json().emailVerified, true, 'the address counts as verified: /users/me')
      t.equal(claimsOf(after.json().accessToken).email_verified, true, 'and so does the next access token')

      const notice = await server.waitFor(email, { subject: RESET_NOTICE })
      t.match(notice.text, /reset/, 'a "password reset" notice arrives')
      t.ok(notice.html.length > 0, 'with an HTML part')
      t.notMatch(notice.raw, /#token=/, 'carrying no link token')

      const types = await eventTypes(app, userId)
      t.ok(types.includes('password_reset_requested'), 'a password_reset_requested event')
      t.ok(types.includes('password_reset'), 'a password_reset event')
    })

    t.test('with APP_URL, the link opens the application\'s page', async (t) => {
      const app = await build(t, { env: { APP_URL: 'https://app.example.test/accounts/' } })
      const email = await signUp(app, 'app-url')
      t.equal((await requestReset(app, email)).statusCode, 202)
      const link = linkOf((await mailsTo(app, email, RESET))[0]!)
      t.match(link, /^https:\/\/app\.example\.test\/accounts\/reset-password#token=[A-Za-z0-9_-]{43}$/, 'APP_URL/reset-password#token=…')
      t.equal((await resetPassword(app, await latestToken(app, email, RESET))).statusCode, 204, 'and its token resets')
    })

    t.test('on two instances sharing Redis and PostgreSQL, a reset on one ends the sessions held on the other', {
      skip: !backend.realRedis && 'the in-process session store belongs to one instance: two instances share Redis'
    }, async (t) => {
      const [a, b] = await twoInstances(t)
      const email = await signUp(a, 'two-instances')
      const onA = await logIn(a, email)
      const onB = await logIn(b, email)
      t.equal((await me(b, onA.accessToken)).statusCode, 200, 'B accepts the token A issued')
      t.equal((await me(b, onB.accessToken)).statusCode, 200, 'and its own')

      t.equal((await requestReset(b, email)).statusCode, 202, 'the reset asked on B')
      const token = tokenOf(await server.waitFor(email, { subject: RESET }))
      t.equal((await resetPassword(a, token)).statusCode, 204, 'and done on A')

      assertErrorShape(t, await refresh(b, onB.refreshToken), 401, 'REFRESH_TOKEN_REVOKED', 'B\'s session: refresh refused at once')
      assertErrorShape(t, await refresh(b, onA.refreshToken), 401, 'REFRESH_TOKEN_REVOKED', 'A\'s session, refreshed on B')
      // Pushed through Redis: the outcome is asserted, not how fast this machine delivers it.
      t.ok(await eventually(async () => codeOf(await me(b, onA.accessToken)) === 'ACCESS_TOKEN_REVOKED'), 'B refuses A\'s access token')
      t.ok(await eventually(async () => codeOf(await me(b, onB.accessToken)) === 'ACCESS_TOKEN_REVOKED'), 'and its own')
      assertErrorShape(t, await loginAttempt(b, email), 401, 'INVALID_CREDENTIALS', 'B: the old password')
      const again = await loginAttempt(b, email, NEW_PASSWORD)
      t.equal(again.statusCode, 200, 'B: the new password')
      t.equal((await me(b, again.json().accessToken)).json().emailVerified, true, 'B\'s profile, cached before, shows the address verified')
    })

    t.test('a login in flight during the reset ends up with no working session', async (t) => {
      t.test('its password checked before the reset, its session opened after', async (t) => {
        const { hasher, pauseNextVerify } = instrumentedHasher()
        const app = await build(t, { passwordHasher: hasher })
        const { email, token } = await withResetLink(app, 'inflight')
        const paused = pauseNextVerify()
        const inFlight = loginAttempt(app, email)
        await paused.reached
        t.equal((await resetPassword(app, token)).statusCode, 204, 'the reset completes while the login waits')
        paused.release()
        await assertNoWorkingSession(t, app, await inFlight)
        t.equal((await loginAttempt(app, email, NEW_PASSWORD)).statusCode, 200, 'the new password logs in')
      })

      t.test('its session created before the reset ends the sessions, its answer after', async (t) => {
        const app = await build(t)
        const { email, token } = await withResetLink(app, 'inflight')
        const paused = pauseNextSessionCreate(app)
        const inFlight = loginAttempt(app, email)
        await paused.reached
        t.equal((await resetPassword(app, token)).statusCode, 204, 'the reset completes while the login waits')
        paused.release()
        await assertNoWorkingSession(t, app, await inFlight)
      })
    })

    t.test('a link works once, even when redeemed five times at once', async (t) => {
      const app = await shared()
      const { email, token } = await withResetLink(app, 'once')
      const passwords = Array.from({ length: 5 }, (_, i) => `${NEW_PASSWORD} ${i}`)
      const answers = await Promise.all(passwords.map((password) => resetPassword(app, token, password)))
      const winners = answers.flatMap((answer, i) => answer.statusCode === 204 ? [i] : [])
      t.equal(winners.length, 1, 'exactly one redemption succeeds')
      for (const [i, answer] of answers.entries()) {
        if (i !== winners[0]) assertErrorShape(t, answer, 400, 'LINK_TOKEN_INVALID', `redemption ${i}`)
      }
      for (const [i, password] of passwords.entries()) {
        t.equal((await loginAttempt(app, email, password)).statusCode, i === winners[0] ? 200 : 401, `password ${i} ${i === winners[0] ? 'is' : 'is not'} the one set`)
      }
      assertErrorShape(t, await resetPassword(app, token, 'yet another passphrase'), 400, 'LINK_TOKEN_INVALID', 'used again later')
    })

    t.test('a link expires after PASSWORD_RESET_TTL', async (t) => {
      const clock = new FakeClock()
      const app = await build(t, { clock, env: { PASSWORD_RESET_TTL: '10m' } })
      const early = await withResetLink(app, 'expiry')
      const late = await withResetLink(app, 'expiry')
      const [mail] = await mailsTo(app, early.email, RESET)
      t.match(mail!.text, /expires on 1 January 2030, 00:10 UTC/, 'the mail says when: PASSWORD_RESET_TTL after the request')

      clock.advance(10 * MINUTE - SECOND)
      t.equal((await resetPassword(app, early.token)).statusCode, 204, 'a second before the end: 204')
      clock.advance(SECOND)
      assertErrorShape(t, await resetPassword(app, late.token), 400, 'LINK_TOKEN_INVALID', 'at the end')
      t.equal((await loginAttempt(app, late.email)).statusCode, 200, 'the password is unchanged')
      t.equal((await requestReset(app, late.email)).statusCode, 202, 'a new link can be asked for')
      t.equal((await resetPassword(app, await latestToken(app, late.email, RESET))).statusCode, 204, 'and works')
    })

    t.test('a newer link supersedes the older one', async (t) => {
      const app = await shared()
      const email = await signUp(app, 'supersede')
      t.equal((await requestReset(app, email)).statusCode, 202)
      t.equal((await requestReset(app, ` ${email.toUpperCase()}  `)).statusCode, 202, 'the email as typed (spaces, capitals)')
      const mails = await mailsTo(app, email, RESET)
      t.equal(mails.length, 2, 'two mails to the account\'s address')
      const [older, newer] = mails.map(tokenOf)
      t.not(older, newer, 'with different tokens')
      assertErrorShape(t, await resetPassword(app, older), 400, 'LINK_TOKEN_INVALID', 'the older link')
      t.equal((await resetPassword(app, newer)).statusCode, 204, 'the newer one resets')
    })

    t.test('a link of one kind is refused by the other route, and not spent by it', async (t) => {
      const app = await shared()
      const email = await signUp(app, 'kinds')
      const verification = await latestToken(app, email, VERIFY)
      t.equal((await requestReset(app, email)).statusCode, 202)
      const reset = await latestToken(app, email, RESET)

      assertErrorShape(t, await resetPassword(app, verification), 400, 'LINK_TOKEN_INVALID', 'a verification link at /auth/password-reset')
      assertErrorShape(t, await verifyEmail(app, reset), 400, 'LINK_TOKEN_INVALID', 'a reset link at /auth/verify-email')
      t.equal((await verifyEmail(app, verification)).statusCode, 204, 'the verification link still verifies')
      t.equal((await resetPassword(app, reset)).statusCode, 204, 'the reset link still resets')
    })

    t.test('a reset link mailed before an email change does not work after it', async (t) => {
      const app = await shared()
      const { email, token } = await withResetLink(app, 'moved')
      const { accessToken } = await logIn(app, email)
      const newEmail = freshEmail('moved-to')
      const change = await app.inject({
        method: 'POST', url: '/users/me/email', headers: { authorization: `Bearer ${accessToken}` }, payload: { newEmail, password: PASSWORD }
      })
      t.equal(change.statusCode, 202, 'the email change is asked for')
      t.equal((await verifyEmail(app, await latestToken(app, newEmail, CHANGE))).statusCode, 204, 'and confirmed')

      assertErrorShape(t, await resetPassword(app, token), 400, 'LINK_TOKEN_INVALID', 'the link mailed to the old address')
      t.equal((await loginAttempt(app, newEmail)).statusCode, 200, 'the password is unchanged')
      t.equal((await requestReset(app, newEmail)).statusCode, 202)
      t.equal((await resetPassword(app, await latestToken(app, newEmail, RESET))).statusCode, 204, 'a link to the new address works')
    })

    t.test('malformed tokens and passwords: 400 LINK_TOKEN_INVALID or VALIDATION_ERROR, never 5xx, nothing spent', async (t) => {
      const app = await shared()
      const { email, token } = await withResetLink(app, 'malformed')

      const validation: Array<[string, unknown]> = [
        ['an empty token', { token: '', newPassword: NEW_PASSWORD }],
        ['a token over 512 characters', { token: 'A'.repeat(513), newPassword: NEW_PASSWORD }],
        ['a number', { token: 12345, newPassword: NEW_PASSWORD }],
        ['null', { token: null, newPassword: NEW_PASSWORD }],
        ['an array', { token: [token], newPassword: NEW_PASSWORD }],
        ['no token', { newPassword: NEW_PASSWORD }],
        ['no password', { token }],
        ['an unknown field', { token, newPassword: NEW_PASSWORD, email }],
        ['a 7-character password', { token, newPassword: 'short12' }],
        ['a 257-character password', { token, newPassword: 'p'.repeat(257) }],
        ['a password that is not a string', { token, newPassword: 12345678 }],
        ['a JSON array', [token, NEW_PASSWORD]],
        ['a JSON string', token]
      ]
      for (const [name, payload] of validation) {
        // Sent as JSON whatever it is (a bare string would otherwise go as text/plain).
        const response = await app.inject({
          method: 'POST', url: '/auth/password-reset', headers: { 'content-type': 'application/json' }, payload: JSON.stringify(payload)
        })
        assertErrorShape(t, response, 400, 'VALIDATION_ERROR', name)
      }
      const broken = await app.inject({ method: 'POST', url: '/auth/password-reset', headers: { 'content-type': 'application/json' }, payload: '{"token":' })
      assertErrorShape(t, broken, 400, 'VALIDATION_ERROR', 'malformed JSON')

      const invalid = [
        'not-a-token',
        'A'.repeat(43),
        `${token}=`,
        token.slice(0, -1),
        token.toUpperCase() === token ? token.toLowerCase() : token.toUpperCase(),
        `${token} `,
        "'; delete from link_tokens; --",
        '\u0000',
        '😀'.repeat(100),
        'A'.repeat(512)
      ]
      for (const candidate of invalid) {
        assertErrorShape(t, await resetPassword(app, candidate), 400, 'LINK_TOKEN_INVALID', `token ${JSON.stringify(candidate.slice(0, 24))}`)
      }

      // Any token at all: a refusal, one of the two, in the one shape.
      await assertAnyTokenRefused(t, (candidate) => resetPassword(app, candidate), SEED)

      t.equal((await loginAttempt(app, email)).statusCode, 200, 'the password is unchanged')
      t.equal((await resetPassword(app, token)).statusCode, 204, 'and the link, refused with a short password, still works')
    })

    t.test('an unknown email is answered as a known one: status, body, headers, statements and hashing; and no mail', async (t) => {
      let statements: string[] = []
      const database = await testDatabase(t, { real: backend.realDatabase, onQuery: (query) => { statements.push(query) } })
      const { hasher, counts } = instrumentedHasher()
      // Events are written in batches off the request path: none is written while a request is measured.
      const app = await build(t, { database, passwordHasher: hasher, securityEvents: { flushIntervalMs: 10 * MINUTE } })
      const known = await signUp(app, 'known')
      const unknown = freshEmail('unknown')
      // The first request of each kind prepares what later ones reuse.
      await signUp(app, 'warm-up').then((email) => requestReset(app, email, '192.0.2.1'))
      await requestReset(app, freshEmail('warm-up-unknown'), '192.0.2.2')

      /** One request, from an address of its own (the limits' counters start alike), and the work it did. */
      async function measured (email: string, remoteAddress: string) {
        await app.mail.flush()
        await app.securityEvents.flush()
        statements = []
        const before = { ...counts }
        const response = await requestReset(app, email, remoteAddress)
        // Event writes and pruning run on their own timers, not the request's: left out.
        const sql = statements.filter((query) => !/security_events/.test(query))
        return { response, sql, hashing: { hash: counts.hash - before.hash, verify: counts.verify - before.verify, decoy: counts.decoy - before.decoy } }
      }
      const forKnown = await measured(known, '192.0.2.10')
      const forUnknown = await measured(unknown, '192.0.2.11')

      t.equal(forKnown.response.statusCode, 202)
      t.equal(forUnknown.response.statusCode, 202, 'the same status')
      t.equal(forUnknown.response.body, forKnown.response.body, 'the same body')
      const headers = (response: LightMyRequestResponse) =>
        Object.fromEntries(Object.entries(response.headers).filter(([name]) => name !== 'date' && name !== 'x-request-id'))
      t.strictSame(headers(forUnknown.response), headers(forKnown.response), 'the same headers, but for date and x-request-id')
      t.ok(forKnown.sql.length > 0, `the known email: ${forKnown.sql.length} statement(s)`)
      t.strictSame(forUnknown.sql, forKnown.sql, 'the unknown email: the same statements')
      t.strictSame(forUnknown.hashing, forKnown.hashing, `the same password hashing (${JSON.stringify(forKnown.hashing)})`)

      t.equal((await mailsTo(app, known, RESET)).length, 1, 'the known email gets its link')
      t.equal(server.received.filter((mail) => mail.to.includes(unknown)).length, 0, 'the unknown one gets no mail at all')
    })

    t.test('link mails to one recipient are throttled: five an hour, then 202 and no mail', async (t) => {
      const app = await shared()
      const email = await signUp(app, 'flood')
      t.equal((await mailsTo(app, email, VERIFY)).length, 1, 'the signup mailed a verification link: one of the five')
      const answers = []
      for (let i = 0; i < 7; i++) answers.push(await requestReset(app, email))
      t.strictSame(answers.map(({ statusCode }) => statusCode), Array(7).fill(202), 'every request: 202')
      t.equal(new Set(answers.map(({ body }) => body)).size, 1, 'with the same body')
      t.equal((await mailsTo(app, email, RESET)).length, 4, 'four reset links arrived: five link mails, then none')
      t.equal((await mailsTo(app, email, /./)).length, 5, 'and nothing else')

      const other = await signUp(app, 'flood-other')
      t.equal((await requestReset(app, other)).statusCode, 202)
      t.equal((await mailsTo(app, other, RESET)).length, 1, 'another address is not affected')
    })

    t.test('the route limits: per email (from any address) and per client address, 429 RATE_LIMITED with Retry-After', async (t) => {
      const app = await build(t, {
        rateLimits: { ...NO_RATE_LIMITS, linkRequestPerAccount: { max: 2, windowSeconds: 60 }, linkPerAddress: { max: 4, windowSeconds: 60 } }
      })
      const known = await signUp(app, 'limited')
      for (const [name, email] of [['a known email', known], ['an unknown email', freshEmail('limited-unknown')]] as const) {
        t.equal((await requestReset(app, email, '203.0.113.1')).statusCode, 202, `${name}: the first request`)
        t.equal((await requestReset(app, email, '203.0.113.2')).statusCode, 202, `${name}: the second, from another address`)
        const limited = await requestReset(app, email, '203.0.113.3')
        assertErrorShape(t, limited, 429, 'RATE_LIMITED', `${name}: the third, from a third address`)
        const retryAfter = Number(limited.headers['retry-after'])
        t.ok(retryAfter >= 1 && retryAfter <= 60, `${name}: Retry-After ${limited.headers['retry-after']}`)
      }
      t.equal((await requestReset(app, freshEmail('limited-other'), '203.0.113.4')).statusCode, 202, 'another email is not held back')

      const address = '198.51.100.7'
      for (let i = 1; i <= 4; i++) t.equal((await requestReset(app, freshEmail('limited-address'), address)).statusCode, 202, `request ${i} from one address`)
      const limited = await requestReset(app, freshEmail('limited-address'), address)
      assertErrorShape(t, limited, 429, 'RATE_LIMITED', 'the fifth from that address, for yet another email')
      t.ok(limited.headers['retry-after'], 'with Retry-After')
    })

    t.test('any interleaving of requests and redemptions: only the newest link redeems, and once', async (t) => {
      // Many links to one address: the throttle of link mails is out of the way here.
      const app = await build(t, { mail: { linkMailsPerRecipientPerHour: 1000 } })
      const step = fc.oneof(
        fc.constant({ kind: 'request' as const }),
        // Which link to try: the newest, or one `back` links older.
        fc.nat({ max: 3 }).map((back) => ({ kind: 'redeem' as const, back }))
      )
      let redemptions = 0
      await fc.assert(fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 8 }), async (steps) => {
        const email = await signUp(app, 'interleave')
        const tokens: string[] = []
        /** The index of the one link that should work, if any. */
        let live: number | undefined
        let password = PASSWORD
        for (const [i, step] of steps.entries()) {
          if (step.kind === 'request') {
            const answer = await requestReset(app, email)
            if (answer.statusCode !== 202) throw new Error(`request ${i}: ${answer.statusCode}`)
            const token = await latestToken(app, email, RESET)
            if (tokens.includes(token)) throw new Error(`request ${i}: no new mail`)
            tokens.push(token)
            live = tokens.length - 1
            continue
          }
          if (tokens.length === 0) continue
          const index = Math.max(0, tokens.length - 1 - step.back)
          const newPassword = `${NEW_PASSWORD} ${i}`
          const answer = await resetPassword(app, tokens[index], newPassword)
          redemptions++
          if (index === live) {
            if (answer.statusCode !== 204) throw new Error(`step ${i}: link ${index}, the live one, answered ${answer.body}`)
            live = undefined
            password = newPassword
          } else if (answer.statusCode !== 400 || codeOf(answer) !== 'LINK_TOKEN_INVALID') {
            throw new Error(`step ${i}: link ${index} of ${tokens.length} (live: ${live}) answered ${answer.statusCode} ${answer.body}`)
          }
        }
        const last = await loginAttempt(app, email, password)
        if (last.statusCode !== 200) throw new Error(`the last password set does not log in: ${last.body}`)
      }), { seed: SEED, numRuns: 15 })
      t.pass(`15 interleavings held (${redemptions} redemptions)`)
    })
  })
}
