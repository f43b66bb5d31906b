import { createHash, createHmac, randomBytes } from 'node:crypto'

/**
 * Refresh tokens look like `rt2.<family>.<generation>.<expiry>.<secret>`:
 * - the family id (128 random bits) names the session. It appears nowhere
 *   but in refresh tokens: the public session id (`sid`, the store's key) is
 *   derived from it by a hash, so whoever names a family once held one of
 *   its tokens, and a consumer who sees `sid` cannot name it;
 * - the generation counts the rotations: the store keeps the current one, so
 *   any older generation presented after the grace is reuse, however many
 *   rotations happened since;
 * - the expiry (Unix seconds, informational only) lets an unknown token whose
 *   session has simply lapsed answer REFRESH_TOKEN_EXPIRED instead of INVALID;
 * - the secret is 256 random bits, stored only as its SHA-256.
 * Their shape never parses as a JWT, and a JWT never parses as one of them.
 */
export interface RefreshToken {
  familyId: string
  generation: number
  expiresAt: number
  secret: string
}

const PREFIX = 'rt2'
const SHAPE = /^rt2\.([A-Za-z0-9_-]{22})\.(0|[1-9]\d{0,14})\.(\d{1,12})\.([A-Za-z0-9_-]{43})$/

const FAMILY_BYTES = 16
const SECRET_BYTES = 32

export function newFamilyId (): string {
  return randomBytes(FAMILY_BYTES).toString('base64url')
}

/**
 * The public session id of a family: a UUID (version 8, RFC 9562's custom
 * layout) made of the first bits of its SHA-256, so it reveals nothing of it.
 */
export function sessionIdOf (familyId: string): string {
  const bytes = createHash('sha256').update(`session-id:${familyId}`).digest().subarray(0, 16)
  bytes[6] = (bytes[6]! & 0x0f) | 0x80
  bytes[8] = (bytes[8]! & 0x3f) | 0x80
  const hex = bytes.toString('hex')
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`
}

export function newRefreshSecret (): string {
  return randomBytes(SECRET_BYTES).toString('base64url')
}

/** A token of a family, carrying its session's expiry (ms) in Unix seconds. */
export function refreshTokenOf (familyId: string, generation: number, expiresAtMs: number, secret: string): string {
  return formatRefreshToken({ familyId, generation, expiresAt: Math.floor(expiresAtMs / 1000), secret })
}

export function formatRefreshToken ({ familyId, generation, expiresAt, secret }: RefreshToken): string {
  return `${PREFIX}.${familyId}.${generation}.${expiresAt}.${secret}`
}

export function parseRefreshToken (token: string): RefreshToken | undefined {
  const match = SHAPE.exec(token)
  if (match === null) return undefined
  const generation = Number(match[2])
  if (!Number.isSafeInteger(generation)) return undefined
  return { familyId: match[1]!, generation, expiresAt: Number(match[3]), secret: match[4]! }
}

export function hashSecret (secret: string): string {
  return createHash('sha256').update(secret).digest('base64url')
}

/**
 * The successor of a rotated token is kept for the grace window, so a token
 * presented again within it reaches the session's current token instead of
 * forking the family. Only the successor's secret is kept, masked with a
 * one-time pad derived from the rotated token's secret (HMAC-SHA-256), which
 * the store never holds: a dump of the store yields no usable token. Sealed,
 * it is 43 characters, small enough for Redis's compact hash encoding.
 */
export function sealSuccessor (oldSecret: string, successorSecret: string): string {
  return xor(Buffer.from(successorSecret, 'base64url'), successorPad(oldSecret)).toString('base64url')
}

/**
 * Follows a chain of sealed successors from a token's secret to the current
 * one (each link opened with the secret the previous one gave), and answers
 * it only if it hashes to `currentHash`: a tampered or wrongly keyed link
 * opens to nothing.
 */
export function openSuccessors (secret: string, chain: readonly string[], currentHash: string): string | undefined {
  let opened = secret
  for (const sealed of chain) {
    const masked = Buffer.from(sealed, 'base64url')
    if (masked.length !== SECRET_BYTES) return undefined
    opened = xor(masked, successorPad(opened)).toString('base64url')
  }
  return hashSecret(opened) === currentHash ? opened : undefined
}

function successorPad (secret: string): Buffer {
  return createHmac('sha256', secret).update('refresh-token-successor').digest()
}

function xor (a: Buffer, b: Buffer): Buffer {
  return Buffer.from(a.map((byte, index) => byte ^ b[index]!))
}
