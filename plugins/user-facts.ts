import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { UserFactsCache } from '../src/user-facts.js'

declare module 'fastify' {
  interface FastifyInstance {
    userFacts: UserFactsCache
  }
}

/** The per-instance cache of what refreshes read of users (src/user-facts.ts), loaded by primary key. */
async function userFactsPlugin (fastify: FastifyInstance): Promise<void> {
  const { users } = fastify
  fastify.decorate('userFacts', new UserFactsCache(async (userId) => {
    const user = await users.findById(userId)
    if (user === undefined) return undefined
    const { credentialVersion, emailVerified, roles, disabled } = user
    return { credentialVersion, emailVerified, roles, disabled }
  }))
}

export default fp(userFactsPlugin, { name: 'user-facts', dependencies: ['database'] })
