import { connect } from 'node:net'
import type { AddressInfo } from 'node:net'
import fc from 'fast-check'
import type { FastifyInstance, InjectOptions } from 'fastify'
import t from 'tap'
import { normalizeEmail } from '../../src/users.js'
import { NO_RATE_LIMITS, PASSWORD, buildTestApp, errorShapeProblems, refreshCookieOf, signUpAndLogIn } from '../helpers.js'

/*
 * Property-based fuzzing (fast-check, fixed seed, bounded runs): random and
 * mutated requests to every route, through app.inject() and as raw bytes
 * over TCP. Whatever comes in: never a 5xx, every error in the one shape,
 * never a password hash in an answer, and the service keeps serving.
 */

const SEED = 20261123

const ROUTES = [
  '/auth/signup', '/auth/login', '/auth/refresh', '/auth/logout', '/auth/logout-all', '/auth/logout-others',
  '/auth/password', '/auth/sessions', '/users/me', '/.well-known/jwks.json', '/health', '/docs', '/docs/json',
  '/auth/introspect'
]
const FIELDS = ['email', 'password', 'refreshToken', 'currentPassword', 'newPassword', 'token', '__proto__', 'constructor', 'prototype']
const CONTENT_TYPES = [
  'application/json', 'application/json; charset=utf-8', 'APPLICATION/JSON', 'application/json; charset=latin1',
  'application/jsonx', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'text/plain', 'text/html', '*/*', ''
]

/** Characters that can reach a header over HTTP: visible ASCII, space and obs-text. */
const headerText = (maxLength: number) => fc.string({
  unit: fc.integer({ min: 0x20, max: 0xff }).filter((code) => code !== 0x7f).map((code) => String.fromCharCode(code)),
  maxLength
})

/** Strings with the awkward characters: controls, unicode, astral, NUL, RTL marks. */
const awkwardText = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: fc.integer({ min: 0, max: 0x1f }).map((code) => String.fromCharCode(code)), maxLength: 10 }),
  fc.constantFrom('', ' ', '\u0000', '\u202e', '\ufeff', '\ud83d\ude00', '\ud800', 'ﬀ', '\ufdfa'.repeat(40), 'a'.repeat(300))
)

/** `base` with up to four random edits: inserts, deletions, replacements, truncation. */
const mutated = (base: string) => fc.array(fc.tuple(
  fc.constantFrom('insert', 'delete', 'replace', 'truncate'),
  fc.nat({ max: Math.max(0, base.length) }),
  fc.string({ unit: 'binary', minLength: 1, maxLength: 3 })
), { minLength: 1, maxLength: 4 }).map((edits) => {
  let text = base
  for (const [edit, at, chars] of edits) {
    const i = Math.min(at, text.length)
    if (edit === 'insert') text = text.slice(0, i) + chars + text.slice(i)
    else if (edit === 'delete') text = text.slice(0, i) + text.slice(i + 1)
    else if (edit === 'replace') text = text.slice(0, i) + chars + text.slice(i + chars.length)
    else text = text.slice(0, i)
  }
  return text
})

/** Percent-encodes every byte of `text` (as latin1) but path characters: any string becomes a valid, perhaps undecodable, path. */
const asPath = (text: string): string => [...Buffer.from(text, 'latin1')]
  .map((byte) => /[\w\-.~/]/.test(String.fromCharCode(byte)) ? String.fromCharCode(byte) : `%${byte.toString(16).padStart(2, '0')}`)
  .join('')

interface Secrets {
  email: string
  accessToken: string
  refreshToken: string
  sessionId: string
}

