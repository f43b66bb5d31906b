import t from 'tap'
import type { Test } from 'tap'
import { AccountService, type AccountPolicy } from '../../src/accounts.js'
import { ServiceError } from '../../src/errors.js'
import { LinkTokenStore, hashLinkToken } from '../../src/link-tokens.js'
import type { MailTemplate } from '../../src/mail-templates.js'
import { createPasswordHasher, type PasswordHasher } from '../../src/passwords.js'
import { RevocationList } from '../../src/revocation-list.js'
import type { SecurityEventRecord } from '../../src/security-events.js'
import { UserFactsCache } from '../../src/user-facts.js'
import { UserRepository, type User } from '../../src/users.js'
import {
  DEFAULT_SESSION_POLICY, FakeClock, NEW_PASSWORD, PASSWORD, eventually, fastPasswordHasher, freshEmail, inProcessSessionService, instrumentedHasher,
  skipUnless, testDatabase
} from '../helpers.js'

/*
 * AccountService (src/accounts.ts) over the real link store, user repository
 * and session service, on PGlite and PostgreSQL, with mail and security
 * events recorded instead of sent: what each flow writes, mails and records,
 * and what it refuses. The same flows over HTTP with real mail are in the
 * route and example tests.
 */

const POLICY: AccountPolicy = { publicUrl: 'https://auth.example.com', appUrl: undefined, passwordResetTtl: 1800, emailVerificationTtl: 86_400 }
const CLIENT = { ip: '203.0.113.9', userAgent: 'accounts-test/1.0' }
const NO_LOG = { warn: () => {} }

interface SentMail {
  to: string
  template: MailTemplate
}

async function setup (t: Test, real: boolean, { hasher = fastPasswordHasher, policy = POLICY }: { hasher?: PasswordHasher, policy?: AccountPolicy } = {}) {
  const { db } = await testDatabase(t, { real })
  const clock = new FakeClock()
  const users = new UserRepository(db)
  const links = new LinkTokenStore(db)
  const facts = new UserFactsCache(async (id) => {
    const user = await users.findById(id)
    return user === undefined ? undefined : { credentialVersion: user.credentialVersion, emailVerified: user.emailVerified, roles: user.roles, disabled: user.disabled }
  })
  // As plugins/revocations.ts wires it: a changed user is read afresh.
  const revocations = new RevocationList(clock, DEFAULT_SESSION_POLICY.accessTokenTtl * 1000, undefined, {
    changed: (userId) => {
      facts.forget(userId)
      users.forgetUser(userId)
    }
  })
  const events: SecurityEventRecord[] = []
  const recorder = { record: (event: SecurityEventRecord) => { events.push(event) } }
  const { service: sessions } = inProcessSessionService(t, {
    clock,
    revocations,
    users: facts,
    events: recorder,
    issueAccessToken: (_userId, sessionId) => `access-token-of-${sessionId}`
  })
  const mails: SentMail[] = []
  const forgotten: string[] = []
  const warnings: string[] = []
  // Its hashes counted: a refused token must cost none.
  const { hasher: passwords, counts: hasherCalls } = instrumentedHasher(hasher)
  const accounts = new AccountService({
    users,
    links,
    sessions,
    passwords,
    events: recorder,
    clock,
    policy,
    mail: { send: (to, template) => { mails.push({ to, template }) } },
    forgetClientDetails: async (userId) => { forgotten.push(userId) },
    log: { warn: (_details, message) => { warnings.push(message) } }
  })

  /** A new account with PASSWORD, and a session of it. */
  async function account (label = 'account'): Promise<User & { refreshToken: string }> {
    const user = (await users.create(freshEmail(label), await hasher.hash(PASSWORD)))!
    const { refreshToken } = await sessions.open(user, CLIENT)
    return { ...user, refreshToken }
  }

  /** The token of the last link mailed to `to`. */
  function tokenMailedTo (to: string): string {
    const mail = mails.filter((sent) => sent.to === to && 'link' in sent.template).at(-1)
    if (mail === undefined || !('link' in mail.template)) throw new Error(`no link mailed to ${to}`)
    return new URLSearchParams(new URL(mail.template.link).hash.slice(1)).get('token')!
  }

  const refreshes = async (refreshToken: string) => sessions.refresh(refreshToken, CLIENT, NO_LOG).then(() => true, () => false)
  return { accounts, users, links, sessions, clock, mails, events, forgotten, warnings, hasherCalls, account, tokenMailedTo, refreshes }
}

const codeOf = (promise: Promise<unknown>): Promise<string | undefined> =>
  promise.then(() => undefined, (error: unknown) => error instanceof ServiceError ? error.code : String(error))

