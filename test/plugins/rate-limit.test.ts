import { once } from 'node:events'
import Fastify, { type FastifyInstance, type InjectOptions } from 'fastify'
import fp from 'fastify-plugin'
import t from 'tap'
import type { Test } from 'tap'
import configPlugin from '../../plugins/config.js'
import errorsPlugin from '../../plugins/errors.js'
import rateLimitPlugin, { type RateLimitPolicy } from '../../plugins/rate-limit.js'
import { systemClock } from '../../src/clock.js'
import { newFamilyId, newRefreshSecret, refreshTokenOf } from '../../src/refresh-token.js'
import {
  BACKENDS, PASSWORD, assertErrorShape, buildTestApp, freshEmail, privateRedis, refreshCookieOf, skipUnless, testConfig, testRedis
} from '../helpers.js'
import { freePort } from '../fixtures/service-process.js'

/*
 * Rate limits: login per account and per address (LOGIN_RATE_LIMIT, counting
 * every attempt), signup, refresh and password change per address or user;
 * 429 RATE_LIMITED with Retry-After and x-ratelimit-* headers; counted in
 * Redis across instances when Redis is configured, and refused (503), not
 * waved through, while Redis is down. The tests with the same limits share
 * an app, each with addresses and accounts of its own.
 */

const from = (ip: string) => ({ 'x-forwarded-for': ip })

function assertLimited (t: Test, response: Awaited<ReturnType<FastifyInstance['inject']>>, name: string, windowSeconds: number): void {
  assertErrorShape(t, response, 429, 'RATE_LIMITED', name)
  const retryAfter = Number(response.headers['retry-after'])
  t.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= windowSeconds, `${name}: Retry-After ${retryAfter} within the window`)
  t.equal(response.headers['x-ratelimit-remaining'], '0', `${name}: x-ratelimit-remaining 0`)
  t.ok(Number(response.headers['x-ratelimit-limit']) > 0, `${name}: x-ratelimit-limit`)
  t.equal(response.headers['x-ratelimit-reset'], String(retryAfter), `${name}: x-ratelimit-reset`)
}

/**
 * Holds Date.now() still until `advance` moves it, restored when the test
 * ends: the clock @fastify/rate-limit's in-process store reads, so that a
 * window ends when the test says, however fast or slow the machine.
 */
function holdDateNow (t: Test): { advance: (ms: number) => void } {
  const realNow = Date.now
  let now = realNow()
  Date.now = () => now
  t.teardown(() => { Date.now = realNow })
  return { advance: (ms) => { now += ms } }
}

