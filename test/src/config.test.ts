import t from 'tap'
import type { Test } from 'tap'
import { ConfigError, loadConfig, parseDuration, type Config } from '../../src/config.js'

const SECRET_32 = 'x'.repeat(32)

/** Loads `env` expecting a ConfigError that names `variable`. */
function refuses (t: Test, env: Record<string, string>, variable: string, name = `${JSON.stringify(env)} is refused`): void {
  let caught: unknown
  try {
    loadConfig(env)
  } catch (error) {
    caught = error
  }
  t.ok(caught instanceof ConfigError, `${name}: throws a ConfigError`)
  t.equal((caught as ConfigError | undefined)?.variable, variable, `${name}: names ${variable}`)
  t.match((caught as Error | undefined)?.message, new RegExp(`^${variable}: `), `${name}: the message starts with the variable`)
}

t.test('defaults match the contract', async (t) => {
  // API.md's configuration table, field by field (fields outside the contract may be added freely).
  const expected: Partial<Config> = {
    host: '127.0.0.1',
    port: 3000,
    dataDir: './data',
    production: false,
    databaseUrl: undefined,
    redisUrl: undefined,
    redisCluster: false,
    accessTokenTtl: 600,
    refreshTokenTtl: 14 * 86400,
    sessionMaxAge: 90 * 86400,
    rotateRefreshTokens: true,
    refreshReuseGrace: 10,
    jwt: {
      algorithm: 'EdDSA',
      privateKey: undefined,
      publicKey: undefined,
      secret: undefined,
      previousPublicKeys: [],
      issuer: 'auth-service',
      audience: 'api'
    },
    cookieSecure: false,
    loginRateLimit: { max: 10, windowSeconds: 60 },
    signupRateLimit: { max: 50, windowSeconds: 600 },
    refreshRateLimit: { max: 600, windowSeconds: 60 },
    maxSessionsPerUser: 100,
    corsOrigins: [],
    trustProxy: false,
    refreshBindIp: false,
    introspectionSecret: undefined,
    metricsToken: undefined,
    auditRetention: 90 * 86400,
    logLevel: 'info'
  }
  for (const [name, env] of [['no variables', {}], ['empty values', { PORT: '', HOST: '  ', ACCESS_TOKEN_TTL: '', JWT_ALGORITHM: ' ' }]] as const) {
    const config = loadConfig(env)
    for (const [field, value] of Object.entries(expected)) {
      t.strictSame(config[field as keyof Config], value, `${name}: ${field}`)
    }
  }
})

t.test('production', async (t) => {
  const config = loadConfig({ NODE_ENV: 'production' })
  t.equal(config.production, true)
  t.equal(config.cookieSecure, true, 'COOKIE_SECURE defaults to true in production')
  t.equal(loadConfig({ NODE_ENV: 'production', COOKIE_SECURE: 'false' }).cookieSecure, false, 'and can be turned off')
  t.equal(loadConfig({ NODE_ENV: 'development' }).cookieSecure, false)
  t.equal(loadConfig({ COOKIE_SECURE: 'true' }).cookieSecure, true)
})

