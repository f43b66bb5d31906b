import fastifyHelmet, { type FastifyHelmetOptions } from '@fastify/helmet'
import fastifySwagger from '@fastify/swagger'
import fastifySwaggerUi, { type FastifySwaggerUiOptions } from '@fastify/swagger-ui'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { IsOptional, type TSchema } from 'typebox'
import { packageVersion } from '../src/paths.js'
import { DOCS_PREFIX } from './shared/docs.js'
import { describeRoles, routeAccessOf } from './shared/route-access.js'
import { REFRESH_COOKIE, REFRESH_COOKIE_PATH } from './shared/refresh-cookie.js'

const DESCRIPTION = `Signup, login, rotating refresh tokens and JWKS-verifiable access tokens.

**Trying it here:** \`POST /auth/signup\`, then \`POST /auth/login\` with the same body; copy the
\`accessToken\` of the answer into **Authorize** → \`bearerAuth\` (it is kept across reloads of this
page). Every route with a lock now sends it. When it expires (\`ACCESS_TOKEN_EXPIRED\`), run
\`POST /auth/refresh\` with \`{}\`: the browser sends the \`${REFRESH_COOKIE}\` cookie that login set, and the
answer holds a new \`accessToken\` to authorize with.

**Errors** are JSON \`{ statusCode, code, error, message }\`; clients branch on \`code\`. Each
response below lists the codes it can carry and what a client should do on each.`

/** Marks an operation whose body may be left out; the mark is read (and removed) by `transformObject`. */
const OPTIONAL_BODY = 'x-optional-body'

interface MediaObject { examples?: Record<string, { summary?: string, value: unknown }> }
interface Operation {
  [OPTIONAL_BODY]?: boolean
  requestBody?: { required?: boolean }
  responses?: Record<string, { content?: Record<string, MediaObject> }>
}

/**
 * Final touches @fastify/swagger does not make by itself: a body the route
 * declares optional (refresh, logout) is not `required`, so Swagger UI may
 * send none; and an error response's examples, one per code, are named by
 * their code (not example1, example2…) so Swagger UI lists them by code.
 */
function finishDocument<T extends { paths?: object }> (document: T): T {
  for (const path of Object.values(document.paths ?? {}) as Array<Record<string, Operation>>) {
    for (const operation of Object.values(path)) {
      if (operation[OPTIONAL_BODY] === true && operation.requestBody !== undefined) operation.requestBody.required = false
      delete operation[OPTIONAL_BODY]
      for (const response of Object.values(operation.responses ?? {})) {
        for (const media of Object.values(response.content ?? {})) {
          if (media.examples === undefined) continue
          media.examples = Object.fromEntries(Object.entries(media.examples).map(([name, example]) => {
            const { code, message } = example.value as { code?: unknown, message?: unknown }
            return typeof code === 'string' ? [code, { summary: `${code}: ${String(message)}`, value: example.value }] : [name, example]
          }))
        }
      }
    }
  }
  return document
}

/** `post` `/auth/logout-all` → `postAuthLogoutAll`: camelCase, so Swagger UI's deep links need no escaping. */
function defaultOperationId (method: string, url: string): string {
  const words = [method, ...url.split(/[^A-Za-z0-9]+/)].filter(Boolean).map((word) => word.toLowerCase())
  return words.map((word, index) => index === 0 ? word : word[0]!.toUpperCase() + word.slice(1)).join('')
}

/**
 * Swagger UI's pages get @fastify/helmet's headers for HTML pages, with a CSP
 * that lets Swagger UI run (its scripts, styles and fonts come from
 * /docs/static, it fetches /docs/json and calls the API on this origin, and
 * draws a few images as data: URLs), framing by this origin only, no
 * referrer, and HSTS as the API answers have it.
 */
const docsHelmetOptions: FastifyHelmetOptions = {
  contentSecurityPolicy: {
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
      // Inline styles too: Swagger UI's bundle draws its logo as an SVG holding a <style>, on which it sets no nonce.
      styleSrc: ["'self'", "'unsafe-inline'"]
    }
  },
  frameguard: { action: 'sameorigin' },
  referrerPolicy: { policy: 'no-referrer' },
  hsts: { maxAge: 31_536_000, includeSubDomains: true }
}