for (const backend of BACKENDS) {
  t.test(backend.name, { skip: backend.skip }, async (t) => {
    const storage = { realDatabase: backend.realDatabase, realRedis: backend.realRedis }
    // TRUST_PROXY lets one test play several client addresses through X-Forwarded-For.
    const build = (env: Record<string, string>, options: Parameters<typeof buildTestApp>[1] = {}) =>
      buildTestApp(t, { ...storage, env: { TRUST_PROXY: 'true', ...env }, ...options })
    let twoPerMinute: Promise<FastifyInstance> | undefined
    /** The app with LOGIN_RATE_LIMIT=2/1m, shared by the tests of that limit (built on first use). */
    const withTwoPerMinute = () => (twoPerMinute ??= build({ LOGIN_RATE_LIMIT: '2/1m' }))

    async function signup (app: FastifyInstance, email = freshEmail('limits'), ip = '198.51.100.1'): Promise<string> {
      const response = await app.inject({ method: 'POST', url: '/auth/signup', headers: from(ip), payload: { email, password: PASSWORD } })
      if (response.statusCode !== 201) throw new Error(`signup: ${response.body}`)
      return email
    }
    const login = (app: FastifyInstance, email: string, ip: string, password = PASSWORD) =>
      app.inject({ method: 'POST', url: '/auth/login', headers: from(ip), payload: { email, password } })

    t.test('login: LOGIN_RATE_LIMIT attempts per account, from any address, right or wrong', async (t) => {
      const app = await build({ LOGIN_RATE_LIMIT: '3/1m' })
      const email = await signup(app)
      const first = await login(app, email, '203.0.113.1', 'wrong password')
      t.equal(first.statusCode, 401)
      t.equal(first.headers['x-ratelimit-limit'], '3', 'the tighter limit (the account\'s) is shown')
      t.equal(first.headers['x-ratelimit-remaining'], '2')
      t.equal((await login(app, email, '203.0.113.2', 'wrong password')).statusCode, 401)
      t.equal((await login(app, ` ${email.toUpperCase()} `, '203.0.113.3')).statusCode, 200, 'a success counts too; the email is normalized first')
      assertLimited(t, await login(app, email, '203.0.113.4'), 'the fourth attempt, from a fourth address, right password', 60)
      assertLimited(t, await login(app, email.toUpperCase(), '203.0.113.1', 'wrong password'), 'another spelling of the same account', 60)

      t.equal((await login(app, await signup(app), '203.0.113.1')).statusCode, 200, 'another account from the same address is not held back')
      const unknown = freshEmail('limits')
      for (let i = 0; i < 3; i++) t.equal((await login(app, unknown, '203.0.113.9')).statusCode, 401)
      assertLimited(t, await login(app, unknown, '203.0.113.9'), 'an unknown email is limited alike (no account enumeration)', 60)
    })

    t.test('login: ten times LOGIN_RATE_LIMIT per address, over all accounts', async (t) => {
      const app = await withTwoPerMinute()
      const email = await signup(app)
      for (let i = 0; i < 20; i++) {
        const response = await login(app, freshEmail('limits'), '203.0.113.20', 'guess')
        if (response.statusCode !== 401) t.fail(`attempt ${i + 1}: ${response.statusCode}`)
      }
      assertLimited(t, await login(app, email, '203.0.113.20'), 'the 21st attempt from one address', 60)
      t.equal((await login(app, email, '203.0.113.21')).statusCode, 200, 'another address is not held back')
    })

    t.test('malformed requests are refused before they count', async (t) => {
      const app = await withTwoPerMinute()
      const email = await signup(app)
      for (let i = 0; i < 5; i++) {
        const response = await app.inject({ method: 'POST', url: '/auth/login', headers: from('203.0.113.30'), payload: { email, password: PASSWORD, extra: i } })
        t.equal(response.statusCode, 400)
      }
      t.equal((await login(app, email, '203.0.113.30')).statusCode, 200, 'five invalid bodies used up none of two attempts')
    })

    t.test('the window ends and attempts are allowed again', async (t) => {
      /*
       * The end of the window is brought about, not waited for. In process the
       * limiter reads Date.now(), held still here and then moved past the
       * window; in Redis the window is the time to live of the limit's keys
       * (checked in the Redis test below), which the test ends by removing them.
       */
      const redis = backend.realRedis ? await testRedis(t) : undefined
      const app = await build({ LOGIN_RATE_LIMIT: '1/1s' }, redis === undefined ? {} : { realRedis: false, redis: redis.redis, redisKeyPrefix: redis.prefix })
      const email = await signup(app)
      const clock = redis === undefined ? holdDateNow(t) : undefined
      // Sent together, so both are counted before either is hashed: the second is within the window in Redis too.
      const attempts = await Promise.all([login(app, email, '203.0.113.40'), login(app, email, '203.0.113.40')])
      t.same(attempts.map((response) => response.statusCode).sort(), [200, 429], 'one allowed, one limited')
      assertLimited(t, attempts.find((response) => response.statusCode === 429)!, 'the second attempt within a second', 1)
      if (clock !== undefined) clock.advance(1100)
      else await redis!.redis.del(...await redis!.redis.keys(`${redis!.prefix}rate-limit:login-*`))
      t.equal((await login(app, email, '203.0.113.40')).statusCode, 200, 'allowed again after Retry-After')
    })

    t.test('signup and refresh per address', async (t) => {
      const app = await build({}, {
        rateLimits: { signupPerAddress: { max: 2, windowSeconds: 600 }, refreshPerAddress: { max: 3, windowSeconds: 60 } }
      })
      const email = await signup(app, freshEmail('limits'), '203.0.113.50')
      await signup(app, freshEmail('limits'), '203.0.113.50')
      const third = await app.inject({ method: 'POST', url: '/auth/signup', headers: from('203.0.113.50'), payload: { email: freshEmail('limits'), password: PASSWORD } })
      assertLimited(t, third, 'the third signup from one address', 600)
      await signup(app, freshEmail('limits'), '203.0.113.51')

      const pair = (await login(app, email, '203.0.113.52')).json()
      let refreshToken = pair.refreshToken
      for (let i = 0; i < 3; i++) {
        const response = await app.inject({ method: 'POST', url: '/auth/refresh', headers: from('203.0.113.52'), payload: { refreshToken } })
        t.equal(response.statusCode, 200, `refresh ${i + 1}`)
        refreshToken = response.json().refreshToken
      }
      const limited = await app.inject({ method: 'POST', url: '/auth/refresh', headers: from('203.0.113.52'), payload: { refreshToken } })
      assertLimited(t, limited, 'the fourth refresh from one address', 60)
      t.notOk(refreshCookieOf(limited), 'a limited refresh neither sets nor clears the cookie')
      const elsewhere = await app.inject({ method: 'POST', url: '/auth/refresh', headers: from('203.0.113.53'), payload: { refreshToken } })
      t.equal(elsewhere.statusCode, 200, 'the token the limited request carried was not spent')
    })

    t.test('SIGNUP_RATE_LIMIT and REFRESH_RATE_LIMIT set the signup and refresh limits', async (t) => {
      const app = await build({ SIGNUP_RATE_LIMIT: '52/10m', REFRESH_RATE_LIMIT: '2/1m' })
      // One past the default 50.
      for (let i = 0; i < 51; i++) await signup(app, freshEmail('limits'), '203.0.113.70')
      const last = await app.inject({ method: 'POST', url: '/auth/signup', headers: from('203.0.113.70'), payload: { email: freshEmail('limits'), password: PASSWORD } })
      t.equal(last.statusCode, 201, 'the 52nd signup from one address')
      t.equal(last.headers['x-ratelimit-limit'], '52')
      assertLimited(t, await app.inject({ method: 'POST', url: '/auth/signup', headers: from('203.0.113.70'), payload: { email: freshEmail('limits'), password: PASSWORD } }),
        'the 53rd', 600)

      let { refreshToken } = (await login(app, await signup(app, freshEmail('limits'), '203.0.113.71'), '203.0.113.71')).json()
      for (let i = 0; i < 2; i++) {
        const response = await app.inject({ method: 'POST', url: '/auth/refresh', headers: from('203.0.113.71'), payload: { refreshToken } })
        t.equal(response.statusCode, 200, `refresh ${i + 1}`)
        refreshToken = response.json().refreshToken
      }
      assertLimited(t, await app.inject({ method: 'POST', url: '/auth/refresh', headers: from('203.0.113.71'), payload: { refreshToken } }),
        'the third refresh', 60)
    })

    t.test('logouts that revoke nothing are limited per address (REFRESH_RATE_LIMIT); those that revoke never count', async (t) => {
      const app = await build({ REFRESH_RATE_LIMIT: '3/1m' })
      const email = await signup(app)
      const logout = (ip: string, payload: object = {}) => app.inject({ method: 'POST', url: '/auth/logout', headers: from(ip), payload })
      const openSession = async (): Promise<string> => (await login(app, email, '203.0.113.80')).json().refreshToken

      // More logouts that end a live session than the limit allows: none is counted.
      for (let i = 0; i < 4; i++) t.equal((await logout('203.0.113.81', { refreshToken: await openSession() })).statusCode, 204, `revoking logout ${i + 1}`)
      const spent = await openSession()
      t.equal((await logout('203.0.113.81', { refreshToken: spent })).statusCode, 204)
      const noop = await logout('203.0.113.81', { refreshToken: spent })
      t.equal(noop.statusCode, 204, 'the same logout again revokes nothing, and counts')
      t.equal(noop.headers['x-ratelimit-remaining'], '2')
      t.equal((await logout('203.0.113.81')).statusCode, 204, 'a logout with no token at all counts too')
      t.equal((await logout('203.0.113.81')).statusCode, 204)
      const limited = await logout('203.0.113.81', { refreshToken: spent })
      assertLimited(t, limited, 'the fourth logout that revokes nothing', 60)
      t.equal(limited.headers['set-cookie'], undefined, 'a limited logout neither sets nor clears the cookie')

      const live = await openSession()
      t.equal((await logout('203.0.113.81', { refreshToken: live })).statusCode, 204, 'a logout that revokes is never held back')
      const revoked = await app.inject({ method: 'POST', url: '/auth/refresh', headers: from('203.0.113.82'), payload: { refreshToken: live } })
      t.equal(revoked.statusCode, 401, 'and it did revoke the session')
      t.equal((await logout('203.0.113.83')).statusCode, 204, 'another address is not held back')
    })

    t.test('password change: LOGIN_RATE_LIMIT attempts per user', async (t) => {
      const app = await withTwoPerMinute()
      const email = await signup(app)
      const { accessToken } = (await login(app, email, '203.0.113.60')).json()
      const change = (ip: string, currentPassword: string): Promise<Awaited<ReturnType<FastifyInstance['inject']>>> => app.inject({
        method: 'POST',
        url: '/auth/password',
        headers: { ...from(ip), authorization: `Bearer ${accessToken}` },
        payload: { currentPassword, newPassword: 'a brand new password' }
      })
      t.equal((await change('203.0.113.61', 'guess one')).statusCode, 401)
      t.equal((await change('203.0.113.62', 'guess two')).statusCode, 401)
      assertLimited(t, await change('203.0.113.63', PASSWORD), 'a third guess with a stolen access token, from a third address', 60)
    })

    t.test('Redis holds the counts, under the key prefix, shared by every instance, with no email in a key', {
      skip: !backend.realRedis && 'counts are per process without Redis'
    }, async (t) => {
      const { redis, prefix } = await testRedis(t)
      const instance = () => buildTestApp(t, { realDatabase: true, redis, redisKeyPrefix: prefix, env: { LOGIN_RATE_LIMIT: '3/1m' } })
      const [a, b] = [await instance(), await instance()]
      const email = await signup(a)
      t.equal((await login(a, email, '127.0.0.1', 'wrong')).statusCode, 401)
      t.equal((await login(b, email, '127.0.0.1', 'wrong')).statusCode, 401)
      const loggedIn = await login(a, email, '127.0.0.1')
      t.equal(loggedIn.statusCode, 200)
      assertLimited(t, await login(b, email, '127.0.0.1'), 'the fourth attempt, on the other instance', 60)
      const refreshed = await b.inject({ method: 'POST', url: '/auth/refresh', payload: { refreshToken: loggedIn.json().refreshToken } })
      t.equal(refreshed.statusCode, 200)
      t.equal(refreshed.headers['x-ratelimit-limit'], '600', 'refresh is limited too')

      const keys = await redis.keys(`${prefix}rate-limit:*`)
      t.ok(keys.some((key) => key.startsWith(`${prefix}rate-limit:login-account:`)), 'per-account counts')
      t.ok(keys.some((key) => key === `${prefix}rate-limit:login-address:127.0.0.1`), 'per-address counts')
      t.ok(keys.some((key) => key.startsWith(`${prefix}rate-limit:signup-address:`)), 'signup counts')
      t.notOk(keys.some((key) => key.includes(':refresh-address:')), 'refresh counts stay in process: a refresh is one Redis round trip')
      t.notOk(keys.some((key) => key.includes(email) || key.includes('@')), 'keys are hashed: no email address in Redis')
      for (const key of keys) {
        const ttl = await redis.pttl(key)
        t.ok(ttl > 0 && ttl <= 600_000, `${key} expires (${ttl} ms)`)
      }
    })
  })
}

