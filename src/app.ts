import { AjvCompiler, type RouteDefinition } from '@fastify/ajv-compiler'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifySchemaCompiler, type FastifyServerOptions } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import fp from 'fastify-plugin'
import type { Redis } from 'ioredis'
import accountsPlugin from '../plugins/accounts.js'
import adminPlugin from '../plugins/admin.js'
import authPlugin from '../plugins/auth.js'
import configPlugin from '../plugins/config.js'
import cookiePlugin from '../plugins/cookie.js'
import corsPlugin from '../plugins/cors.js'
import databasePlugin from '../plugins/database.js'
import drainPlugin from '../plugins/drain.js'
import errorsPlugin, { clientErrorHandler } from '../plugins/errors.js'
import jwtPlugin from '../plugins/jwt.js'
import mailPlugin, { type MailPluginOptions } from '../plugins/mail.js'
import metricsPlugin from '../plugins/metrics.js'
import rateLimitPlugin, { type RateLimitSettings } from '../plugins/rate-limit.js'
import passwordsPlugin from '../plugins/passwords.js'
import redisPlugin from '../plugins/redis.js'
import requestIdPlugin from '../plugins/request-id.js'
import revocationsPlugin from '../plugins/revocations.js'
import routeAccessPlugin from '../plugins/route-access.js'
import securityEventsPlugin, { type SecurityEventsPluginOptions } from '../plugins/security-events.js'
import securityHeadersPlugin from '../plugins/security-headers.js'
import sessionStorePlugin from '../plugins/session-store.js'
import sessionsPlugin from '../plugins/sessions.js'
import swaggerPlugin from '../plugins/swagger.js'
import userFactsPlugin from '../plugins/user-facts.js'
import underPressurePlugin, { type UnderPressureOptions } from '../plugins/under-pressure.js'
import accountLinkRoutes from '../routes/account-links.js'
import accountPageRoutes from '../routes/account-pages.js'
import adminRoutes from '../routes/admin.js'
import authRoutes from '../routes/auth.js'
import eventRoutes from '../routes/events.js'
import healthRoutes from '../routes/health.js'
import introspectionRoutes from '../routes/introspect.js'
import keyRoutes from '../routes/keys.js'
import metricsRoutes from '../routes/metrics.js'
import sessionRoutes from '../routes/sessions.js'
import userRoutes from '../routes/users.js'
import { systemClock, type Clock } from './clock.js'
import type { Config } from './config.js'
import { ServiceError } from './errors.js'
import type { DatabaseHandle } from './database.js'
import type { PasswordHasher } from './passwords.js'
import type { SessionStore } from './session-store.js'

export interface AppOptions {
  config: Config
  clock?: Clock
  /** An open database owned by the caller; else opened from `config` and closed with the app. */
  database?: DatabaseHandle
  /** A Redis connection owned by the caller; else opened from `config.redisUrl` when set. */
  redis?: Redis
  redisKeyPrefix?: string
  sessionStore?: SessionStore
  passwordHasher?: PasswordHasher
  /** Bound of the access-token verification cache. */
  verifiedTokensKept?: number
  logger?: FastifyServerOptions['logger']
  /** Overrides of the rate limits the configuration sets (LOGIN_, SIGNUP_ and REFRESH_RATE_LIMIT; plugins/rate-limit.ts). */
  rateLimits?: Partial<RateLimitSettings>
  /** Overrides of the load-shedding thresholds (plugins/under-pressure.ts). */
  underPressure?: UnderPressureOptions
  /** Overrides of how security events are batched (plugins/security-events.ts). */
  securityEvents?: SecurityEventsPluginOptions
  /** Overrides of how mail is retried and throttled, and the TLS trust of its server (plugins/mail.ts). */
  mail?: MailPluginOptions
}

/** Auth requests are small; anything larger is refused before it is read. */
const BODY_LIMIT_BYTES = 16 * 1024

/** Log redaction: secrets never reach the log, whatever gets logged. */
const REDACTED_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'res.headers["set-cookie"]',
  '*.password',
  '*.currentPassword',
  '*.newPassword',
  '*.refreshToken',
  '*.accessToken',
  '*.token',
  // The same at the top level of a log object, and headers wherever they are logged.
  'password',
  'currentPassword',
  'newPassword',
  'refreshToken',
  'accessToken',
  'token',
  '*.headers.authorization',
  '*.headers.cookie',
  '*.headers["set-cookie"]'
]

/**
 * Validators by request part. A JSON body is checked as it was sent: a "5"
 * is not a number, and an unknown field is refused (400) rather than silently
 * dropped. A query string holds only text, so its numbers are read as
 * numbers (`?limit=20`).
 */
function validatorCompiler (): FastifySchemaCompiler<RouteDefinition['schema']> {
  const fromPool = AjvCompiler()
  const strict = fromPool({}, { customOptions: { coerceTypes: false, removeAdditional: false } })
  const fromText = fromPool({}, { customOptions: { coerceTypes: true, removeAdditional: false } })
  return (route) => route.httpPart === 'body' ? strict(route) : fromText(route)
}

/**
 * The whole service as one plugin, in a fixed order: configuration and
 * errors, storage, tokens and sessions, the auth hook and docs, then routes.
 */
