import { ConfigError, loadConfig } from './config.js'
import { openDatabase } from './database.js'

/** `npm run db:migrate`: applies pending migrations to the configured database and exits. */
try {
  const config = loadConfig()
  const database = await openDatabase(config.databaseUrl !== undefined ? { url: config.databaseUrl } : { dataDir: config.dataDir })
  try {
    await database.migrate()
    process.stdout.write(`Migrations applied (${database.kind}).\n`)
  } finally {
    await database.close()
  }
} catch (error) {
  process.stderr.write(error instanceof ConfigError ? `Invalid configuration: ${error.message}\n` : `Migration failed: ${String(error)}\n`)
  process.exitCode = 1
}
