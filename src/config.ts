import { isIP } from 'node:net'

export const JWT_ALGORITHMS = ['EdDSA', 'ES256', 'RS256', 'HS256'] as const
export type JwtAlgorithm = typeof JWT_ALGORITHMS[number]

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
export type LogLevel = typeof LOG_LEVELS[number]

export interface RateLimit {
  max: number
  windowSeconds: number
}

/** Everything the service is configured with; durations are whole seconds. */
export interface Config {
  host: string
  port: number
  dataDir: string
  production: boolean
  databaseUrl: string | undefined
  redisUrl: string | undefined
  redisCluster: boolean
  /** Prepended to every Redis key and channel, so several deployments (or test runs) share one Redis. */
  redisKeyPrefix: string
  accessTokenTtl: number
  refreshTokenTtl: number
  sessionMaxAge: number
  rotateRefreshTokens: boolean
  refreshReuseGrace: number
  jwt: {
    algorithm: JwtAlgorithm
    privateKey: string | undefined
    publicKey: string | undefined
    secret: string | undefined
    previousPublicKeys: string[]
    issuer: string
    audience: string
  }
  cookieSecure: boolean
  loginRateLimit: RateLimit
  signupRateLimit: RateLimit
  refreshRateLimit: RateLimit
  /** Live sessions one user may hold; a login past it ends that user's least recently used session. */
  maxSessionsPerUser: number
  corsOrigins: string[]
  trustProxy: boolean | number | string[]
  refreshBindIp: boolean
  introspectionSecret: string | undefined
  /** The bearer secret of `/metrics`; unset, the route answers 404. */
  metricsToken: string | undefined
  /** Seconds security events are kept. */
  auditRetention: number
  /** The service's own external base URL, where its built-in account pages are (no trailing slash). */
  publicUrl: string
  /** Where emailed links point instead of the built-in pages (no trailing slash); unset, they open the built-in ones. */
  appUrl: string | undefined
  /** Mail goes out through this SMTP server; unset, it is written to DATA_DIR/outbox/. */
  smtpUrl: string | undefined
  mailFrom: string
  /** Login answers EMAIL_NOT_VERIFIED until the address is verified. */
  requireVerifiedEmail: boolean
  /** Seconds a password-reset link works. */
  passwordResetTtl: number
  /** Seconds an email-verification (or email-change) link works. */
  emailVerificationTtl: number
  logLevel: LogLevel
}

/** A configuration value that cannot be used; names the variable so the operator can fix it. */
export class ConfigError extends Error {
  constructor (readonly variable: string, reason: string) {
    super(`${variable}: ${reason}`)
    this.name = 'ConfigError'
  }
}

/** The largest MAX_SESSIONS_PER_USER: `GET /auth/sessions` answers every live session of a user in one list. */
const MAX_SESSIONS_PER_USER_LIMIT = 100_000

const DURATION_UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 }
const MAX_DURATION_SECONDS = 10 * 365 * 86400

/** Parses `90s`, `10m`, `2h`, `14d` or plain seconds into whole seconds; undefined when malformed. */
export function parseDuration (text: string): number | undefined {
  const match = /^(\d{1,10})([smhd]?)$/.exec(text.trim())
  if (match === null) return undefined
  const seconds = Number(match[1]) * DURATION_UNITS[match[2] || 's']!
  return seconds <= MAX_DURATION_SECONDS ? seconds : undefined
}

type Env = Record<string, string | undefined>

