import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto'
import { readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import type { Test } from 'tap'
import { ConfigError } from '../../src/config.js'
import { loadSigningKeys, thumbprint, type SigningKeys } from '../../src/keys.js'
import { testConfig } from '../helpers.js'

/** RFC 7638, section 3.1: the example RSA key and its thumbprint. */
const RFC7638_KEY = {
  kty: 'RSA',
  n: '0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw',
  e: 'AQAB',
  alg: 'RS256',
  kid: '2011-04-29'
}
const RFC7638_THUMBPRINT = 'NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs'

function privatePem (key: KeyObject): string {
  return key.export({ format: 'pem', type: 'pkcs8' }).toString()
}

function publicPem (key: KeyObject): string {
  return createPublicKey(key).export({ format: 'pem', type: 'spki' }).toString()
}

const ed25519 = () => generateKeyPairSync('ed25519').privateKey
const p256 = () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey

/** loadSigningKeys for the configuration `env` would load, in a fresh DATA_DIR. */
async function load (t: Test, env: Record<string, string> = {}): Promise<{ keys: SigningKeys, dataDir: string }> {
  const config = await testConfig(t, env)
  return { keys: await loadSigningKeys(config), dataDir: config.dataDir }
}

async function refuses (t: Test, env: Record<string, string>, variable: string, name: string): Promise<void> {
  const config = await testConfig(t, env)
  let caught: unknown
  try {
    await loadSigningKeys(config)
  } catch (error) {
    caught = error
  }
  t.ok(caught instanceof ConfigError, `${name}: throws a ConfigError`)
  t.equal((caught as ConfigError | undefined)?.variable, variable, `${name}: names ${variable}`)
}

t.test('a development key is generated once into DATA_DIR, readable by its owner only', async (t) => {
  const config = await testConfig(t)
  const first = await loadSigningKeys(config)
  const path = join(config.dataDir, 'jwt-eddsa-private.pem')
  t.equal((await stat(path)).mode & 0o777, 0o600, 'the key file is 0600')
  t.strictSame(await readdir(config.dataDir), ['jwt-eddsa-private.pem'], 'no temporary files left behind')

  const second = await loadSigningKeys(config)
  t.equal(second.kid, first.kid, 'a second load reuses the key')
  t.equal(second.signingKey, first.signingKey)
  t.equal(first.algorithm, 'EdDSA')
  t.match(first.signingKey, /^-----BEGIN PRIVATE KEY-----/)
  t.match(first.verificationKey, /^-----BEGIN PUBLIC KEY-----/)
  t.equal(first.published.length, 1)
  t.match(first.published[0], { kty: 'OKP', crv: 'Ed25519', kid: first.kid, alg: 'EdDSA', use: 'sig' })
  t.notOk('d' in first.published[0]!, 'the private part is never published')
})

t.test('concurrent loads agree on one key', async (t) => {
  for (const algorithm of ['EdDSA', 'ES256']) {
    const config = await testConfig(t, { JWT_ALGORITHM: algorithm })
    const loads = await Promise.all(Array.from({ length: 5 }, () => loadSigningKeys(config)))
    t.equal(new Set(loads.map(({ kid }) => kid)).size, 1, `${algorithm}: one kid`)
    t.equal((await readdir(config.dataDir)).length, 1, `${algorithm}: one key file, no temporary files left`)
  }
})

t.test('ES256 and RS256 development keys', async (t) => {
  const es = await load(t, { JWT_ALGORITHM: 'ES256' })
  t.match(es.keys.published, [{ kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig', kid: es.keys.kid }])
  t.strictSame(await readdir(es.dataDir), ['jwt-es256-private.pem'])

  const rs = await load(t, { JWT_ALGORITHM: 'RS256' })
  t.match(rs.keys.published, [{ kty: 'RSA', e: 'AQAB', alg: 'RS256', use: 'sig', kid: rs.keys.kid }])
  t.equal(Buffer.from(rs.keys.published[0]!.n!, 'base64url').length, 256, 'a 2048-bit modulus')
  t.strictSame(await readdir(rs.dataDir), ['jwt-rs256-private.pem'])
  t.equal(((await stat(join(rs.dataDir, 'jwt-rs256-private.pem'))).mode & 0o777), 0o600)

  for (const { keys } of [es, rs]) {
    const { kid: _kid, alg: _alg, use: _use, ...jwk } = keys.published[0]!
    t.equal(keys.kid, thumbprint(jwk), `${keys.algorithm}: kid is the key's thumbprint`)
  }
})

t.test('kid is the RFC 7638 thumbprint', async (t) => {
  t.equal(thumbprint(RFC7638_KEY), RFC7638_THUMBPRINT, 'the RFC\'s example, extra members ignored')
  t.equal(thumbprint({ e: RFC7638_KEY.e, n: RFC7638_KEY.n, kty: 'RSA' }), RFC7638_THUMBPRINT, 'member order does not matter')

  // End to end: the RFC key as a retired RS256 key is published under its thumbprint.
  const retired = createPublicKey({ key: RFC7638_KEY, format: 'jwk' }).export({ format: 'pem', type: 'spki' }).toString()
  const { keys } = await load(t, { JWT_ALGORITHM: 'RS256', JWT_PREVIOUS_PUBLIC_KEYS: retired })
  t.equal(keys.published[1]?.kid, RFC7638_THUMBPRINT)
  t.equal(keys.published[1]?.n, RFC7638_KEY.n)
})

t.test('a configured key', async (t) => {
  const key = ed25519()
  const { keys, dataDir } = await load(t, { JWT_PRIVATE_KEY: privatePem(key), JWT_PUBLIC_KEY: publicPem(key) })
  const jwk = createPublicKey(key).export({ format: 'jwk' })
  t.equal(keys.kid, thumbprint(jwk))
  t.equal(keys.published[0]?.x, jwk.x)
  t.strictSame(await readdir(dataDir), [], 'no development key is generated')

  const escaped = await load(t, { JWT_PRIVATE_KEY: privatePem(key).replaceAll('\n', '\\n') })
  t.equal(escaped.keys.kid, keys.kid, 'a PEM with literal \\n works')

  const production = await load(t, { NODE_ENV: 'production', JWT_ALGORITHM: 'ES256', JWT_PRIVATE_KEY: privatePem(p256()) })
  t.equal(production.keys.algorithm, 'ES256', 'production accepts a configured key')
})

t.test('bad keys are refused with a ConfigError naming the variable', async (t) => {
  const ed = privatePem(ed25519())
  const ec = privatePem(p256())
  const p384 = privatePem(generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey)
  const rsa1024 = privatePem(generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey)

  await refuses(t, { JWT_PRIVATE_KEY: ec }, 'JWT_PRIVATE_KEY', 'an EC key for EdDSA')
  await refuses(t, { JWT_ALGORITHM: 'ES256', JWT_PRIVATE_KEY: ed }, 'JWT_PRIVATE_KEY', 'an Ed25519 key for ES256')
  await refuses(t, { JWT_ALGORITHM: 'ES256', JWT_PRIVATE_KEY: p384 }, 'JWT_PRIVATE_KEY', 'a P-384 key for ES256')
  await refuses(t, { JWT_ALGORITHM: 'RS256', JWT_PRIVATE_KEY: ec }, 'JWT_PRIVATE_KEY', 'an EC key for RS256')
  await refuses(t, { JWT_ALGORITHM: 'RS256', JWT_PRIVATE_KEY: rsa1024 }, 'JWT_PRIVATE_KEY', 'a 1024-bit RSA key')
  await refuses(t, { JWT_PRIVATE_KEY: 'not a key' }, 'JWT_PRIVATE_KEY', 'a non-PEM value')
  await refuses(t, { JWT_PRIVATE_KEY: publicPem(ed25519()) }, 'JWT_PRIVATE_KEY', 'a public key as the private key')
  await refuses(t, { JWT_PRIVATE_KEY: ed.replace(/\n[^-]+\n-----END/, '\nAAAA\n-----END') }, 'JWT_PRIVATE_KEY', 'a damaged PEM')
  await refuses(t, { JWT_PRIVATE_KEY: ed, JWT_PUBLIC_KEY: publicPem(ed25519()) }, 'JWT_PUBLIC_KEY', 'a public key of another pair')
  await refuses(t, { JWT_PRIVATE_KEY: ed, JWT_PUBLIC_KEY: 'junk' }, 'JWT_PUBLIC_KEY', 'a non-PEM public key')
  await refuses(t, { JWT_PRIVATE_KEY: ed, JWT_PUBLIC_KEY: ed }, 'JWT_PUBLIC_KEY', 'a private key as the public key')
  await refuses(t, { JWT_PRIVATE_KEY: ed, JWT_PREVIOUS_PUBLIC_KEYS: publicPem(p256()) }, 'JWT_PREVIOUS_PUBLIC_KEYS',
    'a retired key of another algorithm')
  await refuses(t, { JWT_PREVIOUS_PUBLIC_KEYS: ed }, 'JWT_PREVIOUS_PUBLIC_KEYS', 'a private key among the retired ones')
})

t.test('production refuses to generate a key', async (t) => {
  for (const algorithm of ['EdDSA', 'ES256', 'RS256']) {
    const config = await testConfig(t, { NODE_ENV: 'production', JWT_ALGORITHM: algorithm })
    await t.rejects(loadSigningKeys(config), { name: 'ConfigError', variable: 'JWT_PRIVATE_KEY' }, algorithm)
    t.strictSame(await readdir(config.dataDir), [], `${algorithm}: nothing written`)
  }
})

t.test('HS256 publishes no keys', async (t) => {
  const secret = 's'.repeat(40)
  const { keys, dataDir } = await load(t, { JWT_ALGORITHM: 'HS256', JWT_SECRET: secret, NODE_ENV: 'production' })
  t.strictSame(keys.published, [])
  t.equal(keys.signingKey, secret)
  t.equal(keys.verificationKey, secret)
  t.match(keys.kid, /^[A-Za-z0-9_-]{43}$/)
  t.not(keys.kid, secret)
  t.strictSame(await readdir(dataDir), [], 'no key file')
  await refuses(t, { JWT_ALGORITHM: 'HS256', JWT_SECRET: secret, JWT_PREVIOUS_PUBLIC_KEYS: publicPem(ed25519()) },
    'JWT_PREVIOUS_PUBLIC_KEYS', 'public keys with HS256')
})

t.test('retired public keys are published after the current key', async (t) => {
  const current = ed25519()
  const older = ed25519()
  const oldest = ed25519()
  const { keys } = await load(t, {
    JWT_PRIVATE_KEY: privatePem(current),
    JWT_PREVIOUS_PUBLIC_KEYS: [publicPem(older), publicPem(oldest)].join('\n')
  })
  const kids = [current, older, oldest].map((key) => thumbprint(createPublicKey(key).export({ format: 'jwk' })))
  t.strictSame(keys.published.map(({ kid }) => kid), kids, 'current first, then the retired ones in order')
  t.equal(keys.kid, kids[0])
  for (const jwk of keys.published) t.match(jwk, { alg: 'EdDSA', use: 'sig', kty: 'OKP' })

  const again = await load(t, { JWT_PRIVATE_KEY: privatePem(current), JWT_PREVIOUS_PUBLIC_KEYS: publicPem(current) })
  t.equal(again.keys.published.length, 1, 'the current key listed as retired is published once')
  t.strictSame(keys.verificationKeys.map(({ kid }) => kid), kids, 'each one verifies, by kid')
  t.equal(keys.verificationKeys[1]?.key, publicPem(older))
})
