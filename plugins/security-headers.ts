import type { IncomingMessage, ServerResponse } from 'node:http'
import fastifyHelmet from '@fastify/helmet'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import helmet, { type HelmetOptions } from 'helmet'
import { isDocsRoute } from './auth.js'

/** JSON answers load nothing, run nothing and belong in no frame. */
const API_CSP = {
  useDefaults: false,
  directives: {
    defaultSrc: ["'none'"],
    baseUri: ["'none'"],
    formAction: ["'none'"],
    frameAncestors: ["'none'"]
  }
}

/**
 * The one inline style Swagger UI's bundle inserts: the <style> inside its
 * small logo's SVG (`.logo_small_svg__cls-2{fill:#fff}…`). Should an upgrade
 * change it, only that logo's colours are lost (the browser logs the new hash).
 */
const SWAGGER_UI_LOGO_STYLE = "'sha256-RL3ie0nH+Lzz2YNqQN83mnU0J1ot4QL7b99vMdIX99w='"

/**
 * Swagger UI: its scripts, styles and fonts come from /docs/static (no inline
 * script, one inline style allowed by its hash), it fetches /docs/json and
 * calls the API on this origin, and draws a few images as data: URLs.
 */
const DOCS_CSP = {
  useDefaults: false,
  directives: {
    defaultSrc: ["'self'"],
    baseUri: ["'self'"],
    connectSrc: ["'self'"],
    fontSrc: ["'self'", 'data:'],
    formAction: ["'self'"],
    frameAncestors: ["'self'"],
    imgSrc: ["'self'", 'data:'],
    objectSrc: ["'none'"],
    scriptSrc: ["'self'"],
    scriptSrcAttr: ["'none'"],
    styleSrc: ["'self'", SWAGGER_UI_LOGO_STYLE]
  }
}

const API_HELMET_OPTIONS = {
  contentSecurityPolicy: API_CSP,
  frameguard: { action: 'deny' as const },
  referrerPolicy: { policy: 'no-referrer' as const },
  hsts: { maxAge: 31_536_000, includeSubDomains: true }
}

/**
 * Headers that only concern HTML documents (DNS prefetching, downloads
 * opened in place, Flash and PDF policies, agent clusters, the legacy XSS
 * auditor): a JSON answer is never one, so it goes without them, as the
 * OWASP REST Security Cheat Sheet's list of headers for APIs does.
 */
const DOCUMENT_ONLY_HEADERS_OFF = {
  originAgentCluster: false,
  xDnsPrefetchControl: false,
  xDownloadOptions: false,
  xPermittedCrossDomainPolicies: false,
  xXssProtection: false
}

/** The headers helmet sets with these options, computed once: none depends on the request. */
function helmetHeaders (options: HelmetOptions): Record<string, string> {
  const headers: Record<string, string> = {}
  const recorder = {
    setHeader (name: string, value: string | number) { headers[name.toLowerCase()] = String(value) },
    removeHeader (name: string) { delete headers[name.toLowerCase()] }
  }
  helmet(options)({} as IncomingMessage, recorder as unknown as ServerResponse, (error) => {
    if (error !== undefined) throw error
  })
  return headers
}

/** Answers that do not set their own Cache-Control: token pairs and user data never sit in a cache (RFC 6749 §5.1). */
const NOT_CACHED = { 'cache-control': 'no-store' }

/**
 * Security headers on every API answer (404s and errors included): a strict
 * CSP (nothing may load), no framing, no sniffing, no referrer, HSTS (honoured
 * over HTTPS only), and `no-store` unless the route sets its own Cache-Control.
 * They are helmet's headers for API_HELMET_OPTIONS, computed once at start-up
 * and set with one call per request: @fastify/helmet would rebuild them on every
 * request (about a tenth of a /users/me request's time). Swagger UI's pages
 * get theirs from @fastify/helmet in their own scope (`docsSecurityHeaders`).
 */
async function securityHeadersPlugin (fastify: FastifyInstance): Promise<void> {
  const apiHeaders = { ...helmetHeaders({ ...API_HELMET_OPTIONS, ...DOCUMENT_ONLY_HEADERS_OFF }), ...NOT_CACHED }
  fastify.addHook('onRequest', function securityHeaders (request, reply, done) {
    const { url } = request.routeOptions
    if (url === undefined || !isDocsRoute(url)) reply.headers(apiHeaders)
    done()
  })
}

/**
 * @fastify/helmet for Swagger UI's routes, registered in their scope: a CSP
 * that lets Swagger UI run, framing by this origin only, and `no-store` on
 * answers without their own Cache-Control.
 */
async function docsSecurityHeadersPlugin (fastify: FastifyInstance): Promise<void> {
  await fastify.register(fastifyHelmet, { ...API_HELMET_OPTIONS, contentSecurityPolicy: DOCS_CSP, frameguard: { action: 'sameorigin' as const } })
  fastify.addHook('onSend', async (_request, reply) => {
    if (!reply.hasHeader('cache-control')) reply.headers(NOT_CACHED)
  })
}

/** Not encapsulated: it applies to the scope that registers it (Swagger UI's). */
export const docsSecurityHeaders = fp(docsSecurityHeadersPlugin, { name: 'docs-security-headers' })

export default fp(securityHeadersPlugin, { name: 'security-headers' })
