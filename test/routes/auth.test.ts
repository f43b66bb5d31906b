import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
import t from 'tap'
import {
  BACKENDS, FakeClock, NO_RATE_LIMITS, PASSWORD, buildTestApp, freshEmail, logIn, refreshCookie, signUp, signUpAndLogIn
} from '../helpers.js'

/*
 * Signup, login, refresh and logout (routes/auth.ts) through app.inject(), on
 * every backend. The tests of one backend share one app per configuration
 * (and the file's database): each test uses accounts of its own, and a test
 * that moves the clock only ever moves it forward, past sessions no other
 * test uses again. Rate limits are out of reach here (test/plugins/rate-limit.test.ts).
 */

const FOURTEEN_DAYS = 14 * 86400

interface Harness {
  app: FastifyInstance
  clock: FakeClock
}

interface Pair {
  accessToken: string
  refreshToken: string
  tokenType: string
  expiresIn: number
  refreshExpiresIn: number
}

function errorCode (response: LightMyRequestResponse): string | undefined {
  return response.json().code
}

for (const backend of BACKENDS) {
  t.test(backend.name, { skip: backend.skip }, async (t) => {
    const harnesses = new Map<string, Promise<Harness>>()
    /** The app of this backend with `env` (built once, on first use), and its clock. */
    function start (env: Record<string, string> = {}): Promise<Harness> {
      const key = JSON.stringify(env)
      let harness = harnesses.get(key)
      if (harness === undefined) {
        const clock = new FakeClock()
        harness = buildTestApp(t, {
          realDatabase: backend.realDatabase, realRedis: backend.realRedis, clock, env, rateLimits: NO_RATE_LIMITS
        }).then((app) => ({ app, clock }))
        harnesses.set(key, harness)
      }
      return harness
    }

    const post = (app: FastifyInstance, url: string, options: Omit<InjectOptions, 'method' | 'url'> = {}) =>
      app.inject({ method: 'POST', url, ...options })

    const refresh = (app: FastifyInstance, refreshToken: string, headers: Record<string, string> = {}) =>
      post(app, '/auth/refresh', { payload: { refreshToken }, headers })

    const me = (app: FastifyInstance, accessToken: string) =>
      app.inject({ method: 'GET', url: '/users/me', headers: { authorization: `Bearer ${accessToken}` } })

    t.test('signup', async (t) => {
      const { app } = await start()

      t.test('201 with the user, email trimmed and lower-cased, no password', async (t) => {
        const password = 'Sup3r secret password'
        const response = await post(app, '/auth/signup', { payload: { email: '  Ada.Lovelace@Example.COM \t', password } })
        t.equal(response.statusCode, 201)
        t.match(response.headers['content-type'], /^application\/json/)
        const body = response.json()
        t.same(Object.keys(body).sort(), ['createdAt', 'email', 'id'], 'exactly id, email and createdAt')
        t.equal(body.email, 'ada.lovelace@example.com')
        t.match(body.id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)
        t.equal(new Date(body.createdAt).toISOString(), body.createdAt, 'createdAt is an ISO date-time')
        t.notOk(response.body.includes(password), 'the password is not echoed')
        t.notOk(/password|hash/i.test(response.body), 'no password or hash field')

        const pair = await logIn(app, 'ada.lovelace@example.com', password)
        t.same(Object.keys((await me(app, pair.accessToken)).json()).sort(), ['createdAt', 'email', 'emailVerified', 'id', 'roles'])
      })

      t.test('409 EMAIL_TAKEN, whatever the case or surrounding spaces', async (t) => {
        t.equal((await post(app, '/auth/signup', { payload: { email: 'grace.hopper@example.com', password: PASSWORD } })).statusCode, 201)
        for (const email of ['grace.hopper@example.com', 'Grace.Hopper@EXAMPLE.com', '  GRACE.HOPPER@example.com  ']) {
          const response = await post(app, '/auth/signup', { payload: { email, password: 'another password' } })
          t.equal(response.statusCode, 409, email)
          t.same(response.json(), {
            statusCode: 409, code: 'EMAIL_TAKEN', error: 'Conflict', message: response.json().message
          })
        }
      })

      t.test('password length: 8 and 256 characters are accepted', async (t) => {
        t.equal((await post(app, '/auth/signup', { payload: { email: freshEmail(), password: 'x'.repeat(8) } })).statusCode, 201)
        t.equal((await post(app, '/auth/signup', { payload: { email: freshEmail(), password: 'x'.repeat(256) } })).statusCode, 201)
      })

      t.test('400 VALIDATION_ERROR for bad input, never a user created', async (t) => {
        const cases: Array<[string, unknown]> = [
          ['not an email', { email: 'not-an-email', password: PASSWORD }],
          ['no domain', { email: 'someone@', password: PASSWORD }],
          ['no local part', { email: '@example.com', password: PASSWORD }],
          ['empty email', { email: '', password: PASSWORD }],
          ['blank email', { email: '    ', password: PASSWORD }],
          ['two @', { email: 'a@b@example.com', password: PASSWORD }],
          ['password of 7 characters', { email: freshEmail(), password: 'x'.repeat(7) }],
          ['password of 257 characters', { email: freshEmail(), password: 'x'.repeat(257) }],
          ['empty password', { email: freshEmail(), password: '' }],
          ['missing email', { password: PASSWORD }],
          ['missing password', { email: freshEmail() }],
          ['empty object', {}],
          ['number email', { email: 42, password: PASSWORD }],
          ['null email', { email: null, password: PASSWORD }],
          ['array email', { email: [freshEmail()], password: PASSWORD }],
          ['object email', { email: { $ne: '' }, password: PASSWORD }],
          ['boolean email', { email: true, password: PASSWORD }],
          ['number password', { email: freshEmail(), password: 12345678 }],
          ['array password', { email: freshEmail(), password: ['x'.repeat(8)] }],
          ['unicode local part', { email: 'jöhn@example.com', password: PASSWORD }],
          ['unicode domain', { email: 'john@exämple.com', password: PASSWORD }],
          ['emoji', { email: 'john😀@example.com', password: PASSWORD }],
          ['NUL inside', { email: 'jo\u0000hn@example.com', password: PASSWORD }],
          ['bell inside', { email: 'john\u0007@example.com', password: PASSWORD }],
          ['newline inside', { email: 'john@exa\nmple.com', password: PASSWORD }],
          ['space inside', { email: 'jo hn@example.com', password: PASSWORD }],
          ['zero-width space', { email: 'jo\u200bhn@example.com', password: PASSWORD }],
          ['right-to-left override', { email: 'john\u202e@example.com', password: PASSWORD }],
          ['overlong email', { email: `${'a'.repeat(250)}@example.com`, password: PASSWORD }],
          ['unknown field', { email: freshEmail(), password: PASSWORD, role: 'admin' }]
        ]
        for (const [name, payload] of cases) {
          const response = await post(app, '/auth/signup', { payload: payload as object })
          t.equal(response.statusCode, 400, `${name}: 400`)
          t.equal(errorCode(response), 'VALIDATION_ERROR', `${name}: VALIDATION_ERROR`)
        }
        // None of the well-formed addresses above was registered by a refused request.
        const probe = cases.find(([name]) => name === 'unknown field')![1] as { email: string }
        t.equal((await post(app, '/auth/signup', { payload: { email: probe.email, password: PASSWORD } })).statusCode, 201)
      })
    })

    t.test('login', async (t) => {
      t.test('200 token pair and the refresh cookie', async (t) => {
        const { app } = await start()
        const email = 'login.pair@example.com'
        t.equal((await post(app, '/auth/signup', { payload: { email, password: PASSWORD } })).statusCode, 201)
        const response = await post(app, '/auth/login', { payload: { email: '  LOGIN.Pair@example.com ', password: PASSWORD } })
        t.equal(response.statusCode, 200, 'the email is matched trimmed and case-insensitively')
        const pair = response.json()
        t.same(Object.keys(pair).sort(), ['accessToken', 'expiresIn', 'refreshExpiresIn', 'refreshToken', 'tokenType'])
        t.equal(pair.tokenType, 'Bearer')
        t.equal(pair.expiresIn, 600, 'ACCESS_TOKEN_TTL defaults to 10m')
        t.equal(pair.refreshExpiresIn, FOURTEEN_DAYS, 'REFRESH_TOKEN_TTL defaults to 14d')
        t.type(pair.accessToken, 'string')
        t.type(pair.refreshToken, 'string')
        t.not(pair.accessToken, pair.refreshToken)
        t.notOk(response.body.includes(PASSWORD), 'no password in the answer')

        const cookie = refreshCookie(response)
        t.ok(cookie, 'sets refresh_token')
        t.equal(cookie!.value, pair.refreshToken, 'the cookie holds the refresh token')
        t.equal(cookie!.httpOnly, true, 'HttpOnly')
        t.equal(cookie!.sameSite, 'Strict', 'SameSite=Strict')
        t.equal(cookie!.path, '/auth', 'Path=/auth')
        t.equal(cookie!.maxAge, pair.refreshExpiresIn, 'Max-Age equals refreshExpiresIn')
        t.notOk(cookie!.secure, 'no Secure by default outside production')

        const user = await me(app, pair.accessToken)
        t.equal(user.statusCode, 200)
        t.equal(user.json().email, email)
      })

      t.test('Secure cookie with COOKIE_SECURE=true, and expiresIn follows the TTLs', async (t) => {
        const { app } = await start({ COOKIE_SECURE: 'true', ACCESS_TOKEN_TTL: '90s', REFRESH_TOKEN_TTL: '2h' })
        const email = await signUp(app, 'auth')
        const response = await post(app, '/auth/login', { payload: { email, password: PASSWORD } })
        const pair: Pair = response.json()
        t.equal(pair.expiresIn, 90)
        t.equal(pair.refreshExpiresIn, 7200)
        const cookie = refreshCookie(response)!
        t.equal(cookie.secure, true, 'Secure')
        t.equal(cookie.maxAge, 7200)
        t.equal(cookie.httpOnly, true)
        t.equal(cookie.sameSite, 'Strict')
      })

      t.test('401 INVALID_CREDENTIALS: one answer for a wrong password and an unknown email', async (t) => {
        const { app } = await start()
        const email = await signUp(app, 'auth')
        const wrongPassword = await post(app, '/auth/login', { payload: { email, password: 'not the password' } })
        const unknownEmail = await post(app, '/auth/login', { payload: { email: 'nobody-here@example.com', password: PASSWORD } })
        const wrongCase = await post(app, '/auth/login', { payload: { email, password: PASSWORD.toUpperCase() } })
        for (const response of [wrongPassword, unknownEmail, wrongCase]) {
          t.equal(response.statusCode, 401)
          t.equal(refreshCookie(response), undefined, 'no cookie')
        }
        t.same(wrongPassword.json(), {
          statusCode: 401, code: 'INVALID_CREDENTIALS', error: 'Unauthorized', message: wrongPassword.json().message
        })
        t.equal(wrongPassword.body, unknownEmail.body, 'byte-identical bodies')
        t.equal(wrongPassword.body, wrongCase.body, 'passwords are case-sensitive')
        t.equal(wrongPassword.headers['content-length'], unknownEmail.headers['content-length'])
      })

      t.test('400 VALIDATION_ERROR for a malformed login body', async (t) => {
        const { app } = await start()
        for (const payload of [{}, { email: 'a@example.com' }, { password: PASSWORD }, { email: 1, password: PASSWORD }, { email: 'a@example.com', password: '' }]) {
          const response = await post(app, '/auth/login', { payload })
          t.equal(response.statusCode, 400, JSON.stringify(payload))
          t.equal(errorCode(response), 'VALIDATION_ERROR')
        }
      })
    })

    t.test('refresh', async (t) => {
      t.test('from the body: a new pair, the old refresh token replaced', async (t) => {
        const { app } = await start()
        const first = await signUpAndLogIn(app, 'auth')
        const response = await refresh(app, first.refreshToken)
        t.equal(response.statusCode, 200)
        const second: Pair = response.json()
        t.same(Object.keys(second).sort(), ['accessToken', 'expiresIn', 'refreshExpiresIn', 'refreshToken', 'tokenType'])
        t.equal(second.tokenType, 'Bearer')
        t.not(second.refreshToken, first.refreshToken, 'rotated')
        t.not(second.accessToken, first.accessToken)
        t.equal(refreshCookie(response)!.value, second.refreshToken, 'the cookie follows the new token')
        t.equal(refreshCookie(response)!.maxAge, second.refreshExpiresIn)
        t.equal((await me(app, second.accessToken)).statusCode, 200, 'the new access token works')
        t.equal((await refresh(app, second.refreshToken)).statusCode, 200, 'the new refresh token works')
      })

      t.test('from the cookie alone, with no body and no content type', async (t) => {
        const { app } = await start()
        const email = await signUp(app, 'auth')
        const { cookie } = await logIn(app, email)
        const response = await app.inject({ method: 'POST', url: '/auth/refresh', cookies: { refresh_token: cookie } })
        t.equal(response.statusCode, 200)
        const pair: Pair = response.json()
        t.not(pair.refreshToken, cookie)
        t.equal(refreshCookie(response)!.value, pair.refreshToken, 'a new cookie is set')
        t.equal((await me(app, pair.accessToken)).statusCode, 200)
      })

      t.test('the body wins over the cookie', async (t) => {
        const { app } = await start({ REFRESH_REUSE_GRACE: '0s' })
        const a = await signUpAndLogIn(app, 'auth')
        const b = await signUpAndLogIn(app, 'auth')
        const response = await post(app, '/auth/refresh', { payload: { refreshToken: b.refreshToken }, cookies: { refresh_token: a.refreshToken } })
        t.equal(response.statusCode, 200)
        const sidOf = (token: string) => JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()).sid
        t.equal(sidOf(response.json().accessToken), sidOf(b.accessToken), 'the session of the body token')
        t.equal((await refresh(app, a.refreshToken)).statusCode, 200, 'the cookie token was not spent')
        t.equal(errorCode(await refresh(app, b.refreshToken)), 'REFRESH_TOKEN_REUSED', 'the body token was spent')

        const garbageCookie = await post(app, '/auth/refresh', {
          payload: { refreshToken: response.json().refreshToken }, cookies: { refresh_token: 'garbage' }
        })
        t.equal(garbageCookie.statusCode, 401, 'the reuse above revoked that session')
        t.equal(errorCode(garbageCookie), 'REFRESH_TOKEN_REVOKED', 'judged on the body token, not the garbage cookie')
      })

      t.test('401 REFRESH_TOKEN_MISSING', async (t) => {
        const { app } = await start()
        const cases: Array<[string, Omit<InjectOptions, 'method' | 'url'>]> = [
          ['no body, no cookie', {}],
          ['empty JSON object', { payload: {} }],
          ['empty cookie', { cookies: { refresh_token: '' } }],
          ['another cookie only', { cookies: { session: 'abc' } }]
        ]
        for (const [name, options] of cases) {
          const response = await post(app, '/auth/refresh', options)
          t.equal(response.statusCode, 401, name)
          t.same(response.json(), {
            statusCode: 401, code: 'REFRESH_TOKEN_MISSING', error: 'Unauthorized', message: response.json().message
          }, name)
        }
      })

      t.test('401 REFRESH_TOKEN_INVALID for garbage, forged and access tokens', async (t) => {
        const { app } = await start()
        const pair = await signUpAndLogIn(app, 'auth')
        const [prefix, sessionId, expiry] = pair.refreshToken.split('.')
        const tokens: Array<[string, string]> = [
          ['garbage', 'garbage'],
          ['a JWT-looking string', 'a.b.c'],
          ['the access token', pair.accessToken],
          ['a forged secret on a real session', `${prefix}.${sessionId}.${expiry}.${'A'.repeat(43)}`],
          ['an unknown session of the same age', `${prefix}.${sessionId!.slice(0, 24)}${'0'.repeat(12)}.${expiry}.${'B'.repeat(43)}`],
          ['a truncated token', pair.refreshToken.slice(0, -1)],
          ['a token with a trailing character', `${pair.refreshToken}x`]
        ]
        for (const [name, token] of tokens) {
          const response = await refresh(app, token)
          t.equal(response.statusCode, 401, name)
          t.equal(errorCode(response), 'REFRESH_TOKEN_INVALID', name)
        }
        t.equal((await refresh(app, pair.refreshToken)).statusCode, 200, 'the real token still works after the attempts')
      })

      t.test('401 REFRESH_TOKEN_REVOKED after logout', async (t) => {
        const { app } = await start()
        const pair = await signUpAndLogIn(app, 'auth')
        t.equal((await post(app, '/auth/logout', { payload: { refreshToken: pair.refreshToken } })).statusCode, 204)
        const response = await refresh(app, pair.refreshToken)
        t.equal(response.statusCode, 401)
        t.equal(errorCode(response), 'REFRESH_TOKEN_REVOKED')
      })

      t.test('REFRESH_TOKEN_REUSED with no grace: the whole family is revoked', async (t) => {
        const { app } = await start({ REFRESH_REUSE_GRACE: '0s' })
        const first = await signUpAndLogIn(app, 'auth')
        const second: Pair = (await refresh(app, first.refreshToken)).json()
        const third: Pair = (await refresh(app, second.refreshToken)).json()
        t.equal((await me(app, third.accessToken)).statusCode, 200)

        const reused = await refresh(app, first.refreshToken)
        t.equal(reused.statusCode, 401)
        t.equal(errorCode(reused), 'REFRESH_TOKEN_REUSED', 'a spent token came back')

        const successor = await refresh(app, third.refreshToken)
        t.equal(successor.statusCode, 401)
        t.equal(errorCode(successor), 'REFRESH_TOKEN_REVOKED', 'the live successor is revoked with its family')
        t.equal(errorCode(await refresh(app, second.refreshToken)), 'REFRESH_TOKEN_REVOKED')
        t.equal(errorCode(await me(app, third.accessToken)), 'ACCESS_TOKEN_REVOKED', 'and so are its access tokens')
        t.equal(errorCode(await me(app, first.accessToken)), 'ACCESS_TOKEN_REVOKED')
      })

      t.test('REFRESH_TOKEN_REUSED on the just-rotated token with no grace', async (t) => {
        const { app } = await start({ REFRESH_REUSE_GRACE: '0s' })
        const first = await signUpAndLogIn(app, 'auth')
        const second: Pair = (await refresh(app, first.refreshToken)).json()
        t.equal(errorCode(await refresh(app, first.refreshToken)), 'REFRESH_TOKEN_REUSED')
        t.equal(errorCode(await refresh(app, second.refreshToken)), 'REFRESH_TOKEN_REVOKED')
      })

      t.test('other sessions of the user survive a reuse', async (t) => {
        const { app } = await start({ REFRESH_REUSE_GRACE: '0s' })
        const email = await signUp(app, 'auth')
        const victim = await logIn(app, email)
        const other = await logIn(app, email)
        await refresh(app, victim.refreshToken)
        t.equal(errorCode(await refresh(app, victim.refreshToken)), 'REFRESH_TOKEN_REUSED')
        t.equal((await me(app, other.accessToken)).statusCode, 200)
        t.equal((await refresh(app, other.refreshToken)).statusCode, 200)
      })

      t.test('within the grace window the same token gives the same successor', async (t) => {
        const { app, clock } = await start({ REFRESH_REUSE_GRACE: '10s' })
        const first = await signUpAndLogIn(app, 'auth')
        const a = await refresh(app, first.refreshToken)
        const b = await refresh(app, first.refreshToken)
        clock.advance(9_000)
        const c = await refresh(app, first.refreshToken)
        for (const response of [a, b, c]) t.equal(response.statusCode, 200)
        const successor = a.json().refreshToken
        t.not(successor, first.refreshToken)
        t.equal(b.json().refreshToken, successor, 'the same successor, the session does not fork')
        t.equal(c.json().refreshToken, successor, 'still the same 9 s later')
        t.equal(refreshCookie(b)!.value, successor, 'the cookie too')
        t.equal((await me(app, b.json().accessToken)).statusCode, 200, 'every answer carries a working access token')

        clock.advance(2_000)
        const late = await refresh(app, first.refreshToken)
        t.equal(errorCode(late), 'REFRESH_TOKEN_REUSED', 'after the grace window it is reuse')
        t.equal(errorCode(await refresh(app, successor)), 'REFRESH_TOKEN_REVOKED')
      })

      t.test('the default grace window is 10 s', async (t) => {
        const { app, clock } = await start()
        const first = await signUpAndLogIn(app, 'auth')
        const successor = (await refresh(app, first.refreshToken)).json().refreshToken
        clock.advance(5_000)
        const again = await refresh(app, first.refreshToken)
        t.equal(again.statusCode, 200)
        t.equal(again.json().refreshToken, successor)
        clock.advance(6_000)
        t.equal(errorCode(await refresh(app, first.refreshToken)), 'REFRESH_TOKEN_REUSED')
      })

      t.test('REFRESH_TOKEN_EXPIRED after REFRESH_TOKEN_TTL without a refresh', async (t) => {
        const { app, clock } = await start({ REFRESH_TOKEN_TTL: '1h' })
        const first = await signUpAndLogIn(app, 'auth')
        t.equal(first.refreshExpiresIn, 3600)
        clock.advance(3599_000)
        const kept = await refresh(app, first.refreshToken)
        t.equal(kept.statusCode, 200, 'alive one second before the end')
        const second: Pair = kept.json()
        t.equal(second.refreshExpiresIn, 3600, 'a refresh moves the idle expiry forward')

        clock.advance(3600_000)
        const expired = await refresh(app, second.refreshToken)
        t.equal(expired.statusCode, 401)
        t.equal(errorCode(expired), 'REFRESH_TOKEN_EXPIRED')
        t.equal(errorCode(await refresh(app, second.refreshToken)), 'REFRESH_TOKEN_EXPIRED', 'still expired when asked again')

        const byCookie = await app.inject({ method: 'POST', url: '/auth/refresh', cookies: { refresh_token: second.refreshToken } })
        t.equal(errorCode(byCookie), 'REFRESH_TOKEN_EXPIRED')
        t.equal(refreshCookie(byCookie)?.maxAge, 0, 'the dead cookie is cleared')
      })

      t.test('no session outlives SESSION_MAX_AGE, however often refreshed', async (t) => {
        const { app, clock } = await start({ REFRESH_TOKEN_TTL: '1h', SESSION_MAX_AGE: '90m' })
        const first = await signUpAndLogIn(app, 'auth')
        t.equal(first.refreshExpiresIn, 3600)
        clock.advance(50 * 60_000)
        const response = await refresh(app, first.refreshToken)
        t.equal(response.statusCode, 200)
        const second: Pair = response.json()
        t.equal(second.refreshExpiresIn, 40 * 60, 'capped by the absolute lifetime')
        t.equal(refreshCookie(response)!.maxAge, 40 * 60, 'the cookie too')
        clock.advance(40 * 60_000)
        t.equal(errorCode(await refresh(app, second.refreshToken)), 'REFRESH_TOKEN_EXPIRED')
      })

      t.test('ROTATE_REFRESH_TOKENS=false returns the same refresh token', async (t) => {
        const { app, clock } = await start({ ROTATE_REFRESH_TOKENS: 'false', REFRESH_REUSE_GRACE: '0s', REFRESH_TOKEN_TTL: '1h' })
        const first = await signUpAndLogIn(app, 'auth')
        clock.advance(60_000)
        const a = await refresh(app, first.refreshToken)
        const b = await refresh(app, first.refreshToken)
        for (const response of [a, b]) {
          t.equal(response.statusCode, 200)
          t.equal(response.json().refreshToken, first.refreshToken)
          t.equal(refreshCookie(response)!.value, first.refreshToken)
        }
        t.equal(a.json().refreshExpiresIn, 3600, 'the idle expiry still slides')
        t.not(a.json().accessToken, first.accessToken, 'a new access token')
        t.equal((await me(app, b.json().accessToken)).statusCode, 200)
      })

      t.test('an expired or bad access token in Authorization never blocks a refresh', async (t) => {
        const { app, clock } = await start({ ACCESS_TOKEN_TTL: '60s' })
        const first = await signUpAndLogIn(app, 'auth')
        clock.advance(120_000)
        t.equal(errorCode(await me(app, first.accessToken)), 'ACCESS_TOKEN_EXPIRED')
        const response = await refresh(app, first.refreshToken, { authorization: `Bearer ${first.accessToken}` })
        t.equal(response.statusCode, 200)
        t.equal((await me(app, response.json().accessToken)).statusCode, 200)
        const withGarbage = await refresh(app, response.json().refreshToken, { authorization: 'Bearer garbage' })
        t.equal(withGarbage.statusCode, 200, 'nor does a garbage one')
      })

      t.test('a failed cookie refresh clears the cookie', async (t) => {
        const { app } = await start()
        const response = await app.inject({ method: 'POST', url: '/auth/refresh', cookies: { refresh_token: 'garbage' } })
        t.equal(response.statusCode, 401)
        t.equal(errorCode(response), 'REFRESH_TOKEN_INVALID')
        const cookie = refreshCookie(response)
        t.ok(cookie, 'a Set-Cookie for refresh_token')
        t.equal(cookie!.value, '')
        t.equal(cookie!.maxAge, 0)
        t.equal(cookie!.path, '/auth', 'on the path it was set on')

        const pair = await signUpAndLogIn(app, 'auth')
        await post(app, '/auth/logout', { payload: { refreshToken: pair.refreshToken } })
        const revoked = await app.inject({ method: 'POST', url: '/auth/refresh', cookies: { refresh_token: pair.refreshToken } })
        t.equal(errorCode(revoked), 'REFRESH_TOKEN_REVOKED')
        t.equal(refreshCookie(revoked)?.maxAge, 0, 'cleared for a revoked session too')
      })
    })

    t.test('logout', async (t) => {
      t.test('204, session revoked, cookie cleared', async (t) => {
        const { app } = await start()
        const pair = await signUpAndLogIn(app, 'auth')
        const response = await post(app, '/auth/logout', { payload: { refreshToken: pair.refreshToken } })
        t.equal(response.statusCode, 204)
        t.equal(response.body, '', 'no body')
        const cookie = refreshCookie(response)
        t.ok(cookie, 'clears refresh_token')
        t.equal(cookie!.value, '')
        t.equal(cookie!.maxAge, 0)
        t.equal(cookie!.path, '/auth')
        t.equal(cookie!.httpOnly, true)
        t.equal(cookie!.sameSite, 'Strict')

        const denied = await me(app, pair.accessToken)
        t.equal(denied.statusCode, 401)
        t.equal(errorCode(denied), 'ACCESS_TOKEN_REVOKED', 'the access token of the session is revoked at once')
        t.equal(errorCode(await refresh(app, pair.refreshToken)), 'REFRESH_TOKEN_REVOKED')
      })

      t.test('by the cookie alone', async (t) => {
        const { app } = await start()
        const email = await signUp(app, 'auth')
        const pair = await logIn(app, email)
        const response = await post(app, '/auth/logout', { cookies: { refresh_token: pair.cookie } })
        t.equal(response.statusCode, 204)
        t.equal(errorCode(await me(app, pair.accessToken)), 'ACCESS_TOKEN_REVOKED')
        t.equal(errorCode(await refresh(app, pair.refreshToken)), 'REFRESH_TOKEN_REVOKED')
      })

      t.test('idempotent: twice, with garbage or with nothing is still 204', async (t) => {
        const { app } = await start()
        const pair = await signUpAndLogIn(app, 'auth')
        const attempts: Array<[string, Omit<InjectOptions, 'method' | 'url'>]> = [
          ['first', { payload: { refreshToken: pair.refreshToken } }],
          ['second', { payload: { refreshToken: pair.refreshToken } }],
          ['garbage body token', { payload: { refreshToken: 'garbage' } }],
          ['garbage cookie', { cookies: { refresh_token: 'garbage' } }],
          ['garbage bearer', { headers: { authorization: 'Bearer garbage' } }],
          ['nothing at all', {}],
          ['the revoked access token', { headers: { authorization: `Bearer ${pair.accessToken}` } }]
        ]
        for (const [name, options] of attempts) {
          const response = await post(app, '/auth/logout', options)
          t.equal(response.statusCode, 204, name)
          t.equal(refreshCookie(response)?.maxAge, 0, `${name}: cookie cleared`)
        }
      })

      t.test('with only the access token: the session and its refresh token are revoked', async (t) => {
        const { app } = await start()
        const pair = await signUpAndLogIn(app, 'auth')
        const response = await post(app, '/auth/logout', { headers: { authorization: `Bearer ${pair.accessToken}` } })
        t.equal(response.statusCode, 204)
        t.equal(errorCode(await me(app, pair.accessToken)), 'ACCESS_TOKEN_REVOKED')
        t.equal(errorCode(await refresh(app, pair.refreshToken)), 'REFRESH_TOKEN_REVOKED')
      })

      t.test('with an expired access token only, the session is still revoked', async (t) => {
        const { app, clock } = await start({ ACCESS_TOKEN_TTL: '60s' })
        const pair = await signUpAndLogIn(app, 'auth')
        clock.advance(120_000)
        t.equal((await post(app, '/auth/logout', { headers: { authorization: `Bearer ${pair.accessToken}` } })).statusCode, 204)
        t.equal(errorCode(await refresh(app, pair.refreshToken)), 'REFRESH_TOKEN_REVOKED')
      })

      t.test('ends only its own session', async (t) => {
        const { app } = await start()
        const email = await signUp(app, 'auth')
        const mine = await logIn(app, email)
        const otherDevice = await logIn(app, email)
        t.equal((await post(app, '/auth/logout', { payload: { refreshToken: mine.refreshToken } })).statusCode, 204)
        t.equal(errorCode(await me(app, mine.accessToken)), 'ACCESS_TOKEN_REVOKED')
        t.equal((await me(app, otherDevice.accessToken)).statusCode, 200, 'the other device keeps its access token')
        t.equal((await refresh(app, otherDevice.refreshToken)).statusCode, 200, 'and its refresh token')
      })
    })
  })
}
