import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { eq, inArray } from 'drizzle-orm'
import fc from 'fast-check'
import t from 'tap'
import type { Test } from 'tap'
import { linkDecoys, linkTokens } from '../../drizzle/schema.js'
import type { Database } from '../../src/database.js'
import { LinkTokenStore, hashLinkToken, newLinkToken, type LinkKind, type LinkRecipient, type LinkToken } from '../../src/link-tokens.js'
import { UserRepository, type User } from '../../src/users.js'
import { freshEmail, skipUnless, testDatabase } from '../helpers.js'

/*
 * The links mailed to accounts (src/link-tokens.ts; API.md, "Accounts, mail
 * and links"): random, stored hashed, single use, expiring, only the latest
 * of a kind working, bound to the account and the address they were mailed
 * to. Each rule once by example, then all of them together in a model-based
 * test, on PGlite and on a real PostgreSQL (where concurrent redeems really
 * race). Every test keeps to accounts of its own, so they share one database.
 */

const MINUTE = 60_000
const START = Date.UTC(2030, 0, 1)
const KINDS: LinkKind[] = ['password_reset', 'email_verification', 'email_change']

const variants = [
  { name: 'PGlite', real: false, skip: false as const },
  { name: 'PostgreSQL', real: true, skip: skipUnless({ postgres: true }) }
]

interface Stores {
  db: Database
  users: UserRepository
  links: LinkTokenStore
}

async function stores (t: Test, real: boolean): Promise<Stores> {
  const { db } = await testDatabase(t, { real })
  return { db, users: new UserRepository(db), links: new LinkTokenStore(db) }
}

async function account ({ users }: Stores, label = 'link'): Promise<User> {
  return (await users.create(freshEmail(label), `hash-of-${label}`))!
}

interface Issued {
  token: string
  tokenHash: string
  recipient: LinkRecipient | undefined
}

/** Issues a link of `kind` for `user` at `now`, valid `ttlMs`; for email_change to `address`. */
async function issue (
  { links }: Stores, kind: LinkKind, user: Pick<User, 'id'>,
  { now = START, ttlMs = 30 * MINUTE, address, unverifiedOnly }: { now?: number, ttlMs?: number, address?: string, unverifiedOnly?: boolean } = {}
): Promise<Issued> {
  const token = newLinkToken()
  const tokenHash = hashLinkToken(token)
  const recipient = await links.issueForUser(kind, user.id, {
    tokenHash, expiresAt: new Date(now + ttlMs), now: new Date(now), address, unverifiedOnly
  })
  return { token, tokenHash, recipient }
}

const rowsOf = (db: Database, userIds: string[]) => db.select().from(linkTokens).where(inArray(linkTokens.userId, userIds))
const at = (ms: number): Date => new Date(ms)

t.test('newLinkToken: 256 random bits, URL-safe; hashLinkToken: its SHA-256', async (t) => {
  const tokens = new Set(Array.from({ length: 1000 }, () => newLinkToken()))
  t.equal(tokens.size, 1000, 'never the same twice')
  for (const token of [...tokens].slice(0, 20)) {
    t.match(token, /^[A-Za-z0-9_-]{43}$/, 'base64url, no padding: fits a URL fragment as it is')
    t.equal(Buffer.from(token, 'base64url').length, 32, '32 bytes')
    t.equal(hashLinkToken(token), createHash('sha256').update(token).digest('base64url'), 'the stored form is SHA-256')
  }
  t.equal(hashLinkToken('a'), hashLinkToken('a'), 'deterministic: a redeem finds the row by it')
  t.not(hashLinkToken('a'), hashLinkToken('b'))
})

