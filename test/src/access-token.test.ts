import t from 'tap'
import {
  MAX_TOKEN_LENGTH, REQUIRED_CLAIMS, TOKEN_USE, accessTokenClaims, bearerToken, checkAccessClaims
} from '../../src/access-token.js'
import { ServiceError, type ErrorCode } from '../../src/errors.js'

const NOW = Date.UTC(2030, 0, 1, 0, 0, 0, 250)

/** The ServiceError code `fn` throws, or undefined when it does not throw. */
function codeOf (fn: () => unknown): ErrorCode | undefined {
  try {
    fn()
  } catch (error) {
    return error instanceof ServiceError ? error.code : undefined
  }
  return undefined
}

function claims (overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    ...accessTokenClaims({ userId: 'user-1', sessionId: 'session-1', facts: { emailVerified: false, roles: [] }, now: NOW, ttlSeconds: 600, notAfter: NOW + 3600_000, issuer: 'auth-service', audience: 'api' }),
    ...overrides
  }
}

t.test('accessTokenClaims', async (t) => {
  const issued = claims()
  t.match(issued, {
    sub: 'user-1', sid: 'session-1', iat: Math.floor(NOW / 1000), exp: Math.floor(NOW / 1000) + 600, iss: 'auth-service', aud: 'api', token_use: TOKEN_USE
  })
  t.match(issued.jti, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, 'a random jti')
  t.not(claims().jti, issued.jti, 'a new jti every time')
  // email_verified and roles are issued on every token but not required of one: tokens issued before they existed stay good until they expire.
  t.strictSame(Object.keys(issued).sort(), [...REQUIRED_CLAIMS, 'email_verified', 'roles'].sort(), 'every required claim, email_verified, roles, and nothing else')
  t.equal(issued.email_verified, false)
  t.strictSame(issued.roles, [])

  const capped = accessTokenClaims({ userId: 'u', sessionId: 's', facts: { emailVerified: true, roles: ['admin'] }, now: NOW, ttlSeconds: 600, notAfter: NOW + 90_500, issuer: 'i', audience: 'a' })
  t.equal(capped.exp, Math.floor((NOW + 90_500) / 1000), 'never after its session\'s end')
  t.equal(capped.email_verified, true, 'email_verified as the user\'s facts say')
})

t.test('bearerToken', async (t) => {
  t.equal(bearerToken('Bearer abc.def.ghi'), 'abc.def.ghi')
  t.equal(bearerToken('bearer abc'), 'abc', 'the scheme is case-insensitive')
  t.equal(bearerToken('BEARER abc'), 'abc')
  t.equal(bearerToken('Bearer    abc  '), 'abc', 'extra spaces around the token')
  t.equal(bearerToken(`Bearer ${'a'.repeat(MAX_TOKEN_LENGTH)}`).length, MAX_TOKEN_LENGTH, 'exactly 8192 characters is fine')

  const missing: Array<string | undefined> = [undefined, '', 'Bearer', 'Bearer ', 'Bearer    ', 'Basic dXNlcjpwYXNz', 'Token abc', 'Bearerabc', 'abc']
  for (const header of missing) {
    t.equal(codeOf(() => bearerToken(header)), 'ACCESS_TOKEN_MISSING', `${JSON.stringify(header)}: missing`)
  }
  const invalid = [`Bearer ${'a'.repeat(MAX_TOKEN_LENGTH + 1)}`, 'Bearer abc def', 'Bearer abc\tdef', 'Bearer a.b.c extra']
  for (const header of invalid) {
    t.equal(codeOf(() => bearerToken(header)), 'ACCESS_TOKEN_INVALID', `${JSON.stringify(header.slice(0, 30))}: invalid`)
  }
})

t.test('checkAccessClaims', async (t) => {
  const valid = claims()
  t.equal(checkAccessClaims(valid, NOW), valid, 'valid claims pass through')
  const exp = valid.exp as number
  t.equal(checkAccessClaims(valid, exp * 1000 - 1), valid, 'one millisecond before exp')
  t.equal(codeOf(() => checkAccessClaims(valid, exp * 1000)), 'ACCESS_TOKEN_EXPIRED', 'at exp')
  t.equal(codeOf(() => checkAccessClaims(valid, exp * 1000 + 86_400_000)), 'ACCESS_TOKEN_EXPIRED', 'long after exp')
  t.equal(checkAccessClaims(valid, exp * 1000 + 86_400_000, { allowExpired: true }), valid, 'allowExpired accepts an expired token')
  const withoutRoles = claims({ roles: undefined })
  t.equal(checkAccessClaims(withoutRoles, NOW), withoutRoles, 'a token issued before roles existed is valid (it claims none)')

  const broken: Array<[string, Record<string, unknown>]> = [
    ['token_use refresh', claims({ token_use: 'refresh' })],
    ['token_use missing', claims({ token_use: undefined })],
    ['sub missing', claims({ sub: undefined })],
    ['sub a number', claims({ sub: 42 })],
    ['sid missing', claims({ sid: undefined })],
    ['sid null', claims({ sid: null })],
    ['jti missing', claims({ jti: undefined })],
    ['iat a string', claims({ iat: String(valid.iat) })],
    ['iat missing', claims({ iat: undefined })],
    ['exp a string', claims({ exp: String(valid.exp) })],
    ['exp missing', claims({ exp: undefined })],
    ['roles a string', claims({ roles: 'admin' })],
    ['roles with a number', claims({ roles: ['admin', 7] })],
    ['roles null', claims({ roles: null })],
    ['an empty payload', {}]
  ]
  for (const [name, payload] of broken) {
    t.equal(codeOf(() => checkAccessClaims(payload, NOW)), 'ACCESS_TOKEN_INVALID', name)
    t.equal(codeOf(() => checkAccessClaims(payload, NOW, { allowExpired: true })), 'ACCESS_TOKEN_INVALID', `${name}, even with allowExpired`)
  }
  t.equal(codeOf(() => checkAccessClaims(claims({ token_use: 'refresh' }), exp * 1000 + 1)), 'ACCESS_TOKEN_INVALID',
    'a wrong type is invalid before it is expired')
})

t.test('errors carry the catalogue status', async (t) => {
  try {
    bearerToken(undefined)
    t.fail('should throw')
  } catch (error) {
    t.ok(error instanceof ServiceError)
    t.match(error, { statusCode: 401, code: 'ACCESS_TOKEN_MISSING', error: 'Unauthorized' })
  }
})
