import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
import t from 'tap'
import { linkOf, tokenOf } from '../fixtures/mail-server.js'
import {
  BACKENDS, FakeClock, NEW_PASSWORD, NO_RATE_LIMITS, PASSWORD, assertAnyTokenRefused, assertErrorShape, bearer, claimsOf, escapeRegExp, freshEmail,
  logIn, loginAttempt, mailingBackend, me, refresh, signUp, verifyEmail
} from '../helpers.js'

/*
 * Email verification over HTTP (routes/account-links.ts, src/accounts.ts;
 * API.md, "Accounts, mail and links" and the `email_verified` claim), on
 * every backend, with a real SMTP server whose mail is read and whose links
 * are followed. A link is mailed at signup and on request (with an access
 * token, or with the email and no token: 202 whatever the account, mail only
 * for an unverified one); following it verifies the address, in /users/me
 * at once and in access tokens from the next refresh; it works once, expires,
 * is replaced by a newer one and is bound to the address. With
 * REQUIRE_VERIFIED_EMAIL=true, login waits for it, and says so only after a
 * correct password.
 */

const SECOND = 1000
const HOUR = 3600 * SECOND
const SEED = 14
const PUBLIC_URL = 'https://auth.example.test'

const VERIFY = /^Verify your email address$/
const RESET = /^Reset your password$/
const CHANGE = /^Confirm your new email address$/

/** POST /auth/verify-email/request: with `accessToken` and/or a body, or neither. */
function requestVerification (app: FastifyInstance, { accessToken, payload, remoteAddress }: { accessToken?: string, payload?: object, remoteAddress?: string } = {}) {
  const options: InjectOptions = { method: 'POST', url: '/auth/verify-email/request' }
  if (accessToken !== undefined) options.headers = bearer(accessToken)
  if (payload !== undefined) options.payload = payload
  if (remoteAddress !== undefined) options.remoteAddress = remoteAddress
  return app.inject(options)
}