for (const { name, real, skip } of variants) {
  t.test(`LinkTokenStore on ${name}`, { skip }, async (t) => {
    const s = await stores(t, real)
    const { db, users, links } = s

    t.test('an email without an account: undefined, no link, a decoy written in its place', async (t) => {
      const before = (await db.select({ userId: linkTokens.userId }).from(linkTokens)).length
      const unknown = freshEmail('nobody')
      for (const kind of KINDS) {
        const token = newLinkToken()
        const answer = await links.issueForEmail(kind, unknown, { tokenHash: hashLinkToken(token), expiresAt: at(START + MINUTE), now: at(START) })
        t.equal(answer, undefined, `${kind}: undefined`)
        // The same statement commits a write either way (its speed must not tell); the decoy holds nothing about the request.
        const decoys = await db.select().from(linkDecoys).where(eq(linkDecoys.tokenHash, hashLinkToken(token)))
        t.equal(decoys.length, 1, `${kind}: one decoy row`)
        t.ok(decoys[0]!.slot >= 0 && decoys[0]!.slot < 1024, 'in one of a bounded number of slots')
        t.equal(await links.redeem(hashLinkToken(token), KINDS, at(START)), undefined, 'which no token redeems')
      }
      t.equal((await db.select({ userId: linkTokens.userId }).from(linkTokens)).length, before, 'no link row written')
      t.same(await db.select().from(linkTokens).where(eq(linkTokens.email, unknown)), [], 'none for that address')
      t.ok((await db.select({ slot: linkDecoys.slot }).from(linkDecoys)).length <= 1024, 'decoys never grow past their slots')
    })

    t.test('issueForEmail: found by its normalized email, mailed to the stored address', async (t) => {
      const user = await account(s)
      const token = newLinkToken()
      const answer = await links.issueForEmail('password_reset', `  ${user.email.toUpperCase()}\t`, {
        tokenHash: hashLinkToken(token), expiresAt: at(START + 30 * MINUTE), now: at(START)
      })
      t.strictSame(answer, { userId: user.id, email: user.email })
      t.strictSame(await links.find(hashLinkToken(token), ['password_reset'], at(START)),
        { userId: user.id, kind: 'password_reset', email: user.email, expiresAt: at(START + 30 * MINUTE) })
    })

    t.test('unverifiedOnly: a link only while the address is unverified', async (t) => {
      const user = await account(s)
      const first = await issue(s, 'email_verification', user, { unverifiedOnly: true })
      t.strictSame(first.recipient, { userId: user.id, email: user.email }, 'unverified: issued')
      t.equal(await users.markEmailVerified(user.id, user.email), true)
      const second = await issue(s, 'email_verification', user, { unverifiedOnly: true })
      t.equal(second.recipient, undefined, 'verified: undefined')
      const byEmail = await links.issueForEmail('email_verification', user.email, {
        tokenHash: hashLinkToken(newLinkToken()), expiresAt: at(START + MINUTE), now: at(START), unverifiedOnly: true
      })
      t.equal(byEmail, undefined, 'by email too')
      const rows = await rowsOf(db, [user.id])
      t.equal(rows.length, 1, 'nothing written for the refusals')
      t.equal(rows[0]?.tokenHash, first.tokenHash, 'the earlier link is left as it was')
      t.strictSame((await issue(s, 'password_reset', user, { unverifiedOnly: false })).recipient, { userId: user.id, email: user.email },
        'without the flag, a verified account gets its link')
    })

    t.test('issueForUser: to the account\'s address, or for email_change to the new one (normalized)', async (t) => {
      const user = await account(s)
      t.strictSame((await issue(s, 'email_verification', user)).recipient, { userId: user.id, email: user.email })
      const newEmail = freshEmail('moved')
      const change = await issue(s, 'email_change', user, { address: ` ${newEmail.toUpperCase()} ` })
      t.strictSame(change.recipient, { userId: user.id, email: newEmail }, 'the new address, trimmed and lower-cased')
      t.match(await links.find(change.tokenHash, ['email_change'], at(START)), { kind: 'email_change', email: newEmail })
      t.equal((await users.findById(user.id))?.email, user.email, 'the account keeps its address until the link is followed')
      t.equal((await issue(s, 'password_reset', { id: '00000000-0000-4000-8000-000000000000' })).recipient, undefined,
        'an unknown account: undefined')
    })

    t.test('the token\'s hash is stored, never the token', async (t) => {
      const user = await account(s)
      const { token } = await issue(s, 'password_reset', user)
      const rows = await rowsOf(db, [user.id])
      t.equal(rows.length, 1)
      t.equal(rows[0]?.tokenHash, createHash('sha256').update(token).digest('base64url'))
      t.notOk(JSON.stringify(rows).includes(token), 'the token is in no column')
      t.equal(await links.find(token, ['password_reset'], at(START)), undefined, 'the token itself (a leaked column) finds nothing')
    })

    t.test('find does not spend a link; redeem does, once', async (t) => {
      const user = await account(s)
      const { tokenHash } = await issue(s, 'password_reset', user)
      const expected: LinkToken = { userId: user.id, kind: 'password_reset', email: user.email, expiresAt: at(START + 30 * MINUTE) }
      t.strictSame(await links.find(tokenHash, ['password_reset'], at(START)), expected)
      t.strictSame(await links.find(tokenHash, ['password_reset', 'email_verification'], at(START)), expected, 'again, with any list naming its kind')
      t.equal(await links.find(tokenHash, ['email_verification', 'email_change'], at(START)), undefined, 'not as another kind')
      t.equal(await links.redeem(tokenHash, ['email_verification', 'email_change'], at(START)), undefined, 'nor redeemed as one')
      t.strictSame(await links.redeem(tokenHash, ['password_reset'], at(START)), expected, 'which did not spend it')
      t.equal(await links.redeem(tokenHash, ['password_reset'], at(START)), undefined, 'single use')
      t.equal(await links.find(tokenHash, ['password_reset'], at(START)), undefined, 'gone')
      t.same(await rowsOf(db, [user.id]), [], 'the row is deleted')
      t.equal(await links.redeem(hashLinkToken(newLinkToken()), KINDS, at(START)), undefined, 'an unknown token: undefined')
    })

    t.test('expiry: works until its last millisecond; an expired redeem spends it all the same', async (t) => {
      const user = await account(s)
      const { tokenHash } = await issue(s, 'email_verification', user, { ttlMs: 10 * MINUTE })
      const end = START + 10 * MINUTE
      t.ok(await links.find(tokenHash, ['email_verification'], at(end - 1)), '1 ms before')
      t.equal(await links.find(tokenHash, ['email_verification'], at(end)), undefined, 'at its expiry: over')
      t.equal(await links.redeem(tokenHash, ['email_verification'], at(end + MINUTE)), undefined, 'redeemed after: undefined')
      t.equal(await links.redeem(tokenHash, ['email_verification'], at(START)), undefined, 'and spent: even an earlier clock finds nothing')
    })

    t.test('superseding: a newer link of a kind replaces the older; kinds are independent', async (t) => {
      const user = await account(s)
      const olderReset = await issue(s, 'password_reset', user)
      const verification = await issue(s, 'email_verification', user)
      const change = await issue(s, 'email_change', user, { address: freshEmail('elsewhere') })
      const newerReset = await issue(s, 'password_reset', user, { now: START + MINUTE })
      t.equal(await links.find(olderReset.tokenHash, ['password_reset'], at(START + MINUTE)), undefined, 'the older reset link is dead')
      t.equal(await links.redeem(olderReset.tokenHash, ['password_reset'], at(START + MINUTE)), undefined)
      t.ok(await links.find(verification.tokenHash, ['email_verification'], at(START + MINUTE)), 'the verification link still works')
      t.ok(await links.find(change.tokenHash, ['email_change'], at(START + MINUTE)), 'and the email change link')
      t.match(await links.redeem(newerReset.tokenHash, ['password_reset'], at(START + MINUTE)), { expiresAt: at(START + 31 * MINUTE) },
        'the newer one works, with its own expiry')
      t.equal((await rowsOf(db, [user.id])).length, 2, 'one row per kind at most')

      // Another account's links are not touched.
      const other = await account(s)
      const others = await issue(s, 'email_verification', other)
      await issue(s, 'email_verification', user, { now: START + 2 * MINUTE })
      t.ok(await links.find(others.tokenHash, ['email_verification'], at(START + 2 * MINUTE)), 'another account\'s link of the same kind works')
    })

    t.test('N parallel issues of one kind: no error, one row, exactly one of the tokens works', async (t) => {
      const user = await account(s)
      const issued = await Promise.all(Array.from({ length: 12 }, () => issue(s, 'password_reset', user)))
      t.ok(issued.every(({ recipient }) => recipient?.userId === user.id), 'each answered the account')
      t.equal((await rowsOf(db, [user.id])).length, 1)
      const live = await Promise.all(issued.map(({ tokenHash }) => links.find(tokenHash, ['password_reset'], at(START))))
      t.equal(live.filter(Boolean).length, 1, 'exactly one works')
    })

    t.test('N parallel redeems of one token: exactly one gets it', async (t) => {
      for (let round = 0; round < 3; round++) {
        const user = await account(s)
        const { tokenHash } = await issue(s, 'email_verification', user)
        const answers = await Promise.all(Array.from({ length: 20 }, () => links.redeem(tokenHash, ['email_verification', 'email_change'], at(START))))
        t.equal(answers.filter((answer) => answer !== undefined).length, 1, `round ${round + 1}: one of 20`)
      }
    })

    t.test('resetPassword: sets the hash, raises the credential version, verifies the address, spends the link', async (t) => {
      const user = await account(s)
      const { tokenHash } = await issue(s, 'password_reset', user)
      const answer = await links.resetPassword(tokenHash, 'new-hash', at(START + MINUTE))
      t.strictSame(answer, { userId: user.id, email: user.email, credentialVersion: user.credentialVersion + 1 })
      const after = await users.findById(user.id)
      t.match(after, { passwordHash: 'new-hash', credentialVersion: user.credentialVersion + 1, emailVerified: true, email: user.email })
      t.same(await rowsOf(db, [user.id]), [], 'spent')
      t.equal(await links.resetPassword(tokenHash, 'newer-hash', at(START + MINUTE)), undefined, 'a second time: undefined')
      t.equal((await users.findById(user.id))?.passwordHash, 'new-hash', 'and nothing changed')
    })

    t.test('resetPassword refuses an expired link, and spends it', async (t) => {
      const user = await account(s)
      const { tokenHash } = await issue(s, 'password_reset', user, { ttlMs: 30 * MINUTE })
      t.equal(await links.resetPassword(tokenHash, 'late-hash', at(START + 30 * MINUTE)), undefined)
      t.match(await users.findById(user.id), { passwordHash: user.passwordHash, credentialVersion: user.credentialVersion, emailVerified: false },
        'the account is untouched')
      t.same(await rowsOf(db, [user.id]), [], 'the link is spent')
    })

    t.test('resetPassword refuses a link mailed to an address the account no longer has, and spends it', async (t) => {
      const user = await account(s)
      const { tokenHash } = await issue(s, 'password_reset', user)
      const moved = freshEmail('moved')
      t.strictSame(await users.changeEmail(user.id, moved), { previousEmail: user.email })
      t.equal(await links.resetPassword(tokenHash, 'hijack-hash', at(START + MINUTE)), undefined, 'the old mailbox no longer resets it')
      t.match(await users.findById(user.id), { passwordHash: user.passwordHash, credentialVersion: user.credentialVersion, email: moved })
      t.same(await rowsOf(db, [user.id]), [], 'spent')
    })

    t.test('resetPassword cancels a pending email change (asked for under the old password)', async (t) => {
      const user = await account(s)
      const reset = await issue(s, 'password_reset', user)
      const change = await issue(s, 'email_change', user, { address: freshEmail('attacker') })
      const verification = await issue(s, 'email_verification', user)
      t.ok(await links.resetPassword(reset.tokenHash, 'new-hash', at(START)))
      t.equal(await links.find(change.tokenHash, ['email_change'], at(START)), undefined, 'the email change link is dead')
      t.ok(await links.find(verification.tokenHash, ['email_verification'], at(START)), 'a verification link is not')
      t.ok(await links.find((await issue(s, 'email_change', user, { address: freshEmail('later') })).tokenHash, ['email_change'], at(START)),
        'a change asked for afterwards works')
    })

    t.test('a reset refused (the account moved off the link\'s address) changes nothing but spending the link', async (t) => {
      const user = await account(s)
      const reset = await issue(s, 'password_reset', user)
      await users.changeEmail(user.id, freshEmail('moved'))
      const change = await issue(s, 'email_change', user, { address: freshEmail('next') })
      t.equal(await links.resetPassword(reset.tokenHash, 'new-hash', at(START)), undefined, 'refused')
      t.ok(await links.find(change.tokenHash, ['email_change'], at(START)), 'the pending email change is left alone')
    })

    t.test('cancel deletes the account\'s pending links of the kinds named', async (t) => {
      const user = await account(s)
      const other = await account(s)
      const change = await issue(s, 'email_change', user, { address: freshEmail('new') })
      const reset = await issue(s, 'password_reset', user)
      const othersChange = await issue(s, 'email_change', other, { address: freshEmail('new') })
      await links.cancel(user.id, ['email_change'])
      t.equal(await links.find(change.tokenHash, ['email_change'], at(START)), undefined, 'cancelled')
      t.ok(await links.find(reset.tokenHash, ['password_reset'], at(START)), 'another kind stays')
      t.ok(await links.find(othersChange.tokenHash, ['email_change'], at(START)), 'another account\'s stays')
    })

    t.test('resetPassword takes only a reset link', async (t) => {
      const user = await account(s)
      const verification = await issue(s, 'email_verification', user)
      t.equal(await links.resetPassword(verification.tokenHash, 'other-hash', at(START)), undefined)
      t.equal((await users.findById(user.id))?.passwordHash, user.passwordHash)
      t.ok(await links.find(verification.tokenHash, ['email_verification'], at(START)), 'and leaves the verification link alone')
      t.equal(await links.resetPassword(hashLinkToken(newLinkToken()), 'other-hash', at(START)), undefined, 'an unknown token: undefined')
    })

    t.test('N parallel resets with one link: exactly one sets its password, the version rises once', async (t) => {
      const user = await account(s)
      const { tokenHash } = await issue(s, 'password_reset', user)
      const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => links.resetPassword(tokenHash, `hash-${i}`, at(START))))
      const winners = answers.flatMap((answer, i) => answer === undefined ? [] : [i])
      t.equal(winners.length, 1, 'one of ten')
      t.match(await users.findById(user.id), { passwordHash: `hash-${winners[0]}`, credentialVersion: user.credentialVersion + 1 })
    })

    t.test('deleting the account deletes its links', async (t) => {
      const user = await account(s)
      const other = await account(s)
      const issued = await Promise.all(KINDS.map((kind) => issue(s, kind, user, { address: kind === 'email_change' ? freshEmail('new') : undefined })))
      const kept = await issue(s, 'password_reset', other)
      t.equal((await rowsOf(db, [user.id])).length, 3)
      t.equal(await users.delete(user.id), 'deleted')
      t.same(await rowsOf(db, [user.id]), [], 'cascaded')
      for (const { tokenHash } of issued) t.equal(await links.redeem(tokenHash, KINDS, at(START)), undefined)
      t.ok(await links.find(kept.tokenHash, ['password_reset'], at(START)), 'another account\'s link stays')
    })

    t.test('prune deletes links past their expiry, and only those', async (t) => {
      // Long before every other test's clock: their links are not past expiry at this `now`.
      const base = Date.UTC(2001, 0, 1)
      const user = await account(s)
      const other = await account(s)
      await issue(s, 'password_reset', user, { now: base, ttlMs: MINUTE })
      await issue(s, 'email_verification', user, { now: base, ttlMs: 10 * MINUTE })
      const live = await issue(s, 'email_verification', other, { now: base, ttlMs: 2 * MINUTE })
      t.equal(await links.prune(at(base)), 0, 'nothing is past expiry yet')
      t.equal(await links.prune(at(base + 2 * MINUTE - 1)), 1, 'one')
      t.strictSame((await rowsOf(db, [user.id, other.id])).map((row) => row.kind).sort(), ['email_verification', 'email_verification'])
      t.equal(await links.prune(at(base + 5 * MINUTE)), 1, 'and the next')
      t.equal(await links.redeem(live.tokenHash, KINDS, at(base)), undefined, 'a pruned link is gone')
      t.equal((await rowsOf(db, [user.id])).length, 1, 'the 10-minute link stays')
    })

    t.test('model: only the latest link of a kind works, each at most once, never after expiry, never for another address', async (t) => {
      let steps = 0
      await fc.assert(fc.asyncProperty(fc.commands(COMMANDS, { maxCommands: 40, size: 'max' }), async (commands) => {
        await fc.asyncModelRun(() => setUp(s), commands)
        steps += [...commands].length
      }), { seed: 20_300_114, numRuns: 50 })
      t.pass(`every step answered as the model says (${steps} steps)`)
    })
  })
}

