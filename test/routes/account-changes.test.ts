import { eq } from 'drizzle-orm'
import type { FastifyInstance } from 'fastify'
import t from 'tap'
import { linkTokens } from '../../drizzle/schema.js'
import { createPasswordHasher } from '../../src/passwords.js'
import { linkOf, mailReaders, startMailServer, tokenOf } from '../fixtures/mail-server.js'
import {
  BACKENDS, NEW_PASSWORD, NO_RATE_LIMITS, PASSWORD, assertErrorShape, assertNoWorkingSession, bearer, buildTestApp, claimsOf, codeOf,
  eventually, fastPasswordHasher, freshEmail, instrumentedHasher, logIn, loginAttempt, mailingBackend, me, refresh, signUp, testConfig,
  testDatabase, testRedis, verifyEmail
} from '../helpers.js'

/*
 * The account changes over HTTP (routes/users.ts, src/accounts.ts; API.md,
 * "Routes" and "Accounts, mail and links"), on every backend, with a real
 * SMTP server: an email change (checked with the password, mailed to the new
 * address, done only when its link is followed, told to the old address,
 * refused when the address was taken meanwhile, and seen by another
 * instance's profile cache); a deletion (sessions and tokens refused, links
 * gone, events kept with the id only, the email free again); the notices
 * mailed for a password change and a reused refresh token; and the re-hash
 * of a password made with older argon2 parameters at the next login.
 */

const PUBLIC_URL = 'https://auth.example.test'

const VERIFY = /^Verify your email address$/
const RESET = /^Reset your password$/
const CHANGE = /^Confirm your new email address$/
const CHANGED_NOTICE = /^Your email address was changed$/
const DELETED_NOTICE = /^Your account was deleted$/
const PASSWORD_NOTICE = /^Your password was changed$/
const REUSE_NOTICE = /^Security alert: a session of your account was ended$/

function changeEmail (app: FastifyInstance, accessToken: string, newEmail: string, password = PASSWORD) {
  return app.inject({ method: 'POST', url: '/users/me/email', headers: bearer(accessToken), payload: { newEmail, password } })
}

function deleteMe (app: FastifyInstance, accessToken: string, password = PASSWORD) {
  return app.inject({ method: 'DELETE', url: '/users/me', headers: bearer(accessToken), payload: { password } })
}

/** The user's security events, newest first, once the ones waiting are written. */
async function eventsOf (app: FastifyInstance, userId: string) {
  await app.securityEvents.flush()
  return (await app.securityEventStore.list({ userId, limit: 100 })).events
}