/** Reads and validates the environment once; throws ConfigError on the first bad value. */
export function loadConfig (env: Env = process.env): Config {
  const read = (name: string): string | undefined => {
    const value = env[name]
    return value === undefined || value.trim() === '' ? undefined : value.trim()
  }

  const duration = (name: string, fallback: string, { allowZero = false } = {}): number => {
    const seconds = parseDuration(read(name) ?? fallback)
    if (seconds === undefined) {
      throw new ConfigError(name, `expected a duration such as 90s, 10m, 2h, 14d or plain seconds, got "${read(name)}"`)
    }
    if (seconds === 0 && !allowZero) throw new ConfigError(name, 'must be longer than zero')
    return seconds
  }

  const boolean = (name: string, fallback: boolean): boolean => {
    const value = read(name)?.toLowerCase()
    if (value === undefined) return fallback
    if (value === 'true' || value === '1') return true
    if (value === 'false' || value === '0') return false
    throw new ConfigError(name, `expected true or false, got "${value}"`)
  }

  const url = (name: string, protocols: string[]): string | undefined => {
    const value = read(name)
    if (value === undefined) return undefined
    let parsed: URL
    try {
      parsed = new URL(value)
    } catch {
      throw new ConfigError(name, 'is not a valid URL')
    }
    if (!protocols.includes(parsed.protocol)) {
      throw new ConfigError(name, `expected a ${protocols.join(' or ')}// URL`)
    }
    return value
  }

  const production = read('NODE_ENV') === 'production'
  const host = read('HOST') ?? '127.0.0.1'

  const portText = read('PORT') ?? '3000'
  const port = Number(portText)
  if (!/^\d+$/.test(portText) || port > 65535) throw new ConfigError('PORT', `expected a port number, got "${portText}"`)

  const algorithm = read('JWT_ALGORITHM') ?? 'EdDSA'
  if (!(JWT_ALGORITHMS as readonly string[]).includes(algorithm)) {
    throw new ConfigError('JWT_ALGORITHM', `expected one of ${JWT_ALGORITHMS.join(', ')}, got "${algorithm}"`)
  }
  const secret = read('JWT_SECRET')
  if (algorithm === 'HS256') {
    if (secret === undefined) throw new ConfigError('JWT_SECRET', 'is required with JWT_ALGORITHM=HS256')
    if (Buffer.byteLength(secret) < 32) throw new ConfigError('JWT_SECRET', 'must be at least 32 bytes')
  }
  const privateKey = pem(read('JWT_PRIVATE_KEY'))
  const publicKey = pem(read('JWT_PUBLIC_KEY'))
  if (publicKey !== undefined && privateKey === undefined) {
    throw new ConfigError('JWT_PUBLIC_KEY', 'is set without JWT_PRIVATE_KEY')
  }

  const logLevel = read('LOG_LEVEL') ?? 'info'
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new ConfigError('LOG_LEVEL', `expected one of ${LOG_LEVELS.join(', ')}, got "${logLevel}"`)
  }

  const introspectionSecret = read('INTROSPECTION_SECRET')
  if (introspectionSecret !== undefined && Buffer.byteLength(introspectionSecret) < 16) {
    throw new ConfigError('INTROSPECTION_SECRET', 'must be at least 16 bytes')
  }

  const metricsToken = read('METRICS_TOKEN')
  if (metricsToken !== undefined && Buffer.byteLength(metricsToken) < 16) {
    throw new ConfigError('METRICS_TOKEN', 'must be at least 16 bytes')
  }

  const redisCluster = boolean('REDIS_CLUSTER', false)
  const redisUrl = url('REDIS_URL', ['redis:', 'rediss:'])
  if (redisCluster && redisUrl === undefined) throw new ConfigError('REDIS_CLUSTER', 'is true but REDIS_URL is not set')
  if (redisCluster && !/^\/?0?$/.test(new URL(redisUrl!).pathname)) {
    throw new ConfigError('REDIS_URL', 'a Redis Cluster has database 0 only: drop the database number with REDIS_CLUSTER=true')
  }
  const redisKeyPrefix = read('REDIS_KEY_PREFIX') ?? 'auth:'
  // The first {…} of a key is its Cluster hash tag: braces in the prefix would put every key on one node.
  if (redisCluster && /[{}]/.test(redisKeyPrefix)) {
    throw new ConfigError('REDIS_KEY_PREFIX', 'must not contain { or } with REDIS_CLUSTER=true (they would be the hash tag of every key)')
  }

  return {
    host,
    port,
    dataDir: read('DATA_DIR') ?? './data',
    production,
    databaseUrl: url('DATABASE_URL', ['postgres:', 'postgresql:']),
    redisUrl,
    redisCluster,
    redisKeyPrefix,
    accessTokenTtl: duration('ACCESS_TOKEN_TTL', '10m'),
    refreshTokenTtl: duration('REFRESH_TOKEN_TTL', '14d'),
    sessionMaxAge: duration('SESSION_MAX_AGE', '90d'),
    rotateRefreshTokens: boolean('ROTATE_REFRESH_TOKENS', true),
    refreshReuseGrace: duration('REFRESH_REUSE_GRACE', '10s', { allowZero: true }),
    jwt: {
      algorithm: algorithm as JwtAlgorithm,
      privateKey,
      publicKey,
      secret: algorithm === 'HS256' ? secret : undefined,
      previousPublicKeys: pemBlocks('JWT_PREVIOUS_PUBLIC_KEYS', read('JWT_PREVIOUS_PUBLIC_KEYS')),
      issuer: read('JWT_ISSUER') ?? 'auth-service',
      audience: read('JWT_AUDIENCE') ?? 'api'
    },
    cookieSecure: boolean('COOKIE_SECURE', production),
    loginRateLimit: rateLimit('LOGIN_RATE_LIMIT', read('LOGIN_RATE_LIMIT') ?? '10/1m'),
    // A signup costs an argon2 hash and a row: fifty in ten minutes, from one address, is an office signing up.
    signupRateLimit: rateLimit('SIGNUP_RATE_LIMIT', read('SIGNUP_RATE_LIMIT') ?? '50/10m'),
    // Refresh tokens cannot be guessed (256 bits): this only caps a flood. At one refresh per user
    // every ACCESS_TOKEN_TTL (10 min), several thousand users can share an address.
    refreshRateLimit: rateLimit('REFRESH_RATE_LIMIT', read('REFRESH_RATE_LIMIT') ?? '600/1m'),
    maxSessionsPerUser: positiveInteger('MAX_SESSIONS_PER_USER', read('MAX_SESSIONS_PER_USER') ?? '100', MAX_SESSIONS_PER_USER_LIMIT),
    corsOrigins: origins('CORS_ORIGINS', read('CORS_ORIGINS')),
    trustProxy: trustProxy('TRUST_PROXY', read('TRUST_PROXY')),
    refreshBindIp: boolean('REFRESH_BIND_IP', false),
    introspectionSecret,
    metricsToken,
    auditRetention: duration('AUDIT_RETENTION', '90d'),
    publicUrl: baseUrl('PUBLIC_URL', url('PUBLIC_URL', ['http:', 'https:']) ?? defaultPublicUrl(host, port)),
    appUrl: optionalBaseUrl('APP_URL', url('APP_URL', ['http:', 'https:'])),
    smtpUrl: url('SMTP_URL', ['smtp:', 'smtps:']),
    mailFrom: mailbox('MAIL_FROM', read('MAIL_FROM') ?? 'Auth service <no-reply@localhost>'),
    requireVerifiedEmail: boolean('REQUIRE_VERIFIED_EMAIL', false),
    passwordResetTtl: duration('PASSWORD_RESET_TTL', '30m'),
    emailVerificationTtl: duration('EMAIL_VERIFICATION_TTL', '24h'),
    logLevel: logLevel as LogLevel
  }
}