// ---------------------------------------------------------------------------
// The model
//
// Two accounts and three addresses (their own two and a spare). fast-check
// draws sequences of: issue a link (by account or by address, any kind, a
// short or long lifetime, unverified-only), find, redeem, follow it as
// AccountService.verifyEmail does, reset a password with it, move the clock
// (onto expiries too), change an account's email, cancel its pending email
// change (as a password change does), delete an account and sign its email up
// again, prune. After every step that writes, the stored rows of
// the run's accounts must be exactly the model's live links. The fixed seed
// and 50 runs of up to 40 steps take a few seconds on either database, and
// each rule above (expiry, superseding, the address binding) is found broken
// within them when the code breaks it.

/** Users per run, and the addresses they move between: their own two and one nobody has at first. */
const USERS = 2
const ADDRESSES = USERS + 1

interface ModelUser {
  email: string
  deleted: boolean
  emailVerified: boolean
  credentialVersion: number
}

interface ModelLink {
  user: number
  kind: LinkKind
  email: string
  expiresAt: number
  /** Its row exists (issued, not superseded, redeemed, pruned or deleted with its account). */
  live: boolean
}

interface Model {
  now: number
  users: ModelUser[]
  /** By token, in the order issued; a token whose issue answered undefined is never live. */
  links: ModelLink[]
}