t.test('values are read', async (t) => {
  const config = loadConfig({
    HOST: '0.0.0.0',
    PORT: '8080',
    DATA_DIR: '/var/lib/auth',
    DATABASE_URL: 'postgres://u:p@db:5432/auth',
    REDIS_URL: 'rediss://cache:6380',
    REDIS_CLUSTER: 'true',
    ACCESS_TOKEN_TTL: '5m',
    REFRESH_TOKEN_TTL: '2h',
    SESSION_MAX_AGE: '30d',
    ROTATE_REFRESH_TOKENS: 'false',
    REFRESH_REUSE_GRACE: '0',
    JWT_ALGORITHM: 'HS256',
    JWT_SECRET: SECRET_32,
    JWT_ISSUER: 'https://auth.example.com',
    JWT_AUDIENCE: 'orders',
    LOGIN_RATE_LIMIT: '5/30s',
    SIGNUP_RATE_LIMIT: '500/1h',
    REFRESH_RATE_LIMIT: '20/10s',
    MAX_SESSIONS_PER_USER: '3',
    CORS_ORIGINS: 'https://app.example.com, http://localhost:5173/',
    REFRESH_BIND_IP: '1',
    INTROSPECTION_SECRET: 's'.repeat(16),
    METRICS_TOKEN: 'm'.repeat(16),
    AUDIT_RETENTION: '30d',
    LOG_LEVEL: 'warn'
  })
  t.match(config, {
    host: '0.0.0.0',
    port: 8080,
    dataDir: '/var/lib/auth',
    databaseUrl: 'postgres://u:p@db:5432/auth',
    redisUrl: 'rediss://cache:6380',
    redisCluster: true,
    accessTokenTtl: 300,
    refreshTokenTtl: 7200,
    sessionMaxAge: 30 * 86400,
    rotateRefreshTokens: false,
    refreshReuseGrace: 0,
    jwt: { algorithm: 'HS256', secret: SECRET_32, issuer: 'https://auth.example.com', audience: 'orders' },
    loginRateLimit: { max: 5, windowSeconds: 30 },
    signupRateLimit: { max: 500, windowSeconds: 3600 },
    refreshRateLimit: { max: 20, windowSeconds: 10 },
    maxSessionsPerUser: 3,
    corsOrigins: ['https://app.example.com', 'http://localhost:5173'],
    refreshBindIp: true,
    introspectionSecret: 's'.repeat(16),
    metricsToken: 'm'.repeat(16),
    auditRetention: 30 * 86400,
    logLevel: 'warn'
  })
  t.equal(loadConfig({ DATABASE_URL: 'postgresql://db/auth' }).databaseUrl, 'postgresql://db/auth', 'postgresql: too')
  t.equal(loadConfig({ JWT_SECRET: SECRET_32 }).jwt.secret, undefined, 'JWT_SECRET is ignored by the asymmetric algorithms')
  t.equal(loadConfig({ JWT_ALGORITHM: 'HS256', JWT_SECRET: 'é'.repeat(16) }).jwt.secret, 'é'.repeat(16), '32 bytes, not characters')
  t.equal(loadConfig({ REFRESH_REUSE_GRACE: '0s' }).refreshReuseGrace, 0, 'a zero grace is allowed')
  t.equal(loadConfig({ MAX_SESSIONS_PER_USER: '1' }).maxSessionsPerUser, 1, 'one session per user at least')
  t.equal(loadConfig({ MAX_SESSIONS_PER_USER: ' 100000 ' }).maxSessionsPerUser, 100_000, 'a hundred thousand at most')
})

t.test('parseDuration', async (t) => {
  const good: Array<[string, number]> = [
    ['90s', 90], ['10m', 600], ['2h', 7200], ['14d', 14 * 86400], ['600', 600], ['0', 0], ['1s', 1],
    [' 10m ', 600], ['3650d', 3650 * 86400]
  ]
  for (const [text, seconds] of good) t.equal(parseDuration(text), seconds, `${JSON.stringify(text)} is ${seconds} s`)

  const bad = ['1.5m', '-1', '10w', '', ' ', 'm10', '10 m', '10M', '1e3', '0x10', '10ms', '1h30m', 'ten', '+5',
    '99999999999', '3651d', '100000h', String(2 ** 53)]
  for (const text of bad) t.equal(parseDuration(text), undefined, `${JSON.stringify(text)} is refused`)
})

