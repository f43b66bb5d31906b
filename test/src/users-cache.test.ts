import { sql } from 'drizzle-orm'
import type { FastifyInstance } from 'fastify'
import t from 'tap'
import { buildTestApp, signUpAndLogIn as login, testDatabase } from '../helpers.js'
import { UserRepository } from '../../src/users.js'

/*
 * The user repository's caches, for correctness (never for speed): profiles
 * for /users/me, and login lookups on an embedded database.
 */

const me = (app: FastifyInstance, token: string) =>
  app.inject({ method: 'GET', url: '/users/me', headers: { authorization: `Bearer ${token}` } })

t.test('profile cache: /users/me stays off the database once a profile is known', async (t) => {
  const app = await buildTestApp(t)
  const { accessToken } = await login(app)
  t.equal(app.users.cachedProfiles, 0)
  const first = await me(app, accessToken)
  t.equal(app.users.cachedProfiles, 1)
  t.same((await me(app, accessToken)).json(), first.json(), 'the same answer from the cache')
})

t.test('profile cache: bounded, dropped on a row change, never holds the password hash', async (t) => {
  const database = await testDatabase(t)
  await database.migrate()
  const users = new UserRepository(database.db, { profilesKept: 2 })
  const created = []
  for (let i = 0; i < 3; i++) created.push((await users.create(`profile-${i}@example.com`, `hash-${i}`))!)
  for (const user of created) {
    const profile = await users.findProfile(user.id)
    t.same(profile, { id: user.id, email: user.email, emailVerified: false, roles: [], createdAt: user.createdAt })
    t.equal(users.cachedProfile(user.id), profile, 'then cached')
    t.notOk(profile !== undefined && 'passwordHash' in profile, 'no secret in the cache')
  }
  t.equal(users.cachedProfiles, 2, 'never more than its bound')
  await users.updatePassword(created[2]!.id, 'new-hash')
  t.equal(users.cachedProfiles, 1, 'a changed row leaves the cache')
  t.equal((await users.findById(created[2]!.id))?.passwordHash, 'new-hash', 'credentials are always read fresh')
  t.equal(await users.findProfile('00000000-0000-4000-8000-000000000000'), undefined, 'an unknown user is not cached')
  t.equal(users.cachedProfiles, 1)
})

t.test('credentials cache: only for the embedded database an instance owns; a password change is seen at once', async (t) => {
  const database = await testDatabase(t)
  await database.migrate()
  const users = new UserRepository(database.db, { rememberCredentials: true, credentialsKept: 2 })
  const alice = (await users.create('alice@example.com', 'hash-a1'))!
  await users.create('bob@example.com', 'hash-b')
  await users.create('carol@example.com', 'hash-c')

  t.equal(await users.findByEmail('nobody@example.com'), undefined)
  t.equal(users.cachedCredentials, 0, 'an unknown email is not remembered (a signup has nothing to forget)')
  t.equal((await users.findByEmail(' ALICE@example.com '))?.passwordHash, 'hash-a1')
  t.equal(users.cachedCredentials, 1, 'remembered by normalized email')
  // Another writer of the same database: the remembered row is what a login sees.
  await database.db.execute(sql`update users set password_hash = 'changed-behind-its-back' where id = ${alice.id}`)
  t.equal((await users.findByEmail('alice@example.com'))?.passwordHash, 'hash-a1', 'a hit costs no query')

  await users.updatePassword(alice.id, 'hash-a2')
  t.equal((await users.findByEmail('alice@example.com'))?.passwordHash, 'hash-a2', 'a password change through the repository is seen at once')

  // A lookup racing the change: whichever answers, the change is what stays.
  const [during] = await Promise.all([users.findByEmail('alice@example.com'), users.updatePassword(alice.id, 'hash-a3')])
  t.ok(during?.passwordHash === 'hash-a2' || during?.passwordHash === 'hash-a3')
  t.equal((await users.findByEmail('alice@example.com'))?.passwordHash, 'hash-a3', 'after a racing lookup, the new hash')

  await users.findByEmail('bob@example.com')
  await users.findByEmail('carol@example.com')
  t.equal(users.cachedCredentials, 2, 'never more than its bound')

  const shared = new UserRepository(database.db)
  await shared.findByEmail('bob@example.com')
  t.equal(shared.cachedCredentials, 0, 'off unless asked for')
})

t.test('an app remembers credentials only with the embedded database it opened itself', async (t) => {
  const withOwnDatabase = await buildTestApp(t, { ownDatabase: true })
  const email = 'own@example.com'
  await withOwnDatabase.inject({ method: 'POST', url: '/auth/signup', payload: { email, password: 'a password of mine' } })
  t.equal((await withOwnDatabase.inject({ method: 'POST', url: '/auth/login', payload: { email, password: 'a password of mine' } })).statusCode, 200)
  t.equal(withOwnDatabase.users.cachedCredentials, 1)

  const withGivenDatabase = await buildTestApp(t)
  await withGivenDatabase.inject({ method: 'POST', url: '/auth/signup', payload: { email, password: 'a password of mine' } })
  t.equal((await withGivenDatabase.inject({ method: 'POST', url: '/auth/login', payload: { email, password: 'a password of mine' } })).statusCode, 200)
  t.equal(withGivenDatabase.users.cachedCredentials, 0, 'a database handed in may have other writers')
})