interface Real {
  stores: Stores
  /** The account in each user's place now. */
  ids: string[]
  /** Every account the run created, deleted ones too (their links must be gone). */
  allIds: string[]
  addresses: string[]
  /** The tokens issued, in the model's order. */
  tokens: string[]
}

type Command = fc.AsyncCommand<Model, Real>

async function setUp (stores: Stores): Promise<{ model: Model, real: Real }> {
  const created = await Promise.all(Array.from({ length: USERS }, () => account(stores, 'model')))
  const addresses = [...created.map((user) => user.email), freshEmail('model-spare')]
  return {
    model: {
      now: START,
      users: created.map((user) => ({ email: user.email, deleted: false, emailVerified: false, credentialVersion: user.credentialVersion })),
      links: []
    },
    real: { stores, ids: created.map((user) => user.id), allIds: created.map((user) => user.id), addresses, tokens: [] }
  }
}

/** The live (not deleted) user who has `email` now, if any. */
const holderOf = (model: Model, email: string): number | undefined => {
  const index = model.users.findIndex((user) => !user.deleted && user.email === email)
  return index === -1 ? undefined : index
}

/** The token a pick names, counting back from the latest issued; before any, one never issued. */
function pickToken (model: Model, real: Real, pick: number): { token: string, link: ModelLink | undefined } {
  if (real.tokens.length === 0) return { token: newLinkToken(), link: undefined }
  const index = real.tokens.length - 1 - (pick % real.tokens.length)
  return { token: real.tokens[index]!, link: model.links[index] }
}

