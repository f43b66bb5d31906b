import { spawn } from 'node:child_process'
import { cp, readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import type { Test } from 'tap'
import { openDatabase, type DatabaseLocation } from '../../src/database.js'
import { projectRoot } from '../../src/paths.js'
import { SecurityEventStore } from '../../src/security-event-store.js'
import { UserRepository } from '../../src/users.js'
import {
  NO_RATE_LIMITS, TEST_REDIS_URL, assertErrorShape, buildTestApp, eventually, logIn, me, refresh, signUpAndLogIn, skipUnless,
  testConfig, testDatabaseUrl, testRedis
} from '../helpers.js'
import { adminAnswer as answer, finished, runAdmin as admin, type Finished } from '../fixtures/admin-cli-process.js'
import { ensureBuilt, temporaryDataDir } from '../fixtures/service-process.js'

/*
 * `npm run admin -- <command> <email> [role]` (src/admin-cli.ts) as people run
 * it: a process of its own, with the service's configuration in its
 * environment, on the embedded database and on PostgreSQL (with Redis,
 * running instances hear of the change). It runs from source here (node
 * --import tsx src/admin-cli.ts), so the test tests the code as it is; one
 * test checks that `npm run admin` runs the compile of that file. While the
 * service holds the embedded database, the command refuses clearly:
 * test/src/database-lock.test.ts, with the lock itself.
 */

// Every run is a process that loads the whole service (seconds of CPU each): well past tap's default on a busy machine.
t.setTimeout(300_000)

/** What the command line records as the actor's user agent: who acted, where no account did. */
const CLI_AGENT = 'npm run admin'
const USAGE = /Usage: npm run admin -- <command> <email> \[role\]/
const LAST_ADMIN = 'This is the last account with the role admin: grant the role to another account first'

// The accounts every database here starts with.
const ALICE = 'alice@example.com' // the only admin
const BOB = 'bob@example.com' // role reports
const CAROL = 'carol@example.com' // no role
const UNKNOWN = 'nobody@example.com'

/** Migrates the database and creates the accounts above, as the service would have stored them; closes it. */
async function seed (location: DatabaseLocation): Promise<void> {
  const database = await openDatabase(location)
  try {
    await database.migrate()
    const users = new UserRepository(database.db)
    // Nobody logs in as them here: any hash will do.
    for (const [email, roles] of [[ALICE, ['admin']], [BOB, ['reports']], [CAROL, []]] as const) {
      const user = await users.create(email, '$argon2id$unused')
      if (roles.length > 0) await users.updateAccess(user!.id, () => ({ roles: [...roles] }))
    }
  } finally {
    await database.close()
  }
}

/** A seeded PGlite cluster made once (creating one costs seconds), copied into a fresh DATA_DIR per test. */
let template: Promise<string> | undefined
async function seededDataDir (test: Test): Promise<string> {
  // Removed when the file ends.
  template ??= temporaryDataDir(t).then(async (folder) => {
    await seed({ dataDir: folder })
    return folder
  })
  const dataDir = await temporaryDataDir(test)
  await cp(await template, dataDir, { recursive: true })
  return dataDir
}

interface Account {
  roles: string[]
  disabled: boolean
  /** Its security events, newest first, as the admin routes would show them. */
  events: Array<{ type: string, actorId: string | null, ip: string | null, userAgent: string | null, sessionId: string | null }>
}

/** The accounts as stored (opening the embedded database takes its lock: only while no process holds it). */
async function accounts (location: DatabaseLocation, emails: string[]): Promise<Record<string, Account | undefined>> {
  const database = await openDatabase(location)
  try {
    const users = new UserRepository(database.db)
    const events = new SecurityEventStore(database.db)
    const found: Record<string, Account | undefined> = {}
    for (const email of emails) {
      const user = await users.findByEmail(email)
      if (user === undefined) {
        found[email] = undefined
        continue
      }
      const page = await events.list({ userId: user.id, limit: 100 })
      found[email] = {
        roles: user.roles,
        disabled: user.disabled,
        events: page.events.map(({ type, actorId, ip, userAgent, sessionId }) => ({ type, actorId, ip, userAgent, sessionId }))
      }
    }
    return found
  } finally {
    await database.close()
  }
}

/** An event the command line recorded: no admin account acted, from no address, as `npm run admin`. */
const byCli = (type: string): Account['events'][number] => ({ type, actorId: null, ip: null, userAgent: CLI_AGENT, sessionId: null })

/** Where a group of commands runs: the command's environment, and the database it changes. */
interface Target {
  env: Record<string, string>
  location: DatabaseLocation
}

/**
 * Every command on a database seeded as above, and what it stored. The two
 * groups touch different accounts and run at once, as two admins might: on
 * PostgreSQL on one database, on the embedded database (one process's at a
 * time) each on a copy of its own.
 */
async function everyCommand (t: Test, [first, second]: [Target, Target]): Promise<void> {
  /** The answer line, and on PostgreSQL without Redis the note about running instances. */
  const succeeded = ({ env }: Target, run: Finished, line: string, name: string): void => {
    t.equal(run.code, 0, `${name}: exit 0`)
    const [answerLine, ...rest] = run.stdout.trimEnd().split('\n')
    t.equal(answerLine, line, `${name}: prints ${line}`)
    if ('DATABASE_URL' in env && !('REDIS_URL' in env)) t.match(rest.join('\n'), /^REDIS_URL is unset: a service running now/, `${name}: and what a running instance sees without Redis`)
    else t.same(rest, [], `${name}: and nothing else`)
  }
  const refused = (run: Finished, message: string, name: string): void => {
    t.equal(run.code, 1, `${name}: exit 1`)
    t.equal(run.stdout, '', `${name}: prints no answer`)
    t.match(run.stderr, message, `${name}: says why`)
    t.notMatch(run.stderr, USAGE, `${name}: no usage (the arguments were right)`)
  }

  await Promise.all([
    (async () => {
      refused(await admin(['revoke-role', ALICE, 'admin'], first.env), LAST_ADMIN, 'revoke-role of the only admin')
      refused(await admin(['disable', ALICE], first.env), LAST_ADMIN, 'disable of the only admin')
      succeeded(first, await admin(['grant-role', CAROL, 'admin'], first.env), answer(CAROL, ['admin']), 'grant-role')
    })(),
    (async () => {
      succeeded(second, await admin(['revoke-role', BOB, 'reports'], second.env), answer(BOB, []), 'revoke-role')
      // Any case: one mailbox is one account. The answer names it as stored.
      succeeded(second, await admin(['disable', BOB.toUpperCase()], second.env), answer(BOB, [], true), 'disable')
      succeeded(second, await admin(['enable', BOB], second.env), answer(BOB, []), 'enable')
      refused(await admin(['grant-role', UNKNOWN, 'admin'], second.env), `${UNKNOWN}: no account has this email`, 'an unknown email')
    })()
  ])

  t.strictSame(await accounts(first.location, [ALICE, CAROL]), {
    [ALICE]: { roles: ['admin'], disabled: false, events: [] },
    [CAROL]: { roles: ['admin'], disabled: false, events: [byCli('roles_changed')] }
  }, 'stored: LAST_ADMIN changed and recorded nothing; the grant is a security event of the command line (actorId null)')
  t.strictSame(await accounts(second.location, [BOB, UNKNOWN]), {
    [BOB]: { roles: [], disabled: false, events: [byCli('account_enabled'), byCli('account_disabled'), byCli('roles_changed')] },
    [UNKNOWN]: undefined
  }, 'stored: each change, each a security event of the command line; no account made for the unknown email')
}

t.test('embedded database: grant-role, revoke-role, disable, enable, an unknown email, LAST_ADMIN, and the events', async (t) => {
  const [first, second] = await Promise.all([seededDataDir(t), seededDataDir(t)])
  await everyCommand(t, [{ env: { DATA_DIR: first }, location: { dataDir: first } }, { env: { DATA_DIR: second }, location: { dataDir: second } }])
})

t.test('PostgreSQL: the same', { skip: skipUnless({ postgres: true }) }, async (t) => {
  const url = await testDatabaseUrl(t)
  await seed({ url })
  const target = { env: { DATA_DIR: await temporaryDataDir(t), DATABASE_URL: url }, location: { url } }
  await everyCommand(t, [target, target])
})

t.test('bad arguments: exit 2 with the usage, before touching any database; npm run admin runs the compile of the same code', async (t) => {
  const dataDir = await temporaryDataDir(t)
  const { scripts } = JSON.parse(await readFile(join(projectRoot, 'package.json'), 'utf8')) as { scripts: Record<string, string> }
  t.equal(scripts.admin, 'node dist/src/admin-cli.js', 'npm run admin runs dist/src/admin-cli.js')
  t.match(scripts.preadmin, /\bprestart\b/, 'after the check npm start makes that dist/ exists')
  ensureBuilt()
  const [badRole, unknownCommand, viaNpm] = await Promise.all([
    admin(['grant-role', ALICE, 'Admin'], { DATA_DIR: dataDir }),
    admin(['promote', ALICE, 'admin'], { DATA_DIR: dataDir }),
    // The same arguments through npm, as an operator types them.
    finished(spawn('npm', ['run', '--silent', 'admin', '--', 'promote', ALICE, 'admin'], {
      cwd: projectRoot,
      env: { PATH: process.env.PATH, HOME: process.env.HOME ?? projectRoot, DATA_DIR: dataDir },
      stdio: ['ignore', 'pipe', 'pipe']
    }))
  ])
  const cases: Array<[string, Finished, string]> = [
    ['a bad role name', badRole, 'grant-role needs a role name: a lower-case letter, then up to 31 of a-z, 0-9, _ and -'],
    ['an unknown command', unknownCommand, 'unknown command: promote'],
    ['an unknown command through npm run admin', viaNpm, 'unknown command: promote']
  ]
  for (const [name, run, message] of cases) {
    t.equal(run.code, 2, `${name}: exit 2`)
    t.match(run.stderr, message, `${name}: says what is wrong`)
    t.match(run.stderr, USAGE, `${name}: and the usage`)
    t.equal(run.stdout, '', `${name}: prints no answer`)
  }
  const fromMessage = (stderr: string): string => stderr.slice(stderr.indexOf('unknown command'))
  t.equal(fromMessage(viaNpm.stderr), fromMessage(unknownCommand.stderr), 'npm run admin: the message and usage of the source, compiled')
  t.same(await readdir(dataDir), [], 'DATA_DIR untouched: no database opened, no key made')
})

t.test('a configuration it cannot use, or a database it cannot reach: one line naming the problem, exit 1', async (t) => {
  const dataDir = await temporaryDataDir(t)
  const [badConfig, unreachable] = await Promise.all([
    admin(['enable', ALICE], { DATA_DIR: dataDir, ACCESS_TOKEN_TTL: 'soon' }),
    // Port 1: nothing listens there, so the connection is refused at once.
    admin(['enable', ALICE], { DATA_DIR: dataDir, DATABASE_URL: 'postgres://postgres@127.0.0.1:1/none' })
  ])
  t.equal(badConfig.code, 1)
  t.match(badConfig.stderr, /^Invalid configuration: .*ACCESS_TOKEN_TTL/m, 'the variable is named')
  t.equal(unreachable.code, 1)
  t.match(unreachable.stderr, /^Cannot run: .*ECONNREFUSED/m, 'the database is not reached: said in one line')
  t.notMatch(unreachable.stderr, /^\s+at /m, 'no stack trace')
  t.equal(badConfig.stdout + unreachable.stdout, '', 'no answer printed')
})

t.test('PostgreSQL and Redis: a running instance hears of a disable at once', { skip: skipUnless({ postgres: true, redis: true }) }, async (t) => {
  // The instance as the service runs: PostgreSQL, and Redis under a key prefix of this test's own, which the command shares.
  const url = await testDatabaseUrl(t)
  const database = await openDatabase({ url })
  t.teardown(() => database.close())
  await database.migrate()
  const { prefix } = await testRedis(t)
  const shared = { REDIS_URL: TEST_REDIS_URL!, REDIS_KEY_PREFIX: prefix }
  const app = await buildTestApp(t, { config: await testConfig(t, shared), database, rateLimits: NO_RATE_LIMITS })
  const user = await signUpAndLogIn(app, 'cli-disable')
  t.equal((await me(app, user.accessToken)).statusCode, 200, 'signed in')

  const run = await admin(['disable', user.email], { DATA_DIR: await temporaryDataDir(t), DATABASE_URL: url, ...shared })
  t.equal(run.code, 0, 'disable: exit 0')
  t.equal(run.stdout, `${answer(user.email, [], true)}\n`, 'its answer, and no note about Redis')

  t.ok(await eventually(async () => (await me(app, user.accessToken)).statusCode === 401), 'the access token is refused within a second (polled)')
  assertErrorShape(t, await me(app, user.accessToken), 401, 'ACCESS_TOKEN_REVOKED', 'the access token')
  assertErrorShape(t, await refresh(app, user.refreshToken), 403, 'ACCOUNT_DISABLED', 'the refresh of its session')
  await t.rejects(logIn(app, user.email), /ACCOUNT_DISABLED/, 'and a new login')
})
