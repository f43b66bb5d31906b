import { getHeapStatistics } from 'node:v8'
import fastifyUnderPressure from '@fastify/under-pressure'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { RateLimitedError } from '../src/rate-limited.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /**
     * @fastify/under-pressure's own per-route handler: a route that must answer
     * under pressure (liveness, metrics) declares one that returns nothing.
     */
    pressureHandler?: (request: FastifyRequest, reply: FastifyReply, type: string, value: number | undefined) => Promise<void> | void
  }
}

export interface UnderPressureOptions {
  /** Mean event-loop delay over a sample, in ms, above which requests are refused. */
  maxEventLoopDelay?: number
  /** Heap in use, in bytes, above which requests are refused. */
  maxHeapUsedBytes?: number
  /** How often the figures are sampled, in ms. */
  sampleInterval?: number
}

/** Seconds a refused client is told to wait: one or two samples, by when the figures have been re-read. */
const RETRY_AFTER_SECONDS = 2

/**
 * Load shedding with @fastify/under-pressure: when the event loop lags by
 * more than a second on average, or the heap is nearly at V8's limit, every
 * request (/health included, so a balancer moves traffic elsewhere) is
 * answered at once with 429 RATE_LIMITED and Retry-After, instead of joining
 * a queue that only grows. Liveness and metrics are still served: an
 * overloaded process is alive (restarting it would only add load), and its
 * metrics are what shows the overload. The thresholds are far above anything a healthy
 * instance reaches, even while PGlite migrates or argon2 is saturated.
 */
async function underPressurePlugin (fastify: FastifyInstance, options: UnderPressureOptions): Promise<void> {
  let lastWarning = 0
  await fastify.register(fastifyUnderPressure, {
    maxEventLoopDelay: options.maxEventLoopDelay ?? 1000,
    maxHeapUsedBytes: options.maxHeapUsedBytes ?? Math.floor(getHeapStatistics().heap_size_limit * 0.9),
    sampleInterval: options.sampleInterval ?? 1000,
    pressureHandler: async (_request, _reply, type, value) => {
      // Once a second at most: under pressure is no time to write a line per request.
      const now = Date.now()
      if (now - lastWarning >= 1000) {
        lastWarning = now
        fastify.log.warn({ type, value }, 'under pressure: refusing requests')
      }
      throw new RateLimitedError(RETRY_AFTER_SECONDS, 'The service is overloaded: retry later')
    }
  })
}

export default fp(underPressurePlugin, { name: 'under-pressure' })