/** What the store answers for a token's link, per the model: live, of one of `kinds`, not expired. */
function answerOf (model: Model, real: Real, link: ModelLink | undefined, kinds: LinkKind[]): LinkToken | undefined {
  if (link === undefined || !link.live || !kinds.includes(link.kind) || link.expiresAt <= model.now) return undefined
  return { userId: real.ids[link.user]!, kind: link.kind, email: link.email, expiresAt: new Date(link.expiresAt) }
}

/** Spends a token's link in the model as redeem does: a live one of one of `kinds`, expired or not. */
function spend (link: ModelLink | undefined, kinds: LinkKind[]): void {
  if (link !== undefined && link.live && kinds.includes(link.kind)) link.live = false
}

/** The rows of the run's accounts are exactly the model's live links. */
async function checkRows (model: Model, real: Real): Promise<void> {
  const rows = await rowsOf(real.stores.db, real.allIds)
  const actual = rows.map((row) => `${row.tokenHash} ${row.userId} ${row.kind} ${row.email} ${row.expiresAt.getTime()}`).sort()
  const expected = model.links.flatMap((link, i) => link.live
    ? [`${hashLinkToken(real.tokens[i]!)} ${real.ids[link.user]} ${link.kind} ${link.email} ${link.expiresAt}`]
    : []).sort()
  assert.deepEqual(actual, expected, 'the stored links')
}

