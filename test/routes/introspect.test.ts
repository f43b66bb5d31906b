import { createPublicKey, generateKeyPairSync } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import t from 'tap'
import { BACKENDS, FakeClock, buildTestApp, signUpAndLogIn, testConfig } from '../helpers.js'

/*
 * RFC 7662 introspection (POST /auth/introspect, routes/introspect.ts) and
 * verification across a key rotation, in process, on every backend. With the
 * secret set, the tests of a backend share one app.
 */

const SECRET = 'introspection-secret-for-tests'
function introspect (app: FastifyInstance, token: string, { secret = SECRET, form = false } = {}) {
  return app.inject({
    method: 'POST',
    url: '/auth/introspect',
    headers: {
      authorization: `Bearer ${secret}`,
      'content-type': form ? 'application/x-www-form-urlencoded' : 'application/json'
    },
    payload: form ? new URLSearchParams({ token }).toString() : JSON.stringify({ token })
  })
}

const loginPair = (app: FastifyInstance) => signUpAndLogIn(app, 'introspect')

for (const backend of BACKENDS) {
  t.test(backend.name, { skip: backend.skip }, async (t) => {
    const storage = { realDatabase: backend.realDatabase, realRedis: backend.realRedis }
    const clock = new FakeClock()
    let withSecret: Promise<FastifyInstance> | undefined
    /** This backend's app with INTROSPECTION_SECRET set (and 5-minute access tokens), built on first use. */
    const introspecting = () => (withSecret ??= buildTestApp(t, { ...storage, clock, env: { INTROSPECTION_SECRET: SECRET, ACCESS_TOKEN_TTL: '5m' } }))

    t.test('off (404 NOT_FOUND) unless INTROSPECTION_SECRET is set', async (t) => {
      const app = await buildTestApp(t, storage)
      const { accessToken } = await loginPair(app)
      const response = await introspect(app, accessToken)
      t.equal(response.statusCode, 404)
      t.equal(response.json().code, 'NOT_FOUND')
    })

    t.test('the caller must present the secret', async (t) => {
      const app = await introspecting()
      const { accessToken } = await loginPair(app)
      const missing = await app.inject({ method: 'POST', url: '/auth/introspect', payload: { token: accessToken } })
      t.equal(missing.statusCode, 401)
      t.equal(missing.json().code, 'ACCESS_TOKEN_MISSING')
      t.equal(missing.headers['www-authenticate'], 'Bearer')
      const wrong = await introspect(app, accessToken, { secret: `${SECRET}x` })
      t.equal(wrong.json().code, 'ACCESS_TOKEN_INVALID')
      t.match(String(wrong.headers['www-authenticate']), /invalid_token/)
      t.equal((await introspect(app, accessToken, { secret: accessToken })).json().code, 'ACCESS_TOKEN_INVALID', 'a user\'s access token is not the secret')
      const noBody = await app.inject({ method: 'POST', url: '/auth/introspect', headers: { authorization: `Bearer ${SECRET}` } })
      t.equal(noBody.json().code, 'VALIDATION_ERROR', 'the token is required')
    })

    t.test('active tokens answer their claims; everything else answers active: false', async (t) => {
      const app = await introspecting()
      const pair = await loginPair(app)
      const claims = JSON.parse(Buffer.from(pair.accessToken.split('.')[1]!, 'base64url').toString())

      for (const form of [false, true]) {
        const active = await introspect(app, pair.accessToken, { form })
        t.equal(active.statusCode, 200)
        t.equal(active.headers['cache-control'], 'no-store')
        t.strictSame(active.json(), {
          active: true,
          sub: claims.sub,
          sid: claims.sid,
          jti: claims.jti,
          iat: claims.iat,
          exp: claims.exp,
          iss: 'auth-service',
          aud: 'api',
          token_type: 'Bearer',
          roles: []
        }, form ? 'as a form (RFC 7662)' : 'as JSON')
      }

      const inactive = async (token: string, why: string) => t.strictSame((await introspect(app, token)).json(), { active: false }, why)
      await inactive(pair.refreshToken, 'a refresh token')
      await inactive('garbage', 'garbage')
      await inactive(`${pair.accessToken.slice(0, -4)}AAAA`, 'a bad signature')
      const unsigned = `${Buffer.from('{"alg":"none","typ":"at+jwt"}').toString('base64url')}.${pair.accessToken.split('.')[1]}.`
      await inactive(unsigned, 'alg none')

      const loggedOut = await loginPair(app)
      await app.inject({ method: 'POST', url: '/auth/logout', payload: { refreshToken: loggedOut.refreshToken } })
      await inactive(loggedOut.accessToken, 'the access token of a logged-out session')

      clock.advance(5 * 60_000)
      await inactive(pair.accessToken, 'an expired access token')
    })
  })
}

t.test('key rotation: the retired key verifies only its own tokens, and only while configured', async (t) => {
  const oldKey = generateKeyPairSync('ed25519').privateKey
  const newKey = generateKeyPairSync('ed25519').privateKey
  const pem = (key: ReturnType<typeof generateKeyPairSync>['privateKey'], type: 'pkcs8' | 'spki') => key.export({ format: 'pem', type }).toString()
  const before = await buildTestApp(t, { config: await testConfig(t, { JWT_PRIVATE_KEY: pem(oldKey, 'pkcs8') }) })
  const oldToken = (await loginPair(before)).accessToken

  const rotated = await buildTestApp(t, {
    config: await testConfig(t, { JWT_PRIVATE_KEY: pem(newKey, 'pkcs8'), JWT_PREVIOUS_PUBLIC_KEYS: pem(createPublicKey(oldKey), 'spki') })
  })
  const me = (app: FastifyInstance, token: string) => app.inject({ method: 'GET', url: '/users/me', headers: { authorization: `Bearer ${token}` } })
  t.equal((await me(rotated, oldToken)).statusCode, 200, 'a token of the retired key still verifies')
  const newToken = (await loginPair(rotated)).accessToken
  t.equal((await me(rotated, newToken)).statusCode, 200)
  t.equal((await me(before, newToken)).json().code, 'ACCESS_TOKEN_INVALID', 'the old instance does not know the new key')

  // The retired kid on a token signed by the current key: picked by kid, so refused.
  const [newHeader, newPayload, newSignature] = newToken.split('.')
  const oldKid = JSON.parse(Buffer.from(oldToken.split('.')[0]!, 'base64url').toString()).kid
  const relabelled = `${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(newHeader!, 'base64url').toString()), kid: oldKid })).toString('base64url')}.${newPayload}.${newSignature}`
  t.equal((await me(rotated, relabelled)).json().code, 'ACCESS_TOKEN_INVALID', 'a kid that does not match the signing key')

  const retiredForGood = await buildTestApp(t, { config: await testConfig(t, { JWT_PRIVATE_KEY: pem(newKey, 'pkcs8') }) })
  t.equal((await me(retiredForGood, oldToken)).json().code, 'ACCESS_TOKEN_INVALID', 'once the old key is removed, its tokens are refused')
  t.equal((await me(retiredForGood, newToken)).statusCode, 200)
})