function requestArbitrary (secrets: Secrets): fc.Arbitrary<InjectOptions> {
  const tokenish = fc.oneof(
    fc.constant(secrets.accessToken), fc.constant(secrets.refreshToken),
    mutated(secrets.accessToken), mutated(secrets.refreshToken), awkwardText
  )
  const value = fc.oneof(tokenish, fc.constant(secrets.email), mutated(secrets.email), fc.constant(PASSWORD), awkwardText,
    fc.jsonValue({ maxDepth: 2 }))
  const jsonBody = fc.dictionary(fc.oneof(fc.constantFrom(...FIELDS), fc.string({ maxLength: 8 })), value, { maxKeys: 4 })
    .map((body) => JSON.stringify(body))
  const validBody = fc.constantFrom(
    JSON.stringify({ email: secrets.email, password: PASSWORD }),
    JSON.stringify({ refreshToken: secrets.refreshToken }),
    JSON.stringify({ currentPassword: PASSWORD, newPassword: `${PASSWORD}!` })
  )
  const body = fc.option(fc.oneof(
    jsonBody,
    validBody.chain(mutated),
    fc.string({ unit: 'binary', maxLength: 200 }),
    fc.uint8Array({ maxLength: 200 }).map((bytes) => Buffer.from(bytes)),
    fc.nat({ max: 3000 }).map((depth) => '['.repeat(depth) + ']'.repeat(depth)),
    fc.jsonValue({ maxDepth: 4 }).map((json) => JSON.stringify(json) ?? 'null')
  ), { nil: undefined })

  const path = fc.oneof(
    fc.constantFrom(...ROUTES),
    fc.constantFrom(`/auth/sessions/${secrets.sessionId}`, '/auth/sessions/'),
    fc.oneof(fc.uuid(), headerText(40)).map((id) => `/auth/sessions/${asPath(id).replace(/\//g, '%2f')}`),
    fc.constantFrom(...ROUTES).chain(mutated).map((mangled) => `/${asPath(mangled.replace(/^\/+/, ''))}`),
    fc.tuple(fc.constantFrom(...ROUTES), headerText(30)).map(([route, query]) => `${route}?${asPath(query)}`),
    fc.constantFrom('/%E0%A4%A', '/docs/../../etc/passwd', '//auth//login', '/auth/login/', '/AUTH/LOGIN', '/auth/login%00', '/*')
  )

  const authorization = fc.oneof(
    fc.constant(`Bearer ${secrets.accessToken}`),
    mutated(secrets.accessToken).map((token) => `Bearer ${token}`),
    headerText(100),
    headerText(100).map((token) => `Bearer ${token}`),
    fc.nat({ max: 15_000 }).map((length) => `Bearer ${'a'.repeat(length)}`),
    fc.constantFrom('Bearer', 'Bearer ', 'bearer x.y.z', 'Basic YTpi', `Bearer ${secrets.refreshToken}`, `Bearer ${secrets.accessToken} extra`)
  )
  const cookie = fc.oneof(
    fc.constant(`refresh_token=${secrets.refreshToken}`),
    mutated(secrets.refreshToken).map((token) => `refresh_token=${asPath(token)}`),
    headerText(200),
    fc.nat({ max: 12_000 }).map((length) => `refresh_token=${'r'.repeat(length)}`),
    fc.constantFrom('refresh_token=%E0%A4%A; =; ;;', 'refresh_token=', 'refresh_token="quoted"; refresh_token=twice')
  )
  const headers = fc.record({
    'content-type': fc.oneof(fc.constantFrom(...CONTENT_TYPES), headerText(40)),
    authorization,
    cookie,
    origin: fc.oneof(fc.constantFrom('https://evil.example', 'null', 'http://localhost:80'), headerText(30)),
    'x-forwarded-for': fc.oneof(fc.ipV4(), fc.ipV6(), headerText(30)),
    'x-request-id': headerText(40)
  }, { requiredKeys: [] })

  return fc.record({
    method: fc.constantFrom('GET', 'POST', 'POST', 'POST', 'DELETE', 'PUT', 'PATCH', 'OPTIONS', 'HEAD'),
    url: path,
    headers,
    payload: body
  }).map(({ method, url, headers, payload }) => {
    const request: InjectOptions = { method: method as InjectOptions['method'], url, headers: { ...headers } }
    if (payload !== undefined && method !== 'GET' && method !== 'HEAD') request.payload = payload
    return request
  })
}

async function session (app: FastifyInstance): Promise<Secrets> {
  const { email, accessToken, refreshToken } = await signUpAndLogIn(app, 'fuzz')
  const sessions = await app.inject({ method: 'GET', url: '/auth/sessions', headers: { authorization: `Bearer ${accessToken}` } })
  return { email, accessToken, refreshToken, sessionId: sessions.json()[0].id }
}

