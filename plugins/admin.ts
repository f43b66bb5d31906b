import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { AdminService } from '../src/admin.js'
import { UserDirectory } from '../src/user-directory.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** What admins do to accounts (src/admin.ts): the /admin routes and the command line. */
    admin: AdminService
  }
}

async function adminPlugin (fastify: FastifyInstance): Promise<void> {
  const { users, sessions, accounts, securityEvents, securityEventStore, metrics } = fastify
  fastify.decorate('admin', new AdminService({
    users,
    directory: new UserDirectory(fastify.database.db, metrics.storeTiming('postgres')),
    sessions,
    accounts,
    events: securityEvents,
    eventStore: securityEventStore
  }))
}

export default fp(adminPlugin, { name: 'admin', dependencies: ['database', 'sessions', 'accounts', 'security-events', 'metrics'] })