const spell = (address: string, upper: boolean): string => upper ? ` ${address.toUpperCase()}` : address

class Issue implements Command {
  constructor (
    readonly kind: LinkKind, readonly user: number, readonly ttlMinutes: number,
    /** Through issueForEmail, with this address's account (not for email_change). */
    readonly byAddress: number | undefined,
    /** For email_change: the new address. */
    readonly address: number,
    readonly unverifiedOnly: boolean,
    readonly upper: boolean
  ) {}

  check = (): boolean => true

  async run (model: Model, real: Real): Promise<void> {
    const token = newLinkToken()
    const options = {
      tokenHash: hashLinkToken(token),
      expiresAt: new Date(model.now + this.ttlMinutes * MINUTE),
      now: new Date(model.now),
      unverifiedOnly: this.unverifiedOnly
    }
    const change = this.kind === 'email_change'
    const viaEmail = !change && this.byAddress !== undefined
    const answer = viaEmail
      ? await real.stores.links.issueForEmail(this.kind, spell(real.addresses[this.byAddress!]!, this.upper), options)
      : await real.stores.links.issueForUser(this.kind, real.ids[this.user]!, {
        ...options, ...(change ? { address: spell(real.addresses[this.address]!, this.upper) } : {})
      })

    const user = viaEmail ? holderOf(model, real.addresses[this.byAddress!]!) : (model.users[this.user]!.deleted ? undefined : this.user)
    const issued = user !== undefined && !(this.unverifiedOnly && model.users[user]!.emailVerified)
    const email = issued ? (change ? real.addresses[this.address]! : model.users[user!]!.email) : ''
    assert.deepEqual(answer, issued ? { userId: real.ids[user!], email } : undefined, 'the recipient')
    if (issued) {
      for (const link of model.links) if (link.user === user && link.kind === this.kind) link.live = false
    }
    model.links.push({ user: user ?? -1, kind: this.kind, email, expiresAt: model.now + this.ttlMinutes * MINUTE, live: issued })
    real.tokens.push(token)
    await checkRows(model, real)
  }

  toString = (): string => this.kind === 'email_change'
    ? `issue(email_change, user ${this.user}, to address ${this.address}, ${this.ttlMinutes} min)`
    : this.byAddress === undefined
      ? `issue(${this.kind}, user ${this.user}, ${this.ttlMinutes} min${this.unverifiedOnly ? ', unverified only' : ''})`
      : `issue(${this.kind}, by address ${this.byAddress}${this.upper ? ' in capitals' : ''}, ${this.ttlMinutes} min${this.unverifiedOnly ? ', unverified only' : ''})`
}

class Find implements Command {
  constructor (readonly pick: number, readonly kinds: LinkKind[]) {}
  check = (): boolean => true
  async run (model: Model, real: Real): Promise<void> {
    const { token, link } = pickToken(model, real, this.pick)
    assert.deepEqual(await real.stores.links.find(hashLinkToken(token), this.kinds, new Date(model.now)), answerOf(model, real, link, this.kinds))
  }

