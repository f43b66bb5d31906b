import type { Clock } from './clock.js'
import type { Config } from './config.js'
import { ServiceError } from './errors.js'
import { hashLinkToken, newLinkToken, type LinkKind, type LinkRecipient, type LinkTokenStore } from './link-tokens.js'
import type { MailTemplate } from './mail-templates.js'
import type { PasswordHasher } from './passwords.js'
import type { SecurityEventRecorder } from './security-events.js'
import type { AdminActor, Caller, ClientInfo, SessionService } from './sessions.js'
import type { User, UserRepository } from './users.js'

/** Where mail goes: queued, never awaited, never failing the caller (src/mail.ts). */
export interface MailSender {
  send(to: string, template: MailTemplate): void
}

export type AccountPolicy = Pick<Config, 'publicUrl' | 'appUrl' | 'passwordResetTtl' | 'emailVerificationTtl'>

/** Where failures that no answer waits for are reported. */
export interface AccountLog {
  warn(details: object, message: string): void
}

export interface AccountServiceDeps {
  users: UserRepository
  links: LinkTokenStore
  sessions: SessionService
  passwords: PasswordHasher
  mail: MailSender
  events: SecurityEventRecorder
  /** Erases the client details (address, user agent) of a deleted account's events, once those waiting to be written are. */
  forgetClientDetails(userId: string): Promise<void>
  clock: Clock
  policy: AccountPolicy
  log: AccountLog
}

/** Which link a request to verify an address is about: the signed-in user's, or the account of an email. */
export type VerificationTarget = { userId: string } | { email: string }

/** The path of each kind of link: under APP_URL, or under PUBLIC_URL's /account/ (the built-in pages). */
const LINK_PATHS: Record<LinkKind, string> = {
  password_reset: 'reset-password',
  email_verification: 'verify-email',
  email_change: 'verify-email'
}

/**
 * The account flows that go through mail (API.md, "Accounts, mail and
 * links"): password reset, address verification, email change, deletion;
 * and the notices an account is mailed. No HTTP in it: errors are
 * ServiceErrors from the catalogue.
 */
export class AccountService {
  constructor (private readonly deps: AccountServiceDeps) {}

  /** The link that opens `token`'s page: the token in the fragment, which browsers never send to a server. */
  linkFor (kind: LinkKind, token: string): string {
    const { appUrl, publicUrl } = this.deps.policy
    const base = appUrl ?? `${publicUrl}/account`
    return `${base}/${LINK_PATHS[kind]}#token=${token}`
  }

  /**
   * Mails a reset link when the email has an account. The same work either
   * way (a token made and hashed, one statement that writes one row: the link,
   * or a decoy; one event), and no mail is waited for: the answer, and its
   * time, tell nobody whether the account exists.
   */
  async requestPasswordReset (email: string, client: ClientInfo): Promise<void> {
    const issued = await this.#issue('password_reset', (options) => this.deps.links.issueForEmail('password_reset', email, options))
    // Recorded either way (an unknown email without a user, as a failed login is): the same work, and a trace of probing.
    this.deps.events.record({ type: 'password_reset_requested', userId: issued?.recipient.userId ?? null, ...client })
  }

  /**
   * Sets a new password with a reset link's token, and ends every session of
   * the account. The token is checked before the password is hashed, so a
   * wrong one costs no hashing; then spent together with the change.
   */
  async resetPassword (token: string, newPassword: string, client: ClientInfo): Promise<void> {
    const { links, passwords, sessions, clock, users } = this.deps
    const tokenHash = hashLinkToken(token)
    const link = await links.find(tokenHash, ['password_reset'], new Date(clock.now()))
    if (link === undefined) throw new ServiceError('LINK_TOKEN_INVALID')
    const passwordHash = await passwords.hash(newPassword)
    const reset = await sessions.endAllSessions(link.userId, async () => {
      const changed = await links.resetPassword(tokenHash, passwordHash, new Date(clock.now()))
      // Spent by a concurrent reset meanwhile, or the account moved to another address.
      if (changed === undefined) throw new ServiceError('LINK_TOKEN_INVALID')
      users.forgetUser(changed.userId)
      return changed
    })
    this.deps.events.record({ type: 'password_reset', userId: reset.userId, ...client })
    this.deps.mail.send(reset.email, { kind: 'password_changed', how: 'reset' })
  }