/** Swagger UI at /docs: what it keeps, and how "Try it out" sends requests. */
const swaggerUiOptions: FastifySwaggerUiOptions = {
  routePrefix: DOCS_PREFIX,
  uiConfig: {
    // The bearer token stays in this browser's localStorage across reloads until "Logout" in Authorize.
    persistAuthorization: true,
    deepLinking: true,
    tryItOutEnabled: true,
    displayRequestDuration: true,
    // Runs in the browser (serialized into swagger-initializer.js): a request without a body is sent without a
    // Content-Type, as any client would; Swagger UI would otherwise send `application/json` with an empty body,
    // which is malformed JSON (400). So refresh and logout can be tried with the body left empty: the cookie is used.
    // Covered by test/browser.test.ts, not by Node's coverage.
    /* c8 ignore start */
    requestInterceptor: function withoutContentTypeWhenEmpty (request) {
      if (request.body === undefined || request.body === null || request.body === '') {
        for (const name of Object.keys(request.headers ?? {})) {
          if (name.toLowerCase() === 'content-type') delete request.headers[name]
        }
      }
      return request
    },
    /* c8 ignore stop */
    defaultModelsExpandDepth: 0
  }
}

/**
 * The OpenAPI document at /docs/json, written from the routes' own schemas,
 * and Swagger UI at /docs. Protected routes (every route not marked public)
 * are documented with the bearer scheme without each route repeating it.
 */
async function swaggerPlugin (fastify: FastifyInstance): Promise<void> {
  fastify.addHook('onRoute', (route) => {
    const access = routeAccessOf(route.url, route.config)
    if (access.kind === 'public') return
    route.schema = { ...route.schema, security: [{ bearerAuth: [] }] }
    if (access.kind === 'roles') {
      const { description, summary } = route.schema
      route.schema.summary = `${summary ?? route.url} (role ${access.roles.join(', ')})`
      route.schema.description = description === undefined ? describeRoles(access.roles) : `${describeRoles(access.roles)} ${description}`
    }
  })

  await fastify.register(fastifySwagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'Authentication service',
        description: DESCRIPTION,
        version: packageVersion
      },
      tags: [
        { name: 'auth', description: 'Signup, login, refresh, logout and password' },
        { name: 'sessions', description: 'The signed-in user\'s sessions (devices) and security events' },
        { name: 'users', description: 'The signed-in user: profile, email change, deletion' },
        { name: 'account', description: 'Links mailed to the account: password reset and email verification' },
        { name: 'admin', description: 'For accounts with the role admin: find users, change roles, disable, delete, end sessions, read events' },
        { name: 'keys', description: 'Verifying access tokens: public keys, introspection' },
        { name: 'health', description: 'Readiness, liveness and metrics' }
      ],
      components: {
        securitySchemes: {
          bearerAuth: {
            type: 'http',
            scheme: 'bearer',
            bearerFormat: 'JWT',
            description: 'The `accessToken` from `POST /auth/login` or `POST /auth/refresh` (without "Bearer ")'
          },
          refreshCookie: {
            type: 'apiKey',
            in: 'cookie',
            name: REFRESH_COOKIE,
            description: `Set by \`POST /auth/login\` and \`POST /auth/refresh\` (HttpOnly, SameSite=Strict, Path=${REFRESH_COOKIE_PATH}). ` +
              'The browser sends it by itself: nothing to enter here.'
          },
          introspectionSecret: {
            type: 'http',
            scheme: 'bearer',
            description: 'INTROSPECTION_SECRET, for other services calling `POST /auth/introspect` (not an access token)'
          },
          metricsToken: {
            type: 'http',
            scheme: 'bearer',
            description: 'METRICS_TOKEN, for a Prometheus scraper calling `GET /metrics` (not an access token)'
          }
        }
      }
    },
    transform: ({ schema, url, route }) => {
      const { body, operationId } = (schema ?? {}) as { body?: TSchema, operationId?: string }
      return {
        schema: {
          ...schema,
          // Routes name their operations (client generators use the names); a route that does not gets one from its method and path.
          operationId: operationId ?? defaultOperationId(String(route.method), url),
          ...(body !== undefined && IsOptional(body) ? { [OPTIONAL_BODY]: true } : {})
        },
        url
      }
    },
    transformObject: (document) => finishDocument('openapiObject' in document ? document.openapiObject : document.swaggerObject)
  })

  // Swagger UI in a scope of its own, with the security headers its pages need.
  await fastify.register(async (docs) => {
    await docs.register(fastifyHelmet, docsHelmetOptions)
    // As on API answers: nothing is cached unless the route says otherwise (its static files do).
    docs.addHook('onSend', async (_request, reply) => {
      if (!reply.hasHeader('cache-control')) reply.header('cache-control', 'no-store')
    })
    await docs.register(fastifySwaggerUi, swaggerUiOptions)
  })
}

export default fp(swaggerPlugin, { name: 'swagger' })