async function app (fastify: FastifyInstance, options: AppOptions): Promise<void> {
  // Only JSON bodies: a form or text body is refused with 415 (this also blocks form-based CSRF).
  fastify.removeContentTypeParser(['text/plain'])
  fastify.setValidatorCompiler(validatorCompiler())
  // JSON as Fastify parses it (prototype poisoning refused), except that an empty
  // body is no body: `POST /auth/refresh` with the JSON content type and only the
  // cookie, as clients and Swagger UI send it.
  const parseJson = fastify.getDefaultJsonParser('error', 'error')
  fastify.removeContentTypeParser('application/json')
  fastify.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (body === '') done(null, undefined)
    else parseJson(request, body as string, done)
  })

  await fastify.register(configPlugin, { config: options.config, clock: options.clock ?? systemClock })
  await fastify.register(errorsPlugin)
  // Before any plugin that adds a route: the list of every route's declared access holds them all.
  await fastify.register(routeAccessPlugin)
  // Before the stores and the routes: every store reports its latency, every route its requests.
  await fastify.register(metricsPlugin)
  await fastify.register(securityHeadersPlugin)
  await fastify.register(requestIdPlugin)
  await fastify.register(drainPlugin)
  await fastify.register(databasePlugin, { database: options.database })
  await fastify.register(redisPlugin, { redis: options.redis })
  // After the database: opening and migrating PGlite blocks the event loop, which is no reason to shed load.
  await fastify.register(underPressurePlugin, options.underPressure ?? {})
  await fastify.register(rateLimitPlugin, { limits: options.rateLimits, redisKeyPrefix: options.redisKeyPrefix })
  await fastify.register(sessionStorePlugin, { sessionStore: options.sessionStore, redisKeyPrefix: options.redisKeyPrefix })
  await fastify.register(userFactsPlugin)
  await fastify.register(revocationsPlugin, { redisKeyPrefix: options.redisKeyPrefix })
  await fastify.register(jwtPlugin, { verifiedTokensKept: options.verifiedTokensKept })
  await fastify.register(passwordsPlugin, { passwordHasher: options.passwordHasher })
  await fastify.register(securityEventsPlugin, options.securityEvents ?? {})
  await fastify.register(mailPlugin, { redisKeyPrefix: options.redisKeyPrefix, ...options.mail })
  await fastify.register(sessionsPlugin)
  await fastify.register(accountsPlugin)
  await fastify.register(adminPlugin)
  await fastify.register(corsPlugin)
  await fastify.register(authPlugin)
  await fastify.register(swaggerPlugin)

  // The routes that read or write the refresh cookie, with the cookie plugin in their scope only.
  await fastify.register(async (cookieRoutes) => {
    await cookieRoutes.register(cookiePlugin)
    await cookieRoutes.register(authRoutes)
    await cookieRoutes.register(sessionRoutes)
  })
  await fastify.register(accountLinkRoutes)
  await fastify.register(accountPageRoutes)
  await fastify.register(userRoutes)
  await fastify.register(eventRoutes)
  await fastify.register(adminRoutes)
  await fastify.register(keyRoutes)
  await fastify.register(introspectionRoutes)
  await fastify.register(healthRoutes)
  await fastify.register(metricsRoutes)
}

/** Not encapsulated, so the caller (server or test) sees the app's decorators. */
const appPlugin = fp(app, { name: 'auth-service' })

/** Builds a ready-to-listen Fastify instance of the service from options (tests build theirs the same way). */
export async function buildApp (options: AppOptions): Promise<FastifyInstance> {
  const serverOptions: FastifyServerOptions = {
    // A logger given as options (tests capture logs so) keeps the redaction.
    logger: options.logger === undefined
      ? { level: options.config.logLevel, redact: REDACTED_PATHS }
      : typeof options.logger === 'object' ? { redact: REDACTED_PATHS, ...options.logger } : options.logger,
    // Fastify (proxy-addr) also takes a hop count, which its types leave out.
    trustProxy: options.config.trustProxy as FastifyServerOptions['trustProxy'],
    // Creating the embedded database on a busy host can outlast Fastify's default 10 s.
    pluginTimeout: 60_000,
    bodyLimit: BODY_LIMIT_BYTES,
    // Requests still arriving while the app closes are served (with Connection: close), not refused.
    return503OnClosing: false,
    // A request must arrive whole within 30 s: slow senders cannot hold connections open (slowloris).
    requestTimeout: 30_000,
    clientErrorHandler,
    // A URL Fastify cannot decode (`/%E0%A4%A`) is answered in API.md's shape, not with Fastify's own code.
    frameworkErrors: (error, _request, reply: unknown) => {
      const refusal = new ServiceError('VALIDATION_ERROR', error.code === 'FST_ERR_BAD_URL' ? 'The URL is malformed' : undefined)
      const answer = reply as FastifyReply
      answer.code(refusal.statusCode).send(refusal.toJSON())
    }
  }
  const fastify = Fastify(serverOptions).withTypeProvider<TypeBoxTypeProvider>()
  await fastify.register(appPlugin, options)
  await fastify.ready()
  return fastify
}
