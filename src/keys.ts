import {
  createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes,
  type JsonWebKey, type KeyObject
} from 'node:crypto'
import { mkdir, readFile, rm, link, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ConfigError, type Config, type JwtAlgorithm } from './config.js'

/** A public key as published at /.well-known/jwks.json. */
export interface PublicJwk extends JsonWebKey {
  kty: string
  kid: string
  alg: JwtAlgorithm
  use: 'sig'
}

export interface SigningKeys {
  algorithm: JwtAlgorithm
  /** RFC 7638 thumbprint of the current key, put in every token's header. */
  kid: string
  /** PEM private key, or the HS256 secret. */
  signingKey: string
  /** PEM public key, or the HS256 secret. */
  verificationKey: string
  /**
   * Every key a token may be verified with, by kid: the current one first,
   * then the retired ones of JWT_PREVIOUS_PUBLIC_KEYS (PEM, or the HS256 secret).
   */
  verificationKeys: Array<{ kid: string, key: string }>
  /** Public keys by kid: the current one first, then retired ones. Empty for HS256. */
  published: PublicJwk[]
}

/**
 * Resolves the keys the service signs with. Asymmetric keys come from
 * JWT_PRIVATE_KEY (and optionally JWT_PUBLIC_KEY, which must match), else a
 * development key generated once into DATA_DIR; in production a missing key
 * is an error rather than a silently generated one.
 */
export async function loadSigningKeys (config: Pick<Config, 'jwt' | 'dataDir' | 'production'>): Promise<SigningKeys> {
  const { algorithm } = config.jwt
  if (algorithm === 'HS256') {
    if (config.jwt.previousPublicKeys.length > 0) {
      throw new ConfigError('JWT_PREVIOUS_PUBLIC_KEYS', 'holds public keys, which HS256 cannot verify with')
    }
    const secret = config.jwt.secret!
    const kid = thumbprint({ kty: 'oct', k: Buffer.from(secret).toString('base64url') })
    return { algorithm, kid, signingKey: secret, verificationKey: secret, verificationKeys: [{ kid, key: secret }], published: [] }
  }

  let privateKey: KeyObject
  if (config.jwt.privateKey !== undefined) {
    privateKey = parsePrivateKey('JWT_PRIVATE_KEY', config.jwt.privateKey, algorithm)
  } else if (config.production) {
    throw new ConfigError('JWT_PRIVATE_KEY', `is required in production for ${algorithm}; generated development keys are refused`)
  } else {
    privateKey = parsePrivateKey('DATA_DIR', await developmentKey(config.dataDir, algorithm), algorithm)
  }
  const publicKey = createPublicKey(privateKey)
  if (config.jwt.publicKey !== undefined) {
    const configured = parsePublicKey('JWT_PUBLIC_KEY', config.jwt.publicKey, algorithm)
    if (!configured.equals(publicKey)) throw new ConfigError('JWT_PUBLIC_KEY', 'does not match JWT_PRIVATE_KEY')
  }

  const keys = [publicKey, ...config.jwt.previousPublicKeys.map((pem) => parsePublicKey('JWT_PREVIOUS_PUBLIC_KEYS', pem, algorithm))]
  const byKid = new Map<string, { jwk: PublicJwk, pem: string }>()
  for (const key of keys) {
    const jwk = publicJwk(key, algorithm)
    // The current key listed again among the retired ones is published once.
    if (!byKid.has(jwk.kid)) byKid.set(jwk.kid, { jwk, pem: key.export({ format: 'pem', type: 'spki' }).toString() })
  }
  const entries = [...byKid.values()]
  return {
    algorithm,
    kid: entries[0]!.jwk.kid,
    signingKey: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    verificationKey: entries[0]!.pem,
    verificationKeys: entries.map(({ jwk, pem }) => ({ kid: jwk.kid, key: pem })),
    published: entries.map(({ jwk }) => jwk)
  }
}

