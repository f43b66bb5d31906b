import { spawn } from 'node:child_process'
import { text } from 'node:stream/consumers'
import t from 'tap'
import { projectRoot } from '../src/paths.js'

/*
 * The layout's rules (eslint.config.js, README "Layout") are enforced by
 * `npm run lint`. These cases show that each rule catches what it is meant to,
 * so that a rule that silently stopped matching (a renamed folder, a changed
 * pattern) fails here rather than letting the layout drift.
 */

interface LintMessage { ruleId: string | null, message: string, line: number }

/** ESLint's messages for each source, linted as if it were the project's file at `file` (one process for all). */
async function lint (probes: Array<{ file: string, source: string }>): Promise<LintMessage[][]> {
  const child = spawn(process.execPath, ['test/fixtures/lint-texts.js'], { cwd: projectRoot, stdio: ['pipe', 'pipe', 'inherit'] })
  child.stdin.end(JSON.stringify(probes))
  return JSON.parse(await text(child.stdout))
}

const layoutErrors = (messages: LintMessage[]): string[] =>
  messages.filter((message) => message.ruleId === 'no-restricted-imports').map((message) => message.message)

const cases: Array<{ file: string, source: string, allowed: boolean, why: string }> = [
  // The domain: no HTTP, no framework, no plugins or routes.
  { file: 'src/probe.ts', source: "import type { FastifyInstance } from 'fastify'", allowed: false, why: 'the domain imports fastify' },
  { file: 'src/probe.ts', source: "import fp from 'fastify-plugin'", allowed: false, why: 'the domain imports fastify-plugin' },
  { file: 'src/probe.ts', source: "import cookie from '@fastify/cookie'", allowed: false, why: 'the domain imports a Fastify plugin' },
  { file: 'src/probe.ts', source: "import { createServer } from 'node:http'", allowed: false, why: "the domain uses Node's HTTP objects" },
  { file: 'src/probe.ts', source: "import type { IncomingMessage } from 'node:http'", allowed: false, why: "the domain types Node's HTTP objects" },
  { file: 'src/probe.ts', source: "import { STATUS_CODES } from 'node:http'", allowed: true, why: 'a status text table is fine' },
  { file: 'src/probe.ts', source: "import auth from '../plugins/auth.js'", allowed: false, why: 'the domain imports a plugin' },
  { file: 'src/probe.ts', source: "import { DOCS_PREFIX } from '../plugins/shared/docs.js'", allowed: false, why: 'the domain imports the HTTP side' },
  { file: 'src/probe.ts', source: "import { UserResponse } from '../routes/schemas.js'", allowed: false, why: 'the domain imports routes' },
  { file: 'src/probe.ts', source: "import { ServiceError } from './errors.js'", allowed: true, why: 'the domain imports the domain' },
  // The entry files assemble everything.
  { file: 'src/app.ts', source: "import auth from '../plugins/auth.js'\nimport keys from '../routes/keys.js'", allowed: true, why: 'app.ts assembles plugins and routes' },
  // Plugins: never another plugin or a route; shared modules are fine.
  { file: 'plugins/probe.ts', source: "import auth from './auth.js'", allowed: false, why: 'a plugin imports another plugin' },
  { file: 'plugins/probe.ts', source: "import { DOCS_PREFIX } from './shared/docs.js'", allowed: true, why: 'a plugin imports a shared module' },
  { file: 'plugins/probe.ts', source: "import keys from '../routes/keys.js'", allowed: false, why: 'a plugin imports a route' },
  { file: 'plugins/probe.ts', source: "import { buildApp } from '../src/app.js'", allowed: false, why: 'a plugin imports the entry file' },
  { file: 'plugins/probe.ts', source: "import { SessionService } from '../src/sessions.js'", allowed: true, why: 'a plugin wires the domain' },
  { file: 'plugins/shared/probe.ts', source: "import auth from '../auth.js'", allowed: false, why: 'a shared module imports a plugin' },
  // Routes: never a plugin's file or another route module; storage only through the domain.
  { file: 'routes/probe.ts', source: "import cookie from '../plugins/cookie.js'", allowed: false, why: "a route imports a plugin's file" },
  { file: 'routes/probe.ts', source: "import { errorResponses } from '../plugins/shared/openapi.js'", allowed: true, why: 'a route imports a shared module' },
  { file: 'routes/probe.ts', source: "import users from './users.js'", allowed: false, why: 'a route module imports another' },
  { file: 'routes/probe.ts', source: "import { UserResponse } from './schemas.js'", allowed: true, why: 'a route imports the shared schemas' },
  { file: 'routes/probe.ts', source: "import { sql } from 'drizzle-orm'", allowed: false, why: 'a route queries the database' },
  { file: 'routes/probe.ts', source: "import { Redis } from 'ioredis'", allowed: false, why: 'a route talks to Redis' },
  { file: 'routes/probe.ts', source: "import { openDatabase } from '../src/database.js'", allowed: false, why: 'a route opens the database' },
  { file: 'routes/probe.ts', source: "import { RedisSessionStore } from '../src/redis-session-store.js'", allowed: false, why: 'a route uses a store' },
  { file: 'routes/probe.ts', source: "import { ServiceError } from '../src/errors.js'", allowed: true, why: 'a route uses the domain' }
]

t.test('each layout rule refuses what it is meant to, and only that', async (t) => {
  const results = await lint(cases.map(({ file, source }) => ({ file, source: `${source}\nexport const probe = 1\n` })))
  for (const [index, { file, allowed, why }] of cases.entries()) {
    const errors = layoutErrors(results[index]!)
    if (allowed) t.same(errors, [], `allowed: ${why} (${file})`)
    else t.ok(errors.length > 0, `refused: ${why} (${file}): ${errors.join('; ')}`)
  }
})
