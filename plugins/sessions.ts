import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { SessionService } from '../src/sessions.js'

declare module 'fastify' {
  interface FastifyInstance {
    sessions: SessionService
  }
}

/** The session lifecycle (src/sessions.ts) wired to this app's store, keys and clock. */
async function sessionsPlugin (fastify: FastifyInstance): Promise<void> {
  const { config, clock } = fastify
  fastify.decorate('sessions', new SessionService({
    store: fastify.sessionStore,
    clock,
    policy: config,
    revocations: fastify.revocations,
    users: fastify.userFacts,
    events: fastify.securityEvents,
    refreshed: (outcome) => fastify.metrics.refresh(outcome),
    // Read when a reuse happens: the accounts plugin is registered after this one (it ends sessions through it).
    reuseDetected: (userId, client) => fastify.accounts.notifyReuse(userId, client),
    issueAccessToken: (userId, sessionId, notAfter, facts) => fastify.accessTokens.issue(userId, sessionId, notAfter, facts)
  }))
}

export default fp(sessionsPlugin, { name: 'sessions', dependencies: ['config', 'jwt', 'session-store', 'revocations', 'user-facts', 'security-events', 'metrics'] })