t.test('Redis down: rate-limited routes answer 503 STORE_UNAVAILABLE, never 500, never unlimited', {
  skip: skipUnless({ redisServer: true })
}, async (t) => {
  const port = await freePort()
  const redis = await privateRedis(t, port)
  const app = await buildTestApp(t, { env: { REDIS_URL: `redis://127.0.0.1:${port}` } })
  const post = (url: string, payload: object, extra: Omit<InjectOptions, 'method' | 'url' | 'payload'> = {}) =>
    app.inject({ method: 'POST', url, payload, ...extra })
  const email = freshEmail('limits')
  t.equal((await post('/auth/signup', { email, password: PASSWORD })).statusCode, 201)

  redis.kill('SIGKILL')
  await once(redis, 'exit')
  assertErrorShape(t, await post('/auth/signup', { email: freshEmail('limits'), password: PASSWORD }), 503, 'STORE_UNAVAILABLE', 'signup (which needs no Redis but for its limit)')
  assertErrorShape(t, await post('/auth/login', { email, password: 'a guess' }), 503, 'STORE_UNAVAILABLE', 'a login guess gets no answer to learn from')
  const wellFormed = refreshTokenOf(newFamilyId(), 0, Date.now() + 3600_000, newRefreshSecret())
  assertErrorShape(t, await post('/auth/refresh', { refreshToken: wellFormed }), 503, 'STORE_UNAVAILABLE', 'refresh (its session is in Redis)')
  const me = await app.inject({ method: 'GET', url: '/users/me' })
  t.equal(me.statusCode, 401, 'routes without a limit are unaffected')
})

