import { createHash, createHmac, randomBytes } from 'node:crypto'

/**
 * Refresh tokens look like `rt1.<session id>.<expiry>.<secret>`:
 * - the session id locates the session's state (one key, one atomic script);
 * - the expiry (Unix seconds, informational only) lets an unknown token whose
 *   session has simply lapsed answer REFRESH_TOKEN_EXPIRED instead of INVALID;
 * - the secret is 256 random bits, stored only as its SHA-256.
 * Their shape never parses as a JWT, and a JWT never parses as one of them.
 */
export interface RefreshToken {
  sessionId: string
  expiresAt: number
  secret: string
}

const PREFIX = 'rt1'
const SHAPE = /^rt1\.([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.(\d{1,12})\.([A-Za-z0-9_-]{43})$/

/**
 * Session ids are UUIDv7: random, and carrying the login time, from which a
 * lapsed token's absolute expiry is known without any stored state.
 */
export function newSessionId (now: number): string {
  const bytes = randomBytes(16)
  bytes.writeUIntBE(now, 0, 6)
  bytes[6] = (bytes[6]! & 0x0f) | 0x70
  bytes[8] = (bytes[8]! & 0x3f) | 0x80
  const hex = bytes.toString('hex')
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`
}

/** The login time (ms) a session id carries. */
export function sessionStartedAt (sessionId: string): number {
  return Number.parseInt(sessionId.slice(0, 8) + sessionId.slice(9, 13), 16)
}

const SECRET_BYTES = 32

export function newRefreshSecret (): string {
  return randomBytes(SECRET_BYTES).toString('base64url')
}

export function issueRefreshToken (sessionId: string, expiresAtMs: number): { token: string, secret: string } {
  const secret = newRefreshSecret()
  return { token: refreshTokenOf(sessionId, expiresAtMs, secret), secret }
}

/** The token of a session's secret, carrying its expiry (ms) in Unix seconds. */
export function refreshTokenOf (sessionId: string, expiresAtMs: number, secret: string): string {
  return formatRefreshToken({ sessionId, expiresAt: Math.floor(expiresAtMs / 1000), secret })
}

export function formatRefreshToken ({ sessionId, expiresAt, secret }: RefreshToken): string {
  return `${PREFIX}.${sessionId}.${expiresAt}.${secret}`
}

export function parseRefreshToken (token: string): RefreshToken | undefined {
  const match = SHAPE.exec(token)
  if (match === null) return undefined
  return { sessionId: match[1]!, expiresAt: Number(match[2]), secret: match[3]! }
}

export function hashSecret (secret: string): string {
  return createHash('sha256').update(secret).digest('base64url')
}

/**
 * The successor of a rotated token is kept for the grace window so parallel
 * requests with the old token get the same successor. Only its secret is
 * kept, masked with a one-time pad derived from the old token's secret
 * (HMAC-SHA-256), which the store never sees: a dump of the store yields no
 * usable token. Sealed, it is 43 characters, small enough for Redis's compact
 * hash encoding; opening it checks the result against the successor's stored
 * hash, so a tampered or wrongly keyed value opens to nothing.
 */
export function sealSuccessor (oldSecret: string, successorSecret: string): string {
  return xor(Buffer.from(successorSecret, 'base64url'), successorPad(oldSecret)).toString('base64url')
}

export function openSuccessor (oldSecret: string, sealed: string, successorHash: string): string | undefined {
  const masked = Buffer.from(sealed, 'base64url')
  if (masked.length !== SECRET_BYTES) return undefined
  const secret = xor(masked, successorPad(oldSecret)).toString('base64url')
  return hashSecret(secret) === successorHash ? secret : undefined
}

function successorPad (secret: string): Buffer {
  return createHmac('sha256', secret).update('refresh-token-successor').digest()
}

function xor (a: Buffer, b: Buffer): Buffer {
  return Buffer.from(a.map((byte, index) => byte ^ b[index]!))
}
