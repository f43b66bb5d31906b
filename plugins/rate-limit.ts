import { createHash } from 'node:crypto'
import fastifyRateLimit, { normalizeIP } from '@fastify/rate-limit'
import type { FastifyInstance, FastifyReply, FastifyRequest, preHandlerAsyncHookHandler } from 'fastify'
import fp from 'fastify-plugin'
import type { Config, RateLimit } from '../src/config.js'
import { storeUnavailable } from '../src/errors.js'
import { RateLimitedError } from '../src/rate-limited.js'
import { errorResponses } from './shared/openapi.js'

/** The rate-limited routes, each naming its policy where it is declared: `config: { rateLimitPolicy: 'login' }`. */
export type RateLimitPolicy = 'signup' | 'login' | 'refresh' | 'password' | 'link-request' | 'link-redeem'

/**
 * Limits a handler counts itself, once it knows an attempt is one of those
 * limited: `await fastify.rateLimits.consume('logout-noop', request, reply)`.
 */
export type CountedLimit = 'logout-noop'

declare module 'fastify' {
  interface FastifyContextConfig {
    rateLimitPolicy?: RateLimitPolicy
  }
  interface FastifyInstance {
    rateLimits: {
      /** Counts one attempt against `limit`; throws RateLimitedError (429) when that exceeds it. */
      consume(limit: CountedLimit, request: FastifyRequest, reply: FastifyReply): Promise<void>
    }
  }
}

/** Every limit: attempts per window. */
export interface RateLimitSettings {
  /** Login attempts per normalized email, from any address (LOGIN_RATE_LIMIT); also password changes per user. */
  loginPerAccount: RateLimit
  /** Login and password-change attempts per client address. */
  loginPerAddress: RateLimit
  signupPerAddress: RateLimit
  refreshPerAddress: RateLimit
  /** Logouts that revoke nothing, per client address. */
  logoutNoopPerAddress: RateLimit
  /** Requests for a mailed link (reset, verification), per email or signed-in user; the mail itself is throttled per recipient too. */
  linkRequestPerAccount: RateLimit
  /** Requests for a mailed link, and attempts to redeem one, per client address. */
  linkPerAddress: RateLimit
}

/**
 * A whole office behind one NAT address shares the per-address limits, so
 * they are generous; the per-account limit is what stops password guessing.
 */
const SHARED_ADDRESS_FACTOR = 10

/**
 * The limits the configuration sets: login per account as LOGIN_RATE_LIMIT and per
 * address ten times that, signup SIGNUP_RATE_LIMIT, refresh REFRESH_RATE_LIMIT.
 */
function defaultRateLimits (
  { loginRateLimit, signupRateLimit, refreshRateLimit }: Pick<Config, 'loginRateLimit' | 'signupRateLimit' | 'refreshRateLimit'>
): RateLimitSettings {
  return {
    loginPerAccount: loginRateLimit,
    loginPerAddress: { max: loginRateLimit.max * SHARED_ADDRESS_FACTOR, windowSeconds: loginRateLimit.windowSeconds },
    signupPerAddress: signupRateLimit,
    refreshPerAddress: refreshRateLimit,
    // A logout that revokes nothing costs what a refresh does, and may be a probe with tokens
    // that are not (or no longer) live: it is held to the refresh numbers.
    logoutNoopPerAddress: refreshRateLimit,
    // A link request is limited like a login: it is the other way in to an account.
    linkRequestPerAccount: loginRateLimit,
    linkPerAddress: { max: loginRateLimit.max * SHARED_ADDRESS_FACTOR, windowSeconds: loginRateLimit.windowSeconds }
  }
}

export interface RateLimitPluginOptions {
  limits?: Partial<RateLimitSettings>
  redisKeyPrefix?: string
}

type Check = ReturnType<FastifyInstance['createRateLimit']>
type CheckResult = Awaited<ReturnType<Check>>

interface Limiter {
  name: string
  check: Check
}

/** Keys in the in-process store before the least recently used are dropped. */
const LOCAL_CACHE_ENTRIES = 50_000

const clientAddress = (request: FastifyRequest): string => normalizeIP(request.ip)
/** Hashed: the limiter's keys (in Redis, say) hold no email address. */
const accountOf = (request: FastifyRequest): string =>
  createHash('sha256').update(String((request.body as { email?: unknown } | undefined)?.email)).digest('base64url')
const userOf = (request: FastifyRequest): string => request.auth?.sub ?? ''
/** A link request names its account by the access token it carries (checked before the limit), else by email. */
const userOrEmailOf = (request: FastifyRequest): string => request.auth === null ? accountOf(request) : `user:${userOf(request)}`

/** Sets the standard headers from the tightest of the limits that applied; answers the one exceeded, if any. */
function decide (reply: FastifyReply, results: CheckResult[]): (CheckResult & { isAllowed: false }) | undefined {
  let tightest: (CheckResult & { isAllowed: false }) | undefined
  let exceeded: (CheckResult & { isAllowed: false }) | undefined
  for (const result of results) {
    if (result.isAllowed) continue
    if (tightest === undefined || result.remaining < tightest.remaining ||
      (result.remaining === tightest.remaining && result.ttl > tightest.ttl)) tightest = result
    if (result.isExceeded && (exceeded === undefined || result.ttl > exceeded.ttl)) exceeded = result
  }
  const shown = exceeded ?? tightest
  if (shown !== undefined) {
    reply.header('x-ratelimit-limit', shown.max)
    reply.header('x-ratelimit-remaining', exceeded === undefined ? shown.remaining : 0)
    reply.header('x-ratelimit-reset', shown.ttlInSeconds)
  }
  return exceeded
}