t.test('every bad value stops loading with a ConfigError naming the variable', async (t) => {
  for (const name of ['ACCESS_TOKEN_TTL', 'REFRESH_TOKEN_TTL', 'SESSION_MAX_AGE', 'REFRESH_REUSE_GRACE']) {
    refuses(t, { [name]: '1.5m' }, name)
    refuses(t, { [name]: 'forever' }, name)
    refuses(t, { [name]: '3651d' }, name, `${name} beyond ten years`)
  }
  for (const name of ['ACCESS_TOKEN_TTL', 'REFRESH_TOKEN_TTL', 'SESSION_MAX_AGE']) {
    refuses(t, { [name]: '0' }, name, `${name} of zero`)
    refuses(t, { [name]: '0m' }, name, `${name} of 0m`)
  }

  refuses(t, { JWT_ALGORITHM: 'none' }, 'JWT_ALGORITHM')
  refuses(t, { JWT_ALGORITHM: 'HS512' }, 'JWT_ALGORITHM')
  refuses(t, { JWT_ALGORITHM: 'eddsa' }, 'JWT_ALGORITHM', 'algorithms are case-sensitive')
  refuses(t, { JWT_ALGORITHM: 'HS256' }, 'JWT_SECRET', 'HS256 without a secret')
  refuses(t, { JWT_ALGORITHM: 'HS256', JWT_SECRET: 'x'.repeat(31) }, 'JWT_SECRET', 'HS256 with a 31-byte secret')
  refuses(t, { JWT_PUBLIC_KEY: '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----' }, 'JWT_PUBLIC_KEY',
    'JWT_PUBLIC_KEY without JWT_PRIVATE_KEY')
  refuses(t, { JWT_PREVIOUS_PUBLIC_KEYS: 'not a pem' }, 'JWT_PREVIOUS_PUBLIC_KEYS')

  for (const port of ['http', '-1', '65536', '80.5', '0x50', '1e3']) refuses(t, { PORT: port }, 'PORT', `PORT=${port}`)

  for (const name of ['ROTATE_REFRESH_TOKENS', 'COOKIE_SECURE', 'REDIS_CLUSTER', 'REFRESH_BIND_IP']) {
    refuses(t, { [name]: 'yes' }, name)
    refuses(t, { [name]: '2' }, name)
  }

  refuses(t, { DATABASE_URL: 'mysql://db/auth' }, 'DATABASE_URL')
  refuses(t, { DATABASE_URL: 'db:5432' }, 'DATABASE_URL')
  refuses(t, { DATABASE_URL: 'not a url' }, 'DATABASE_URL')
  refuses(t, { REDIS_URL: 'http://cache:6379' }, 'REDIS_URL')
  refuses(t, { REDIS_URL: 'cache:6379' }, 'REDIS_URL')
  refuses(t, { REDIS_CLUSTER: 'true' }, 'REDIS_CLUSTER', 'REDIS_CLUSTER without REDIS_URL')

  for (const name of ['LOGIN_RATE_LIMIT', 'SIGNUP_RATE_LIMIT', 'REFRESH_RATE_LIMIT']) {
    for (const limit of ['10', '10/', '/1m', '0/1m', '10/0', '10/1w', 'ten/1m', '-1/1m', '10/1.5m', '1/1m/1m']) {
      refuses(t, { [name]: limit }, name, `${name}=${limit}`)
    }
  }

  for (const count of ['0', '-1', '1.5', '100001', '1e3', '0x10', 'ten', '+5', '9'.repeat(20)]) {
    refuses(t, { MAX_SESSIONS_PER_USER: count }, 'MAX_SESSIONS_PER_USER', `MAX_SESSIONS_PER_USER=${count}`)
  }

  for (const origin of ['*', 'app.example.com', 'https://app.example.com/path', 'https://app.example.com?q', 'null',
    'https://ok.example.com,nope']) {
    refuses(t, { CORS_ORIGINS: origin }, 'CORS_ORIGINS', `CORS_ORIGINS=${origin}`)
  }

  for (const proxy of ['yes', '10.0.0.300', '10.0.0.0/33', '::1/129', '10.0.0.1,nope', '10.0.0.0/x', '-1']) {
    refuses(t, { TRUST_PROXY: proxy }, 'TRUST_PROXY', `TRUST_PROXY=${proxy}`)
  }

  refuses(t, { LOG_LEVEL: 'verbose' }, 'LOG_LEVEL')
  refuses(t, { LOG_LEVEL: 'INFO' }, 'LOG_LEVEL', 'LOG_LEVEL is case-sensitive like pino')
  refuses(t, { INTROSPECTION_SECRET: 's'.repeat(15) }, 'INTROSPECTION_SECRET', 'a 15-byte introspection secret')
  refuses(t, { METRICS_TOKEN: 'm'.repeat(15) }, 'METRICS_TOKEN', 'a 15-byte metrics token')
  refuses(t, { AUDIT_RETENTION: '0' }, 'AUDIT_RETENTION', 'a zero retention')
  refuses(t, { AUDIT_RETENTION: 'forever' }, 'AUDIT_RETENTION')
})

t.test('TRUST_PROXY', async (t) => {
  t.equal(loadConfig({}).trustProxy, false)
  t.equal(loadConfig({ TRUST_PROXY: 'false' }).trustProxy, false)
  t.equal(loadConfig({ TRUST_PROXY: 'true' }).trustProxy, true)
  t.equal(loadConfig({ TRUST_PROXY: 'TRUE' }).trustProxy, true, 'booleans in any case')
  t.equal(loadConfig({ TRUST_PROXY: '2' }).trustProxy, 2, 'a hop count')
  t.equal(loadConfig({ TRUST_PROXY: '0' }).trustProxy, 0)
  t.strictSame(loadConfig({ TRUST_PROXY: '10.0.0.1' }).trustProxy, ['10.0.0.1'])
  t.strictSame(loadConfig({ TRUST_PROXY: '10.0.0.0/8, 192.168.1.1 ,::1, fd00::/8' }).trustProxy,
    ['10.0.0.0/8', '192.168.1.1', '::1', 'fd00::/8'], 'addresses and CIDRs, IPv4 and IPv6')
})

