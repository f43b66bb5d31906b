import fastifyCookie from '@fastify/cookie'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { ServiceError } from '../src/errors.js'
import { REFRESH_COOKIE, REFRESH_COOKIE_PATH } from './shared/refresh-cookie.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** Sent by a browser from an origin that may not use the refresh cookie (see cookiePlugin). */
    foreignOrigin: boolean
    /** The refresh_token cookie, or undefined when absent or sent from a foreign origin (see refreshCookieOf). */
    refreshCookie(): string | undefined
  }
  interface FastifyReply {
    setRefreshCookie(token: string, maxAgeSeconds: number): FastifyReply
    clearRefreshCookie(): FastifyReply
  }
}

/**
 * Every `refresh_token=` pair of a Cookie header, its name trimmed of spaces and
 * tabs as the cookie parser trims it (browsers join several Cookie headers with `;`).
 */
const REFRESH_COOKIE_PAIR = new RegExp(`(?:^|;)[ \\t]*${REFRESH_COOKIE}[ \\t]*=`, 'g')

/**
 * The refresh_token cookie of a request to a route in this plugin's scope, or
 * undefined: absent, or sent from a foreign origin (see cookiePlugin).
 *
 * Two of them is an attack, not a client's mistake: a sibling subdomain can
 * plant a second refresh_token with a longer Path, which the browser sends
 * first, and the parser keeps the first. Throws REFRESH_TOKEN_INVALID then, so
 * that neither cookie is used, revoked or cleared.
 */
function refreshCookieOf (request: FastifyRequest): string | undefined {
  if (request.foreignOrigin) return undefined
  if ((request.headers.cookie?.match(REFRESH_COOKIE_PAIR)?.length ?? 0) > 1) {
    throw new ServiceError('REFRESH_TOKEN_INVALID', 'The request carries two refresh_token cookies: neither is used')
  }
  return request.cookies[REFRESH_COOKIE]
}

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
 * The refresh_token cookie with the attributes API.md fixes, for the routes
 * that read or write it: app.ts registers this plugin in their scope only, so
 * no other request pays for cookie parsing.
 *
 * CSRF: the cookie is SameSite=Strict and the routes that read it take only
 * JSON bodies (a form post is 415). On top of that, the cookie is honoured
 * only from this service's own origin, a CORS_ORIGINS origin, or a client
 * that is not a browser (no Origin header): from any other origin, a sibling
 * subdomain that SameSite counts as "same site" included, the cookie is
 * ignored, as if absent, and the answer neither sets nor clears it.
 */
async function cookiePlugin (fastify: FastifyInstance): Promise<void> {
  const allowed = new Set(fastify.config.corsOrigins)

  /** True for a browser request from an origin that is neither this service nor listed. */
  function crossOrigin (request: FastifyRequest): boolean {
    const header = request.headers.origin
    if (header === undefined) return request.headers['sec-fetch-site'] === 'cross-site'
    if (allowed.has(header)) return false
    const origin = originOf(header)
    return origin === undefined || origin.host !== request.host
  }

  await fastify.register(fastifyCookie)
  fastify.decorateRequest('foreignOrigin', false)
  fastify.decorateRequest('refreshCookie', function (this: FastifyRequest) {
    return refreshCookieOf(this)
  })
  fastify.addHook('preValidation', function ignoreForeignCookie (request, _reply, done) {
    if (crossOrigin(request)) {
      request.foreignOrigin = true
      if (request.cookies[REFRESH_COOKIE] !== undefined) {
        delete request.cookies[REFRESH_COOKIE]
        request.log.info({ origin: request.headers.origin }, 'refresh cookie ignored: request from a foreign origin')
      }
    }
    done()
  })
  // Registered after @fastify/cookie's own onSend, which writes Set-Cookie.
  fastify.addHook('onSend', function dropForeignSetCookie (request, reply, payload, done) {
    if (request.foreignOrigin) reply.removeHeader('set-cookie')
    done(null, payload)
  })

  const attributes = {
    httpOnly: true,
    sameSite: 'strict',
    path: REFRESH_COOKIE_PATH,
    secure: fastify.config.cookieSecure
  } as const

  fastify.decorateReply('setRefreshCookie', function (this: FastifyReply, token: string, maxAgeSeconds: number) {
    return this.setCookie(REFRESH_COOKIE, token, { ...attributes, maxAge: maxAgeSeconds })
  })
  fastify.decorateReply('clearRefreshCookie', function (this: FastifyReply) {
    return this.clearCookie(REFRESH_COOKIE, attributes)
  })
}

export default fp(cookiePlugin, { name: 'cookie', dependencies: ['config'] })