/**
 * A base URL that links are built on: no query or fragment (a link appends its
 * own path and `#token=`), and no trailing slash.
 */
function baseUrl (name: string, value: string): string {
  const parsed = new URL(value)
  // A lone `?` or `#` leaves search and hash empty: the text itself is checked.
  if (/[?#]/.test(value) || parsed.username !== '' || parsed.password !== '') {
    throw new ConfigError(name, 'expected a base URL such as https://auth.example.com, with no query, fragment or credentials')
  }
  return parsed.href.replace(/\/+$/, '')
}

/** PUBLIC_URL's default, where the service listens: `http://HOST:PORT` (an IPv6 address in brackets). */
function defaultPublicUrl (host: string, port: number): string {
  const bracketed = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host
  try {
    return new URL(`http://${bracketed}:${port}`).href
  } catch {
    throw new ConfigError('HOST', `expected a host name or address, got "${host}"`)
  }
}

function optionalBaseUrl (name: string, value: string | undefined): string | undefined {
  return value === undefined ? undefined : baseUrl(name, value)
}

/** A sender as mail headers write it: `Name <address>` or a bare address, on one line. */
function mailbox (name: string, value: string): string {
  if (/[\r\n]/.test(value) || !/^(?:[^<>@]*<[^\s<>@]+@[^\s<>@]+>|[^\s<>@]+@[^\s<>@]+)$/.test(value)) {
    throw new ConfigError(name, `expected an address such as "Auth service <no-reply@example.com>", got "${value}"`)
  }
  return value
}

/** Environment files often carry PEM newlines as literal `\n`. */
function pem (value: string | undefined): string | undefined {
  return value?.replace(/\\n/g, '\n')
}

function pemBlocks (name: string, value: string | undefined): string[] {
  if (value === undefined) return []
  const blocks = pem(value)!.match(/-----BEGIN [A-Z ]+-----[\s\S]+?-----END [A-Z ]+-----/g)
  if (blocks === null) throw new ConfigError(name, 'expected one or more PEM public keys')
  return blocks
}

function rateLimit (name: string, value: string): RateLimit {
  const match = /^(\d{1,9})\/(.+)$/.exec(value)
  const windowSeconds = match ? parseDuration(match[2]!) : undefined
  if (match === null || windowSeconds === undefined || windowSeconds === 0 || Number(match[1]) === 0) {
    throw new ConfigError(name, `expected attempts/window such as 10/1m, got "${value}"`)
  }
  return { max: Number(match[1]), windowSeconds }
}

function positiveInteger (name: string, value: string, max: number): number {
  if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > max) {
    throw new ConfigError(name, `expected a whole number from 1 to ${max}, got "${value}"`)
  }
  return Number(value)
}

function origins (name: string, value: string | undefined): string[] {
  if (value === undefined) return []
  return value.split(',').map((origin) => origin.trim()).filter(Boolean).map((origin) => {
    let parsed: URL | undefined
    try {
      parsed = new URL(origin)
    } catch {}
    if (parsed === undefined || parsed.origin !== origin.replace(/\/$/, '')) {
      throw new ConfigError(name, `"${origin}" is not an origin such as https://app.example.com`)
    }
    return parsed.origin
  })
}

function trustProxy (name: string, value: string | undefined): boolean | number | string[] {
  if (value === undefined || value.toLowerCase() === 'false') return false
  if (value.toLowerCase() === 'true') return true
  if (/^\d+$/.test(value)) return Number(value)
  const addresses = value.split(',').map((address) => address.trim()).filter(Boolean)
  for (const address of addresses) {
    const [ip, prefix] = address.split('/')
    const family = isIP(ip!)
    const validPrefix = prefix === undefined || (/^\d+$/.test(prefix) && Number(prefix) <= (family === 6 ? 128 : 32))
    if (family === 0 || !validPrefix) {
      throw new ConfigError(name, `expected true, false, a hop count or addresses/CIDRs, got "${address}"`)
    }
  }
  return addresses
}