  /**
   * Mails a verification link for the current address of an unverified
   * account: the signed-in user's, or the email's (the same work whatever the
   * account, as for a reset).
   */
  async requestVerification (target: VerificationTarget): Promise<void> {
    const { links } = this.deps
    await this.#issue('email_verification', (options) => 'userId' in target
      ? links.issueForUser('email_verification', target.userId, { ...options, unverifiedOnly: true })
      : links.issueForEmail('email_verification', target.email, { ...options, unverifiedOnly: true }))
  }

  /**
   * After a signup: mails the first verification link. The account exists
   * whatever happens here, so a failure is logged, not answered: the person
   * can ask for a new link.
   */
  async signedUp (userId: string): Promise<void> {
    await this.requestVerification({ userId }).catch((error: unknown) => {
      this.deps.log.warn({ err: error, userId }, 'could not issue the verification link of a new account')
    })
  }

  /**
   * Redeems a verification link: the account's address is verified, or for an
   * email change the account moves to the new address (EMAIL_TAKEN when
   * another account took it meanwhile: the link is spent all the same) and
   * the old address is told.
   */
  async verifyEmail (token: string, client: ClientInfo): Promise<void> {
    const { links, users, sessions, clock } = this.deps
    const link = await links.redeem(hashLinkToken(token), ['email_verification', 'email_change'], new Date(clock.now()))
    if (link === undefined) throw new ServiceError('LINK_TOKEN_INVALID')
    if (link.kind === 'email_verification') {
      // The account's address may have changed since the link was mailed: it proves nothing of the new one.
      if (!await users.markEmailVerified(link.userId, link.email)) throw new ServiceError('LINK_TOKEN_INVALID')
      await sessions.userChanged(link.userId)
      this.deps.events.record({ type: 'email_verified', userId: link.userId, ...client })
      return
    }
    const changed = await users.changeEmail(link.userId, link.email)
    if (changed === undefined) throw new ServiceError('LINK_TOKEN_INVALID')
    if (changed === 'taken') throw new ServiceError('EMAIL_TAKEN', 'Another account took this address since the link was mailed')
    await sessions.userChanged(link.userId)
    this.deps.events.record({ type: 'email_changed', userId: link.userId, ...client })
    this.deps.mail.send(changed.previousEmail, { kind: 'email_changed', newEmail: link.email })
  }

  /**
   * Mails a link to the new address; the email changes when it is followed.
   * Needs the current password. EMAIL_TAKEN when an account has the address
   * now (and again when the link is followed). The current address is told,
   * so an owner whose password is known to someone else hears of it in time.
   */
  async requestEmailChange (userId: string, newEmail: string, password: string): Promise<void> {
    const { users, links, mail } = this.deps
    const user = await this.#checkPassword(userId, password)
    const existing = await users.findByEmail(newEmail)
    if (existing !== undefined) throw new ServiceError('EMAIL_TAKEN')
    const issued = await this.#issue('email_change', (options) => links.issueForUser('email_change', userId, { ...options, address: newEmail }))
    if (issued !== undefined) mail.send(user.email, { kind: 'email_change_requested', newEmail: issued.recipient.email })
  }

  /**
   * Deletes the account, with its password: every session ends (access
   * tokens within a second), the row and its links go, its events keep the
   * user id only, and the email is free to sign up again.
   */
  async deleteAccount (userId: string, password: string): Promise<void> {
    await this.#delete(await this.#checkPassword(userId, password))
  }

  /** An admin deletes the account, as its user can (NOT_FOUND when it went meanwhile). */
  async deleteByAdmin (user: User, actor: AdminActor): Promise<void> {
    await this.#delete(user, actor)
  }

  /** LAST_ADMIN (nothing deleted or ended) when it is the last enabled admin. */
  async #delete (user: User, actor?: AdminActor): Promise<void> {
    const { users, sessions, events } = this.deps
    await sessions.endAllSessions(user.id, async () => {
      const outcome = await users.delete(user.id)
      if (outcome === 'last-admin') throw new ServiceError('LAST_ADMIN')
      // Deleted meanwhile by someone else: as if it never was.
      if (outcome === 'not-found') throw actor === undefined ? new ServiceError('INVALID_CREDENTIALS') : new ServiceError('NOT_FOUND', 'No such user')
    })
    // No client details: the deleted account's events keep its id only (and the admin's, who deleted it).
    events.record({ type: 'account_deleted', userId: user.id, actorId: actor?.id ?? null })
    await this.deps.forgetClientDetails(user.id)
    this.deps.mail.send(user.email, { kind: 'account_deleted' })
  }

  /**
   * A password change through /auth/password (its current password checked,
   * the new one hashed): every other session ends (SessionService), a pending
   * email change asked for by whoever knew the old password is cancelled
   * first, and the account is mailed that its password changed.
   */
  async changePassword (user: User, caller: Caller & { sessionId: string }, passwordHash: string): Promise<void> {
    const { links, sessions, users, mail } = this.deps
    await links.cancel(user.id, ['email_change'])
    await sessions.changeCredentials(user, caller, () => users.updatePassword(user.id, passwordHash))
    mail.send(user.email, { kind: 'password_changed', how: 'changed' })
  }

  /** Mails the account that a spent refresh token came back and its session was ended: someone may hold a copy. */
  notifyReuse (userId: string, client: ClientInfo): void {
    const at = new Date(this.deps.clock.now())
    this.deps.users.findProfile(userId).then((profile) => {
      if (profile !== undefined) this.deps.mail.send(profile.email, { kind: 'refresh_token_reused', at, ip: client.ip })
    }, (error: unknown) => this.deps.log.warn({ err: error }, 'could not mail the notice of a reused refresh token'))
  }

  /**
   * After a login: a password hashed with older parameters is hashed again
   * with the current ones, off the answer's path. Same password, so nothing
   * ends; a password changed meanwhile is not overwritten.
   */
  upgradeHash (user: Pick<User, 'id' | 'passwordHash'>, password: string): void {
    const { passwords, users } = this.deps
    if (!passwords.needsRehash(user.passwordHash)) return
    passwords.hash(password)
      .then((passwordHash) => users.rehashPassword(user.id, user.passwordHash, passwordHash))
      .catch((error: unknown) => this.deps.log.warn({ err: error }, 'could not re-hash a password with the current parameters: will try at the next login'))
  }

  async #checkPassword (userId: string, password: string): Promise<User> {
    const { users, passwords } = this.deps
    const user = await users.findById(userId)
    // A token outliving its account: the same answer as a wrong password, after the same work.
    const valid = user === undefined ? await passwords.verifyAgainstDecoy(password) : await passwords.verify(user.passwordHash, password)
    if (!valid || user === undefined) throw new ServiceError('INVALID_CREDENTIALS')
    return user
  }

  /** Makes a token, lets `store` write its link, and mails the link when there was an account to write it for. */
  async #issue (
    kind: LinkKind,
    store: (options: { tokenHash: string, expiresAt: Date, now: Date }) => Promise<LinkRecipient | undefined>
  ): Promise<{ recipient: LinkRecipient } | undefined> {
    const { clock, policy } = this.deps
    const now = clock.now()
    const expiresAt = new Date(now + (kind === 'password_reset' ? policy.passwordResetTtl : policy.emailVerificationTtl) * 1000)
    const token = newLinkToken()
    const recipient = await store({ tokenHash: hashLinkToken(token), expiresAt, now: new Date(now) })
    if (recipient === undefined) return undefined
    const link = this.linkFor(kind, token)
    this.deps.mail.send(recipient.email, kind === 'email_change'
      ? { kind, link, expiresAt, newEmail: recipient.email }
      : { kind, link, expiresAt })
    return { recipient }
  }
}
