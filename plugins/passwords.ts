import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { createPasswordHasher, type PasswordHasher } from '../src/passwords.js'

declare module 'fastify' {
  interface FastifyInstance {
    passwords: PasswordHasher
  }
}

export interface PasswordsPluginOptions {
  /** A hasher owned by the caller (tests share one with cheap parameters); else one with OWASP's, stopped with the app. */
  passwordHasher?: PasswordHasher
}

/** Password hashing (argon2id in threads of its own, src/passwords.ts). */
async function passwordsPlugin (fastify: FastifyInstance, options: PasswordsPluginOptions): Promise<void> {
  if (options.passwordHasher !== undefined) {
    fastify.decorate('passwords', options.passwordHasher)
    return
  }
  const passwords = createPasswordHasher()
  fastify.addHook('onClose', () => passwords.stopThreads())
  fastify.decorate('passwords', passwords)
}

export default fp(passwordsPlugin, { name: 'passwords' })
