import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { requireBearerSecret } from '../plugins/shared/bearer-secret.js'
import { errorResponses } from '../plugins/shared/openapi.js'

/** Prometheus scrapes `GET /metrics` with METRICS_TOKEN; without it configured, the route is not there (404). */
const metricsRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  const { config, metrics } = fastify

  fastify.get('/metrics', {
    // Served under load shedding too: that is when the metrics matter most.
    config: { public: true, pressureHandler: () => {} },
    schema: {
      tags: ['health'],
      operationId: 'getMetrics',
      summary: 'Prometheus metrics',
      description: 'The Prometheus text format: requests by route and status, logins and refreshes by outcome, ' +
        'revocations, the password-hashing queue, store latency and errors, the revocation feed, security events and the ' +
        'process. Send `Authorization: Bearer <METRICS_TOKEN>`; 404 when METRICS_TOKEN is unset.',
      security: [{ metricsToken: [] }],
      response: {
        200: {
          description: 'The metrics, in the Prometheus text exposition format (0.0.4)',
          content: {
            'text/plain': {
              schema: Type.String({
                examples: ['# HELP auth_logins_total Login attempts that reached the password check, by outcome\n# TYPE auth_logins_total counter\nauth_logins_total{outcome="succeeded"} 42\n']
              })
            }
          }
        },
        ...errorResponses('ACCESS_TOKEN_MISSING', 'ACCESS_TOKEN_INVALID', 'NOT_FOUND')
      }
    },
    onRequest: requireBearerSecret(config.metricsToken, 'Metrics')
  }, async (_request, reply) => {
    const { contentType, text } = await metrics.exposition()
    return reply.header('cache-control', 'no-store').type(contentType).send(text)
  })
}

export default metricsRoutes
