import {
  createHmac, createPrivateKey, createPublicKey, generateKeyPairSync, randomUUID, sign, verify,
  type JsonWebKey, type KeyObject
} from 'node:crypto'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import t from 'tap'
import type { Test } from 'tap'
import type { DatabaseHandle } from '../../src/database.js'
import { BACKENDS, FakeClock, PASSWORD, buildTestApp, freshEmail, testDatabase } from '../helpers.js'

/*
 * Access tokens as the outside world sees them (plugins/jwt.ts, the auth hook,
 * routes/keys.ts): /users/me, forged tokens built by hand with node:crypto, and
 * the JWKS other services verify with.
 */

type Json = Record<string, unknown>

const encode = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url')
const decode = (segment: string): Json => JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'))

/** The three parts of a compact JWS, header and payload decoded. */
function parts (token: string): { header: Json, payload: Json, signingInput: string, signature: Buffer } {
  const [header, payload, signature] = token.split('.')
  return {
    header: decode(header!),
    payload: decode(payload!),
    signingInput: `${header}.${payload}`,
    signature: Buffer.from(signature!, 'base64url')
  }
}

/** A compact JWS over `header` and `payload`, its signature made by `signer` from the signing input. */
function jws (header: Json, payload: Json, signer: (input: Buffer) => Buffer): string {
  const input = `${encode(header)}.${encode(payload)}`
  return `${input}.${signer(Buffer.from(input)).toString('base64url')}`
}

const ed25519 = (key: KeyObject) => (input: Buffer) => sign(null, input, key)

function errorCode (response: LightMyRequestResponse): string | undefined {
  return response.json().code
}