  toString = (): string => `find(token #${this.pick}, ${this.kinds.join('|')})`
}

class Redeem implements Command {
  constructor (readonly pick: number, readonly kinds: LinkKind[]) {}
  check = (): boolean => true
  async run (model: Model, real: Real): Promise<void> {
    const { token, link } = pickToken(model, real, this.pick)
    const expected = answerOf(model, real, link, this.kinds)
    assert.deepEqual(await real.stores.links.redeem(hashLinkToken(token), this.kinds, new Date(model.now)), expected)
    spend(link, this.kinds)
    await checkRows(model, real)
  }

  toString = (): string => `redeem(token #${this.pick}, ${this.kinds.join('|')})`
}

/** What AccountService.verifyEmail does with the stores: redeem, then verify the address the link was mailed to, or move to it. */
class Follow implements Command {
  constructor (readonly pick: number) {}
  check = (): boolean => true
  async run (model: Model, real: Real): Promise<void> {
    const kinds: LinkKind[] = ['email_verification', 'email_change']
    const { token, link } = pickToken(model, real, this.pick)
    const expected = answerOf(model, real, link, kinds)
    const redeemed = await real.stores.links.redeem(hashLinkToken(token), kinds, new Date(model.now))
    assert.deepEqual(redeemed, expected, 'redeemed')
    spend(link, kinds)
    if (redeemed !== undefined) {
      const user = model.users[link!.user]!
      if (redeemed.kind === 'email_verification') {
        const holds = user.email === redeemed.email
        assert.equal(await real.stores.users.markEmailVerified(redeemed.userId, redeemed.email), holds, 'verified only for the address it was mailed to')
        if (holds) user.emailVerified = true
      } else {
        const holder = holderOf(model, redeemed.email)
        const taken = holder !== undefined && holder !== link!.user
        assert.deepEqual(await real.stores.users.changeEmail(redeemed.userId, redeemed.email), taken ? 'taken' : { previousEmail: user.email })
        if (!taken) Object.assign(user, { email: redeemed.email, emailVerified: true })
      }
      assert.equal((await real.stores.users.findById(redeemed.userId))?.emailVerified, user.emailVerified, 'emailVerified')
    }
    await checkRows(model, real)
  }

  toString = (): string => `follow(token #${this.pick})`
}

class Reset implements Command {
  constructor (readonly pick: number) {}
  check = (): boolean => true
  async run (model: Model, real: Real): Promise<void> {
    const { token, link } = pickToken(model, real, this.pick)
    const passwordHash = `reset-${newLinkToken()}`
    const answer = await real.stores.links.resetPassword(hashLinkToken(token), passwordHash, new Date(model.now))
    const unexpired = answerOf(model, real, link, ['password_reset']) !== undefined
    const works = unexpired && model.users[link!.user]!.email === link!.email
    spend(link, ['password_reset'])
    // A reset that works cancels the account's pending email change; one refused leaves it.
    if (works) for (const other of model.links) if (other.user === link!.user && other.kind === 'email_change') other.live = false
    if (!works) {
      assert.equal(answer, undefined, 'refused')
    } else {
      const user = model.users[link!.user]!
      user.credentialVersion++
      user.emailVerified = true
      assert.deepEqual(answer, { userId: real.ids[link!.user], email: user.email, credentialVersion: user.credentialVersion })
      assert.equal((await real.stores.users.findById(real.ids[link!.user]!))?.passwordHash, passwordHash, 'the new hash')
    }
    await checkRows(model, real)
  }

  toString = (): string => `resetPassword(token #${this.pick})`
}

/** What a password change does before it changes the password: the pending email change is cancelled. */
class CancelChange implements Command {
  constructor (readonly user: number) {}
  check = (): boolean => true
  async run (model: Model, real: Real): Promise<void> {
    await real.stores.links.cancel(real.ids[this.user]!, ['email_change'])
    for (const link of model.links) if (link.user === this.user && link.kind === 'email_change') link.live = false
    await checkRows(model, real)
  }

  toString = (): string => `cancel(user ${this.user}, email_change)`
}

class Advance implements Command {
  constructor (readonly minutes: number) {}
  check = (): boolean => true
  async run (model: Model): Promise<void> {
    model.now += this.minutes * MINUTE
  }

  toString = (): string => `advance(${this.minutes} min)`
}