for (const backend of BACKENDS) {
  t.test(backend.name, { skip: backend.skip }, async (t) => {
    const { server, mailEnv, build, shared, mailsTo, latestToken, twoInstances } = await mailingBackend(t, backend, { PUBLIC_URL })

    /** A new account, logged in: its email, id and token pair. */
    async function account (app: FastifyInstance, label: string) {
      const email = await signUp(app, label)
      const pair = await logIn(app, email)
      return { ...pair, userId: claimsOf(pair.accessToken).sub as string }
    }

    t.test('email change: a wrong password 401, a taken address 409, and nothing mailed', async (t) => {
      const app = await shared()
      const user = await account(app, 'change-refused')
      const other = await signUp(app, 'change-taken')
      const wanted = freshEmail('change-wanted')
      assertErrorShape(t, await changeEmail(app, user.accessToken, wanted, 'not the password'), 401, 'INVALID_CREDENTIALS', 'a wrong password')
      assertErrorShape(t, await changeEmail(app, user.accessToken, other.toUpperCase()), 409, 'EMAIL_TAKEN', 'another account\'s address, in capitals')
      const anonymous = await app.inject({ method: 'POST', url: '/users/me/email', payload: { newEmail: wanted, password: PASSWORD } })
      assertErrorShape(t, anonymous, 401, 'ACCESS_TOKEN_MISSING', 'no access token')
      t.equal((await mailsTo(app, wanted, /./)).length, 0, 'nothing mailed to the address asked for with a wrong password')
      t.equal((await mailsTo(app, other, CHANGE)).length, 0, 'nor to the taken one')
      t.equal((await me(app, user.accessToken)).json().email, user.email, 'the email is unchanged')
    })

    t.test('email change: 202, a link to the new address only; nothing changes until it is followed, then the old address is told', async (t) => {
      const app = await shared()
      const user = await account(app, 'change')
      const newEmail = freshEmail('change-new')
      t.equal((await me(app, user.accessToken)).json().email, user.email, 'the profile, cached')

      const asked = await changeEmail(app, user.accessToken, newEmail.toUpperCase())
      t.equal(asked.statusCode, 202, 'POST /users/me/email: 202')
      const [mail, ...more] = await mailsTo(app, newEmail, CHANGE)
      t.ok(mail, 'a link arrives at the new address')
      t.equal(more.length, 0, 'one')
      t.match(linkOf(mail!), /^https:\/\/auth\.example\.test\/account\/verify-email#token=[A-Za-z0-9_-]{43}$/, 'to the verification page')
      t.match(mail!.text, newEmail, 'naming the new address')
      const [request, ...others] = await mailsTo(app, user.email, /^A change of your email address was requested$/)
      t.ok(request, 'the current address is told of the request')
      t.equal(others.length, 0, 'once')
      t.match(request!.text, newEmail, 'naming the new address')
      t.notMatch(request!.raw, /#token=/, 'with no link: only the new address can confirm')

      t.equal((await me(app, user.accessToken)).json().email, user.email, 'until followed: the email is unchanged')
      t.equal((await loginAttempt(app, user.email)).statusCode, 200, 'the old email logs in')
      assertErrorShape(t, await loginAttempt(app, newEmail), 401, 'INVALID_CREDENTIALS', 'the new one does not')

      const followed = await verifyEmail(app, tokenOf(mail!))
      t.equal(followed.statusCode, 204, 'following the link: 204')
      const profile = (await me(app, user.accessToken)).json()
      t.equal(profile.email, newEmail, '/users/me shows the new email')
      t.equal(profile.emailVerified, true, 'verified: its owner read the link')
      t.equal((await loginAttempt(app, newEmail)).statusCode, 200, 'the new email logs in')
      assertErrorShape(t, await loginAttempt(app, user.email), 401, 'INVALID_CREDENTIALS', 'the old one does not')
      assertErrorShape(t, await verifyEmail(app, tokenOf(mail!)), 400, 'LINK_TOKEN_INVALID', 'the link used again')

      const [notice] = await mailsTo(app, user.email, CHANGED_NOTICE)
      t.ok(notice, 'the old address is told')
      t.match(notice!.text, newEmail, 'the new address, named')
      t.notMatch(notice!.raw, /#token=/, 'and no link token')
      t.ok((await eventsOf(app, user.userId)).some(({ type }) => type === 'email_changed'), 'an email_changed event')
      t.equal((await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: user.email, password: PASSWORD } })).statusCode, 201,
        'the old address is free to sign up')
    })

    t.test('email change: an address taken before the link is followed answers 409 EMAIL_TAKEN and spends the link', async (t) => {
      const app = await shared()
      const user = await account(app, 'change-race')
      const newEmail = freshEmail('change-race-new')
      t.equal((await changeEmail(app, user.accessToken, newEmail)).statusCode, 202)
      const token = await latestToken(app, newEmail, CHANGE)
      t.equal((await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: newEmail, password: PASSWORD } })).statusCode, 201,
        'someone signs up with the new address meanwhile')

      assertErrorShape(t, await verifyEmail(app, token), 409, 'EMAIL_TAKEN', 'following the link')
      assertErrorShape(t, await verifyEmail(app, token), 400, 'LINK_TOKEN_INVALID', 'the link is spent')
      t.equal((await me(app, user.accessToken)).json().email, user.email, 'the email is unchanged')
      t.equal((await loginAttempt(app, user.email)).statusCode, 200, 'and still logs in')
      t.equal((await mailsTo(app, user.email, CHANGED_NOTICE)).length, 0, 'nothing to tell the old address')
    })

    t.test('email change: a newer request supersedes the older link; a change link is no reset link', async (t) => {
      const app = await shared()
      const user = await account(app, 'change-twice')
      const [first, second] = [freshEmail('change-first'), freshEmail('change-second')]
      t.equal((await changeEmail(app, user.accessToken, first)).statusCode, 202)
      t.equal((await changeEmail(app, user.accessToken, second)).statusCode, 202)
      const older = await latestToken(app, first, CHANGE)
      const newer = await latestToken(app, second, CHANGE)
      assertErrorShape(t, await verifyEmail(app, older), 400, 'LINK_TOKEN_INVALID', 'the first address\'s link, superseded')
      const asReset = await app.inject({ method: 'POST', url: '/auth/password-reset', payload: { token: newer, newPassword: NEW_PASSWORD } })
      assertErrorShape(t, asReset, 400, 'LINK_TOKEN_INVALID', 'a change link at /auth/password-reset')
      t.equal((await verifyEmail(app, newer)).statusCode, 204, 'the newest link moves the account')
      t.equal((await me(app, user.accessToken)).json().email, second)
    })

    t.test('deletion: a wrong password 401, and the account stays', async (t) => {
      const app = await shared()
      const user = await account(app, 'delete-refused')
      assertErrorShape(t, await deleteMe(app, user.accessToken, 'not the password'), 401, 'INVALID_CREDENTIALS', 'a wrong password')
      assertErrorShape(t, await app.inject({ method: 'DELETE', url: '/users/me', payload: { password: PASSWORD } }), 401, 'ACCESS_TOKEN_MISSING', 'no token')
      t.equal((await me(app, user.accessToken)).statusCode, 200, 'the account and its session stay')
      t.equal((await refresh(app, user.refreshToken)).statusCode, 200)
    })

    t.test('deletion: 204; sessions and tokens refused, links gone, events kept with the id only, the email free again', async (t) => {
      const app = await shared()
      const agent = { 'user-agent': 'Leaving/1.0' }
      const signup = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: freshEmail('delete'), password: PASSWORD }, headers: agent })
      const { email, id: userId } = signup.json()
      const pair = await logIn(app, email, PASSWORD, agent)
      const other = await logIn(app, email, PASSWORD, agent)
      t.equal((await app.inject({ method: 'POST', url: '/auth/password-reset/request', payload: { email }, headers: agent })).statusCode, 202)
      const resetToken = await latestToken(app, email, RESET)
      const verificationToken = await latestToken(app, email, VERIFY)
      const linksOf = () => app.database.db.select().from(linkTokens).where(eq(linkTokens.userId, userId))
      t.equal((await linksOf()).length, 2, 'before: a reset and a verification link')
      const before = await eventsOf(app, userId)
      t.ok(before.length >= 4 && before.every(({ ip, userAgent }) => ip !== null && userAgent === 'Leaving/1.0'), 'before: events with address and user agent')

      const deleted = await deleteMe(app, pair.accessToken)
      t.equal(deleted.statusCode, 204, 'DELETE /users/me: 204')
      t.equal(deleted.body, '')

      for (const [name, session] of [['the caller\'s session', pair], ['another session', other]] as const) {
        assertErrorShape(t, await refresh(app, session.refreshToken), 401, 'REFRESH_TOKEN_REVOKED', `${name}: refresh`)
        assertErrorShape(t, await me(app, session.accessToken), 401, 'ACCESS_TOKEN_REVOKED', `${name}: /users/me`)
      }
      assertErrorShape(t, await app.inject({ method: 'GET', url: '/auth/sessions', headers: bearer(other.accessToken) }), 401, 'ACCESS_TOKEN_REVOKED',
        'another protected route')
      assertErrorShape(t, await deleteMe(app, pair.accessToken), 401, 'ACCESS_TOKEN_REVOKED', 'a second deletion')
      assertErrorShape(t, await loginAttempt(app, email), 401, 'INVALID_CREDENTIALS', 'login')
      t.equal(await app.users.findById(userId), undefined, 'the row is gone')

      t.equal((await linksOf()).length, 0, 'its links are gone')
      assertErrorShape(t, await app.inject({ method: 'POST', url: '/auth/password-reset', payload: { token: resetToken, newPassword: NEW_PASSWORD } }),
        400, 'LINK_TOKEN_INVALID', 'its reset link')
      assertErrorShape(t, await verifyEmail(app, verificationToken), 400, 'LINK_TOKEN_INVALID', 'its verification link')

      const after = await eventsOf(app, userId)
      const kept = after.filter(({ type }) => type !== 'account_deleted')
      t.strictSame(kept.map(({ id, type }) => [id, type]), before.map(({ id, type }) => [id, type]), 'every event kept, with the user\'s id')
      t.ok(after.every(({ ip, userAgent }) => ip === null && userAgent === null), 'none with an address or a user agent')
      t.equal(after.filter(({ type }) => type === 'account_deleted').length, 1, 'and one account_deleted event')
      t.ok((await mailsTo(app, email, DELETED_NOTICE)).length === 1, 'the address is told')

      const again = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email, password: NEW_PASSWORD } })
      t.equal(again.statusCode, 201, 'the email signs up again')
      t.not(again.json().id, userId, 'as a new account')
      t.strictSame((await eventsOf(app, again.json().id)).map(({ type }) => type), ['signup'], 'with none of the old account\'s events')
      t.equal((await loginAttempt(app, email, NEW_PASSWORD)).statusCode, 200, 'which logs in')
    })

    t.test('password attempts on /users/me/email and DELETE /users/me are limited like logins: 429 RATE_LIMITED', async (t) => {
      const app = await build(t, { rateLimits: { ...NO_RATE_LIMITS, loginPerAccount: { max: 3, windowSeconds: 60 } } })
      const user = await account(app, 'password-limited')
      assertErrorShape(t, await changeEmail(app, user.accessToken, freshEmail('limited'), 'guess one'), 401, 'INVALID_CREDENTIALS', 'a first guess')
      assertErrorShape(t, await changeEmail(app, user.accessToken, freshEmail('limited'), 'guess two'), 401, 'INVALID_CREDENTIALS', 'a second')
      assertErrorShape(t, await deleteMe(app, user.accessToken, 'guess three'), 401, 'INVALID_CREDENTIALS', 'a third, on the other route')
      const limited = await deleteMe(app, user.accessToken)
      assertErrorShape(t, limited, 429, 'RATE_LIMITED', 'the fourth, even with the right password')
      t.ok(Number(limited.headers['retry-after']) >= 1, `with Retry-After (${limited.headers['retry-after']})`)
      t.equal((await me(app, user.accessToken)).statusCode, 200, 'the account stays')
      const other = await account(app, 'password-limited-other')
      t.equal((await changeEmail(app, other.accessToken, freshEmail('limited-other'))).statusCode, 202, 'another user is not held back')
    })

    t.test('deletion: a login in flight at that moment ends up with no working session', async (t) => {
      const { hasher, pauseNextVerify } = instrumentedHasher()
      const app = await build(t, { passwordHasher: hasher })
      const user = await account(app, 'delete-inflight')
      const paused = pauseNextVerify()
      const inFlight = loginAttempt(app, user.email)
      await paused.reached
      t.equal((await deleteMe(app, user.accessToken)).statusCode, 204, 'the deletion completes while the login, its password checked, waits')
      paused.release()
      await assertNoWorkingSession(t, app, await inFlight)
    })

    t.test('on two instances sharing Redis and PostgreSQL: the other instance sees an email change and a deletion', {
      skip: !backend.realRedis && 'the in-process stores belong to one instance: two instances share Redis'
    }, async (t) => {
      const [a, b] = await twoInstances(t)
      const user = await account(a, 'two-change')
      const warmed = await me(b, user.accessToken)
      t.equal(warmed.json().email, user.email, 'B answers /users/me')
      t.equal(warmed.json().emailVerified, false, 'unverified')
      t.ok(b.users.cachedProfile(user.userId), 'and caches the profile')

      t.equal((await verifyEmail(a, await latestToken(a, user.email, VERIFY))).statusCode, 204, 'the address verified on A')
      // Pushed through Redis: the outcome is asserted, not how fast this machine delivers it.
      t.ok(await eventually(async () => (await me(b, user.accessToken)).json().emailVerified === true), 'B shows it verified')
      const refreshedOnB = await refresh(b, user.refreshToken)
      t.equal(claimsOf(refreshedOnB.json().accessToken).email_verified, true, 'and a refresh on B says email_verified: true')
      t.equal((await me(b, user.accessToken)).json().email, user.email, 'the profile cached again on B')

      const newEmail = freshEmail('two-change-new')
      t.equal((await changeEmail(a, user.accessToken, newEmail)).statusCode, 202)
      t.equal((await verifyEmail(a, await latestToken(a, newEmail, CHANGE))).statusCode, 204, 'the change made on A')
      t.ok(await eventually(async () => (await me(b, user.accessToken)).json().email === newEmail), 'B shows the new email')
      t.equal((await me(b, user.accessToken)).json().emailVerified, true, 'verified')

      const onB = await logIn(b, newEmail)
      t.equal((await deleteMe(a, user.accessToken)).statusCode, 204, 'the account deleted on A')
      assertErrorShape(t, await refresh(b, onB.refreshToken), 401, 'REFRESH_TOKEN_REVOKED', 'B: the session opened there, refresh')
      t.ok(await eventually(async () => codeOf(await me(b, user.accessToken)) === 'ACCESS_TOKEN_REVOKED'), 'B refuses the access token A issued')
      t.ok(await eventually(async () => codeOf(await me(b, onB.accessToken)) === 'ACCESS_TOKEN_REVOKED'), 'and the one it issued')
      t.notOk(b.users.cachedProfile(user.userId), 'B forgot the profile')
    })

    t.test('deletion on one instance: the events another instance had yet to write lose their client details too', {
      skip: !backend.realRedis && 'two instances share Redis'
    }, async (t) => {
      // Every instance writes its events in batches (each second by default); a long interval here makes it
      // certain that the other instance still holds its batch when the account is deleted.
      const [a, b] = await twoInstances(t, { securityEvents: { flushIntervalMs: 60_000 } })
      const user = await account(a, 'delete-pending')
      await logIn(b, user.email, PASSWORD, { 'user-agent': 'OtherInstance/1.0' })
      t.equal((await deleteMe(a, user.accessToken)).statusCode, 204, 'the account deleted on A while B holds its login event')
      // B writes what it held: at its next batch, or here.
      await b.securityEvents.flush()
      const events = await eventsOf(a, user.userId)
      t.ok(events.some(({ type }) => type === 'account_deleted'), 'the deletion is recorded')
      t.strictSame(events.filter(({ ip, userAgent }) => ip !== null || userAgent !== null).map(({ type, ip, userAgent }) => ({ type, ip, userAgent })), [],
        'no event of the deleted account keeps an address or a user agent')
    })

    t.test('email change: a pending link dies with the password it was asked for under (change or reset)', async (t) => {
      const app = await shared()
      // Whoever asked knew the old password: the owner changing or resetting it takes the account back.
      const changed = await account(app, 'change-then-password')
      const changedTo = freshEmail('change-then-password-new')
      t.equal((await changeEmail(app, changed.accessToken, changedTo)).statusCode, 202)
      const changedLink = await latestToken(app, changedTo, CHANGE)
      t.equal((await app.inject({
        method: 'POST', url: '/auth/password', headers: bearer(changed.accessToken), payload: { currentPassword: PASSWORD, newPassword: NEW_PASSWORD }
      })).statusCode, 204, 'the owner changes the password')
      assertErrorShape(t, await verifyEmail(app, changedLink), 400, 'LINK_TOKEN_INVALID', 'the change link after a password change')
      t.equal((await me(app, changed.accessToken)).json().email, changed.email, 'the email is unchanged')

      const reset = await account(app, 'change-then-reset')
      const resetTo = freshEmail('change-then-reset-new')
      t.equal((await changeEmail(app, reset.accessToken, resetTo)).statusCode, 202)
      const resetChangeLink = await latestToken(app, resetTo, CHANGE)
      t.equal((await app.inject({ method: 'POST', url: '/auth/password-reset/request', payload: { email: reset.email } })).statusCode, 202)
      const resetToken = await latestToken(app, reset.email, RESET)
      t.equal((await app.inject({ method: 'POST', url: '/auth/password-reset', payload: { token: resetToken, newPassword: NEW_PASSWORD } })).statusCode, 204,
        'the owner resets the password')
      assertErrorShape(t, await verifyEmail(app, resetChangeLink), 400, 'LINK_TOKEN_INVALID', 'the change link after a reset')
      t.equal((await loginAttempt(app, reset.email, NEW_PASSWORD)).statusCode, 200, 'the account keeps its address')
    })

    t.test('a password change through /auth/password mails a notice', async (t) => {
      const app = await shared()
      const user = await account(app, 'notice-change')
      const changed = await app.inject({
        method: 'POST', url: '/auth/password', headers: bearer(user.accessToken), payload: { currentPassword: PASSWORD, newPassword: NEW_PASSWORD }
      })
      t.equal(changed.statusCode, 204)
      const notice = await server.waitFor(user.email, { subject: PASSWORD_NOTICE })
      t.match(notice.text, /changed/, 'the account is told its password was changed')
      t.ok(notice.html.length > 0, 'with an HTML part')
      t.notMatch(notice.raw, /#token=/, 'and no link token')
    })

    t.test('a reused refresh token mails a notice naming the address it came from', async (t) => {
      const app = await build(t, { env: { REFRESH_REUSE_GRACE: '0s' } })
      const user = await account(app, 'notice-reuse')
      t.equal((await refresh(app, user.refreshToken)).statusCode, 200, 'rotated')
      assertErrorShape(t, await refresh(app, user.refreshToken, '203.0.113.66'), 401, 'REFRESH_TOKEN_REUSED', 'the spent token again, from elsewhere')
      const notice = await server.waitFor(user.email, { subject: REUSE_NOTICE })
      t.match(notice.text, /203\.0\.113\.66/, 'the notice names the address the token came back from')
      t.ok(notice.html.length > 0, 'with an HTML part')
    })

    t.test('a password hashed with older parameters is re-hashed at the next login; nothing ends', async (t) => {
      const database = await testDatabase(t, { real: backend.realDatabase })
      const redis = backend.realRedis ? await testRedis(t) : undefined
      // One configuration: with Redis, a session opened on one app refreshes on the other.
      const config = await testConfig(t, mailEnv)
      const newer = createPasswordHasher({ memoryCost: 2048, timeCost: 1, parallelism: 1 })
      t.teardown(() => newer.stopThreads())
      const counted = instrumentedHasher(newer)
      const storage = { config, database, redis: redis?.redis, redisKeyPrefix: redis?.prefix, rateLimits: NO_RATE_LIMITS }
      const before = await buildTestApp(t, { ...storage, passwordHasher: fastPasswordHasher })
      const after = await buildTestApp(t, { ...storage, passwordHasher: counted.hasher })

      const user = await account(before, 'rehash')
      const stored = (await after.users.findById(user.userId))!
      t.match(stored.passwordHash, /^\$argon2id\$v=19\$m=1024,t=1,p=1\$/, 'hashed with the older parameters')

      const hashesBefore = counted.counts.hash
      const upgraded = await loginAttempt(after, user.email)
      t.equal(upgraded.statusCode, 200, 'the login with the newer parameters: 200')
      t.equal(counted.counts.hash - hashesBefore, 1, 'which hashes the password once more')
      t.ok(await eventually(async () => /^\$argon2id\$v=19\$m=2048,t=1,p=1\$/.test((await after.users.findById(user.userId))!.passwordHash)),
        'the stored hash comes to have the newer parameters')
      const rehashed = (await after.users.findById(user.userId))!
      t.equal(rehashed.credentialVersion, stored.credentialVersion, 'the credential version is unchanged')

      const hashesThen = counted.counts.hash
      const again = await loginAttempt(after, user.email)
      t.equal(again.statusCode, 200, 'the password still logs in')
      t.equal(counted.counts.hash, hashesThen, 'without another re-hash')
      t.equal((await after.users.findById(user.userId))!.passwordHash, rehashed.passwordHash, 'the hash stays')
      assertErrorShape(t, await loginAttempt(after, user.email, 'not the password'), 401, 'INVALID_CREDENTIALS', 'a wrong password still fails')

      const opened = upgraded.json()
      t.equal((await refresh(after, opened.refreshToken)).statusCode, 200, 'the session of the login that re-hashed goes on')
      t.equal((await me(after, opened.accessToken)).statusCode, 200)
      const home = redis === undefined ? before : after
      t.equal((await refresh(home, user.refreshToken)).statusCode, 200, 'the session opened before the re-hash goes on')
      t.equal((await me(home, user.accessToken)).statusCode, 200, 'with its access token')
    })
  })
}

