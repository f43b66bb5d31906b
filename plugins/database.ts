import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { openDatabase, type DatabaseHandle } from '../src/database.js'
import { UserRepository } from '../src/users.js'

declare module 'fastify' {
  interface FastifyInstance {
    database: DatabaseHandle
    users: UserRepository
  }
}

export interface DatabasePluginOptions {
  /** An open database owned by the caller; else one is opened from the configuration and closed with the app. */
  database?: DatabaseHandle
}

/** Users in PostgreSQL (or embedded PGlite), migrated before the first request. */
async function databasePlugin (fastify: FastifyInstance, options: DatabasePluginOptions): Promise<void> {
  const { config } = fastify
  let database = options.database
  // The embedded database this instance opens is written by no other process.
  const exclusive = database === undefined && config.databaseUrl === undefined
  if (database === undefined) {
    database = await openDatabase(
      config.databaseUrl !== undefined ? { url: config.databaseUrl } : { dataDir: config.dataDir },
      {
        onIdleError: (error) => fastify.log.warn({ err: error }, 'idle database connection failed'),
        onLockCompromised: (error) => fastify.log.error({ err: error }, 'the embedded database\'s lock was lost: another process may open it')
      }
    )
    const owned = database
    fastify.addHook('onClose', () => owned.close())
  }
  await database.migrate()
  fastify.decorate('database', database)
  fastify.decorate('users', new UserRepository(database.db, { rememberCredentials: exclusive, timing: fastify.metrics.storeTiming('postgres') }))
}

export default fp(databasePlugin, { name: 'database', dependencies: ['config', 'metrics'] })
