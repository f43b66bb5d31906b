import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { createPasswordHasher, type PasswordHasher } from '../src/passwords.js'
import { SessionService } from '../src/sessions.js'

declare module 'fastify' {
  interface FastifyInstance {
    sessions: SessionService
    passwords: PasswordHasher
  }
}

export interface SessionsPluginOptions {
  passwordHasher?: PasswordHasher
}

/** The session lifecycle (src/sessions.ts) wired to this app's store, keys and clock. */
async function sessionsPlugin (fastify: FastifyInstance, options: SessionsPluginOptions): Promise<void> {
  const { config, clock } = fastify
  const passwords = options.passwordHasher ?? createPasswordHasher()
  // Hashing threads this app started stop with it; a hasher given as an option is its owner's.
  if (options.passwordHasher === undefined) fastify.addHook('onClose', () => passwords.close())
  fastify.decorate('passwords', passwords)
  fastify.decorate('sessions', new SessionService({
    store: fastify.sessionStore,
    clock,
    policy: config,
    revocations: fastify.revocations,
    users: fastify.userFacts,
    issueAccessToken: (userId, sessionId, notAfter) => fastify.accessTokens.issue(userId, sessionId, notAfter)
  }))
}

export default fp(sessionsPlugin, { name: 'sessions', dependencies: ['config', 'jwt', 'session-store', 'revocations', 'user-facts'] })