const THUMBPRINT_MEMBERS: Record<string, string[]> = {
  EC: ['crv', 'kty', 'x', 'y'],
  OKP: ['crv', 'kty', 'x'],
  RSA: ['e', 'kty', 'n'],
  oct: ['k', 'kty']
}

/** RFC 7638: SHA-256 over the key's required members, in lexicographic order, without spaces. */
export function thumbprint (jwk: JsonWebKey): string {
  const members = THUMBPRINT_MEMBERS[jwk.kty!]!
  const canonical = JSON.stringify(Object.fromEntries(members.map((name) => [name, jwk[name]])))
  return createHash('sha256').update(canonical).digest('base64url')
}

function publicJwk (publicKey: KeyObject, algorithm: JwtAlgorithm): PublicJwk {
  const jwk = publicKey.export({ format: 'jwk' })
  return { ...jwk, kty: jwk.kty!, kid: thumbprint(jwk), alg: algorithm, use: 'sig' }
}

function checkKeyType (variable: string, key: KeyObject, algorithm: JwtAlgorithm): KeyObject {
  const type = key.asymmetricKeyType
  const details = key.asymmetricKeyDetails
  const fits =
    (algorithm === 'EdDSA' && type === 'ed25519') ||
    (algorithm === 'ES256' && type === 'ec' && details?.namedCurve === 'prime256v1') ||
    (algorithm === 'RS256' && type === 'rsa' && (details?.modulusLength ?? 0) >= 2048)
  if (!fits) {
    const expected = { EdDSA: 'an Ed25519', ES256: 'a P-256 EC', RS256: 'an RSA (2048 bits or more)', HS256: 'no' }[algorithm]
    throw new ConfigError(variable, `expected ${expected} key for ${algorithm}, got ${type ?? 'an unknown'} key`)
  }
  return key
}

function parsePrivateKey (variable: string, pem: string, algorithm: JwtAlgorithm): KeyObject {
  let key: KeyObject
  try {
    key = createPrivateKey(pem)
  } catch {
    throw new ConfigError(variable, 'is not a PEM private key (PKCS#8)')
  }
  return checkKeyType(variable, key, algorithm)
}

function parsePublicKey (variable: string, pem: string, algorithm: JwtAlgorithm): KeyObject {
  // createPublicKey derives the public half of a private key (its result is
  // always of type 'public'), so a private key has to be recognized in the PEM.
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem)) throw new ConfigError(variable, 'must hold public keys only')
  let key: KeyObject
  try {
    key = createPublicKey(pem)
  } catch {
    throw new ConfigError(variable, 'is not a PEM public key (SPKI)')
  }
  return checkKeyType(variable, key, algorithm)
}

const GENERATORS: Record<Exclude<JwtAlgorithm, 'HS256'>, () => KeyObject> = {
  EdDSA: () => generateKeyPairSync('ed25519').privateKey,
  ES256: () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey,
  RS256: () => generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
}

/**
 * Reads the development key of `algorithm` from `dataDir`, generating it on
 * first use. It is written to a temporary file and hard-linked into place, so
 * two instances starting together agree on one key and never read half a file.
 */
async function developmentKey (dataDir: string, algorithm: Exclude<JwtAlgorithm, 'HS256'>): Promise<string> {
  const path = join(dataDir, `jwt-${algorithm.toLowerCase()}-private.pem`)
  try {
    return await readFile(path, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
  }
  await mkdir(dataDir, { recursive: true, mode: 0o700 })
  const pem = GENERATORS[algorithm]().export({ format: 'pem', type: 'pkcs8' }).toString()
  // Unique per attempt: two loads in one process may generate in the same millisecond.
  const temporary = `${path}.${process.pid}.${randomBytes(8).toString('hex')}.tmp`
  await writeFile(temporary, pem, { mode: 0o600, flag: 'wx' })
  try {
    await link(temporary, path)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
  } finally {
    await rm(temporary, { force: true })
  }
  return readFile(path, 'utf8')
}
