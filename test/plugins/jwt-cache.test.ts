// First: it must see fast-jwt load.
import { signatureChecks } from '../fixtures/signature-checks.js'
import type { FastifyInstance } from 'fastify'
import t from 'tap'
import { FakeClock, buildTestApp, signUpAndLogIn as login } from '../helpers.js'

/*
 * The access-token verification cache (fast-jwt's, through @fastify/jwt), for
 * correctness, never for speed: counted in signature checks.
 */

const me = (app: FastifyInstance, token: string) =>
  app.inject({ method: 'GET', url: '/users/me', headers: { authorization: `Bearer ${token}` } })

/** Signature checks made by `action`: 0 when the verification cache answered. */
async function checksDuring (action: () => Promise<unknown>): Promise<number> {
  const before = signatureChecks()
  await action()
  return signatureChecks() - before
}

t.test('verification cache: a hit still expires with its token', async (t) => {
  const clock = new FakeClock()
  const app = await buildTestApp(t, { clock, env: { ACCESS_TOKEN_TTL: '1m' } })
  const { accessToken } = await login(app)
  t.equal(await checksDuring(async () => t.equal((await me(app, accessToken)).statusCode, 200)), 1, 'the signature checked on first use')
  t.equal(await checksDuring(async () => t.equal((await me(app, accessToken)).statusCode, 200)), 0, 'then served from the cache')

  clock.advance(60_000)
  t.equal(await checksDuring(async () => t.equal((await me(app, accessToken)).json().code, 'ACCESS_TOKEN_EXPIRED')), 0,
    'a cache hit is refused once expired, by the app\'s clock')
})

t.test('verification cache: a hit is still checked for revocation', async (t) => {
  const app = await buildTestApp(t)
  const { accessToken, refreshToken } = await login(app)
  t.equal((await me(app, accessToken)).statusCode, 200)
  await app.inject({ method: 'POST', url: '/auth/logout', payload: { refreshToken } })
  t.equal(await checksDuring(async () => t.equal((await me(app, accessToken)).json().code, 'ACCESS_TOKEN_REVOKED')), 0,
    'a cache hit is refused once its session is revoked')
})

t.test('verification cache: bounded, and only genuine tokens are served from it', async (t) => {
  const app = await buildTestApp(t, { verifiedTokensKept: 3 })
  const tokens = []
  for (let i = 0; i < 5; i++) tokens.push((await login(app)).accessToken)
  for (const token of tokens) t.equal((await me(app, token)).statusCode, 200)
  const useAll = (some: string[]) => async () => {
    for (const token of some) t.equal((await me(app, token)).statusCode, 200)
  }
  t.equal(await checksDuring(useAll(tokens.slice(2))), 0, 'the last three are remembered')
  t.equal(await checksDuring(useAll(tokens.slice(0, 2))), 2, 'never more than its bound: the first two verify again')

  // fast-jwt stores a refusal too, but already stale: it is never served.
  const [header, payload] = tokens[0]!.split('.')
  const forged = `${header}.${payload}.${'A'.repeat(86)}`
  t.equal(await checksDuring(async () => {
    for (let i = 0; i < 2; i++) t.equal((await me(app, forged)).json().code, 'ACCESS_TOKEN_INVALID')
  }), 2, 'a forged token is checked, and refused, every time')
})
