import { sql } from 'drizzle-orm'
import t from 'tap'
import { ServiceError } from '../../src/errors.js'
import { UserRepository } from '../../src/users.js'
import { freshEmail, skipUnless, testDatabase } from '../helpers.js'

/*
 * The user repository's failures: STORE_UNAVAILABLE, with a cause that can be
 * logged without leaking what the statement carried.
 */

const variants = [
  { name: 'PGlite', onServer: false, skip: false as const },
  { name: 'PostgreSQL', onServer: true, skip: skipUnless({ postgres: true }) }
]

for (const { name, onServer, skip } of variants) {
  t.test(`a failed query's cause names the failure, never its parameters (${name})`, { skip }, async (t) => {
    // A database of its own without the users table: every statement fails ("relation does not exist").
    const database = await testDatabase(t, { real: onServer, fresh: true })
    await database.db.execute(sql`drop table users cascade`)
    const users = new UserRepository(database.db)
    const email = 'leak-check@example.com'
    const passwordHash = '$argon2id$v=19$m=19456,t=2,p=1$c2VjcmV0LXNhbHQ$c2VjcmV0LWhhc2gtdGhhdC1tdXN0LW5vdC1sZWFr'
    const error = await users.create(email, passwordHash).catch((caught: unknown) => caught)
    t.ok(error instanceof ServiceError && error.code === 'STORE_UNAVAILABLE')
    const cause = (error as ServiceError).cause as Error & { code?: string }
    t.match(cause.message, /relation "users" does not exist/, 'the driver\'s message')
    t.equal(cause.code, '42P01', 'and its code')
    const logged = JSON.stringify({ ...cause, message: cause.message, stack: cause.stack })
    for (const secret of [email, passwordHash, 'argon2id']) t.notOk(logged.includes(secret), `no ${secret.slice(0, 16)}… in the cause`)
    const lookup = await users.findByEmail(email).catch((caught: unknown) => caught) as ServiceError
    t.notOk(JSON.stringify({ ...(lookup.cause as object), message: (lookup.cause as Error).message }).includes(email), 'nor in a lookup\'s')
  })
}

/*
 * What issue 14 adds: addresses that change and get verified, accounts that
 * are deleted, hashes upgraded in place, and the caches that must follow
 * (an old email must not keep logging in from a remembered row).
 */

const UNKNOWN_ID = '00000000-0000-4000-8000-000000000000'

