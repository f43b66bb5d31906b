import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { MemorySessionStore } from '../src/memory-session-store.js'
import { RedisSessionStore } from '../src/redis-session-store.js'
import type { SessionStore } from '../src/session-store.js'

declare module 'fastify' {
  interface FastifyInstance {
    sessionStore: SessionStore
  }
}

export interface SessionStorePluginOptions {
  sessionStore?: SessionStore
  /** Prefix of every Redis key, so tests (or several services) share one Redis. */
  redisKeyPrefix?: string
}

/** Sessions in Redis when it is configured, else in this process. */
async function sessionStorePlugin (fastify: FastifyInstance, options: SessionStorePluginOptions): Promise<void> {
  if (options.sessionStore !== undefined) {
    fastify.decorate('sessionStore', options.sessionStore)
  } else if (fastify.hasDecorator('redis')) {
    // The connection is the redis plugin's, closed by it.
    fastify.decorate('sessionStore', new RedisSessionStore(fastify.redis, { prefix: options.redisKeyPrefix ?? fastify.config.redisKeyPrefix }))
  } else {
    const store = new MemorySessionStore(fastify.clock)
    fastify.addHook('onClose', async () => store.stopSweeping())
    fastify.decorate('sessionStore', store)
  }
}

export default fp(sessionStorePlugin, { name: 'session-store', dependencies: ['config', 'redis'] })
