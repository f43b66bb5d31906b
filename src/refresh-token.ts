import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto'

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

export function issueRefreshToken (sessionId: string, expiresAtMs: number): { token: string, secret: string } {
  const secret = randomBytes(32).toString('base64url')
  return { token: formatRefreshToken({ sessionId, expiresAt: Math.floor(expiresAtMs / 1000), secret }), secret }
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
 * requests with the old token get the same successor. It is sealed with a key
 * derived from the old token's secret, which the store never sees: a dump of
 * the store yields no usable token.
 */
export function sealSuccessor (oldSecret: string, successor: string): string {
  const iv = randomBytes(12)
  const cipher = createCipheriv('aes-256-gcm', successorKey(oldSecret), iv)
  const sealed = Buffer.concat([cipher.update(successor, 'utf8'), cipher.final()])
  return Buffer.concat([iv, cipher.getAuthTag(), sealed]).toString('base64url')
}

export function openSuccessor (oldSecret: string, sealed: string): string | undefined {
  try {
    const bytes = Buffer.from(sealed, 'base64url')
    const decipher = createDecipheriv('aes-256-gcm', successorKey(oldSecret), bytes.subarray(0, 12))
    decipher.setAuthTag(bytes.subarray(12, 28))
    return Buffer.concat([decipher.update(bytes.subarray(28)), decipher.final()]).toString('utf8')
  } catch {
    return undefined
  }
}

function successorKey (secret: string): Buffer {
  return Buffer.from(hkdfSync('sha256', secret, '', 'refresh-token-successor', 32))
}