for (const { name, onServer, skip } of variants) {
  t.test(`account changes (${name})`, { skip }, async (t) => {
    const { db } = await testDatabase(t, { real: onServer })
    const users = new UserRepository(db)
    const create = async (label = 'user') => (await users.create(freshEmail(label), `hash-of-${label}`))!

    t.test('changeEmail answers the previous email; the account moves, verified', async (t) => {
      const user = await create('mover')
      const target = freshEmail('moved')
      t.strictSame(await users.changeEmail(user.id, `  ${target.toUpperCase()} `), { previousEmail: user.email })
      t.match(await users.findById(user.id), { email: target, emailVerified: true, passwordHash: user.passwordHash, credentialVersion: user.credentialVersion },
        'stored normalized, verified (the link proved it), credentials untouched')
      t.equal(await users.findByEmail(user.email), undefined, 'the old email finds nothing')
      t.equal((await users.findByEmail(target.toUpperCase()))?.id, user.id, 'the new one finds the account, in any case')
      t.ok(await users.create(user.email, 'hash'), 'the old email is free for a new account')
    })

    t.test('changeEmail to an address another account has: taken, in any case, and nothing changes', async (t) => {
      const user = await create('mover')
      const other = await create('holder')
      t.equal(await users.changeEmail(user.id, other.email), 'taken')
      t.equal(await users.changeEmail(user.id, other.email.toUpperCase()), 'taken', 'upper-cased')
      // A row stored with capitals (older data, a manual fix): the unique index is on lower(email).
      const mixed = freshEmail('mixed')
      await db.execute(sql`insert into users (email, password_hash) values (${mixed.replace(/^m/, 'M')}, 'x')`)
      t.equal(await users.changeEmail(user.id, mixed), 'taken', 'against a row stored with capitals')
      t.match(await users.findById(user.id), { email: user.email, emailVerified: false })
      t.equal(await users.changeEmail(UNKNOWN_ID, freshEmail('nobody')), undefined, 'an unknown account: undefined')
      t.strictSame(await users.changeEmail(user.id, user.email), { previousEmail: user.email }, 'its own address: a no-op move')
    })

    t.test('two accounts racing to the same address: one wins, the other is told taken', async (t) => {
      for (let round = 0; round < 5; round++) {
        const [a, b] = await Promise.all([create('racer'), create('racer')])
        const target = freshEmail('contested')
        const answers = await Promise.all([users.changeEmail(a.id, target), users.changeEmail(b.id, target)])
        t.equal(answers.filter((answer) => answer === 'taken').length, 1, `round ${round + 1}: one taken`)
        t.equal(answers.filter((answer) => typeof answer === 'object').length, 1, `round ${round + 1}: one moved`)
        const winner = answers[0] === 'taken' ? b : a
        t.equal((await users.findByEmail(target))?.id, winner.id, 'the winner has it')
      }
    })

    t.test('a change racing a signup of the same address: exactly one gets it', async (t) => {
      for (let round = 0; round < 5; round++) {
        const user = await create('racer')
        const target = freshEmail('contested')
        const [changed, signedUp] = await Promise.all([users.changeEmail(user.id, target), users.create(target, 'hash')])
        t.equal(Number(typeof changed === 'object') + Number(signedUp !== undefined), 1, `round ${round + 1}: one of the two`)
        t.equal(changed === 'taken', signedUp !== undefined, 'the other is refused')
      }
    })

    t.test('rehashPassword replaces the hash only while it is still the one read', async (t) => {
      const user = await create('rehash')
      t.equal(await users.rehashPassword(user.id, user.passwordHash, 'upgraded'), true)
      t.match(await users.findById(user.id), { passwordHash: 'upgraded', credentialVersion: user.credentialVersion },
        'same password: no credential change, no session ends')
      t.equal(await users.rehashPassword(user.id, user.passwordHash, 'stale-upgrade'), false, 'a hash read before it changed')
      t.equal((await users.findById(user.id))?.passwordHash, 'upgraded', 'is not written over it')
      await users.updatePassword(user.id, 'changed-meanwhile')
      t.equal(await users.rehashPassword(user.id, 'upgraded', 'late-upgrade'), false, 'a password changed meanwhile')
      t.equal((await users.findById(user.id))?.passwordHash, 'changed-meanwhile', 'is kept')
      t.equal(await users.rehashPassword(UNKNOWN_ID, 'x', 'y'), false, 'an unknown account')
    })

    t.test('markEmailVerified: only for the address it is given', async (t) => {
      const user = await create('verify')
      t.equal(await users.markEmailVerified(user.id, freshEmail('other')), false, 'another address')
      t.equal((await users.findById(user.id))?.emailVerified, false)
      t.equal(await users.markEmailVerified(user.id, user.email), true, 'its own')
      t.equal((await users.findById(user.id))?.emailVerified, true)
      t.equal(await users.markEmailVerified(user.id, user.email), true, 'again: still its address, verified before')
      t.equal(await users.markEmailVerified(UNKNOWN_ID, user.email), false, 'an unknown account')
    })

    t.test('delete: the row goes, once; the email is free again', async (t) => {
      const user = await create('leaver')
      t.equal(await users.delete(user.id), 'deleted')
      t.equal(await users.findById(user.id), undefined)
      t.equal(await users.findByEmail(user.email), undefined)
      t.equal(await users.delete(user.id), 'not-found', 'a second time: it was not there')
      const again = await users.create(user.email, 'new-hash')
      t.ok(again, 'the email signs up again')
      t.not(again?.id, user.id, 'as a new account')
    })

    t.test('caches: every change through the repository drops what it remembered of the account', async (t) => {
      const cached = new UserRepository(db, { rememberCredentials: true })
      const user = (await cached.create(freshEmail('cached'), 'hash-1'))!
      const remember = async () => {
        await cached.findProfile(user.id)
        await cached.findByEmail((await cached.findById(user.id))!.email)
        return { profile: cached.cachedProfile(user.id) !== undefined, credentials: cached.cachedCredentials }
      }
      t.strictSame(await remember(), { profile: true, credentials: 1 }, 'both caches hold the account')

      t.equal(await cached.markEmailVerified(user.id, user.email), true)
      t.equal(cached.cachedProfile(user.id), undefined, 'markEmailVerified: the profile is dropped')
      t.equal(cached.cachedCredentials, 0, 'and the credentials')
      t.equal((await cached.findProfile(user.id))?.emailVerified, true, 'the next read sees it verified')

      await remember()
      t.equal(await cached.rehashPassword(user.id, 'hash-1', 'hash-2'), true)
      t.equal(cached.cachedCredentials, 0, 'rehashPassword: dropped')
      t.equal((await cached.findByEmail(user.email))?.passwordHash, 'hash-2')

      await remember()
      const moved = freshEmail('cached-moved')
      t.strictSame(await cached.changeEmail(user.id, moved), { previousEmail: user.email })
      t.equal(cached.cachedProfile(user.id), undefined, 'changeEmail: the profile is dropped')
      t.equal(await cached.findByEmail(user.email), undefined, 'the old email no longer finds the account from the cache')
      t.equal((await cached.findProfile(user.id))?.email, moved, 'the profile has the new one')

      await remember()
      t.match(await cached.updateAccess(user.id, () => ({ roles: ['reports'], disabled: true })), { after: { roles: ['reports'], disabled: true } })
      t.equal(cached.cachedProfile(user.id), undefined, 'updateAccess: the profile is dropped')
      t.equal(cached.cachedCredentials, 0, 'and the credentials')
      t.match(await cached.findByEmail(moved), { roles: ['reports'], disabled: true }, 'the next login lookup sees the roles and the disabling')
      t.strictSame((await cached.findProfile(user.id))?.roles, ['reports'], 'and the profile the roles')

      await remember()
      t.equal(await cached.delete(user.id), 'deleted')
      t.equal(cached.cachedProfile(user.id), undefined, 'delete: the profile is dropped')
      t.equal(await cached.findByEmail(moved), undefined, 'and a deleted account no longer logs in from the cache')
      t.equal(await cached.findProfile(user.id), undefined)
    })

    /*
     * On PostgreSQL a read and the change go over different connections: a
     * read that saw the old row can be answered after the change has
     * committed and dropped the cache entry, and then remember the old row.
     * Each round starts reads one after another while the change is under way.
     */
    t.test('caches: profile reads in flight during an email change never leave the old profile cached', async (t) => {
      let stale = 0
      const rounds = 200
      for (let round = 0; round < rounds; round++) {
        const user = await create('in-flight')
        const moved = freshEmail('in-flight-moved')
        const change = users.changeEmail(user.id, moved)
        const reads = []
        for (let read = 0; read < 6; read++) {
          await new Promise((resolve) => setImmediate(resolve))
          reads.push(users.findProfile(user.id))
        }
        await Promise.all([change, ...reads])
        if ((await users.findProfile(user.id))?.email !== moved) stale++
      }
      t.equal(stale, 0, `rounds that left the old email cached: ${stale} of ${rounds}`)
    })

    t.test('caches: a lookup racing a change or a deletion leaves nothing stale behind', async (t) => {
      const cached = new UserRepository(db, { rememberCredentials: true })
      const user = (await cached.create(freshEmail('racing'), 'hash'))!
      const moved = freshEmail('racing-moved')
      await Promise.all([cached.findByEmail(user.email), cached.findProfile(user.id), cached.changeEmail(user.id, moved)])
      t.equal(await cached.findByEmail(user.email), undefined, 'after a racing change, the old email finds nothing')
      t.equal((await cached.findProfile(user.id))?.email, moved)
      await Promise.all([cached.findByEmail(moved), cached.findProfile(user.id), cached.delete(user.id)])
      t.equal(await cached.findByEmail(moved), undefined, 'after a racing deletion, nothing')
      t.equal(await cached.findProfile(user.id), undefined)
    })

    t.test('forgetUser and forgetAll: a change made by another instance is read afresh once it is told', async (t) => {
      const cached = new UserRepository(db, { rememberCredentials: true })
      const [a, b] = [(await cached.create(freshEmail('feed-a'), 'hash-a'))!, (await cached.create(freshEmail('feed-b'), 'hash-b'))!]
      for (const user of [a, b]) {
        await cached.findProfile(user.id)
        await cached.findByEmail(user.email)
      }
      // Another instance's repository, with caches of its own, changes both accounts.
      const elsewhere = new UserRepository(db)
      const [movedA, movedB] = [freshEmail('feed-a-moved'), freshEmail('feed-b-moved')]
      await elsewhere.changeEmail(a.id, movedA)
      await elsewhere.changeEmail(b.id, movedB)
      t.equal((await cached.findProfile(a.id))?.email, a.email, 'until told, this instance answers from its cache')

      cached.forgetUser(a.id)
      t.equal((await cached.findProfile(a.id))?.email, movedA, 'forgetUser: the changed account is read afresh')
      t.equal(await cached.findByEmail(a.email), undefined, 'and its old email no longer finds it')
      t.equal((await cached.findProfile(b.id))?.email, b.email, 'the other account is still remembered')

      cached.forgetAll()
      t.equal(cached.cachedCredentials, 0, 'forgetAll: no credentials left')
      t.equal(cached.cachedProfile(b.id), undefined, 'nor profiles')
      t.equal((await cached.findProfile(b.id))?.email, movedB)
      t.equal(await cached.findByEmail(b.email), undefined)
    })
  })
}
