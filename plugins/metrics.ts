import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { ServiceMetrics } from '../src/metrics.js'

declare module 'fastify' {
  interface FastifyInstance {
    metrics: ServiceMetrics
  }
}

/** Requests that matched no route share one label: a raw URL would make a series per probe. */
const UNMATCHED_ROUTE = 'unmatched'

/**
 * The service's Prometheus metrics (src/metrics.ts), and every request timed
 * by route pattern, method and status. The other plugins report into
 * `fastify.metrics`; `GET /metrics` (routes/metrics.ts) serves them.
 */
async function metricsPlugin (fastify: FastifyInstance): Promise<void> {
  const metrics = new ServiceMetrics()
  fastify.decorate('metrics', metrics)
  // Callback style, as the auth hook: no promise per request. elapsedTime is Fastify's own measure of the request.
  fastify.addHook('onResponse', function timeRequest (request, reply, done) {
    metrics.request(request.routeOptions.url ?? UNMATCHED_ROUTE, request.method, reply.statusCode, reply.elapsedTime / 1000)
    done()
  })
}

export default fp(metricsPlugin, { name: 'metrics' })
