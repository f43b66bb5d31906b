import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { describeStoreError } from '../src/errors.js'
import { RedisRevocationFeed } from '../src/redis-revocation-feed.js'
import { RevocationList } from '../src/revocation-list.js'
import { withTiming } from '../src/store-timing.js'

declare module 'fastify' {
  interface FastifyInstance {
    revocations: RevocationList
  }
}

export interface RevocationsPluginOptions {
  redisKeyPrefix?: string
}

/**
 * Revoked sessions, checked in memory on every request. With Redis, every
 * instance hears of each revocation through pub/sub, and reads the ones it
 * missed when it starts or reconnects. Changed users reach the cache of
 * user facts the same way.
 */
async function revocationsPlugin (fastify: FastifyInstance, options: RevocationsPluginOptions): Promise<void> {
  const { config, clock, metrics } = fastify
  // Publishing is a Redis round trip of every logout and revocation: timed with the store's other operations.
  const feed = fastify.hasDecorator('redis')
    ? withTiming(new RedisRevocationFeed(fastify.redis, {
      prefix: options.redisKeyPrefix ?? config.redisKeyPrefix,
      clock,
      onError: (error) => fastify.log.warn({ err: describeStoreError(error) }, 'revocation feed: Redis unavailable, will catch up on reconnect'),
      onCaughtUp: (lagMs) => {
        metrics.feedCaughtUp(lagMs / 1000)
        fastify.log.info({ lagMs }, 'revocation feed: back, and caught up on what it missed')
      }
    }), ['publish'], metrics.storeTiming('redis'))
    : undefined
  const { userFacts, users } = fastify
  const revocations = new RevocationList(clock, config.accessTokenTtl * 1000, feed, {
    // A changed user (password, address, deletion): what this instance remembers of them is read again.
    changed: (userId) => {
      userFacts.forget(userId)
      users.forgetUser(userId)
    },
    resynced: () => {
      userFacts.clear()
      users.forgetAll()
    }
  }, {
    published: (kind) => metrics.revocation('published', kind),
    received: (kind) => metrics.revocation('received', kind)
  })
  await revocations.listen()
  metrics.watch({ revocationFeedConnected: () => revocations.connected })
  fastify.addHook('onClose', () => revocations.close())
  fastify.decorate('revocations', revocations)
}

export default fp(revocationsPlugin, { name: 'revocations', dependencies: ['config', 'database', 'redis', 'user-facts', 'metrics'] })