function problemsOf (method: string, response: { statusCode: number, headers: Record<string, unknown>, body: string }): string[] {
  const problems: string[] = []
  if (response.statusCode >= 500) problems.push(`status ${response.statusCode}`)
  if (response.statusCode >= 400 && method !== 'HEAD') {
    problems.push(...errorShapeProblems(response.statusCode, response.headers['content-type'] as string | undefined, response.body))
  }
  if (response.body.includes('$argon2')) problems.push('a password hash in the answer')
  return problems
}

/*
 * One app for the whole file, with no rate limit in reach (thousands of
 * requests come from one address), a proxy trusted and CORS configured, so
 * that every header the fuzzer sends is read.
 */
const app = await buildTestApp(t, { env: { TRUST_PROXY: 'true', CORS_ORIGINS: 'https://app.example.com' }, rateLimits: NO_RATE_LIMITS })

t.test('random and mutated requests to every route', async (t) => {
  const secrets = await session(app)
  const statuses = new Map<number, number>()

  await fc.assert(fc.asyncProperty(requestArbitrary(secrets), async (request) => {
    const response = await app.inject(request)
    statuses.set(response.statusCode, (statuses.get(response.statusCode) ?? 0) + 1)
    const problems = problemsOf(String(request.method), response)
    if (problems.length > 0) throw new Error(`${request.method} ${request.url}: ${problems.join('; ')}\n${response.body.slice(0, 300)}`)
  }), { seed: SEED, numRuns: 1500, endOnFailure: true })

  t.pass(`statuses: ${JSON.stringify(Object.fromEntries([...statuses].sort(([a], [b]) => a - b)))}`)
  t.ok([...statuses.keys()].filter((status) => status < 300).length >= 2, 'some requests got through to a handler')
  t.ok(statuses.size >= 6, 'and many kinds of refusal were reached')

  // Still serving, and still correct.
  t.equal((await app.inject({ method: 'GET', url: '/health' })).statusCode, 200)
  const after = await session(app)
  t.equal((await app.inject({ method: 'GET', url: '/users/me', headers: { authorization: `Bearer ${after.accessToken}` } })).statusCode, 200)
  t.equal(({} as Record<string, unknown>).email, undefined, 'Object.prototype is untouched')
})

t.test('signup and login with awkward emails and passwords: 4xx or success, and consistent', async (t) => {
  const emailLike = fc.oneof(
    fc.emailAddress(),
    fc.tuple(awkwardText, fc.emailAddress()).map(([prefix, email]) => prefix + email),
    fc.tuple(fc.emailAddress(), awkwardText).map(([email, suffix]) => email + suffix),
    fc.emailAddress().chain(mutated),
    fc.emailAddress().map((email) => `  ${email.toUpperCase()}\t`)
  )
  const password = fc.oneof(fc.string({ minLength: 8, maxLength: 64 }), awkwardText, fc.string({ unit: 'grapheme', minLength: 8, maxLength: 40 }))

  await fc.assert(fc.asyncProperty(emailLike, password, async (email, password) => {
    const signup = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email, password } })
    const problems = problemsOf('POST', signup)
    if (![201, 400, 409].includes(signup.statusCode)) problems.push(`signup ${signup.statusCode}`)
    if (signup.statusCode === 201) {
      if (signup.json().email !== normalizeEmail(email)) problems.push(`stored ${signup.json().email} for ${JSON.stringify(email)}`)
      const login = await app.inject({ method: 'POST', url: '/auth/login', payload: { email: normalizeEmail(email), password } })
      if (login.statusCode !== 200) problems.push(`login after signup: ${login.statusCode} ${login.body}`)
      if (refreshCookieOf(login) === undefined) problems.push('no cookie')
    } else {
      const login = await app.inject({ method: 'POST', url: '/auth/login', payload: { email, password } })
      problems.push(...problemsOf('POST', login))
      if (![400, 401].includes(login.statusCode) && signup.statusCode !== 409) problems.push(`login without an account: ${login.statusCode}`)
    }
    if (problems.length > 0) throw new Error(`${JSON.stringify(email)} / ${JSON.stringify(password)}: ${problems.join('; ')}`)
  }), { seed: SEED, numRuns: 250, endOnFailure: true })
  t.pass('every signup and login answered as the contract says')
})

/**
 * Writes `bytes` to a fresh connection and reads everything until the server
 * closes it, which it does after every answer here: the 30 s are only a
 * safety net (the answer so far is taken), never reached however slow the machine.
 */
