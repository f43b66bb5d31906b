import Fastify, { type FastifyRequest } from 'fastify'
import { createRemoteJWKSet, jwtVerify, type JWTPayload } from 'jose'

/*
 * A service that trusts auth-service's access tokens: it verifies them itself
 * with the public keys at /.well-known/jwks.json (no call to auth-service per
 * request), decides what a caller may do from the token's `roles` claim, and
 * asks auth-service (RFC 7662 introspection) only where it must know the
 * session has not been revoked since the token was issued.
 */

const env = process.env
const AUTH_URL = env.AUTH_URL ?? 'http://127.0.0.1:3000'
const ISSUER = env.JWT_ISSUER ?? 'auth-service'
const AUDIENCE = env.JWT_AUDIENCE ?? 'api'
const ALGORITHM = env.JWT_ALGORITHM ?? 'EdDSA'
const INTROSPECTION_SECRET = env.INTROSPECTION_SECRET

/**
 * The key set, fetched on first use and cached; a token naming a kid not in
 * the cache (a key rotation) triggers one refetch, at most once per cooldown.
 */
const keySet = createRemoteJWKSet(new URL('/.well-known/jwks.json', AUTH_URL), {
  cooldownDuration: Number(env.JWKS_COOLDOWN_MS ?? 30_000),
  cacheMaxAge: 10 * 60_000
})

interface AccessToken extends JWTPayload {
  sub: string
  sid: string
  /** The user's roles when the token was issued (absent from tokens issued before auth-service had roles: none). */
  roles?: string[]
}

class Unauthorized extends Error {
  readonly statusCode = 401
  constructor (readonly code: string, message: string) {
    super(message)
  }
}

/** A valid token without a role the route requires: the caller needs an admin to grant it, then a refresh. */
class Forbidden extends Error {
  readonly statusCode = 403
  readonly code = 'FORBIDDEN'
}

/** Everything a consumer must check: signature by kid, the one algorithm, iss, aud, typ, exp and the token type. */
async function verifyAccessToken (authorization: string | undefined): Promise<AccessToken> {
  const token = /^Bearer (\S+)$/i.exec(authorization ?? '')?.[1]
  if (token === undefined) throw new Unauthorized('TOKEN_MISSING', 'Send Authorization: Bearer <access token>')
  if (token.length > 8192) throw new Unauthorized('TOKEN_INVALID', 'Token too long')
  try {
    const { payload } = await jwtVerify(token, keySet, {
      algorithms: [ALGORITHM],
      issuer: ISSUER,
      audience: AUDIENCE,
      typ: 'at+jwt',
      requiredClaims: ['sub', 'sid', 'jti', 'iat', 'exp']
    })
    if (payload.token_use !== 'access') throw new Error('not an access token')
    return payload as AccessToken
  } catch (error) {
    const expired = (error as { code?: string }).code === 'ERR_JWT_EXPIRED'
    throw new Unauthorized(expired ? 'TOKEN_EXPIRED' : 'TOKEN_INVALID', expired ? 'Token expired: refresh it' : 'Token invalid')
  }
}

/** Asks auth-service whether the token is still active: its session may have been logged out since it was issued. */
async function isStillActive (request: FastifyRequest): Promise<boolean> {
  if (INTROSPECTION_SECRET === undefined) throw new Error('INTROSPECTION_SECRET is not set')
  const token = request.headers.authorization!.slice('Bearer '.length)
  const response = await fetch(new URL('/auth/introspect', AUTH_URL), {
    method: 'POST',
    headers: { authorization: `Bearer ${INTROSPECTION_SECRET}`, 'content-type': 'application/json' },
    body: JSON.stringify({ token }),
    signal: AbortSignal.timeout(2000)
  })
  if (!response.ok) throw new Error(`introspection failed: ${response.status}`)
  return (await response.json() as { active: boolean }).active
}

/**
 * A preHandler that lets through only a token carrying `role`, decided from
 * the token alone: no call to auth-service. So a role an admin removed still
 * passes here with a token issued before, until it expires (ACCESS_TOKEN_TTL,
 * 10 minutes by default; the next refresh gets a token without the role).
 * Where that matters, introspect as /transfer does: auth-service refuses such
 * a token within a second of the removal.
 */
function requireRole (role: string) {
  return async (request: FastifyRequest): Promise<void> => {
    const roles = request.token!.roles
    if (!Array.isArray(roles) || !roles.includes(role)) throw new Forbidden(`This route requires the role ${role}`)
  }
}

declare module 'fastify' {
  interface FastifyRequest {
    token: AccessToken | null
  }
}

const app = Fastify({ logger: { level: env.LOG_LEVEL ?? 'info' } })
app.decorateRequest('token', null)
app.addHook('onRequest', async (request) => {
  if (request.routeOptions.url === '/health') return
  request.token = await verifyAccessToken(request.headers.authorization)
})

// An everyday read: the signature is proof enough, no call to auth-service.
app.get('/hello', async (request) => ({ message: `hello, ${request.token!.sub}`, sub: request.token!.sub, sid: request.token!.sid }))

// A high-value operation: also make sure the session has not been revoked.
app.post('/transfer', async (request) => {
  if (!await isStillActive(request)) throw new Unauthorized('TOKEN_REVOKED', 'The session of this token has ended')
  return { ok: true, by: request.token!.sub }
})

// Only for callers with the role reports.
app.get('/reports', { preHandler: requireRole('reports') }, async (request) => ({ reports: [], for: request.token!.sub }))

app.get('/health', async () => ({ status: 'ok' }))

await app.listen({ host: env.HOST ?? '127.0.0.1', port: Number(env.PORT ?? 4000) })
