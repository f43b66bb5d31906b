import fastifyRedis from '@fastify/redis'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { Redis } from 'ioredis'
import { describeStoreError } from '../src/errors.js'
import { createRedisClient } from '../src/redis-client.js'

export interface RedisPluginOptions {
  /** A connection owned by the caller (tests share one); else one is opened from REDIS_URL. */
  redis?: Redis
}

/**
 * Registers @fastify/redis when Redis is configured (a single node, or with
 * REDIS_CLUSTER a Cluster client seeded from REDIS_URL); without it, state
 * stays in process. Either client fails fast while Redis is away
 * (src/redis-client.ts).
 */
async function redisPlugin (fastify: FastifyInstance, options: RedisPluginOptions): Promise<void> {
  if (options.redis !== undefined) {
    await fastify.register(fastifyRedis, { client: options.redis, closeClient: false })
    return
  }
  if (fastify.config.redisUrl === undefined) return

  const client = createRedisClient(fastify.config.redisUrl, { cluster: fastify.config.redisCluster })
  client.on('error', (error: Error) => fastify.log.warn({ err: describeStoreError(error) }, 'Redis connection error'))
  await client.connect()
  await fastify.register(fastifyRedis, { client, closeClient: false })
  // quit() waits for Redis to answer; while it is down, drop the connection instead.
  fastify.addHook('onClose', async () => {
    await client.quit().catch(() => client.disconnect())
  })
}

export default fp(redisPlugin, { name: 'redis', dependencies: ['config'] })
