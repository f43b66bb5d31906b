import { createPublicKey, generateKeyPairSync, randomUUID, sign, type KeyObject } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import t from 'tap'
import type { Test } from 'tap'
import { thumbprint } from '../../src/keys.js'
import { PASSWORD, buildTestApp, freshEmail } from '../helpers.js'
import { freePort, jsonPost, requestJson, startFastifyProcess } from '../fixtures/service-process.js'

/*
 * examples/consumer against auth-service: the consumer verifies tokens
 * through the JWKS alone, asks for introspection on its high-value route,
 * and keeps accepting old and new tokens across a key rotation. The consumer
 * runs as the example is run, a process of its own (it is a script that
 * listens as it loads); the service runs in this process, on a port it keeps
 * when it restarts with the new key, as the consumer knows it by its URL.
 */

const INTROSPECTION_SECRET = 'consumer-test-introspection-secret'
const pem = (key: KeyObject, type: 'pkcs8' | 'spki') => key.export({ format: 'pem', type }).toString()

/** An EdDSA token signed by `privateKey`, as a forger holding that key would make it. */
function signToken (privateKey: KeyObject, claims: Record<string, unknown>, kid: string): string {
  const encode = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url')
  const input = `${encode({ alg: 'EdDSA', typ: 'at+jwt', kid })}.${encode(claims)}`
  return `${input}.${sign(null, Buffer.from(input), privateKey).toString('base64url')}`
}

const kidOf = (key: KeyObject) => thumbprint(createPublicKey(key).export({ format: 'jwk' }))

/** The service with `env` (and the introspection secret), listening on `port` until the test ends or it is closed; on the file's database. */
async function serviceOn (t: Test, port: number, env: Record<string, string>): Promise<{ app: FastifyInstance, url: string }> {
  const app = await buildTestApp(t, { env: { INTROSPECTION_SECRET, ...env } })
  await app.listen({ host: '127.0.0.1', port })
  return { app, url: `http://127.0.0.1:${port}` }
}

t.test('a consumer verifies through the JWKS, introspects high-value calls, and survives a key rotation', async (t) => {
  const oldKey = generateKeyPairSync('ed25519').privateKey
  const newKey = generateKeyPairSync('ed25519').privateKey
  const servicePort = await freePort()
  let service = await serviceOn(t, servicePort, { JWT_PRIVATE_KEY: pem(oldKey, 'pkcs8') })
  const consumer = await startFastifyProcess(t, 'examples/consumer/src/server.ts', {
    AUTH_URL: service.url,
    INTROSPECTION_SECRET,
    JWKS_COOLDOWN_MS: '0'
  })
  const hello = (token: string) => requestJson(`${consumer.url}/hello`, { headers: { authorization: `Bearer ${token}` } })
  const transfer = (token: string) => requestJson(`${consumer.url}/transfer`, { method: 'POST', headers: { authorization: `Bearer ${token}` } })

  const credentials = { email: freshEmail('consumer'), password: PASSWORD }
  t.equal((await requestJson(`${service.url}/auth/signup`, jsonPost(credentials))).status, 201)
  const login = async () => (await requestJson(`${service.url}/auth/login`, jsonPost(credentials))).body
  const first = await login()

  const accepted = await hello(first.accessToken)
  t.equal(accepted.status, 200, 'a valid token passes')
  t.match(accepted.body, { sub: String, sid: String })
  t.equal((await transfer(first.accessToken)).status, 200, 'the high-value route introspects and passes')

  const [header, payload, signature] = first.accessToken.split('.')
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString())
  const tampered = `${header}.${Buffer.from(JSON.stringify({ ...claims, sub: randomUUID() })).toString('base64url')}.${signature}`
  t.equal((await hello(tampered)).body.code, 'TOKEN_INVALID', 'a tampered payload fails')
  const stranger = generateKeyPairSync('ed25519').privateKey
  t.equal((await hello(signToken(stranger, claims, kidOf(oldKey)))).body.code, 'TOKEN_INVALID', 'a forged signature fails')
  t.equal((await hello(signToken(stranger, claims, kidOf(stranger)))).body.code, 'TOKEN_INVALID', 'an unknown key fails')
  const now = Math.floor(Date.now() / 1000)
  const expired = signToken(oldKey, { ...claims, iat: now - 700, exp: now - 100 }, kidOf(oldKey))
  t.equal((await hello(expired)).body.code, 'TOKEN_EXPIRED', 'an expired token fails, even with the right key')
  t.equal((await hello(signToken(oldKey, { ...claims, token_use: 'refresh' }, kidOf(oldKey)))).body.code, 'TOKEN_INVALID', 'only access tokens')
  t.equal((await hello(first.refreshToken)).body.code, 'TOKEN_INVALID', 'a refresh token is not an access token')

  // Logged out: the signature still holds until expiry, introspection knows better.
  const loggedOut = await login()
  await requestJson(`${service.url}/auth/logout`, jsonPost({}, { authorization: `Bearer ${loggedOut.accessToken}` }))
  t.equal((await hello(loggedOut.accessToken)).status, 200, 'an everyday read trusts the signature')
  t.equal((await transfer(loggedOut.accessToken)).body.code, 'TOKEN_REVOKED', 'a high-value call sees the revocation')

  // Key rotation: the new key signs, the old one is published until its tokens expire.
  await t.resolves(service.app.close(), 'the service stops')
  service = await serviceOn(t, servicePort, {
    JWT_PRIVATE_KEY: pem(newKey, 'pkcs8'),
    JWT_PREVIOUS_PUBLIC_KEYS: pem(createPublicKey(oldKey), 'spki')
  })
  const keys = (await requestJson(`${service.url}/.well-known/jwks.json`)).body.keys.map((key: { kid: string }) => key.kid)
  t.same(keys, [kidOf(newKey), kidOf(oldKey)], 'JWKS: the new key first, then the retired one')

  const second = await login()
  t.equal(JSON.parse(Buffer.from(second.accessToken.split('.')[0], 'base64url').toString()).kid, kidOf(newKey), 'new tokens use the new key')
  t.equal((await hello(second.accessToken)).status, 200, 'the consumer refetches the JWKS for the new kid')
  t.equal((await hello(first.accessToken)).status, 200, 'a token of the retired key still passes at the consumer')
  const me = await requestJson(`${service.url}/users/me`, { headers: { authorization: `Bearer ${first.accessToken}` } })
  t.equal(me.status, 200, 'and at the service')
})
