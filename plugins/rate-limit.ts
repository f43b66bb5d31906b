import { createHash } from 'node:crypto'
import fastifyRateLimit, { normalizeIP } from '@fastify/rate-limit'
import type { FastifyInstance, FastifyReply, FastifyRequest, preHandlerAsyncHookHandler } from 'fastify'
import fp from 'fastify-plugin'
import type { RateLimit } from '../src/config.js'
import { storeUnavailable } from '../src/errors.js'
import { RateLimitedError } from '../src/rate-limited.js'
import { errorResponses } from '../src/schemas.js'

/** The rate-limited routes, each naming its policy where it is declared: `config: { rateLimitPolicy: 'login' }`. */
export type RateLimitPolicy = 'signup' | 'login' | 'refresh' | 'password'

declare module 'fastify' {
  interface FastifyContextConfig {
    rateLimitPolicy?: RateLimitPolicy
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
}

/**
 * A whole office behind one NAT address shares the per-address limits, so
 * they are generous; the per-account limit is what stops password guessing.
 */
const SHARED_ADDRESS_FACTOR = 10

/** The limits for `loginRateLimit` (LOGIN_RATE_LIMIT): per account as configured, per address ten times that. */
export function defaultRateLimits (loginRateLimit: RateLimit): RateLimitSettings {
  return {
    loginPerAccount: loginRateLimit,
    loginPerAddress: { max: loginRateLimit.max * SHARED_ADDRESS_FACTOR, windowSeconds: loginRateLimit.windowSeconds },
    // A signup costs an argon2 hash and a row: ten an hour and some, from one address, is an office signing up.
    signupPerAddress: { max: 50, windowSeconds: 600 },
    // Refresh tokens cannot be guessed (256 bits); this only caps a flood, and is counted per instance
    // (see `limiter`). One refresh per user every ACCESS_TOKEN_TTL (10 min) lets several thousand users
    // share an address.
    refreshPerAddress: { max: 600, windowSeconds: 60 }
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
  createHash('sha256').update(String((request.body as { email?: unknown }).email)).digest('base64url')
const userOf = (request: FastifyRequest): string => request.auth?.sub ?? ''

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
 * (every instance shares the count; refresh's excepted) and in process otherwise. A route names
 * its policy in its config; each policy is one or more limits, all counted
 * on every attempt that reaches the handler (after validation, so malformed
 * requests, which cost nothing, do not use up a client's attempts). When any
 * is exceeded the answer is 429 RATE_LIMITED with Retry-After and the
 * x-ratelimit-* headers; while Redis is down it is 503 STORE_UNAVAILABLE, not
 * an unlimited pass.
 */
async function rateLimitPlugin (fastify: FastifyInstance, options: RateLimitPluginOptions): Promise<void> {
  const limits = { ...defaultRateLimits(fastify.config.loginRateLimit), ...options.limits }
  const redis = fastify.hasDecorator('redis') ? fastify.redis : undefined
  const prefix = `${options.redisKeyPrefix ?? fastify.config.redisKeyPrefix}rate-limit:`

  /**
   * One limit. Each is @fastify/rate-limit registered in a scope of its own, used
   * through its root limiter, so its keys are `<prefix>rate-limit:<name>:<key>`.
   * A limit `perInstance` is counted in process even with Redis: the refresh limit,
   * which guards against floods of requests that each cost one Redis command, would
   * otherwise double that cost for every refresh (a refresh is one round trip).
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
    refresh: [await limiter('refresh-address', limits.refreshPerAddress, clientAddress, { perInstance: true })]
  }

  function enforce (policy: RateLimitPolicy): preHandlerAsyncHookHandler {
    const limiters = policies[policy]
    return async function rateLimit (request, reply) {
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
  }

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
