import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { HealthResponse, LivenessResponse } from './schemas.js'
import { documented, errorResponses } from '../plugins/shared/openapi.js'

/** A check that has not answered by then counts as down: the health route itself never hangs. */
const CHECK_TIMEOUT_MS = 2000

async function check (probe: () => Promise<void>): Promise<'ok' | 'down'> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error('health check timed out')), CHECK_TIMEOUT_MS)
  })
  try {
    await Promise.race([probe(), timeout])
    return 'ok'
  } catch {
    return 'down'
  } finally {
    clearTimeout(timer)
  }
}

const healthRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/health', {
    config: { public: true },
    schema: {
      tags: ['health'],
      operationId: 'getHealth',
      summary: 'Readiness of the service and its stores',
      description: 'Readiness: 200 when the database and (when configured) Redis answer within 2 s and the revocation ' +
        'feed is connected; 503 when one is not. For load balancers and orchestrators (the Docker image\'s HEALTHCHECK ' +
        'uses it); `GET /health/live` is liveness.',
      response: {
        200: documented(HealthResponse, { description: 'Ready', examples: [{ status: 'ok', checks: { database: 'ok', redis: 'ok', revocationFeed: 'ok' } }] }),
        503: documented(HealthResponse, {
          description: 'Not ready: a store or the revocation feed is down',
          examples: [{ status: 'unavailable', checks: { database: 'ok', redis: 'down', revocationFeed: 'down' } }]
        }),
        ...errorResponses()
      }
    }
  }, async (_request, reply) => {
    const [database, redis] = await Promise.all([
      check(() => fastify.database.ping()),
      fastify.hasDecorator('redis') ? check(() => fastify.sessionStore.ping()) : Promise.resolve('disabled' as const)
    ])
    const revocationFeed = !fastify.hasDecorator('redis') ? 'disabled' : fastify.revocations.connected ? 'ok' : 'down'
    const healthy = database === 'ok' && redis !== 'down' && revocationFeed !== 'down'
    return reply.code(healthy ? 200 : 503).send({ status: healthy ? 'ok' : 'unavailable', checks: { database, redis, revocationFeed } })
  })

  fastify.get('/health/live', {
    // Answered under load shedding too: an overloaded process is alive, and restarting it would only add load.
    config: { public: true, pressureHandler: () => {} },
    schema: {
      tags: ['health'],
      operationId: 'getLiveness',
      summary: 'Liveness of the process',
      description: '200 while the process serves requests, whatever its stores: an orchestrator restarts the process ' +
        'when this stops answering, and takes it out of rotation when `GET /health` (readiness) fails.',
      response: { 200: documented(LivenessResponse, { description: 'Alive' }), ...errorResponses() }
    }
  }, async () => ({ status: 'ok' as const }))
}

export default healthRoutes
