import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { describeStoreError } from '../src/errors.js'
import { SecurityEventStore } from '../src/security-event-store.js'
import { SecurityEventLog, type SecurityEventLogOptions } from '../src/security-events.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Where the service records security events: off the request path, written in batches. */
    securityEvents: SecurityEventLog
    /** The stored events, for the routes that read them. */
    securityEventStore: SecurityEventStore
  }
}

/** How often events past AUDIT_RETENTION are deleted (and once shortly after start). */
const PRUNE_INTERVAL_MS = 60 * 60 * 1000
const FIRST_PRUNE_DELAY_MS = 10_000

/** How the event log batches its writes (defaults in src/security-events.ts); tests slow or speed it. */
export type SecurityEventsPluginOptions = Pick<SecurityEventLogOptions, 'flushIntervalMs' | 'batchSize' | 'maxPending'>

/** Security events in the database (src/security-events.ts, src/security-event-store.ts), pruned after AUDIT_RETENTION. */
async function securityEventsPlugin (fastify: FastifyInstance, options: SecurityEventsPluginOptions): Promise<void> {
  const { config, clock, metrics } = fastify
  const store = new SecurityEventStore(fastify.database.db, metrics.storeTiming('postgres'))
  const log = new SecurityEventLog(store, {
    ...options,
    clock,
    retentionMs: config.auditRetention * 1000,
    observer: {
      recorded: (type) => metrics.securityEventRecorded(type),
      writeFailed: (error) => {
        metrics.securityEventWriteFailed()
        fastify.log.warn({ err: describeStoreError(error), pending: log.pending }, 'security events: the database refused a batch, will retry')
      },
      dropped: (count) => {
        metrics.securityEventsDropped(count)
        fastify.log.error({ dropped: count }, 'security events: too many waiting for the database, the oldest were dropped')
      }
    }
  })
  metrics.watch({ securityEventsPending: () => log.pending })

  const prune = (): void => {
    log.prune().then((deleted) => {
      if (deleted > 0) fastify.log.info({ deleted }, 'security events past AUDIT_RETENTION deleted')
    }, (error: unknown) => fastify.log.warn({ err: describeStoreError(error) }, 'security events: pruning failed, will retry'))
  }
  let pruneTimer: NodeJS.Timeout | undefined
  fastify.addHook('onReady', async () => {
    pruneTimer = setTimeout(function pruneNow () {
      prune()
      pruneTimer = setTimeout(pruneNow, PRUNE_INTERVAL_MS).unref()
    }, FIRST_PRUNE_DELAY_MS).unref()
  })
  // Before the database closes (hooks run in reverse order of registration): what is pending is written.
  fastify.addHook('onClose', async () => {
    clearTimeout(pruneTimer)
    await log.close()
  })
  fastify.decorate('securityEvents', log)
  fastify.decorate('securityEventStore', store)
}

export default fp(securityEventsPlugin, { name: 'security-events', dependencies: ['config', 'database', 'metrics'] })