async function raw (port: number, bytes: Buffer | string): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    let answer = ''
    const done = () => { clearTimeout(timer); socket.destroy(); resolve(answer) }
    const timer = setTimeout(done, 30_000)
    socket.on('data', (chunk) => { answer += chunk.toString('latin1') })
    socket.on('error', done)
    socket.on('close', done)
    socket.end(bytes)
  })
}

function parse (answer: string): { status: number, contentType: string | undefined, body: string } | undefined {
  const match = /^HTTP\/1\.1 (\d{3})[^\r]*\r\n([\s\S]*?)\r\n\r\n([\s\S]*)$/.exec(answer)
  if (match === null) return undefined
  const contentType = /^content-type: *(.*)$/im.exec(match[2]!)?.[1]
  const chunked = /^transfer-encoding: *chunked/im.test(match[2]!)
  const body = chunked ? match[3]!.replace(/^[0-9a-f]+\r\n/i, '').replace(/\r\n0\r\n\r\n$/, '') : match[3]!
  return { status: Number(match[1]), contentType, body }
}

t.test('raw bytes over TCP: malformed HTTP, oversize headers, garbage', async (t) => {
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as AddressInfo

  const cases: Array<[string, string]> = [
    ['an oversize Authorization header', `GET /users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${'a'.repeat(20_000)}\r\n\r\n`],
    ['an oversize Cookie header', `POST /auth/refresh HTTP/1.1\r\nHost: x\r\nCookie: refresh_token=${'r'.repeat(20_000)}\r\nContent-Length: 0\r\n\r\n`],
    ['a NUL in a header', 'GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\u0000b\r\n\r\n'],
    ['a header without a colon', 'GET /health HTTP/1.1\r\nHost: x\r\nAuthorization Bearer\r\n\r\n'],
    ['a bad request line', 'GARBAGE\r\n\r\n'],
    ['a bad HTTP version', 'GET /health HTTP/9.9\r\nHost: x\r\n\r\n'],
    ['both Content-Length and chunked', 'POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n0\r\n\r\n'],
    ['a negative Content-Length', 'POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\nContent-Type: application/json\r\n\r\n'],
    ['a bad chunk size', 'POST /auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nzz\r\n{}\r\n0\r\n\r\n']
  ]
  for (const [name, request] of cases) {
    const answer = parse(await raw(port, request))
    t.ok(answer, `${name}: an HTTP answer`)
    if (answer === undefined) continue
    t.ok(answer.status >= 400 && answer.status < 500, `${name}: ${answer.status}`)
    t.same(errorShapeProblems(answer.status, answer.contentType, answer.body), [], `${name}: the error shape`)
  }

  const underLimit = parse(await raw(port, `GET /users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${'a'.repeat(12_000)}\r\nConnection: close\r\n\r\n`))
  t.equal(underLimit?.status, 401, 'a 12 KB token reaches the service and is refused as invalid')
  t.equal(JSON.parse(underLimit?.body ?? '{}').code, 'ACCESS_TOKEN_INVALID')

  await fc.assert(fc.asyncProperty(
    fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 300 }).map((bytes) => Buffer.from(bytes)),
      fc.tuple(fc.constantFrom('GET', 'POST', 'DELETE', 'BREW'), fc.constantFrom(...ROUTES), headerText(60), headerText(80))
        .map(([method, route, name, value]) => `${method} ${route} HTTP/1.1\r\nHost: x\r\n${name}: ${value}\r\nConnection: close\r\n\r\n`)
    ),
    async (bytes) => {
      const text = await raw(port, bytes)
      if (text === '') return // the server may close a connection that never formed a request
      const answer = parse(text)
      if (answer === undefined) throw new Error(`not HTTP: ${JSON.stringify(text.slice(0, 100))}`)
      const problems = problemsOf('GET', { statusCode: answer.status, headers: { 'content-type': answer.contentType }, body: answer.body })
      if (problems.length > 0) throw new Error(`${JSON.stringify(String(bytes).slice(0, 100))}: ${problems.join('; ')}`)
    }
  ), { seed: SEED, numRuns: 150, endOnFailure: true })

  const health = parse(await raw(port, 'GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'))
  t.equal(health?.status, 200, 'still serving after all of it')
})
