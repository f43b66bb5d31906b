import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { isDocsRoute } from './shared/docs.js'

/**
 * The security headers of every API answer (404s and errors included), as
 * the OWASP REST Security Cheat Sheet lists them for APIs. The values are
 * fixed: none depends on the request, so they are set with one call.
 */
const API_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  // A JSON answer loads nothing, runs nothing, submits nothing and belongs in no frame.
  'content-security-policy': "default-src 'none';base-uri 'none';form-action 'none';frame-ancestors 'none'",
  // No other origin's window may keep a handle on it, nor another origin's page embed it.
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'referrer-policy': 'no-referrer',
  // HTTPS only for a year, subdomains included (browsers honour it over HTTPS only).
  'strict-transport-security': 'max-age=31536000; includeSubDomains',
  'x-content-type-options': 'nosniff',
  // frame-ancestors for browsers that predate it.
  'x-frame-options': 'DENY',
  // Token pairs and user data never sit in a cache (RFC 6749 §5.1); a route that sets its own Cache-Control (the JWKS) overrides it.
  'cache-control': 'no-store'
  // Left out: the headers that only concern HTML documents (X-DNS-Prefetch-Control, X-Download-Options,
  // X-Permitted-Cross-Domain-Policies, Origin-Agent-Cluster, X-XSS-Protection): a JSON answer is never one.
})

/**
 * Security headers on every API answer: API_HEADERS, with one call per
 * request. Swagger UI's pages get theirs from @fastify/helmet in their own
 * scope (plugins/swagger.ts).
 */
async function securityHeadersPlugin (fastify: FastifyInstance): Promise<void> {
  fastify.addHook('onRequest', function securityHeaders (request, reply, done) {
    const { url } = request.routeOptions
    if (url === undefined || !isDocsRoute(url)) reply.headers(API_HEADERS)
    done()
  })
}

export default fp(securityHeadersPlugin, { name: 'security-headers' })