t.test('PEM values may carry literal \\n', async (t) => {
  const pem = '-----BEGIN PUBLIC KEY-----\\nAAAA\\n-----END PUBLIC KEY-----'
  const config = loadConfig({ JWT_PRIVATE_KEY: pem.replaceAll('PUBLIC', 'PRIVATE'), JWT_PUBLIC_KEY: pem })
  t.equal(config.jwt.publicKey, '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----')
  t.equal(config.jwt.privateKey, '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----')
  const previous = loadConfig({ JWT_PREVIOUS_PUBLIC_KEYS: `${pem}\\n${pem.replace('AAAA', 'BBBB')}` }).jwt.previousPublicKeys
  t.equal(previous.length, 2, 'several previous keys are split into blocks')
  t.match(previous[1], /BBBB/)
})

t.test('account mail: defaults', async (t) => {
  const config = loadConfig({})
  t.match(config, {
    publicUrl: 'http://127.0.0.1:3000',
    appUrl: undefined,
    smtpUrl: undefined,
    mailFrom: 'Auth service <no-reply@localhost>',
    requireVerifiedEmail: false,
    passwordResetTtl: 30 * 60,
    emailVerificationTtl: 24 * 3600
  })
  t.equal(loadConfig({ PUBLIC_URL: ' ', APP_URL: '', SMTP_URL: '  ', MAIL_FROM: '' }).mailFrom, 'Auth service <no-reply@localhost>', 'empty values are unset')
})

t.test('PUBLIC_URL: http://HOST:PORT unless given; a base URL links are built on', async (t) => {
  t.equal(loadConfig({ HOST: '0.0.0.0', PORT: '8080' }).publicUrl, 'http://0.0.0.0:8080', 'from HOST and PORT')
  t.equal(loadConfig({ HOST: 'auth.internal' }).publicUrl, 'http://auth.internal:3000')
  t.equal(loadConfig({ HOST: '::1' }).publicUrl, 'http://[::1]:3000', 'an IPv6 host is bracketed')
  t.equal(loadConfig({ HOST: '::', PORT: '8443' }).publicUrl, 'http://[::]:8443')
  t.equal(loadConfig({ HOST: 'fd00::1' }).publicUrl, 'http://[fd00::1]:3000')

  const given: Array<[string, string]> = [
    ['https://auth.example.com', 'https://auth.example.com'],
    ['https://auth.example.com/', 'https://auth.example.com'],
    ['https://auth.example.com//', 'https://auth.example.com'],
    ['https://auth.example.com/base/', 'https://auth.example.com/base'],
    ['HTTPS://Auth.Example.COM:443/', 'https://auth.example.com'],
    ['http://localhost:8080/auth', 'http://localhost:8080/auth'],
    [' https://auth.example.com ', 'https://auth.example.com']
  ]
  for (const [value, expected] of given) t.equal(loadConfig({ PUBLIC_URL: value }).publicUrl, expected, `${JSON.stringify(value)}: ${expected}`)
  t.equal(loadConfig({ PUBLIC_URL: 'https://auth.example.com/', HOST: '::1' }).publicUrl, 'https://auth.example.com', 'a given URL wins over HOST')
})

t.test('APP_URL: unset unless given; a base URL, no trailing slash', async (t) => {
  t.equal(loadConfig({ APP_URL: 'https://app.example.com/' }).appUrl, 'https://app.example.com')
  t.equal(loadConfig({ APP_URL: 'https://app.example.com/account/' }).appUrl, 'https://app.example.com/account')
  t.equal(loadConfig({ APP_URL: 'http://localhost:5173' }).appUrl, 'http://localhost:5173')
})

