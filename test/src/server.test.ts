import { once } from 'node:events'
import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { TEST_DATABASE_URL, testDatabaseUrl } from '../helpers.js'
import {
  jsonPost as post, requestJson as json, runScript as run, startService, stopService as stop, temporaryDataDir
} from '../fixtures/service-process.js'

t.test('a bad configuration value stops start-up with one line naming the variable', async (t) => {
  const cases: Array<[Record<string, string>, string]> = [
    [{ ACCESS_TOKEN_TTL: 'ten minutes' }, 'ACCESS_TOKEN_TTL'],
    [{ JWT_ALGORITHM: 'none' }, 'JWT_ALGORITHM'],
    [{ JWT_ALGORITHM: 'HS256', JWT_SECRET: 'short' }, 'JWT_SECRET'],
    [{ JWT_PRIVATE_KEY: 'not a key' }, 'JWT_PRIVATE_KEY']
  ]
  for (const [env, variable] of cases) {
    const child = run('server.ts', { DATA_DIR: await temporaryDataDir(t), ...env })
    let stderr = ''
    child.stderr!.on('data', (chunk) => { stderr += chunk })
    const [code] = await once(child, 'exit')
    t.equal(code, 1, `${variable}: exit code 1`)
    const lines = stderr.trim().split('\n')
    t.equal(lines.length, 1, `${variable}: one line`)
    t.match(lines[0], new RegExp(`^Invalid configuration: ${variable}: `), `${variable}: named`)
  }
})

t.test('starts on the embedded defaults, keeps users and key across a restart, stops cleanly on SIGTERM', async (t) => {
  const dataDir = await temporaryDataDir(t)
  const first = await startService(t, { DATA_DIR: dataDir })
  t.same((await json(`${first.url}/health`)).body, { status: 'ok', checks: { database: 'ok', redis: 'disabled', revocationFeed: 'disabled' } })
  t.equal((await json(`${first.url}/auth/signup`, post({ email: 'kept@example.com', password: 'password123' }))).status, 201)
  const firstKeys = (await json(`${first.url}/.well-known/jwks.json`)).body
  t.equal(await stop(first), 0, 'exits 0 on SIGTERM')

  const keyFile = await stat(join(dataDir, 'jwt-eddsa-private.pem'))
  t.equal(keyFile.mode & 0o777, 0o600, 'development key is readable by its owner only')

  const second = await startService(t, { DATA_DIR: dataDir })
  t.same((await json(`${second.url}/.well-known/jwks.json`)).body, firstKeys, 'same key after restart')
  const login = await json(`${second.url}/auth/login`, post({ email: 'kept@example.com', password: 'password123' }))
  t.equal(login.status, 200, 'the user survived the restart')
  t.equal(await stop(second), 0)
})

t.test('two instances starting together on one PostgreSQL both migrate and serve', { skip: TEST_DATABASE_URL === undefined && 'TEST_DATABASE_URL is not set' }, async (t) => {
  const databaseUrl = await testDatabaseUrl(t)
  const [a, b] = await Promise.all([
    startService(t, { DATA_DIR: await temporaryDataDir(t), DATABASE_URL: databaseUrl }),
    startService(t, { DATA_DIR: await temporaryDataDir(t), DATABASE_URL: databaseUrl })
  ])
  t.equal((await json(`${a.url}/auth/signup`, post({ email: 'one@example.com', password: 'password123' }))).status, 201)
  t.equal((await json(`${b.url}/auth/signup`, post({ email: 'ONE@example.com', password: 'password123' }))).status, 409, 'one users table')
  t.equal((await json(`${b.url}/health`)).status, 200)
  t.equal(await stop(a), 0)
  t.equal(await stop(b), 0)
})

t.test('npm run db:migrate applies migrations and exits 0', { skip: TEST_DATABASE_URL === undefined && 'TEST_DATABASE_URL is not set' }, async (t) => {
  const databaseUrl = await testDatabaseUrl(t)
  for (const attempt of ['first', 'second (nothing to do)']) {
    const child = run('migrate.ts', { DATABASE_URL: databaseUrl })
    let stdout = ''
    child.stdout!.on('data', (chunk) => { stdout += chunk })
    const [code] = await once(child, 'exit')
    t.equal(code, 0, `${attempt} run exits 0`)
    t.match(stdout, /Migrations applied \(postgres\)/)
  }
})