t.test('policies are declared on routes: an unknown one stops start-up; a route\'s own preHandlers run first', async (t) => {
  async function bare (t: Test) {
    const fastify = Fastify()
    t.teardown(() => fastify.close())
    await fastify.register(configPlugin, { config: await testConfig(t, { LOGIN_RATE_LIMIT: '1/1m' }), clock: systemClock })
    await fastify.register(errorsPlugin)
    await fastify.register(fp(async () => {}, { name: 'redis' }))
    await fastify.register(rateLimitPlugin)
    return fastify
  }

  const broken = await bare(t)
  t.throws(() => broken.post('/typo', { config: { rateLimitPolicy: 'logn' as RateLimitPolicy } }, async () => 'never'),
    /Unknown rate-limit policy "logn" on POST \/typo/)

  const app = await bare(t)
  const order: string[] = []
  app.post('/custom', {
    config: { rateLimitPolicy: 'login' },
    preHandler: async () => { order.push('route') }
  }, async () => { order.push('handler'); return { ok: true } })
  await app.ready()
  const ok = await app.inject({ method: 'POST', url: '/custom', payload: { email: 'a@example.com' } })
  t.equal(ok.statusCode, 200)
  t.same(order, ['route', 'handler'])
  t.equal(ok.headers['x-ratelimit-remaining'], '0', 'the last attempt of the window')
  assertLimited(t, await app.inject({ method: 'POST', url: '/custom', payload: { email: 'a@example.com' } }), 'the next', 60)
  t.same(order, ['route', 'handler', 'route'], 'the limit runs after the route\'s own preHandler, before the handler')
})
