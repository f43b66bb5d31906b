import fastifyCors from '@fastify/cors'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'

/** Headers a listed origin's scripts may read besides the CORS-safelisted ones. */
const EXPOSED_HEADERS = ['retry-after', 'x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset', 'x-request-id']

/**
 * Browsers from the CORS_ORIGINS origins may call the service with
 * credentials; no other origin gets any CORS header, so a page elsewhere can
 * send a request but never read the answer.
 * (The refresh cookie's own guard against other origins is in cookie.ts.)
 */
async function corsPlugin (fastify: FastifyInstance): Promise<void> {
  const allowed = new Set(fastify.config.corsOrigins)

  // The preflight route of @fastify/cors answers nothing but preflights (404 otherwise): no access token to ask for.
  fastify.addHook('onRoute', (route) => {
    if (route.method === 'OPTIONS' && route.url === '*') route.config = { ...route.config, public: true }
  })

  await fastify.register(fastifyCors, {
    origin: (origin, callback) => callback(null, origin !== undefined && allowed.has(origin)),
    credentials: true,
    methods: ['GET', 'POST', 'PATCH', 'DELETE'],
    allowedHeaders: ['authorization', 'content-type'],
    exposedHeaders: EXPOSED_HEADERS,
    maxAge: 600,
    strictPreflight: false
  })
}

export default fp(corsPlugin, { name: 'cors', dependencies: ['config'] })
