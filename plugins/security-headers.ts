import fastifyHelmet from '@fastify/helmet'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { DOCS_PREFIX } from './auth.js'

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
export const DOCS_CSP = {
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

/**
 * Security headers with @fastify/helmet on every answer: a strict CSP
 * (nothing may load) on the API, a CSP that lets Swagger UI run on /docs, no
 * framing, no sniffing, no referrer, HSTS (honoured over HTTPS only). Answers
 * that do not set their own Cache-Control get `no-store`: token pairs and
 * user data never sit in a cache (RFC 6749 §5.1).
 */
async function securityHeadersPlugin (fastify: FastifyInstance): Promise<void> {
  fastify.addHook('onRoute', (route) => {
    if (route.url === DOCS_PREFIX || route.url.startsWith(`${DOCS_PREFIX}/`)) {
      // Read by @fastify/helmet's own onRoute hook, which runs after this one.
      route.helmet = { contentSecurityPolicy: DOCS_CSP, frameguard: { action: 'sameorigin' } }
    }
  })

  await fastify.register(fastifyHelmet, {
    contentSecurityPolicy: API_CSP,
    frameguard: { action: 'deny' },
    referrerPolicy: { policy: 'no-referrer' },
    hsts: { maxAge: 31_536_000, includeSubDomains: true }
  })

  fastify.addHook('onSend', async (_request, reply) => {
    if (!reply.hasHeader('cache-control')) reply.header('cache-control', 'no-store')
  })
}

export default fp(securityHeadersPlugin, { name: 'security-headers' })
