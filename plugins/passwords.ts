import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { createPasswordHasher, type PasswordHasher } from '../src/passwords.js'

declare module 'fastify' {
  interface FastifyInstance {
    passwords: PasswordHasher
  }
}

export interface PasswordsPluginOptions {
  /**
   * A hasher owned by the caller (tests share one with cheap parameters); else one with OWASP's, stopped with the app.
   * Its queue and waits are its own: apps sharing one each report all of them in their metrics.
   */
  passwordHasher?: PasswordHasher
}

/** Password hashing (argon2id in threads of its own, src/passwords.ts). */
async function passwordsPlugin (fastify: FastifyInstance, options: PasswordsPluginOptions): Promise<void> {
  const passwords = options.passwordHasher ?? createPasswordHasher()
  // Stopped with the app only when it is the app's own.
  if (options.passwordHasher === undefined) fastify.addHook('onClose', () => passwords.stopThreads())
  const { metrics } = fastify
  metrics.watch({ hashingQueueDepth: () => passwords.queued })
  const stopObserving = passwords.observe((event) => {
    if ('refused' in event) metrics.hashingRefused()
    else metrics.hashingWaited(event.waitSeconds)
  })
  fastify.addHook('onClose', async () => stopObserving())
  fastify.decorate('passwords', passwords)
}

export default fp(passwordsPlugin, { name: 'passwords', dependencies: ['metrics'] })