class ChangeEmail implements Command {
  constructor (readonly user: number, readonly address: number, readonly upper: boolean) {}
  check = (): boolean => true
  async run (model: Model, real: Real): Promise<void> {
    const user = model.users[this.user]!
    const address = real.addresses[this.address]!
    const answer = await real.stores.users.changeEmail(real.ids[this.user]!, spell(address, this.upper))
    const holder = holderOf(model, address)
    if (user.deleted) assert.equal(answer, undefined, 'no such user')
    else if (holder !== undefined && holder !== this.user) assert.equal(answer, 'taken')
    else {
      assert.deepEqual(answer, { previousEmail: user.email })
      Object.assign(user, { email: address, emailVerified: true })
    }
    await checkRows(model, real)
  }

  toString = (): string => `changeEmail(user ${this.user}, address ${this.address}${this.upper ? ' in capitals' : ''})`
}

class Delete implements Command {
  constructor (readonly user: number) {}
  check = (): boolean => true
  async run (model: Model, real: Real): Promise<void> {
    const user = model.users[this.user]!
    assert.equal(await real.stores.users.delete(real.ids[this.user]!), user.deleted ? 'not-found' : 'deleted')
    user.deleted = true
    for (const link of model.links) if (link.user === this.user) link.live = false
    await checkRows(model, real)
  }

  toString = (): string => `delete(user ${this.user})`
}

/** A deleted user's email signs up again: a new account, which none of the old one's links reach. */
class SignUpAgain implements Command {
  constructor (readonly user: number) {}
  check = (model: Readonly<Model>): boolean => model.users[this.user]!.deleted
  async run (model: Model, real: Real): Promise<void> {
    const user = model.users[this.user]!
    const created = await real.stores.users.create(user.email, 'signed-up-again')
    if (holderOf(model, user.email) !== undefined) {
      assert.equal(created, undefined, 'the email is taken by another account meanwhile')
    } else {
      assert.ok(created, 'the email is free again')
      real.ids[this.user] = created.id
      real.allIds.push(created.id)
      Object.assign(user, { deleted: false, emailVerified: false, credentialVersion: created.credentialVersion })
    }
    await checkRows(model, real)
  }

  toString = (): string => `signUpAgain(user ${this.user})`
}

class Prune implements Command {
  check = (): boolean => true
  async run (model: Model, real: Real): Promise<void> {
    const ours = model.links.filter((link) => link.live && link.expiresAt < model.now)
    // Links of other runs may be pruned too: the count is at least ours.
    assert.ok(await real.stores.links.prune(new Date(model.now)) >= ours.length, 'the count')
    for (const link of ours) link.live = false
    await checkRows(model, real)
  }

  toString = (): string => 'prune()'
}

const user = fc.nat({ max: USERS - 1 })
const address = fc.nat({ max: ADDRESSES - 1 })
// Mostly the latest tokens (a person follows the link just mailed), sometimes any older one.
const pick = fc.oneof(fc.constant(0), fc.nat({ max: 2 }), fc.nat({ max: 1000 }))
const kinds = fc.subarray(KINDS, { minLength: 1 })

/** Weighted: mostly links issued and followed; deletions rare enough that accounts live through most of a run. */
const COMMANDS: Array<fc.Arbitrary<Command>> = [fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constantFrom(...KINDS),
      user,
      ttl: fc.constantFrom(5, 30, 120),
      byAddress: fc.option(address, { nil: undefined }),
      address,
      unverifiedOnly: fc.boolean(),
      upper: fc.boolean()
    }).map(({ kind, user, ttl, byAddress, address, unverifiedOnly, upper }) =>
      new Issue(kind, user, ttl, byAddress, address, kind === 'email_verification' && unverifiedOnly, upper))
  },
  { weight: 2, arbitrary: fc.record({ pick, kinds }).map(({ pick, kinds }) => new Find(pick, kinds)) },
  { weight: 2, arbitrary: fc.record({ pick, kinds }).map(({ pick, kinds }) => new Redeem(pick, kinds)) },
  { weight: 2, arbitrary: pick.map((pick) => new Follow(pick)) },
  { weight: 2, arbitrary: pick.map((pick) => new Reset(pick)) },
  // Steps that land exactly on an expiry (5, 30 and 120 minutes) as well as inside and past it.
  { weight: 3, arbitrary: fc.constantFrom(1, 4, 5, 25, 30, 60).map((minutes) => new Advance(minutes)) },
  { weight: 3, arbitrary: fc.record({ user, address, upper: fc.boolean() }).map(({ user, address, upper }) => new ChangeEmail(user, address, upper)) },
  { weight: 1, arbitrary: user.map((user) => new CancelChange(user)) },
  { weight: 1, arbitrary: user.map((user) => new Delete(user)) },
  { weight: 1, arbitrary: user.map((user) => new SignUpAgain(user)) },
  { weight: 1, arbitrary: fc.constant(new Prune()) }
)]