t.test('the embedded database the app opens itself (as npm start does), whose login lookups are remembered', async (t) => {
  const server = await startMailServer(t)
  // Only this process writes to it, so logins are answered from remembered credentials: every change must drop them.
  const app = await buildTestApp(t, { ownDatabase: true, rateLimits: NO_RATE_LIMITS, env: { SMTP_URL: server.url, PUBLIC_URL } })
  const { latestToken } = mailReaders(server)
  const email = await signUp(app, 'own-db')
  const pair = await logIn(app, email)
  t.equal((await loginAttempt(app, email)).statusCode, 200, 'logins remember the account')

  const newEmail = freshEmail('own-db-new')
  t.equal((await changeEmail(app, pair.accessToken, newEmail)).statusCode, 202)
  t.equal((await verifyEmail(app, await latestToken(app, newEmail, CHANGE))).statusCode, 204, 'the email changed')
  assertErrorShape(t, await loginAttempt(app, email), 401, 'INVALID_CREDENTIALS', 'the old email, remembered before, no longer logs in')
  t.equal((await loginAttempt(app, newEmail)).statusCode, 200, 'the new one does')

  t.equal((await app.inject({ method: 'POST', url: '/auth/password-reset/request', payload: { email: newEmail } })).statusCode, 202)
  const reset = await app.inject({ method: 'POST', url: '/auth/password-reset', payload: { token: await latestToken(app, newEmail, RESET), newPassword: NEW_PASSWORD } })
  t.equal(reset.statusCode, 204, 'the password reset')
  assertErrorShape(t, await loginAttempt(app, newEmail), 401, 'INVALID_CREDENTIALS', 'the old password, remembered before, no longer logs in')
  const fresh = await logIn(app, newEmail, NEW_PASSWORD)

  t.equal((await deleteMe(app, fresh.accessToken, NEW_PASSWORD)).statusCode, 204, 'the account deleted')
  assertErrorShape(t, await loginAttempt(app, newEmail, NEW_PASSWORD), 401, 'INVALID_CREDENTIALS', 'its login, remembered before, is refused')
  t.equal((await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: newEmail, password: PASSWORD } })).statusCode, 201, 'the email signs up again')
  t.equal((await loginAttempt(app, newEmail)).statusCode, 200, 'and logs in as the new account')
})