for (const backend of BACKENDS) {
  t.test(backend.name, { skip: backend.skip }, async (t) => {
    const { server, build, shared, mailsTo, latestToken } = await mailingBackend(t, backend, { PUBLIC_URL })

    t.test('signup mails a link; following it verifies the address, in /users/me at once and in tokens from the next refresh', async (t) => {
      const app = await shared()
      const signup = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: freshEmail('verify'), password: PASSWORD } })
      t.equal(signup.statusCode, 201)
      const { email, id: userId } = signup.json()

      const mail = await server.waitFor(email, { subject: VERIFY })
      t.strictSame(mail.to, [email], 'mailed to the new address')
      const link = linkOf(mail)
      t.match(link, new RegExp(`^${escapeRegExp(PUBLIC_URL)}/account/verify-email#token=[A-Za-z0-9_-]{43}$`),
        'the link opens the built-in page under PUBLIC_URL, a 256-bit token in the fragment')
      t.ok(mail.html.includes(`href="${link}"`), 'the HTML part links to it')

      const before = await logIn(app, email)
      t.equal(claimsOf(before.accessToken).email_verified, false, 'before: the access token says email_verified: false')
      t.equal((await me(app, before.accessToken)).json().emailVerified, false, 'and /users/me emailVerified: false')

      const verified = await verifyEmail(app, tokenOf(mail))
      t.equal(verified.statusCode, 204, 'POST /auth/verify-email: 204')
      t.equal(verified.body, '', 'no body')

      t.equal((await me(app, before.accessToken)).json().emailVerified, true, '/users/me says so at once (its cached profile is dropped)')
      t.equal(claimsOf(before.accessToken).email_verified, false, 'a token issued before still says what it said')
      const refreshed = await refresh(app, before.refreshToken)
      t.equal(refreshed.statusCode, 200, 'the session goes on')
      t.equal(claimsOf(refreshed.json().accessToken).email_verified, true, 'the next refresh\'s access token says email_verified: true')
      t.equal(claimsOf((await logIn(app, email)).accessToken).email_verified, true, 'and so does a new login\'s')

      assertErrorShape(t, await verifyEmail(app, tokenOf(mail)), 400, 'LINK_TOKEN_INVALID', 'the link used again')

      await app.securityEvents.flush()
      const { events } = await app.securityEventStore.list({ userId, limit: 100 })
      t.equal(events.filter(({ type }) => type === 'email_verified').length, 1, 'one email_verified event')
    })

    t.test('with APP_URL, the link opens the application\'s page', async (t) => {
      const app = await build(t, { env: { APP_URL: 'https://app.example.test' } })
      const email = await signUp(app, 'verify-app-url')
      const link = linkOf((await mailsTo(app, email, VERIFY))[0]!)
      t.match(link, /^https:\/\/app\.example\.test\/verify-email#token=[A-Za-z0-9_-]{43}$/, 'APP_URL/verify-email#token=…')
      t.equal((await verifyEmail(app, await latestToken(app, email, VERIFY))).statusCode, 204, 'and its token verifies')
    })

    t.test('a new link on request, with an access token: 202 and a mail; the older link stops working', async (t) => {
      const app = await shared()
      const email = await signUp(app, 'verify-again')
      const first = await latestToken(app, email, VERIFY)
      const { accessToken } = await logIn(app, email)

      const noBody = await requestVerification(app, { accessToken })
      t.equal(noBody.statusCode, 202, 'with the access token and no body: 202')
      t.strictSame(Object.keys(noBody.json()), ['message'])
      t.equal((await mailsTo(app, email, VERIFY)).length, 2, 'a second link arrives')
      t.equal((await requestVerification(app, { accessToken, payload: {} })).statusCode, 202, 'with `{}`: 202')
      const mails = await mailsTo(app, email, VERIFY)
      t.equal(mails.length, 3, 'a third link arrives')
      const [, second, third] = mails.map(tokenOf)

      assertErrorShape(t, await verifyEmail(app, first), 400, 'LINK_TOKEN_INVALID', 'the signup\'s link, superseded')
      assertErrorShape(t, await verifyEmail(app, second), 400, 'LINK_TOKEN_INVALID', 'the second link, superseded')
      t.equal((await verifyEmail(app, third)).statusCode, 204, 'the newest verifies')
      t.equal((await me(app, accessToken)).json().emailVerified, true)
    })

    t.test('a new link on request, with the email and no token: 202 and a mail (a person who cannot log in yet)', async (t) => {
      const app = await shared()
      const email = await signUp(app, 'verify-by-email')
      const requested = await requestVerification(app, { payload: { email: `  ${email.toUpperCase()} ` } })
      t.equal(requested.statusCode, 202, 'the email as typed (spaces, capitals): 202')
      const mails = await mailsTo(app, email, VERIFY)
      t.equal(mails.length, 2, 'a new link arrives at the account\'s address')
      t.equal((await verifyEmail(app, tokenOf(mails[1]!))).statusCode, 204, 'and verifies')
    })

    t.test('a verified account and an unknown email: the same 202, and no mail', async (t) => {
      const app = await shared()
      const unverified = await signUp(app, 'verify-unverified')
      const verified = await signUp(app, 'verify-verified')
      t.equal((await verifyEmail(app, await latestToken(app, verified, VERIFY))).statusCode, 204)
      const unknown = freshEmail('verify-unknown')

      // Each from an address of its own, so that the limits' headers start alike.
      const answers = new Map<string, LightMyRequestResponse>()
      for (const [i, email] of [unverified, verified, unknown].entries()) {
        answers.set(email, await requestVerification(app, { payload: { email }, remoteAddress: `192.0.2.${20 + i}` }))
      }
      const headers = (response: LightMyRequestResponse) =>
        Object.fromEntries(Object.entries(response.headers).filter(([name]) => name !== 'date' && name !== 'x-request-id'))
      const reference = answers.get(unverified)!
      t.equal(reference.statusCode, 202)
      for (const [name, email] of [['a verified account', verified], ['an unknown email', unknown]] as const) {
        const answer = answers.get(email)!
        t.equal(answer.statusCode, 202, `${name}: 202`)
        t.equal(answer.body, reference.body, `${name}: the same body as for an unverified account`)
        t.strictSame(headers(answer), headers(reference), `${name}: the same headers, but for date and x-request-id`)
      }
      const { accessToken } = await logIn(app, verified)
      t.equal((await requestVerification(app, { accessToken })).statusCode, 202, 'a verified account, with its access token: 202')

      t.equal((await mailsTo(app, unverified, VERIFY)).length, 2, 'the unverified account gets a new link')
      t.equal((await mailsTo(app, verified, VERIFY)).length, 1, 'the verified one nothing more than its signup\'s')
      t.equal(server.received.filter((mail) => mail.to.includes(unknown)).length, 0, 'the unknown email no mail at all')
    })

    t.test('neither a token nor an email: 401 ACCESS_TOKEN_MISSING; a bad or revoked token: 401, whatever the body', async (t) => {
      const app = await shared()
      const email = await signUp(app, 'verify-who')
      assertErrorShape(t, await requestVerification(app), 401, 'ACCESS_TOKEN_MISSING', 'no token, no body')
      assertErrorShape(t, await requestVerification(app, { payload: {} }), 401, 'ACCESS_TOKEN_MISSING', 'no token, `{}`')
      assertErrorShape(t, await requestVerification(app, { accessToken: 'not-a-jwt' }), 401, 'ACCESS_TOKEN_INVALID', 'a bearer that is no token')
      const pair = await logIn(app, email)
      const forged = pair.accessToken.replace(/[^.]+$/, 'A'.repeat(86))
      assertErrorShape(t, await requestVerification(app, { accessToken: forged, payload: { email } }), 401, 'ACCESS_TOKEN_INVALID',
        'a token with a bad signature, even with an email in the body')
      t.equal((await app.inject({ method: 'POST', url: '/auth/logout', headers: bearer(pair.accessToken), payload: {} })).statusCode, 204)
      assertErrorShape(t, await requestVerification(app, { accessToken: pair.accessToken }), 401, 'ACCESS_TOKEN_REVOKED', 'a logged-out session\'s token')
      assertErrorShape(t, await requestVerification(app, { payload: { email: 'not an email' } }), 400, 'VALIDATION_ERROR', 'an email that is none')
      t.equal((await mailsTo(app, email, VERIFY)).length, 1, 'none of these mailed anything')
    })

    t.test('requests for links are limited per account: by email, or by the signed-in user whatever the body names', async (t) => {
      const app = await build(t, { rateLimits: { ...NO_RATE_LIMITS, linkRequestPerAccount: { max: 2, windowSeconds: 60 } } })
      const byEmail = await signUp(app, 'verify-limited')
      const statuses = async (requests: Array<() => Promise<LightMyRequestResponse>>) => {
        const answers: number[] = []
        for (const request of requests) answers.push((await request()).statusCode)
        return answers
      }
      t.strictSame(await statuses([0, 1, 2].map((i) => () => requestVerification(app, { payload: { email: byEmail }, remoteAddress: `192.0.2.${40 + i}` }))),
        [202, 202, 429], 'by email, from three addresses: the third is limited')

      const signedIn = await logIn(app, await signUp(app, 'verify-limited'))
      t.strictSame(await statuses([0, 1, 2].map(() => () => requestVerification(app, { accessToken: signedIn.accessToken }))),
        [202, 202, 429], 'with an access token: the third is limited')

      // The account is the token's (the body's email is not used): a body naming other emails must not reset its count.
      const decoys = await logIn(app, await signUp(app, 'verify-limited'))
      const answers = await statuses([0, 1, 2].map(() => () => requestVerification(app, { accessToken: decoys.accessToken, payload: { email: freshEmail('decoy') } })))
      t.strictSame(answers, [202, 202, 429], 'with an access token and a different email in each body: the third is limited too')
    })

    t.test('REQUIRE_VERIFIED_EMAIL=true: 403 EMAIL_NOT_VERIFIED after a correct password only, until the link is followed', async (t) => {
      const app = await build(t, { env: { REQUIRE_VERIFIED_EMAIL: 'true' } })
      const email = await signUp(app, 'required')
      assertErrorShape(t, await loginAttempt(app, email, 'not the password'), 401, 'INVALID_CREDENTIALS', 'a wrong password: 401, not 403')
      assertErrorShape(t, await loginAttempt(app, freshEmail('required-unknown')), 401, 'INVALID_CREDENTIALS', 'an unknown email: 401')
      assertErrorShape(t, await loginAttempt(app, email), 403, 'EMAIL_NOT_VERIFIED', 'the right password before verifying')

      // The first link lost: a new one asked for with the email, as the person cannot log in.
      t.equal((await requestVerification(app, { payload: { email } })).statusCode, 202)
      t.equal((await verifyEmail(app, await latestToken(app, email, VERIFY))).statusCode, 204, 'the new link verifies')
      const after = await loginAttempt(app, email)
      t.equal(after.statusCode, 200, 'after: 200')
      t.equal(claimsOf(after.json().accessToken).email_verified, true)
      assertErrorShape(t, await loginAttempt(app, email, 'not the password'), 401, 'INVALID_CREDENTIALS', 'a wrong password after: still 401')

      const other = await signUp(app, 'required-reset')
      assertErrorShape(t, await loginAttempt(app, other), 403, 'EMAIL_NOT_VERIFIED')
      t.equal((await app.inject({ method: 'POST', url: '/auth/password-reset/request', payload: { email: other } })).statusCode, 202)
      const reset = await app.inject({ method: 'POST', url: '/auth/password-reset', payload: { token: await latestToken(app, other, RESET), newPassword: NEW_PASSWORD } })
      t.equal(reset.statusCode, 204)
      t.equal((await loginAttempt(app, other, NEW_PASSWORD)).statusCode, 200, 'a completed password reset counts as verifying too')
    })

    t.test('a link expires after EMAIL_VERIFICATION_TTL', async (t) => {
      const clock = new FakeClock()
      const app = await build(t, { clock, env: { EMAIL_VERIFICATION_TTL: '1h' } })
      const early = await signUp(app, 'verify-expiry')
      const late = await signUp(app, 'verify-expiry')
      const [mail] = await mailsTo(app, early, VERIFY)
      t.match(mail!.text, /expires on 1 January 2030, 01:00 UTC/, 'the mail says when: EMAIL_VERIFICATION_TTL after the signup')

      clock.advance(HOUR - SECOND)
      t.equal((await verifyEmail(app, tokenOf(mail!))).statusCode, 204, 'a second before the end: 204')
      clock.advance(SECOND)
      assertErrorShape(t, await verifyEmail(app, await latestToken(app, late, VERIFY)), 400, 'LINK_TOKEN_INVALID', 'at the end')
      t.equal((await requestVerification(app, { payload: { email: late } })).statusCode, 202, 'a new link asked for')
      t.equal((await verifyEmail(app, await latestToken(app, late, VERIFY))).statusCode, 204, 'works')
    })

    t.test('a verification link is bound to the address it was mailed to', async (t) => {
      const app = await shared()
      const email = await signUp(app, 'verify-bound')
      const token = await latestToken(app, email, VERIFY)
      const { accessToken } = await logIn(app, email)
      const newEmail = freshEmail('verify-bound-new')
      const change = await app.inject({ method: 'POST', url: '/users/me/email', headers: bearer(accessToken), payload: { newEmail, password: PASSWORD } })
      t.equal(change.statusCode, 202, 'an email change asked for')
      t.equal((await verifyEmail(app, await latestToken(app, newEmail, CHANGE))).statusCode, 204, 'and confirmed')
      assertErrorShape(t, await verifyEmail(app, token), 400, 'LINK_TOKEN_INVALID', 'the link mailed to the old address')
      const profile = (await me(app, accessToken)).json()
      t.equal(profile.email, newEmail)
      t.equal(profile.emailVerified, true, 'the new address is verified by the change\'s own link')
    })

    t.test('malformed tokens: 400 LINK_TOKEN_INVALID or VALIDATION_ERROR, never 5xx', async (t) => {
      const app = await shared()
      const email = await signUp(app, 'verify-malformed')
      const token = await latestToken(app, email, VERIFY)
      const validation: Array<[string, unknown]> = [
        ['an empty token', { token: '' }],
        ['a token over 512 characters', { token: 'A'.repeat(513) }],
        ['a number', { token: 1 }],
        ['null', { token: null }],
        ['an object', { token: { token } }],
        ['no token', {}],
        ['an unknown field', { token, email }],
        ['a JSON string', token],
        ['JSON null', null]
      ]
      for (const [name, payload] of validation) {
        // Sent as JSON whatever it is (a bare string would otherwise go as text/plain).
        const response = await app.inject({
          method: 'POST', url: '/auth/verify-email', headers: { 'content-type': 'application/json' }, payload: JSON.stringify(payload)
        })
        assertErrorShape(t, response, 400, 'VALIDATION_ERROR', name)
      }
      for (const candidate of ['not-a-token', 'A'.repeat(43), `${token}=`, token.slice(1), '\u0000', 'A'.repeat(512)]) {
        assertErrorShape(t, await verifyEmail(app, candidate), 400, 'LINK_TOKEN_INVALID', `token ${JSON.stringify(candidate.slice(0, 24))}`)
      }
      await assertAnyTokenRefused(t, (candidate) => verifyEmail(app, candidate), SEED)
      t.equal((await verifyEmail(app, token)).statusCode, 204, 'the real link still works')
    })
  })
}
