import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { AccountService } from '../src/accounts.js'
import { describeStoreError } from '../src/errors.js'
import { LinkTokenStore } from '../src/link-tokens.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The account flows over mail (src/accounts.ts): reset, verification, email change, deletion, notices. */
    accounts: AccountService
  }
}

/** How often links past their expiry are deleted (a newer link replaces an account's older one anyway). */
const PRUNE_INTERVAL_MS = 60 * 60 * 1000

/** Account flows wired to this app's users, links, sessions, hasher, mail and event log. */
async function accountsPlugin (fastify: FastifyInstance): Promise<void> {
  const { config, clock, metrics, securityEvents, securityEventStore } = fastify
  const links = new LinkTokenStore(fastify.database.db, metrics.storeTiming('postgres'))
  fastify.decorate('accounts', new AccountService({
    users: fastify.users,
    links,
    sessions: fastify.sessions,
    passwords: fastify.passwords,
    mail: fastify.mail,
    events: securityEvents,
    async forgetClientDetails (userId) {
      // Events still waiting to be written would otherwise be written with their details afterwards.
      await securityEvents.flush()
      await securityEventStore.forgetClientDetails(userId).catch((error: unknown) => {
        fastify.log.warn({ err: describeStoreError(error), userId }, 'could not erase the client details of a deleted account\'s events')
      })
    },
    clock,
    policy: config,
    log: fastify.log
  }))

  const timer = setInterval(() => {
    links.prune(new Date(clock.now())).catch((error: unknown) => {
      fastify.log.warn({ err: describeStoreError(error) }, 'expired links: pruning failed, will retry')
    })
  }, PRUNE_INTERVAL_MS).unref()
  fastify.addHook('onClose', async () => clearInterval(timer))
}

export default fp(accountsPlugin, {
  name: 'accounts',
  dependencies: ['config', 'database', 'sessions', 'passwords', 'mail', 'security-events', 'metrics']
})
