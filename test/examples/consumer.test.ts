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
 * keeps accepting old and new tokens across a key rotation, and requires a
 * role from the token's `roles` claim alone. The consumer
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

t.test('a consumer requires a role from the token alone: without it 403, granted from the next refresh, removed from the next refresh', async (t) => {
  const service = await serviceOn(t, await freePort(), {})
  const consumer = await startFastifyProcess(t, 'examples/consumer/src/server.ts', { AUTH_URL: service.url, INTROSPECTION_SECRET })
  const reports = (token: string) => requestJson(`${consumer.url}/reports`, { headers: { authorization: `Bearer ${token}` } })
  const transfer = (token: string) => requestJson(`${consumer.url}/transfer`, { method: 'POST', headers: { authorization: `Bearer ${token}` } })
  const me = (token: string) => requestJson(`${service.url}/users/me`, { headers: { authorization: `Bearer ${token}` } })
  const refreshed = async (refreshToken: string) => (await requestJson(`${service.url}/auth/refresh`, jsonPost({ refreshToken }))).body
  const rolesOf = (token: string) => JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()).roles
  // As an admin would, through the auth app (PATCH /admin/users/:id, or npm run admin -- grant-role).
  const setRoles = (userId: string, roles: string[]) => service.app.admin.updateUser(userId, { roles }, { id: null, ip: null, userAgent: 'test' })

  const credentials = { email: freshEmail('consumer-roles'), password: PASSWORD }
  const signup = await requestJson(`${service.url}/auth/signup`, jsonPost(credentials))
  t.equal(signup.status, 201, 'signed up')
  const first = (await requestJson(`${service.url}/auth/login`, jsonPost(credentials))).body
  t.same(rolesOf(first.accessToken), [], 'a new user\'s token carries no role')
  const without = await reports(first.accessToken)
  t.equal(without.status, 403, 'without the role: 403')
  t.match(without.body, { code: 'FORBIDDEN', message: /requires the role reports/ }, 'with a code that says why')

  await setRoles(signup.body.id, ['reports'])
  t.equal((await reports(first.accessToken)).status, 403, 'granted: a token issued before still lacks it')
  const second = await refreshed(first.refreshToken)
  t.same(rolesOf(second.accessToken), ['reports'], 'the next refresh carries it')
  const granted = await reports(second.accessToken)
  t.equal(granted.status, 200, 'with the role: 200')
  t.same(granted.body, { reports: [], for: signup.body.id })

  await setRoles(signup.body.id, [])
  t.equal((await reports(second.accessToken)).status, 200,
    'removed: the consumer, checking the token alone, still accepts the token that carries it until it expires')
  t.equal((await me(second.accessToken)).body.code, 'ACCESS_TOKEN_REVOKED', 'while auth-service refuses it (within a second; here, one instance: at once)')
  t.equal((await transfer(second.accessToken)).body.code, 'TOKEN_REVOKED', 'and so does a consumer that introspects')
  const third = await refreshed(second.refreshToken)
  t.same(rolesOf(third.accessToken), [], 'the session stays; its next refresh lacks the role')
  t.equal((await reports(third.accessToken)).status, 403, 'and the consumer refuses it: 403')
  t.equal((await transfer(third.accessToken)).status, 200, 'a token of the same session, for what needs no role')
})
