import { createHash, randomBytes, randomInt } from 'node:crypto'
import { and, eq, inArray, lt, sql } from 'drizzle-orm'
import { linkDecoys, linkTokens, users } from '../drizzle/schema.js'
import type { Database } from './database.js'
import { timedQuery, type StoreTiming } from './store-timing.js'
import { normalizeEmail } from './users.js'

/** What a mailed link does: reset the password, verify the account's address, or move the account to a new one. */
export type LinkKind = 'password_reset' | 'email_verification' | 'email_change'

/** A live link, as redeeming it answers: whose, to which address, until when. */
export interface LinkToken {
  userId: string
  kind: LinkKind
  /** The address it was mailed to: the account's own, or for email_change the new one. */
  email: string
  expiresAt: Date
}

/** The account a link was issued for, and the address to mail it to. */
export interface LinkRecipient {
  userId: string
  email: string
}

/** 256 random bits, URL-safe: the token a link carries in its fragment. */
export function newLinkToken (): string {
  return randomBytes(32).toString('base64url')
}

/**
 * What is stored of a token: its SHA-256. The token has 256 bits of entropy,
 * so a plain hash suffices: a leaked table lets nobody forge a link.
 */
export function hashLinkToken (token: string): string {
  return createHash('sha256').update(token).digest('base64url')
}

/** Rows decoy writes spread over: concurrent requests for unknown emails seldom wait for each other's row. */
const DECOY_SLOTS = 1024

export interface IssueOptions {
  tokenHash: string
  expiresAt: Date
  now: Date
}

/**
 * The links mailed to accounts (table link_tokens), one live link per account
 * and kind: issuing replaces the account's previous link of that kind, which
 * stops working. Single use: redeeming deletes the row.
 */
export class LinkTokenStore {
  constructor (private readonly db: Database, private readonly timing?: StoreTiming) {}

  /**
   * Issues a link for the account with this email, if there is one (and, with
   * `unverifiedOnly`, only while its address is unverified), in one statement
   * whether or not there is: without one, the same statement writes a decoy
   * row instead, so both commit one written row. Answers the recipient, or
   * undefined.
   */
  async issueForEmail (kind: LinkKind, email: string, options: IssueOptions & { unverifiedOnly?: boolean }): Promise<LinkRecipient | undefined> {
    return this.#issue('issueLinkForEmail', kind, sql`lower(${users.email}) = ${normalizeEmail(email)}`, options)
  }

  /**
   * Issues a link for the account with this id; for email_change, to
   * `address` (the new one), else to the account's own address.
   */
  async issueForUser (kind: LinkKind, userId: string, options: IssueOptions & { unverifiedOnly?: boolean, address?: string }): Promise<LinkRecipient | undefined> {
    return this.#issue('issueLinkForUser', kind, sql`${users.id} = ${userId}`, options)
  }

  /** The live link of a token of one of `kinds`, without spending it; undefined when unknown, superseded or expired. */
  async find (tokenHash: string, kinds: LinkKind[], now: Date): Promise<LinkToken | undefined> {
    const rows = await timedQuery(this.timing, 'findLink', () => this.db.select().from(linkTokens)
      .where(and(eq(linkTokens.tokenHash, tokenHash), inArray(linkTokens.kind, kinds)))
      .limit(1))
    const link = rows[0] === undefined ? undefined : toLink(rows[0])
    return link !== undefined && link.expiresAt > now ? link : undefined
  }

  /** Spends the link of a token of one of `kinds`: deleted whatever happens next. Undefined when unknown, superseded or expired. */
  async redeem (tokenHash: string, kinds: LinkKind[], now: Date): Promise<LinkToken | undefined> {
    const rows = await timedQuery(this.timing, 'redeemLink', () => this.db.delete(linkTokens)
      .where(and(eq(linkTokens.tokenHash, tokenHash), inArray(linkTokens.kind, kinds)))
      .returning())
    const link = rows[0] === undefined ? undefined : toLink(rows[0])
    return link !== undefined && link.expiresAt > now ? link : undefined
  }

