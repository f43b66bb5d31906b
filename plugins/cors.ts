import fastifyCors from '@fastify/cors'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { REFRESH_COOKIE } from './cookie.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** Sent by a browser from an origin that may not use the refresh cookie (see crossOrigin). */
    foreignOrigin: boolean
  }
}

/** Headers a listed origin's scripts may read besides the CORS-safelisted ones. */
const EXPOSED_HEADERS = ['retry-after', 'x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset', 'x-request-id']

/** The Origin header as an origin, or undefined when it is absent, `null` or not a URL. */
function originOf (header: string | undefined): URL | undefined {
  if (header === undefined || header === 'null') return undefined
  try {
    return new URL(header)
  } catch {
    return undefined
  }
}

/**
 * Browsers from the CORS_ORIGINS origins may call the service with
 * credentials; no other origin gets any CORS header, so a page elsewhere can
 * send a request but never read the answer.
 *
 * CSRF: the refresh cookie is SameSite=Strict and the routes that read it
 * take only JSON bodies (a form post is 415). On top of that, the cookie is
 * honoured only from this service's own origin, a listed origin, or a client
 * that is not a browser (no Origin header): from any other origin, a sibling
 * subdomain that SameSite counts as "same site" included, the cookie is
 * ignored, as if absent, and the answer neither sets nor clears it.
 */
async function corsPlugin (fastify: FastifyInstance): Promise<void> {
  const allowed = new Set(fastify.config.corsOrigins)

  /** True for a browser request from an origin that is neither this service nor listed. */
  function crossOrigin (request: FastifyRequest): boolean {
    const header = request.headers.origin
    if (header === undefined) return request.headers['sec-fetch-site'] === 'cross-site'
    if (allowed.has(header)) return false
    const origin = originOf(header)
    return origin === undefined || origin.host !== request.host
  }

  // The preflight route of @fastify/cors answers nothing but preflights (404 otherwise): no access token to ask for.
  fastify.addHook('onRoute', (route) => {
    if (route.method === 'OPTIONS' && route.url === '*') route.config = { ...route.config, public: true }
  })

  await fastify.register(fastifyCors, {
    origin: (origin, callback) => callback(null, origin !== undefined && allowed.has(origin)),
    credentials: true,
    methods: ['GET', 'POST', 'DELETE'],
    allowedHeaders: ['authorization', 'content-type'],
    exposedHeaders: EXPOSED_HEADERS,
    maxAge: 600,
    strictPreflight: false
  })

  fastify.decorateRequest('foreignOrigin', false)
  // Callback style: these run on every request, and most need no promise.
  fastify.addHook('preValidation', function ignoreForeignCookie (request, _reply, done) {
    if (crossOrigin(request)) {
      request.foreignOrigin = true
      if (request.cookies?.[REFRESH_COOKIE] !== undefined) {
        delete request.cookies[REFRESH_COOKIE]
        request.log.info({ origin: request.headers.origin }, 'refresh cookie ignored: request from a foreign origin')
      }
    }
    done()
  })
  // Registered after the cookie plugin's own onSend, which writes Set-Cookie.
  fastify.addHook('onSend', function dropForeignSetCookie (request, reply, payload, done) {
    if (request.foreignOrigin) reply.removeHeader('set-cookie')
    done(null, payload)
  })
}

export default fp(corsPlugin, { name: 'cors', dependencies: ['config', 'cookie'] })