const variants = [
  { name: 'PGlite', real: false, skip: false as const },
  { name: 'PostgreSQL', real: true, skip: skipUnless({ postgres: true }) }
]

t.test('linkFor: the built-in pages under PUBLIC_URL, or APP_URL\'s', async (t) => {
  const { accounts } = await setup(t, false)
  t.equal(accounts.linkFor('password_reset', 'tok'), 'https://auth.example.com/account/reset-password#token=tok')
  t.equal(accounts.linkFor('email_verification', 'tok'), 'https://auth.example.com/account/verify-email#token=tok')
  t.equal(accounts.linkFor('email_change', 'tok'), 'https://auth.example.com/account/verify-email#token=tok')
  const withApp = await setup(t, false, { policy: { ...POLICY, appUrl: 'https://app.example.com/me' } })
  t.equal(withApp.accounts.linkFor('password_reset', 'tok'), 'https://app.example.com/me/reset-password#token=tok')
})

for (const { name, real, skip } of variants) {
  t.test(`AccountService on ${name}`, { skip }, async (t) => {
    t.test('requestPasswordReset: a link mailed for an account, nothing for an unknown email', async (t) => {
      const { accounts, account, mails, events, clock } = await setup(t, real)
      const user = await account()
      await accounts.requestPasswordReset(user.email.toUpperCase(), CLIENT)
      t.equal(mails.length, 1)
      t.match(mails[0], {
        to: user.email,
        template: { kind: 'password_reset', link: /^https:\/\/auth\.example\.com\/account\/reset-password#token=[\w-]{43}$/, expiresAt: new Date(clock.now() + 1_800_000) }
      })
      t.match(events.at(-1), { type: 'password_reset_requested', userId: user.id, ...CLIENT })

      const before = events.length
      await accounts.requestPasswordReset(freshEmail('nobody'), CLIENT)
      t.equal(mails.length, 1, 'no mail for an unknown email')
      t.strictSame(events.slice(before), [{ type: 'password_reset_requested', userId: null, ...CLIENT }],
        'recorded without a user, as a failed login of an unknown email is: a trace of probing')
    })

    t.test('resetPassword: sets the password, ends every session, verifies, records, mails; once', async (t) => {
      const { accounts, account, users, mails, events, tokenMailedTo, refreshes } = await setup(t, real)
      const user = await account()
      const other = await account()
      await accounts.requestPasswordReset(user.email, CLIENT)
      const token = tokenMailedTo(user.email)
      await accounts.resetPassword(token, NEW_PASSWORD, CLIENT)

      const after = (await users.findById(user.id))!
      t.equal(await fastPasswordHasher.verify(after.passwordHash, NEW_PASSWORD), true, 'the new password')
      t.equal(after.credentialVersion, user.credentialVersion + 1)
      t.equal(after.emailVerified, true, 'the address counts as verified')
      t.equal(await refreshes(user.refreshToken), false, 'the account\'s session is over')
      t.equal(await refreshes(other.refreshToken), true, 'another account\'s is not')
      t.match(events.at(-1), { type: 'password_reset', userId: user.id, ...CLIENT })
      t.match(mails.at(-1), { to: user.email, template: { kind: 'password_changed', how: 'reset' } })
      t.equal(await codeOf(accounts.resetPassword(token, 'yet another passphrase', CLIENT)), 'LINK_TOKEN_INVALID', 'a second time')
    })

    t.test('resetPassword: a bad token is refused before any hashing', async (t) => {
      const { accounts, account, hasherCalls, tokenMailedTo, clock } = await setup(t, real)
      t.equal(await codeOf(accounts.resetPassword('unknown-token', NEW_PASSWORD, CLIENT)), 'LINK_TOKEN_INVALID')
      const user = await account()
      await accounts.requestPasswordReset(user.email, CLIENT)
      const token = tokenMailedTo(user.email)
      clock.advance(1_800_000)
      t.equal(await codeOf(accounts.resetPassword(token, NEW_PASSWORD, CLIENT)), 'LINK_TOKEN_INVALID', 'expired')
      await accounts.requestVerification({ userId: user.id })
      t.equal(await codeOf(accounts.resetPassword(tokenMailedTo(user.email), NEW_PASSWORD, CLIENT)), 'LINK_TOKEN_INVALID', 'a verification link')
      t.equal(hasherCalls.hash, 0, 'no password was hashed')
    })

    t.test('resetPassword: parallel resets with one link, exactly one succeeds', async (t) => {
      const { accounts, account, tokenMailedTo } = await setup(t, real)
      const user = await account()
      await accounts.requestPasswordReset(user.email, CLIENT)
      const token = tokenMailedTo(user.email)
      const codes = await Promise.all(Array.from({ length: 5 }, (_, i) => codeOf(accounts.resetPassword(token, `${NEW_PASSWORD} ${i}`, CLIENT))))
      t.strictSame(codes.filter((code) => code === undefined).length, 1, 'one succeeds')
      t.ok(codes.every((code) => code === undefined || code === 'LINK_TOKEN_INVALID'), 'the others: LINK_TOKEN_INVALID')
    })

    t.test('verification: mailed on signup, replaced on request, only for an unverified address', async (t) => {
      const { accounts, account, users, mails, events, tokenMailedTo } = await setup(t, real)
      const user = await account()
      await accounts.signedUp(user.id)
      const first = tokenMailedTo(user.email)
      await accounts.requestVerification({ email: user.email })
      const second = tokenMailedTo(user.email)
      t.not(first, second)
      t.equal(await codeOf(accounts.verifyEmail(first, CLIENT)), 'LINK_TOKEN_INVALID', 'the first link was replaced')
      await accounts.verifyEmail(second, CLIENT)
      t.equal((await users.findById(user.id))?.emailVerified, true)
      t.match(events.at(-1), { type: 'email_verified', userId: user.id })
      const sent = mails.length
      await accounts.requestVerification({ userId: user.id })
      await accounts.requestVerification({ email: user.email })
      t.equal(mails.length, sent, 'a verified address gets no more links')
    })

    t.test('verification: a link for an address the account no longer has verifies nothing', async (t) => {
      const { accounts, account, users, tokenMailedTo } = await setup(t, real)
      const user = await account()
      await accounts.requestVerification({ userId: user.id })
      const token = tokenMailedTo(user.email)
      await users.changeEmail(user.id, freshEmail('moved'))
      t.equal(await codeOf(accounts.verifyEmail(token, CLIENT)), 'LINK_TOKEN_INVALID')
    })

    t.test('signedUp: a failure to issue the link is logged, never thrown', async (t) => {
      const { accounts, warnings } = await setup(t, real)
      await accounts.signedUp('not-a-uuid')
      t.equal(warnings.length, 1, 'logged')
    })

    t.test('requestEmailChange then verifyEmail: moved, the old address told, sessions kept', async (t) => {
      const { accounts, account, users, mails, events, tokenMailedTo, refreshes, hasherCalls } = await setup(t, real)
      const user = await account()
      const other = await account()
      const target = freshEmail('target')
      t.equal(await codeOf(accounts.requestEmailChange(user.id, target, 'wrong password')), 'INVALID_CREDENTIALS')
      t.equal(await codeOf(accounts.requestEmailChange(user.id, other.email.toUpperCase(), PASSWORD)), 'EMAIL_TAKEN')
      t.equal(mails.length, 0, 'nothing mailed for either')
      await accounts.requestEmailChange(user.id, target, PASSWORD)
      t.match(mails.at(-2), { to: target, template: { kind: 'email_change', newEmail: target } })
      t.match(mails.at(-1), { to: user.email, template: { kind: 'email_change_requested', newEmail: target } }, 'the current address is told')
      t.equal((await users.findById(user.id))?.email, user.email, 'not moved yet')
      await accounts.verifyEmail(tokenMailedTo(target), CLIENT)
      t.match(await users.findById(user.id), { email: target, emailVerified: true })
      t.match(events.at(-1), { type: 'email_changed', userId: user.id })
      t.match(mails.at(-1), { to: user.email, template: { kind: 'email_changed', newEmail: target } })
      t.equal(await refreshes(user.refreshToken), true, 'the session goes on')
      t.equal(hasherCalls.hash, 0, 'the password was checked, not hashed')
    })

    t.test('verifyEmail of an email change whose address was taken meanwhile: EMAIL_TAKEN, and spent', async (t) => {
      const { accounts, account, users, tokenMailedTo } = await setup(t, real)
      const user = await account()
      const target = freshEmail('contested')
      await accounts.requestEmailChange(user.id, target, PASSWORD)
      const token = tokenMailedTo(target)
      await users.create(target, 'someone else')
      t.equal(await codeOf(accounts.verifyEmail(token, CLIENT)), 'EMAIL_TAKEN')
      t.equal(await codeOf(accounts.verifyEmail(token, CLIENT)), 'LINK_TOKEN_INVALID', 'spent')
      t.equal((await users.findById(user.id))?.email, user.email)
    })

    t.test('changePassword: the pending email change is cancelled, other sessions end, the account is mailed', async (t) => {
      const { accounts, account, sessions, users, mails, tokenMailedTo, refreshes } = await setup(t, real)
      const user = await account()
      const { accessToken } = await sessions.open(user, CLIENT)
      const callerSession = accessToken.replace('access-token-of-', '')
      const target = freshEmail('target')
      await accounts.requestEmailChange(user.id, target, PASSWORD)
      const token = tokenMailedTo(target)
      await accounts.changePassword(user, { ...CLIENT, sessionId: callerSession }, await fastPasswordHasher.hash(NEW_PASSWORD))
      t.equal(await codeOf(accounts.verifyEmail(token, CLIENT)), 'LINK_TOKEN_INVALID', 'the change asked for under the old password is cancelled')
      t.equal((await users.findById(user.id))?.email, user.email)
      t.equal(await refreshes(user.refreshToken), false, 'another session of the account ended')
      t.ok(await sessions.isLiveSessionOf(user.id, callerSession), 'the caller\'s goes on')
      t.match(mails.at(-1), { to: user.email, template: { kind: 'password_changed', how: 'changed' } })
    })

    t.test('deleteAccount: the password, then the account, its sessions and links are gone', async (t) => {
      const { accounts, account, users, links, mails, events, forgotten, refreshes, tokenMailedTo } = await setup(t, real)
      const user = await account()
      t.equal(await codeOf(accounts.deleteAccount(user.id, 'wrong password')), 'INVALID_CREDENTIALS')
      t.ok(await users.findById(user.id), 'nothing deleted')
      await accounts.requestPasswordReset(user.email, CLIENT)
      const token = tokenMailedTo(user.email)

      await accounts.deleteAccount(user.id, PASSWORD)
      t.equal(await users.findById(user.id), undefined)
      t.equal(await refreshes(user.refreshToken), false, 'its session is over')
      t.equal(await links.find(hashLinkToken(token), ['password_reset'], new Date(0)), undefined, 'its links are gone')
      t.strictSame(events.at(-1), { type: 'account_deleted', userId: user.id, actorId: null }, 'recorded without client details')
      t.strictSame(forgotten, [user.id], 'the older events\' client details are erased')
      t.match(mails.at(-1), { to: user.email, template: { kind: 'account_deleted' } })
      t.equal(await codeOf(accounts.deleteAccount(user.id, PASSWORD)), 'INVALID_CREDENTIALS', 'a token outliving its account')
      t.equal(await codeOf(accounts.resetPassword(token, NEW_PASSWORD, CLIENT)), 'LINK_TOKEN_INVALID')
    })

    t.test('upgradeHash: an older hash is replaced after a login, a changed password is not overwritten', async (t) => {
      const current = createPasswordHasher({ memoryCost: 2048, timeCost: 1, parallelism: 1 }, { concurrency: 1 })
      t.teardown(() => current.stopThreads())
      const { accounts, account, users } = await setup(t, real, { hasher: current })
      const older = await account()
      // Made by the helpers' cheaper hasher: older parameters.
      const legacy = (await users.create(freshEmail('legacy'), await fastPasswordHasher.hash(PASSWORD)))!
      accounts.upgradeHash(older, PASSWORD)
      accounts.upgradeHash(legacy, PASSWORD)
      const upgraded = async (user: User) => (await users.findById(user.id))?.passwordHash.includes('$m=2048,') === true
      t.ok(await eventually(() => upgraded(legacy)), 'an older hash is replaced, off the login\'s path')
      const after = (await users.findById(legacy.id))!
      t.match(after.passwordHash, /^\$argon2id\$v=19\$m=2048,t=1,p=1\$/, 'with the current parameters')
      t.equal(await current.verify(after.passwordHash, PASSWORD), true, 'of the same password')
      t.equal(after.credentialVersion, legacy.credentialVersion, 'no credential change: no session ends')
      t.equal((await users.findById(older.id))?.passwordHash, older.passwordHash, 'a current hash is left alone')

      // A password changed between the login and the re-hash: the change stays. The hashes of the one
      // thread finish in order, so once the later account is upgraded, this one's attempt has been made.
      const raced = (await users.create(freshEmail('raced'), await fastPasswordHasher.hash(PASSWORD)))!
      const later = (await users.create(freshEmail('later'), await fastPasswordHasher.hash(PASSWORD)))!
      await users.updatePassword(raced.id, 'changed-meanwhile')
      accounts.upgradeHash(raced, PASSWORD)
      accounts.upgradeHash(later, PASSWORD)
      t.ok(await eventually(() => upgraded(later)))
      t.equal((await users.findById(raced.id))?.passwordHash, 'changed-meanwhile', 'not overwritten')
    })

    t.test('notifyReuse mails the account', async (t) => {
      const { accounts, account, mails } = await setup(t, real)
      const user = await account()
      accounts.notifyReuse(user.id, CLIENT)
      t.ok(await eventually(() => mails.length > 0))
      t.match(mails, [{ to: user.email, template: { kind: 'refresh_token_reused', ip: CLIENT.ip } }])
    })
  })
}
