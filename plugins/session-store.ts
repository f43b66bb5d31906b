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
  const store = options.sessionStore ?? (fastify.hasDecorator('redis')
    ? new RedisSessionStore(fastify.redis, { prefix: options.redisKeyPrefix ?? fastify.config.redisKeyPrefix })
    : new MemorySessionStore(fastify.clock))
  if (options.sessionStore === undefined) fastify.addHook('onClose', () => store.close())
  fastify.decorate('sessionStore', store)
}

export default fp(sessionStorePlugin, { name: 'session-store', dependencies: ['config', 'redis'] })
