import { sql } from 'drizzle-orm'
import t from 'tap'
import { ServiceError } from '../../src/errors.js'
import { UserRepository } from '../../src/users.js'
import { skipUnless, testDatabase } from '../helpers.js'

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