  /**
   * Spends a password-reset link and sets the password in one statement: both
   * or neither. Only while the account still has the address the link was
   * mailed to; the address then counts as verified (its owner read the mail).
   * Raises the credential version, and cancels a pending email change (asked
   * for by whoever had the old password). Answers the account and its new
   * version, or undefined (the link is spent either way, when it existed).
   */
  async resetPassword (tokenHash: string, passwordHash: string, now: Date): Promise<(LinkRecipient & { credentialVersion: number }) | undefined> {
    const answer = await timedQuery(this.timing, 'resetPassword', () => this.db.execute(sql`
      with link as (
        delete from ${linkTokens}
        where ${linkTokens.tokenHash} = ${tokenHash} and ${linkTokens.kind} = 'password_reset'
        returning user_id, email, expires_at
      ), changed as (
        update ${users}
        set password_hash = ${passwordHash}, credential_version = ${users.credentialVersion} + 1,
          email_verified = true, updated_at = ${now}::timestamptz
        from link
        where ${users.id} = link.user_id and ${users.email} = link.email and link.expires_at > ${now}::timestamptz
        returning ${users.id} as user_id, ${users.email} as email, ${users.credentialVersion} as credential_version
      ), pending_change as (
        delete from ${linkTokens}
        where ${linkTokens.userId} = (select user_id from changed) and ${linkTokens.kind} = 'email_change'
      )
      select user_id as "userId", email, credential_version as "credentialVersion" from changed`))
    // node-postgres and PGlite both answer a raw statement with its `rows`.
    return (answer as unknown as { rows: Array<LinkRecipient & { credentialVersion: number }> }).rows[0]
  }

  /** Deletes the account's pending links of these kinds (a password change cancels an email change asked for under the old one). */
  async cancel (userId: string, kinds: LinkKind[]): Promise<void> {
    await timedQuery(this.timing, 'cancelLinks', () => this.db.delete(linkTokens)
      .where(and(eq(linkTokens.userId, userId), inArray(linkTokens.kind, kinds))))
  }

  /** Deletes links past their expiry; answers how many. */
  async prune (now: Date): Promise<number> {
    const rows = await timedQuery(this.timing, 'pruneLinks', () => this.db.delete(linkTokens)
      .where(lt(linkTokens.expiresAt, now))
      .returning({ userId: linkTokens.userId }))
    return rows.length
  }

  async #issue (
    operation: string, kind: LinkKind, account: ReturnType<typeof sql>,
    { tokenHash, expiresAt, now, unverifiedOnly = false, address }: IssueOptions & { unverifiedOnly?: boolean, address?: string }
  ): Promise<LinkRecipient | undefined> {
    // Parameters in a select list would be text: each is cast to its column's type.
    const mailedTo = address === undefined ? sql`${users.email}` : sql`${normalizeEmail(address)}::text`
    // Without an account to write a link for, a decoy row is written in its place (see linkDecoys).
    const answer = await timedQuery(this.timing, operation, () => this.db.execute(sql`
      with issued as (
        insert into ${linkTokens} (user_id, kind, token_hash, email, expires_at, created_at)
        select ${users.id}, ${kind}::text, ${tokenHash}::text, ${mailedTo}, ${expiresAt}::timestamptz, ${now}::timestamptz
        from ${users}
        where ${account} ${unverifiedOnly ? sql`and not ${users.emailVerified}` : sql``}
        on conflict (user_id, kind) do update
        set token_hash = excluded.token_hash, email = excluded.email, expires_at = excluded.expires_at, created_at = excluded.created_at
        returning user_id, email
      ), decoy as (
        insert into ${linkDecoys} (slot, token_hash, expires_at, created_at)
        select ${randomInt(DECOY_SLOTS)}::integer, ${tokenHash}::text, ${expiresAt}::timestamptz, ${now}::timestamptz
        where not exists (select 1 from issued)
        on conflict (slot) do update set token_hash = excluded.token_hash, expires_at = excluded.expires_at, created_at = excluded.created_at
      )
      select user_id as "userId", email from issued`))
    return (answer as unknown as { rows: LinkRecipient[] }).rows[0]
  }
}

function toLink (row: typeof linkTokens.$inferSelect): LinkToken {
  return { userId: row.userId, kind: row.kind as LinkKind, email: row.email, expiresAt: row.expiresAt }
}