/**
 * Rate limits with @fastify/rate-limit, counted in Redis when the app has it
 * (every instance shares the count; refresh's and logout's excepted) and in process otherwise. A route names
 * its policy in its config; each policy is one or more limits, all counted
 * on every attempt that reaches the handler (after validation, so malformed
 * requests, which cost nothing, do not use up a client's attempts). A handler
 * that limits only some outcomes counts them itself with `fastify.rateLimits.consume`
 * (logout: only the logouts that revoke nothing). When any
 * is exceeded the answer is 429 RATE_LIMITED with Retry-After and the
 * x-ratelimit-* headers; while Redis is down it is 503 STORE_UNAVAILABLE, not
 * an unlimited pass.
 */
async function rateLimitPlugin (fastify: FastifyInstance, options: RateLimitPluginOptions): Promise<void> {
  const limits = { ...defaultRateLimits(fastify.config), ...options.limits }
  const redis = fastify.hasDecorator('redis') ? fastify.redis : undefined
  const prefix = `${options.redisKeyPrefix ?? fastify.config.redisKeyPrefix}rate-limit:`

  /**
   * One limit. Each is @fastify/rate-limit registered in a scope of its own, used
   * through its root limiter, so its keys are `<prefix>rate-limit:<name>:<key>`.
   * A limit `perInstance` is counted in process even with Redis: the refresh limit,
   * which guards against floods of requests that each cost one Redis command, would
   * otherwise double that cost for every refresh (a refresh is one round trip); the
   * no-op logout limit, with the same numbers, likewise.
   */
  async function limiter (
    name: string, limit: RateLimit, keyOf: (request: FastifyRequest) => string, { perInstance = false } = {}
  ): Promise<Limiter> {
    let check: Check | undefined
    await fastify.register(fp(async (scope) => {
      await scope.register(fastifyRateLimit, {
        global: false,
        max: limit.max,
        timeWindow: limit.windowSeconds * 1000,
        keyGenerator: keyOf,
        redis: perInstance ? undefined : redis,
        nameSpace: `${prefix}${name}:`,
        cache: LOCAL_CACHE_ENTRIES,
        skipOnError: false
      })
      check = scope.createRateLimit()
    }, { name: `rate-limit-${name}`, encapsulate: true }))
    return { name, check: check! }
  }

  const loginPerAddress = await limiter('login-address', limits.loginPerAddress, clientAddress)
  const policies: Record<RateLimitPolicy, Limiter[]> = {
    login: [loginPerAddress, await limiter('login-account', limits.loginPerAccount, accountOf)],
    password: [loginPerAddress, await limiter('password-user', limits.loginPerAccount, userOf)],
    signup: [await limiter('signup-address', limits.signupPerAddress, clientAddress)],
    refresh: [await limiter('refresh-address', limits.refreshPerAddress, clientAddress, { perInstance: true })],
    'link-request': [
      await limiter('link-request-address', limits.linkPerAddress, clientAddress),
      await limiter('link-request-account', limits.linkRequestPerAccount, userOrEmailOf)
    ],
    'link-redeem': [await limiter('link-redeem-address', limits.linkPerAddress, clientAddress)]
  }
  const counted: Record<CountedLimit, Limiter[]> = {
    'logout-noop': [await limiter('logout-noop-address', limits.logoutNoopPerAddress, clientAddress, { perInstance: true })]
  }

  /** Counts the attempt against every one of `limiters`; throws when one is exceeded. */
  async function count (limiters: Limiter[], request: FastifyRequest, reply: FastifyReply): Promise<void> {
    let results: CheckResult[]
    try {
      results = await Promise.all(limiters.map(({ check }) => check(request)))
    } catch (error) {
      throw storeUnavailable(error)
    }
    const exceeded = decide(reply, results)
    if (exceeded === undefined) return
    const name = limiters[results.indexOf(exceeded)]!.name
    request.log.info({ limit: name, retryAfter: exceeded.ttlInSeconds }, 'rate limit exceeded')
    throw new RateLimitedError(exceeded.ttlInSeconds, `Too many attempts: retry in ${Math.max(1, exceeded.ttlInSeconds)} seconds`)
  }

  function enforce (policy: RateLimitPolicy): preHandlerAsyncHookHandler {
    const limiters = policies[policy]
    return async function rateLimit (request, reply) {
      await count(limiters, request, reply)
    }
  }

  fastify.decorate('rateLimits', {
    consume: (limit: CountedLimit, request: FastifyRequest, reply: FastifyReply) => count(counted[limit], request, reply)
  })

  fastify.addHook('onRoute', (route) => {
    const policy = route.config?.rateLimitPolicy
    if (policy === undefined) return
    if (!(policy in policies)) throw new Error(`Unknown rate-limit policy "${policy}" on ${route.method} ${route.url}`)
    const existing = route.preHandler === undefined ? [] : [route.preHandler].flat()
    route.preHandler = [...existing, enforce(policy)]
    // Documented (OpenAPI) and serialized like every other error of the route.
    const response = (route.schema?.response ?? {}) as Record<number, unknown>
    route.schema = { ...route.schema, response: { ...response, 429: errorResponses('RATE_LIMITED')[429] } }
  })
}

export default fp(rateLimitPlugin, { name: 'rate-limit', dependencies: ['config', 'redis'] })