t.test('SMTP_URL, MAIL_FROM, REQUIRE_VERIFIED_EMAIL and the link lifetimes are read', async (t) => {
  t.match(loadConfig({
    SMTP_URL: 'smtp://user:secret@mail.example.com:587',
    MAIL_FROM: '"Example, Inc." <accounts@example.com>',
    REQUIRE_VERIFIED_EMAIL: 'true',
    PASSWORD_RESET_TTL: '15m',
    EMAIL_VERIFICATION_TTL: '7d'
  }), {
    smtpUrl: 'smtp://user:secret@mail.example.com:587',
    mailFrom: '"Example, Inc." <accounts@example.com>',
    requireVerifiedEmail: true,
    passwordResetTtl: 900,
    emailVerificationTtl: 7 * 86400
  })
  t.equal(loadConfig({ SMTP_URL: 'smtps://mail.example.com' }).smtpUrl, 'smtps://mail.example.com', 'smtps:')
  t.equal(loadConfig({ SMTP_URL: 'smtp://mail.example.com:25?requireTLS=true' }).smtpUrl, 'smtp://mail.example.com:25?requireTLS=true',
    'nodemailer\'s options in the query are kept')
  t.equal(loadConfig({ MAIL_FROM: 'no-reply@example.com' }).mailFrom, 'no-reply@example.com', 'a bare address')
  t.equal(loadConfig({ MAIL_FROM: 'no-reply@example.com\n' }).mailFrom, 'no-reply@example.com', 'a trailing newline is trimmed like any value\'s')
  t.equal(loadConfig({ REQUIRE_VERIFIED_EMAIL: '0' }).requireVerifiedEmail, false)
  t.equal(loadConfig({ PASSWORD_RESET_TTL: '90' }).passwordResetTtl, 90, 'plain seconds')
})

t.test('account mail: every bad value stops loading, naming the variable', async (t) => {
  for (const name of ['PUBLIC_URL', 'APP_URL']) {
    for (const value of ['auth.example.com', 'not a url', 'ftp://auth.example.com', 'javascript:alert(1)', 'mailto:a@example.com',
      'https://auth.example.com/?next=1', 'https://auth.example.com/#top', 'https://user:pass@auth.example.com', 'https://user@auth.example.com']) {
      refuses(t, { [name]: value }, name, `${name}=${value}`)
    }
    // An empty query or fragment: the URL parser reports neither, but links built on the value would carry them.
    for (const value of ['https://auth.example.com/?', 'https://auth.example.com/#']) {
      let loaded: string | undefined
      try {
        loaded = name === 'PUBLIC_URL' ? loadConfig({ [name]: value }).publicUrl : loadConfig({ [name]: value }).appUrl
      } catch {}
      t.equal(loaded, undefined, `${name}=${value} is refused (it loaded as ${JSON.stringify(loaded)}: links would be ${loaded}/reset-password#token=…)`)
    }
  }

  for (const value of ['http://mail.example.com', 'smtp', 'mail.example.com:587', 'smtp+tls://mail.example.com', 'lmtp://mail.example.com', 'not a url']) {
    refuses(t, { SMTP_URL: value }, 'SMTP_URL', `SMTP_URL=${value}`)
  }

  for (const value of ['Auth <a@example.com>\r\nBcc: victim@example.com', 'Auth <a@example.com>\nBcc: victim@example.com',
    'a@example.com\rBcc: victim@example.com', 'not an address', 'Auth service', '<>', 'Auth <a@example.com> trailing',
    'Auth <a@example.com>, Other <b@example.com>', 'a@example.com b@example.com']) {
    refuses(t, { MAIL_FROM: value }, 'MAIL_FROM', `MAIL_FROM=${JSON.stringify(value)}`)
  }

  for (const value of ['yes', '2', 'on']) refuses(t, { REQUIRE_VERIFIED_EMAIL: value }, 'REQUIRE_VERIFIED_EMAIL')

  for (const name of ['PASSWORD_RESET_TTL', 'EMAIL_VERIFICATION_TTL']) {
    for (const value of ['0', '0m', '1.5h', 'soon', '-5m', '3651d']) refuses(t, { [name]: value }, name, `${name}=${value}`)
  }
})

t.test('a HOST that cannot make the default PUBLIC_URL: loaded, or refused with a ConfigError; never a TypeError', async (t) => {
  for (const host of ['[::1]', 'bad host']) {
    let caught: unknown
    try {
      loadConfig({ HOST: host })
    } catch (error) {
      caught = error
    }
    t.ok(caught === undefined || caught instanceof ConfigError, `HOST=${host}: ${caught instanceof Error ? `${caught.name}: ${caught.message}` : 'loaded'}`)
  }
})
