import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { MemorySessionStore } from '../src/memory-session-store.js'
import { RedisSessionStore } from '../src/redis-session-store.js'
import { SESSION_STORE_OPERATIONS, type SessionStore } from '../src/session-store.js'
import { withTiming } from '../src/store-timing.js'

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
  let store = options.sessionStore
  if (store === undefined && fastify.hasDecorator('redis')) {
    // The connection is the redis plugin's, closed by it.
    store = new RedisSessionStore(fastify.redis, { prefix: options.redisKeyPrefix ?? fastify.config.redisKeyPrefix })
  } else if (store === undefined) {
    const memoryStore = new MemorySessionStore(fastify.clock)
    fastify.addHook('onClose', async () => memoryStore.stopSweeping())
    store = memoryStore
  }
  // Every operation timed for the metrics (store latency and errors).
  const timing = fastify.metrics.storeTiming(store instanceof RedisSessionStore ? 'redis' : 'memory')
  fastify.decorate('sessionStore', withTiming(store, SESSION_STORE_OPERATIONS, timing))
}

export default fp(sessionStorePlugin, { name: 'session-store', dependencies: ['config', 'redis', 'metrics'] })
