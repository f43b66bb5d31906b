import { spawnSync } from 'node:child_process'
import { cp, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { openDatabase } from '../../src/database.js'
import { projectRoot } from '../../src/paths.js'
import { ensureBuilt, requestJson, startBuiltService, stopService, temporaryDataDir } from '../fixtures/service-process.js'

/*
 * Starting never writes the code it runs: `npm ci` builds dist/ once
 * (`prepare`), `npm start` only runs it. Several instances started at once
 * from one checkout (each with its own port and embedded storage) all come
 * up, and leave dist/ as they found it.
 */

const INSTANCES = 4

// Building (when dist/ is missing) and four services starting at once take a while on a small machine.
t.setTimeout(300_000)

/** Every file under dist/ with its size and modification time. */
async function snapshot (folder: string): Promise<Record<string, string>> {
  const files: Record<string, string> = {}
  for (const path of await readdir(folder, { recursive: true })) {
    const info = await stat(join(folder, path))
    if (info.isFile()) files[path] = `${info.size} ${info.mtimeMs}`
  }
  return files
}

/**
 * GET /health's status; asked again (as Retry-After says, ten times at most)
 * while the instance sheds load with 429, as it may just after starting on a busy machine.
 */
async function health (url: string): Promise<number> {
  for (let attempt = 1; ; attempt++) {
    const { status, headers } = await requestJson(`${url}/health`)
    if (status !== 429 || attempt === 10) return status
    await sleep(1000 * Number(headers.get('retry-after') ?? 1))
  }
}

t.test('npm start runs the build npm ci made; it builds nothing itself', async (t) => {
  const { scripts } = JSON.parse(await readFile(join(projectRoot, 'package.json'), 'utf8')) as { scripts: Record<string, string> }
  t.equal(scripts.start, 'node dist/src/server.js')
  t.equal(scripts.prepare, 'npm run build', 'npm ci builds, once')
  t.notMatch(scripts.prestart ?? '', /(^|&&|;|\|\|)\s*(npm run build|tsc)\b/, 'starting does not build')

  // Without dist/, starting stops at once and says what to do.
  const empty = await mkdtemp(join(tmpdir(), 'auth-no-dist-'))
  t.teardown(() => rm(empty, { recursive: true, force: true }))
  if (scripts.prestart !== undefined) {
    const check = spawnSync('sh', ['-c', scripts.prestart], { cwd: empty, encoding: 'utf8' })
    t.equal(check.status, 1, 'prestart fails without dist/')
    t.match(check.stderr, /run npm run build/)
  }
})

t.test(`${INSTANCES} instances started at once from one checkout all serve, and stop cleanly`, async (t) => {
  ensureBuilt()
  const dist = join(projectRoot, 'dist')
  const before = await snapshot(dist)

  // Each gets a data folder of its own (embedded PGlite, no Redis) and a port of its own (PORT=0).
  // The folders are copies of one PGlite cluster made here first: creating a cluster (initdb)
  // costs about ten starts, and four at once on a small busy machine can outlast the service's
  // own start-up budget (pluginTimeout), which is not what this test is about. Each instance
  // still applies the migrations to its own copy as it starts.
  const template = await temporaryDataDir(t)
  await (await openDatabase({ dataDir: template })).close()
  const dataDirs = await Promise.all(Array.from({ length: INSTANCES }, async () => {
    const dataDir = await temporaryDataDir(t)
    await cp(template, dataDir, { recursive: true })
    return dataDir
  }))
  const services = await Promise.all(dataDirs.map((dataDir) => startBuiltService(t, { DATA_DIR: dataDir })))
  t.equal(new Set(services.map((service) => service.url)).size, INSTANCES, 'each listens on a port of its own')

  for (const [i, service] of services.entries()) {
    t.match(service.output(), /Server listening at/, `instance ${i + 1} logged that it listens`)
    t.equal(await health(service.url), 200, `instance ${i + 1}: GET /health 200`)
  }

  const codes = await Promise.all(services.map((service) => stopService(service)))
  t.same(codes, Array<number>(INSTANCES).fill(0), 'SIGTERM: each exits 0')
  t.same(await snapshot(dist), before, 'dist/ is as it was: starting wrote none of it')
})
