import { cp, mkdir, stat, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import type { Test } from 'tap'
import { DatabaseInUseError, openDatabase } from '../../src/database.js'
import { PASSWORD } from '../helpers.js'
import { adminAnswer, finished, runAdmin } from '../fixtures/admin-cli-process.js'
import {
  jsonPost, requestJson, runScript, startService, stopService, temporaryDataDir
} from '../fixtures/service-process.js'

/*
 * The embedded database is one process's: openDatabase({ dataDir }) takes a
 * lock on DATA_DIR/pgdata (proper-lockfile: a `pgdata.lock` directory beside
 * it, refreshed while held) and refuses a folder another holder has, with a
 * message that says what to do. A lock a crashed process left behind is taken
 * over once it has not been refreshed for 30 seconds. Across processes: while
 * the service runs, `npm run admin` and a second service say so and change
 * nothing; once it stops, the command works.
 */

// Three service processes and two admin commands load the whole service each: past tap's default on a busy machine.
t.setTimeout(240_000)

/** A PGlite cluster made once (initdb costs seconds), copied into a fresh DATA_DIR per test. */
let template: Promise<string> | undefined
async function freshDataDir (test: Test): Promise<string> {
  // Removed when the file ends.
  template ??= temporaryDataDir(t).then(async (folder) => {
    await (await openDatabase({ dataDir: folder })).close()
    return folder
  })
  const dataDir = await temporaryDataDir(test)
  await cp(await template, dataDir, { recursive: true })
  return dataDir
}

const exists = (path: string): Promise<boolean> => stat(path).then(() => true, () => false)

t.test('a second open of a DATA_DIR in use fails with DatabaseInUseError; after close it opens', async (t) => {
  const dataDir = await freshDataDir(t)
  const folder = join(dataDir, 'pgdata')
  const first = await openDatabase({ dataDir })
  t.teardown(() => first.close().catch(() => {}))
  t.ok(await exists(`${folder}.lock`), 'the lock is held beside the folder while open')

  const error = await openDatabase({ dataDir }).then(
    async (second) => { await second.close(); return undefined },
    (error: unknown) => error
  )
  t.ok(error instanceof DatabaseInUseError, 'the second open is refused')
  if (error instanceof DatabaseInUseError) {
    t.equal(error.folder, folder, 'naming the folder')
    t.match(error.message, `the embedded database in ${folder} is in use by another process (is the service running?)`, 'saying what may hold it')
    t.match(error.message, /DATABASE_URL/, 'and the way out: stop it, or use PostgreSQL')
  }
  await t.resolves(first.ping(), 'the refused open left the first one working')
  t.ok(await exists(`${folder}.lock`), 'and its lock in place')

  await first.close()
  t.notOk(await exists(`${folder}.lock`), 'close releases the lock')
  const again = await openDatabase({ dataDir })
  await t.resolves(again.ping(), 'opened again after close')
  await again.close()
})

t.test("a lock left by a killed process is taken over once stale; a live holder's is not", async (t) => {
  const dataDir = await freshDataDir(t)
  const lock = join(dataDir, 'pgdata.lock')
  // What a process killed while holding the database leaves: the lock directory, no longer refreshed.
  await mkdir(lock)
  await t.rejects(openDatabase({ dataDir }), DatabaseInUseError, 'a lock refreshed just now is a live holder\'s: refused')

  const minuteAgo = new Date(Date.now() - 60_000)
  await utimes(lock, minuteAgo, minuteAgo)
  const database = await openDatabase({ dataDir })
  t.teardown(() => database.close().catch(() => {}))
  await t.resolves(database.ping(), 'a lock not refreshed for a minute is taken over')
  t.ok((await stat(lock)).mtimeMs > minuteAgo.getTime() + 30_000, 'and held anew (its time is now)')
  await t.rejects(openDatabase({ dataDir }), DatabaseInUseError, 'by this holder, against the next one')
  await database.close()
  t.notOk(await exists(lock), 'and released on close')
})

t.test('a folder PGlite cannot open fails with its error, and is not left locked', async (t) => {
  const dataDir = await temporaryDataDir(t)
  await mkdir(join(dataDir, 'pgdata'))
  // A data directory of a PostgreSQL major version PGlite is not.
  await writeFile(join(dataDir, 'pgdata', 'PG_VERSION'), '99\n')
  await t.rejects(openDatabase({ dataDir }), /PGlite failed to initialize/, 'PGlite\'s own error')
  await t.rejects(stat(join(dataDir, 'pgdata.lock')), { code: 'ENOENT' }, 'no lock left behind')
  await t.rejects(openDatabase({ dataDir }), /PGlite failed to initialize/, 'so a second attempt meets the same error, not DatabaseInUseError')
})

t.test('while the service runs on the embedded database, npm run admin and a second service refuse clearly; once it stops, the command works', async (t) => {
  const dataDir = await freshDataDir(t)
  const folder = join(dataDir, 'pgdata')
  const service = await startService(t, { DATA_DIR: dataDir })
  const email = 'first-admin@example.com'
  t.equal((await requestJson(`${service.url}/auth/signup`, jsonPost({ email, password: PASSWORD }))).status, 201, 'an account, made by the service')

  // The command, and a second service on the same DATA_DIR, at once.
  const second = runScript('server.ts', { DATA_DIR: dataDir, PORT: '0', LOG_LEVEL: 'info' })
  t.teardown(() => { if (second.exitCode === null) second.kill('SIGKILL') })
  const [held, secondService] = await Promise.all([runAdmin(['grant-role', email, 'admin'], { DATA_DIR: dataDir }), finished(second)])
  t.equal(held.code, 1, 'npm run admin exits 1')
  t.equal(held.stdout, '', 'with no answer')
  t.match(held.stderr, `Cannot run: the embedded database in ${folder} is in use by another process (is the service running?)`,
    'naming the folder and what holds it')
  t.match(held.stderr, 'Stop it first, or use DATABASE_URL (PostgreSQL)', 'and what to do')
  t.notMatch(held.stderr, /\n\s+at /, 'not a stack trace')
  t.equal(secondService.code, 1, 'a second service on the same DATA_DIR exits 1')
  t.match(secondService.stderr, `Cannot start: the embedded database in ${folder} is in use by another process (is the service running?)`,
    'saying the same')
  t.notMatch(secondService.stdout, /Server listening/, 'without listening')
  t.equal((await requestJson(`${service.url}/health`)).status, 200, 'the running service is unharmed')

  t.equal(await stopService(service), 0, 'the service stops')
  const run = await runAdmin(['grant-role', email, 'admin'], { DATA_DIR: dataDir })
  t.equal(run.code, 0, 'then npm run admin exits 0')
  t.equal(run.stdout, `${adminAnswer(email, ['admin'])}\n`, 'and prints the account as changed: the refused run had changed nothing')
})