for (const backend of BACKENDS) {
  t.test(backend.name, { skip: backend.skip }, async (t) => {
    const database: DatabaseHandle = await testDatabase(t, { real: backend.realDatabase })

    async function start (t: Test, env: Record<string, string> = {}): Promise<{ app: FastifyInstance, clock: FakeClock }> {
      const clock = new FakeClock()
      const app = await buildTestApp(t, { ...backend, database, clock, env })
      return { app, clock }
    }

    /** A new user logged in: its id, email and token pair. */
    async function session (app: FastifyInstance, email = freshEmail('token-user')): Promise<{ userId: string, email: string, accessToken: string, refreshToken: string }> {
      const signup = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email, password: PASSWORD } })
      const userId = signup.statusCode === 201 ? signup.json().id : undefined
      const login = await app.inject({ method: 'POST', url: '/auth/login', payload: { email, password: PASSWORD } })
      if (login.statusCode !== 200) throw new Error(`login failed: ${login.body}`)
      const { accessToken, refreshToken } = login.json()
      return { userId: userId ?? parts(accessToken).payload.sub as string, email, accessToken, refreshToken }
    }

    const me = (app: FastifyInstance, authorization?: string) =>
      app.inject({ method: 'GET', url: '/users/me', headers: authorization === undefined ? {} : { authorization } })

    t.test('/users/me', async (t) => {
      const { app } = await start(t)
      const user = await session(app)

      t.test('200 with the user', async (t) => {
        const response = await me(app, `Bearer ${user.accessToken}`)
        t.equal(response.statusCode, 200)
        const body = response.json()
        t.same(Object.keys(body).sort(), ['createdAt', 'email', 'emailVerified', 'id', 'roles'])
        t.same(body.roles, [], 'a new account has no role')
        t.equal(body.id, user.userId)
        t.equal(body.email, user.email)
        t.equal(new Date(body.createdAt).toISOString(), body.createdAt)
        t.equal((await me(app, `bearer ${user.accessToken}`)).statusCode, 200, 'the scheme is case-insensitive')
      })

      t.test('401 ACCESS_TOKEN_MISSING without a bearer token', async (t) => {
        for (const authorization of [undefined, '', 'Basic xyz', 'Basic dXNlcjpwYXNz', 'Bearer', 'Bearer    ', `Token ${user.accessToken}`]) {
          const response = await me(app, authorization)
          t.equal(response.statusCode, 401, String(authorization))
          t.same(response.json(), {
            statusCode: 401, code: 'ACCESS_TOKEN_MISSING', error: 'Unauthorized', message: response.json().message
          }, String(authorization))
        }
      })

      t.test('401 ACCESS_TOKEN_INVALID for garbage, oversized and refresh tokens', async (t) => {
        const cases: Array<[string, string]> = [
          ['garbage', 'Bearer garbage'],
          ['three dots', 'Bearer a.b.c'],
          ['empty segments', 'Bearer ..'],
          ['base64 noise', `Bearer ${encode({ a: 1 })}.${encode({ b: 2 })}.${'A'.repeat(86)}`],
          ['a token over 8 KiB', `Bearer ${'a'.repeat(8193)}`],
          ['a token of 64 KiB', `Bearer ${user.accessToken}${'A'.repeat(65536)}`],
          ['the refresh token', `Bearer ${user.refreshToken}`],
          ['a truncated token', `Bearer ${user.accessToken.slice(0, -2)}`],
          ['two tokens', `Bearer ${user.accessToken} ${user.accessToken}`]
        ]
        for (const [name, authorization] of cases) {
          const response = await me(app, authorization)
          t.equal(response.statusCode, 401, name)
          t.equal(errorCode(response), 'ACCESS_TOKEN_INVALID', name)
        }
      })
    })

    t.test('401 ACCESS_TOKEN_EXPIRED after ACCESS_TOKEN_TTL', async (t) => {
      const { app, clock } = await start(t, { ACCESS_TOKEN_TTL: '60s' })
      const { accessToken } = await session(app)
      clock.advance(59_999)
      t.equal((await me(app, `Bearer ${accessToken}`)).statusCode, 200, 'valid until its last millisecond')
      clock.advance(1)
      const response = await me(app, `Bearer ${accessToken}`)
      t.equal(response.statusCode, 401)
      t.same(response.json(), {
        statusCode: 401, code: 'ACCESS_TOKEN_EXPIRED', error: 'Unauthorized', message: response.json().message
      })
      clock.advance(86400_000)
      t.equal(errorCode(await me(app, `Bearer ${accessToken}`)), 'ACCESS_TOKEN_EXPIRED', 'still expired a day later')
    })

    t.test('a real access token: header, claims and signature checked with node:crypto and the JWKS', async (t) => {
      const { app, clock } = await start(t, { ACCESS_TOKEN_TTL: '5m', JWT_ISSUER: 'https://auth.example.com', JWT_AUDIENCE: 'orders' })
      const user = await session(app)
      const jwks = (await app.inject({ method: 'GET', url: '/.well-known/jwks.json' })).json()
      t.equal(jwks.keys.length, 1)
      const [jwk] = jwks.keys

      const { header, payload, signingInput, signature } = parts(user.accessToken)
      t.same(header, { alg: 'EdDSA', typ: 'at+jwt', kid: jwk.kid })
      t.equal(header.kid, app.signingKeys.kid)
      t.equal(payload.sub, user.userId)
      t.match(payload.sid, /^[0-9a-f-]{36}$/)
      t.type(payload.jti, 'string')
      t.ok((payload.jti as string).length >= 16, 'jti is not guessable')
      t.equal(payload.iat, Math.floor(clock.now() / 1000))
      t.equal(payload.exp, (payload.iat as number) + 300, 'exp = iat + ACCESS_TOKEN_TTL')
      t.equal(payload.iss, 'https://auth.example.com')
      t.equal(payload.aud, 'orders')
      t.equal(payload.token_use, 'access')
      t.notOk('email' in payload, 'no personal data beyond the subject')

      const publicKey = createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' })
      t.ok(verify(null, Buffer.from(signingInput), publicKey, signature), 'the signature verifies with the published key')
      const tampered = Buffer.from(signingInput.replace(/.$/, (c) => (c === 'A' ? 'B' : 'A')))
      t.notOk(verify(null, tampered, publicKey, signature), 'and only over the signed bytes')

      const second = await session(app)
      t.not(parts(second.accessToken).payload.jti, payload.jti, 'every token has its own jti')
      t.not(parts(second.accessToken).payload.sid, payload.sid, 'every login its own session')
    })

    t.test('forged tokens are ACCESS_TOKEN_INVALID', async (t) => {
      const { app } = await start(t)
      const user = await session(app)
      const other = await session(app)
      const { header, payload } = parts(user.accessToken)
      const serviceKey = createPrivateKey(app.signingKeys.signingKey)
      const fresh = (changes: Json = {}): Json => ({ ...payload, jti: randomUUID(), ...changes })
      const without = (claim: string): Json => {
        const { [claim]: _removed, ...rest } = fresh()
        return rest
      }

      // The harness itself: a token built the same way with the service's own key is accepted.
      const genuine = jws(header, fresh(), ed25519(serviceKey))
      const control = await me(app, `Bearer ${genuine}`)
      t.equal(control.statusCode, 200, 'a hand-built token with the real key and claims is accepted')
      t.equal(control.json().id, user.userId)
      t.equal((await me(app, `Bearer ${jws({ typ: 'at+jwt', alg: 'EdDSA', kid: header.kid }, fresh(), ed25519(serviceKey))}`)).statusCode, 200,
        'header member order does not matter')

      const strangerKey = generateKeyPairSync('ed25519').privateKey
      const hmacWithPublicPem = (input: Buffer) => createHmac('sha256', app.signingKeys.verificationKey).update(input).digest()
      const signed = jws(header, fresh(), ed25519(serviceKey)).split('.')
      const forged: Array<[string, string]> = [
        ['alg none, unsigned', `${encode({ ...header, alg: 'none' })}.${encode(fresh())}.`],
        ['alg none with a real signature', `${encode({ ...header, alg: 'none' })}.${signed[1]}.${signed[2]}`],
        ['alg "None"', `${encode({ ...header, alg: 'None' })}.${encode(fresh())}.`],
        ['no alg', `${encode({ typ: 'at+jwt', kid: header.kid })}.${encode(fresh())}.${signed[2]}`],
        ['HS256 with the public key PEM as secret', jws({ ...header, alg: 'HS256' }, fresh(), hmacWithPublicPem)],
        ['HS256 with the public JWK x as secret', jws({ ...header, alg: 'HS256' }, fresh(),
          (input) => createHmac('sha256', Buffer.from(app.signingKeys.published[0]!.x!, 'base64url')).update(input).digest())],
        ['another Ed25519 key, same kid', jws(header, fresh(), ed25519(strangerKey))],
        ['payload changed after signing', `${signed[0]}.${encode(fresh({ sub: other.userId }))}.${signed[2]}`],
        ['signature of another token', `${signed[0]}.${signed[1]}.${user.accessToken.split('.')[2]}`],
        ['signature stripped', `${signed[0]}.${signed[1]}.`],
        ['wrong iss', jws(header, fresh({ iss: 'https://evil.example.com' }), ed25519(serviceKey))],
        ['wrong aud', jws(header, fresh({ aud: 'some-other-api' }), ed25519(serviceKey))],
        ['aud list without ours', jws(header, fresh({ aud: ['some-other-api'] }), ed25519(serviceKey))],
        ['missing sid', jws(header, without('sid'), ed25519(serviceKey))],
        ['missing jti', jws(header, without('jti'), ed25519(serviceKey))],
        ['missing sub', jws(header, without('sub'), ed25519(serviceKey))],
        ['missing exp', jws(header, without('exp'), ed25519(serviceKey))],
        ['missing iat', jws(header, without('iat'), ed25519(serviceKey))],
        ['missing iss', jws(header, without('iss'), ed25519(serviceKey))],
        ['missing aud', jws(header, without('aud'), ed25519(serviceKey))],
        ['missing token_use', jws(header, without('token_use'), ed25519(serviceKey))],
        ['token_use refresh', jws(header, fresh({ token_use: 'refresh' }), ed25519(serviceKey))],
        ['token_use id', jws(header, fresh({ token_use: 'id' }), ed25519(serviceKey))],
        ['sid not a string', jws(header, fresh({ sid: 42 }), ed25519(serviceKey))],
        ['exp not a number', jws(header, fresh({ exp: 'never' }), ed25519(serviceKey))],
        ['typ JWT', jws({ ...header, typ: 'JWT' }, fresh(), ed25519(serviceKey))],
        ['typ refresh+jwt', jws({ ...header, typ: 'refresh+jwt' }, fresh(), ed25519(serviceKey))],
        ['no typ', jws({ alg: header.alg, kid: header.kid }, fresh(), ed25519(serviceKey))],
        ['header not JSON', `${Buffer.from('not json').toString('base64url')}.${signed[1]}.${signed[2]}`],
        ['payload not JSON', `${signed[0]}.${Buffer.from('not json').toString('base64url')}.${signed[2]}`],
        ['payload an array', jws(header, [1, 2] as unknown as Json, ed25519(serviceKey))]
      ]
      for (const [name, token] of forged) {
        const response = await me(app, `Bearer ${token}`)
        t.equal(response.statusCode, 401, name)
        t.equal(errorCode(response), 'ACCESS_TOKEN_INVALID', name)
      }
    })

    t.test('the 8 KiB limit applies to genuinely signed tokens too', async (t) => {
      const { app } = await start(t)
      const user = await session(app)
      const { header, payload } = parts(user.accessToken)
      const serviceKey = createPrivateKey(app.signingKeys.signingKey)
      const padded = (size: number) => jws(header, { ...payload, pad: 'x'.repeat(size) }, ed25519(serviceKey))
      let size = Math.floor((8192 - user.accessToken.length) * 3 / 4)
      while (padded(size + 1).length <= 8192) size += 1
      while (padded(size).length > 8192) size -= 1
      const largest = padded(size)
      let smallestOver = size + 1
      while (padded(smallestOver).length <= 8192) smallestOver += 1
      const over = padded(smallestOver)
      t.ok(largest.length <= 8192 && over.length > 8192, `${largest.length} and ${over.length} characters`)
      t.equal((await me(app, `Bearer ${largest}`)).statusCode, 200, 'up to 8 KiB: accepted')
      const response = await me(app, `Bearer ${over}`)
      t.equal(response.statusCode, 401, 'over 8 KiB: refused')
      t.equal(errorCode(response), 'ACCESS_TOKEN_INVALID')
    })

    t.test('a token signed by another instance with another DATA_DIR (another key) is invalid', async (t) => {
      const { app } = await start(t)
      const { app: stranger } = await start(t)
      t.not(stranger.signingKeys.kid, app.signingKeys.kid, 'each DATA_DIR has its own development key')
      const user = await session(app)
      // The database is shared, so the same user exists on both instances.
      const elsewhere = await session(stranger, user.email)
      t.equal((await me(stranger, `Bearer ${elsewhere.accessToken}`)).statusCode, 200, 'valid where it was issued')
      const response = await me(app, `Bearer ${elsewhere.accessToken}`)
      t.equal(response.statusCode, 401)
      t.equal(errorCode(response), 'ACCESS_TOKEN_INVALID')
      t.equal(errorCode(await me(stranger, `Bearer ${user.accessToken}`)), 'ACCESS_TOKEN_INVALID', 'and the other way round')
    })

    t.test('/.well-known/jwks.json', async (t) => {
      const { app } = await start(t)
      const response = await app.inject({ method: 'GET', url: '/.well-known/jwks.json' })
      t.equal(response.statusCode, 200)
      t.match(response.headers['content-type'], /^application\/json/)
      const { keys } = response.json()
      t.equal(keys.length, 1)
      const [key] = keys
      t.match(key, { kty: 'OKP', crv: 'Ed25519', alg: 'EdDSA', use: 'sig', kid: app.signingKeys.kid })
      t.type(key.x, 'string')
      for (const privateMember of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k']) t.notOk(privateMember in key, `no private member ${privateMember}`)
      t.equal(createPublicKey({ key, format: 'jwk' }).asymmetricKeyType, 'ed25519', 'an importable public key')

      const cacheControl = String(response.headers['cache-control'])
      t.match(cacheControl, /\bpublic\b/, 'public')
      const maxAge = /max-age=(\d+)/.exec(cacheControl)
      t.ok(maxAge !== null && Number(maxAge[1]) > 0, 'a positive max-age')
      const etag = response.headers.etag
      t.type(etag, 'string', 'an ETag')

      const again = await app.inject({ method: 'GET', url: '/.well-known/jwks.json' })
      t.equal(again.headers.etag, etag, 'a stable ETag')
      const notModified = await app.inject({ method: 'GET', url: '/.well-known/jwks.json', headers: { 'if-none-match': String(etag) } })
      t.equal(notModified.statusCode, 304)
      t.equal(notModified.headers.etag, etag)
      const stale = await app.inject({ method: 'GET', url: '/.well-known/jwks.json', headers: { 'if-none-match': '"something-else"' } })
      t.equal(stale.statusCode, 200, 'another ETag gets the keys')
      t.same(stale.json(), response.json())
      const withToken = await app.inject({ method: 'GET', url: '/.well-known/jwks.json', headers: { authorization: 'Bearer garbage' } })
      t.equal(withToken.statusCode, 200, 'public: a bad token does not matter')
    })

    t.test('other algorithms: tokens verify with the JWKS, and only the configured algorithm is accepted', async (t) => {
      const verifiers: Record<string, (input: Buffer, key: KeyObject, signature: Buffer) => boolean> = {
        ES256: (input, key, signature) => verify('sha256', input, { key, dsaEncoding: 'ieee-p1363' }, signature),
        RS256: (input, key, signature) => verify('sha256', input, key, signature)
      }
      for (const [algorithm, check] of Object.entries(verifiers)) {
        const { app } = await start(t, { JWT_ALGORITHM: algorithm })
        const user = await session(app)
        const { keys: [jwk] } = (await app.inject({ method: 'GET', url: '/.well-known/jwks.json' })).json()
        const { header, payload, signingInput, signature } = parts(user.accessToken)
        t.same(header, { alg: algorithm, typ: 'at+jwt', kid: jwk.kid }, `${algorithm}: header`)
        t.equal(jwk.alg, algorithm)
        t.ok(check(Buffer.from(signingInput), createPublicKey({ key: jwk, format: 'jwk' }), signature), `${algorithm}: signature verifies`)
        t.equal((await me(app, `Bearer ${user.accessToken}`)).statusCode, 200)

        const confused = jws({ ...header, alg: 'HS256' }, { ...payload, jti: randomUUID() },
          (input) => createHmac('sha256', app.signingKeys.verificationKey).update(input).digest())
        t.equal(errorCode(await me(app, `Bearer ${confused}`)), 'ACCESS_TOKEN_INVALID', `${algorithm}: HS256 with the public PEM refused`)
        const eddsa = jws({ ...header, alg: 'EdDSA' }, { ...payload, jti: randomUUID() }, ed25519(generateKeyPairSync('ed25519').privateKey))
        t.equal(errorCode(await me(app, `Bearer ${eddsa}`)), 'ACCESS_TOKEN_INVALID', `${algorithm}: EdDSA refused`)
      }

      const secret = 'a test secret of at least thirty-two bytes'
      const { app } = await start(t, { JWT_ALGORITHM: 'HS256', JWT_SECRET: secret })
      const user = await session(app)
      t.same((await app.inject({ method: 'GET', url: '/.well-known/jwks.json' })).json(), { keys: [] }, 'HS256: nothing published')
      const { header, payload, signingInput, signature } = parts(user.accessToken)
      t.equal(header.alg, 'HS256')
      t.same(signature, createHmac('sha256', secret).update(signingInput).digest(), 'HS256: an HMAC with JWT_SECRET')
      t.equal((await me(app, `Bearer ${user.accessToken}`)).statusCode, 200)
      const otherSecret = jws(header, { ...payload, jti: randomUUID() }, (input) => createHmac('sha256', `${secret}!`).update(input).digest())
      t.equal(errorCode(await me(app, `Bearer ${otherSecret}`)), 'ACCESS_TOKEN_INVALID', 'HS256: another secret refused')
      const unsigned = `${encode({ ...header, alg: 'none' })}.${encode({ ...payload, jti: randomUUID() })}.`
      t.equal(errorCode(await me(app, `Bearer ${unsigned}`)), 'ACCESS_TOKEN_INVALID', 'HS256: alg none refused')
    })
  })
}
