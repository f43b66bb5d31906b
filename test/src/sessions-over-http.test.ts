import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import type { Redis } from 'ioredis'
import t from 'tap'
import type { Test } from 'tap'
import { ServiceError } from '../../src/errors.js'
import type { PasswordHasher } from '../../src/passwords.js'
import {
  BACKENDS, FakeClock, NEW_PASSWORD, PASSWORD, buildTestApp, claimsOf, codeOf, instrumentedHasher, loginAttempt, me, pauseNextSessionCreate,
  pausePoint, refresh, signUpAndLogIn, testDatabase, testRedis
} from '../helpers.js'

/*
 * The session rules through the HTTP API, on every backend (the in-process
 * store, and Redis where there is one): reuse detection that laundering
 * cannot outrun, a grace for every recent rotation and for a retried refresh,
 * logouts that revoke once, the per-user limit, credential changes racing a
 * login, and access tokens that never outlive their session. Each case here
 * failed on the code before issue 11. The same rules without HTTP are in
 * sessions.test.ts; the clock is a FakeClock throughout, so nothing sleeps.
 */

const SECOND = 1000
const MINUTE = 60 * SECOND
const INTROSPECTION_SECRET = 'introspection-secret-for-tests'

/** The token with its secret (its last part, in either format) replaced: it still names its session. */
const withWrongSecret = (token: string): string => token.replace(/[^.]+$/, 'A'.repeat(43))

function logout (app: FastifyInstance, { refreshToken, accessToken }: { refreshToken?: string, accessToken?: string }) {
  return app.inject({
    method: 'POST',
    url: '/auth/logout',
    headers: accessToken === undefined ? {} : { authorization: `Bearer ${accessToken}` },
    payload: refreshToken === undefined ? {} : { refreshToken }
  })
}

function introspect (app: FastifyInstance, token: string) {
  return app.inject({ method: 'POST', url: '/auth/introspect', headers: { authorization: `Bearer ${INTROSPECTION_SECRET}` }, payload: { token } })
}

for (const backend of BACKENDS) {
  t.test(backend.name, { skip: backend.skip }, async (t) => {
    const database = await testDatabase(t, { real: backend.realDatabase })

    interface Started {
      app: FastifyInstance
      clock: FakeClock
      /** Revocation entries as they are kept: the Redis sorted set, or the in-process list. */
      revocationEntries: () => Promise<number>
      redis?: Redis
      prefix?: string
    }

    async function start (t: Test, { env = {}, passwordHasher }: { env?: Record<string, string>, passwordHasher?: PasswordHasher } = {}): Promise<Started> {
      const clock = new FakeClock()
      const shared = backend.realRedis ? await testRedis(t) : undefined
      const app = await buildTestApp(t, {
        database, clock, env, redis: shared?.redis, redisKeyPrefix: shared?.prefix, ...(passwordHasher === undefined ? {} : { passwordHasher })
      })
      const revocationEntries = shared === undefined
        ? async () => app.revocations.size
        : async () => await shared.redis.zcard(`${shared.prefix}revocations`)
      return { app, clock, revocationEntries, redis: shared?.redis, prefix: shared?.prefix }
    }

    /** Counts the calls to app.revocations.revokeSession (each one a published, stored entry). */
    function countRevocations (app: FastifyInstance): { calls: number } {
      const counter = { calls: 0 }
      const revokeSession = app.revocations.revokeSession.bind(app.revocations)
      app.revocations.revokeSession = async (sessionId) => {
        counter.calls += 1
        await revokeSession(sessionId)
      }
      return counter
    }

    t.test('laundering: a stolen token rotated nine times is still reuse when the victim presents it', async (t) => {
      for (const [name, wait] of [['a second after the last rotation (inside the grace in time)', SECOND], ['a minute later', MINUTE]] as const) {
        t.test(name, async (t) => {
          const { app, clock } = await start(t)
          const victim = await signUpAndLogIn(app, 'launder')
          let stolen = victim.refreshToken
          let stolenAccess = victim.accessToken
          for (let rotation = 1; rotation <= 9; rotation++) {
            clock.advance(SECOND)
            const response = await refresh(app, stolen)
            t.equal(response.statusCode, 200, `the thief's rotation ${rotation}`)
            ;({ refreshToken: stolen, accessToken: stolenAccess } = response.json())
          }
          clock.advance(wait)

          const presented = await refresh(app, victim.refreshToken)
          t.equal(presented.statusCode, 401)
          t.equal(codeOf(presented), 'REFRESH_TOKEN_REUSED', 'the victim\'s token: reuse')
          const thief = await refresh(app, stolen)
          t.equal(thief.statusCode, 401)
          t.equal(codeOf(thief), 'REFRESH_TOKEN_REVOKED', 'the thief\'s latest token is revoked')
          t.equal(codeOf(await me(app, stolenAccess)), 'ACCESS_TOKEN_REVOKED', 'and its access token')
          t.equal(codeOf(await me(app, victim.accessToken)), 'ACCESS_TOKEN_REVOKED', 'the victim\'s access token too: the whole session')
        })
      }
    })

    t.test('a tab a few rotations behind, inside the grace, continues the one session', async (t) => {
      t.test('two rotations behind, two seconds after its own rotation: the current token', async (t) => {
        const { app, clock } = await start(t)
        const user = await signUpAndLogIn(app, 'tab')
        const t0 = user.refreshToken
        const first = await refresh(app, t0)
        t.equal(first.statusCode, 200)
        clock.advance(SECOND)
        const second = await refresh(app, first.json().refreshToken)
        t.equal(second.statusCode, 200)
        const t2 = second.json().refreshToken
        clock.advance(SECOND)

        const behind = await refresh(app, t0)
        t.equal(behind.statusCode, 200, 'T0 two rotations behind: 200')
        t.equal(behind.json().refreshToken, t2, 'the SAME refresh token as the current one (T2): no fork')
        t.equal((await me(app, behind.json().accessToken)).statusCode, 200, 'a working access token')
        t.equal(claimsOf(behind.json().accessToken).sid, claimsOf(user.accessToken).sid, 'of the same session')
        const next = await refresh(app, t2)
        t.equal(next.statusCode, 200, 'the session goes on: T2 refreshes')
        t.equal((await me(app, next.json().accessToken)).statusCode, 200)
      })

      t.test('four rotations behind inside the grace: 200 with the current token; five: reuse', async (t) => {
        const { app, clock } = await start(t)
        for (const [behind, expected] of [[4, 200], [5, 'REFRESH_TOKEN_REUSED']] as const) {
          const user = await signUpAndLogIn(app, 'tab')
          const chain = [user.refreshToken]
          for (let i = 0; i < behind; i++) {
            if (i > 0) clock.advance(SECOND)
            const response = await refresh(app, chain.at(-1)!)
            t.equal(response.statusCode, 200)
            chain.push(response.json().refreshToken)
          }
          clock.advance(SECOND)
          const response = await refresh(app, chain[0]!)
          if (expected === 200) {
            t.equal(response.statusCode, 200, `${behind} rotations behind, ${behind} s after its rotation: 200`)
            t.equal(response.json().refreshToken, chain.at(-1), 'the current token')
            t.equal((await refresh(app, chain.at(-1)!)).statusCode, 200, 'which goes on')
          } else {
            t.equal(codeOf(response), expected, `${behind} rotations behind: only the last 4 are covered`)
            t.equal(codeOf(await refresh(app, chain.at(-1)!)), 'REFRESH_TOKEN_REVOKED', 'the session is over')
          }
        }
      })

      t.test('a recent generation with a wrong secret is reuse, never a pair', async (t) => {
        const { app, clock } = await start(t)
        const user = await signUpAndLogIn(app, 'forged')
        const rotated = await refresh(app, user.refreshToken)
        clock.advance(SECOND)
        const forged = await refresh(app, withWrongSecret(user.refreshToken))
        t.equal(forged.statusCode, 401)
        t.equal(codeOf(forged), 'REFRESH_TOKEN_REUSED', 'generation 0, rotated a second ago, a wrong secret')
        t.notOk(forged.json().refreshToken, 'no token answered')
        t.equal(codeOf(await refresh(app, rotated.json().refreshToken)), 'REFRESH_TOKEN_REVOKED', 'the session is over')
        t.equal(codeOf(await refresh(app, user.refreshToken)), 'REFRESH_TOKEN_REVOKED', 'the real T0 gets nothing either')

        const other = await signUpAndLogIn(app, 'forged')
        t.equal(codeOf(await refresh(app, withWrongSecret(other.refreshToken))), 'REFRESH_TOKEN_REUSED', 'the current generation, a wrong secret')
        t.equal(codeOf(await refresh(app, other.refreshToken)), 'REFRESH_TOKEN_REVOKED')
      })

      t.test('parallel refreshes from ten tabs all get the same refresh token', async (t) => {
        const { app, clock } = await start(t)
        const user = await signUpAndLogIn(app, 'tabs')
        const answers = await Promise.all(Array.from({ length: 10 }, () => refresh(app, user.refreshToken)))
        t.strictSame(answers.map(({ statusCode }) => statusCode), Array(10).fill(200), 'all 200')
        const tokens = new Set(answers.map((answer) => answer.json().refreshToken))
        t.equal(tokens.size, 1, 'one refresh token: the session does not fork')
        const [t1] = tokens
        t.not(t1, user.refreshToken)
        const checks = await Promise.all(answers.map((answer) => me(app, answer.json().accessToken)))
        t.ok(checks.every(({ statusCode }) => statusCode === 200), 'every access token works')

        clock.advance(SECOND)
        // Tabs one and two rotations behind at once: the first T1 to arrive rotates, the rest are answered from the grace.
        const mixed = await Promise.all(Array.from({ length: 10 }, (_, i) => refresh(app, i % 2 === 0 ? user.refreshToken : t1!)))
        t.strictSame(mixed.map(({ statusCode }) => statusCode), Array(10).fill(200), 'T0 and T1 together: all 200')
        const successors = new Set(mixed.map((answer) => answer.json().refreshToken).filter((token) => token !== t1))
        t.equal(successors.size, 1, 'one successor of T1 (a T0 answered before T1 rotated gets T1, which leads to it)')
        const [t2] = successors
        const onward = await refresh(app, t2!)
        t.equal(onward.statusCode, 200, 'the session goes on')
        clock.advance(11 * SECOND)
        t.equal(codeOf(await refresh(app, t1!)), 'REFRESH_TOKEN_REUSED', 'and T1 after the grace is reuse')
      })
    })

    t.test('a refresh whose answer was lost can be retried within the grace', async (t) => {
      /** The next store refresh happens in the store, then fails towards the client (a command timeout, say). */
      function loseNextAnswer (app: FastifyInstance): void {
        const store = app.sessionStore
        const real = store.refresh.bind(store)
        store.refresh = async (attempt) => {
          store.refresh = real
          await real(attempt)
          throw new ServiceError('STORE_UNAVAILABLE')
        }
      }

      t.test('retried inside the grace: 200 with a pair that continues the session', async (t) => {
        const { app, clock } = await start(t)
        const user = await signUpAndLogIn(app, 'retry')
        loseNextAnswer(app)
        const lost = await refresh(app, user.refreshToken)
        t.equal(lost.statusCode, 503)
        t.equal(codeOf(lost), 'STORE_UNAVAILABLE')
        clock.advance(3 * SECOND)
        const retried = await refresh(app, user.refreshToken)
        t.equal(retried.statusCode, 200, 'the retry, with the same token: 200')
        t.not(retried.json().refreshToken, user.refreshToken, 'the token the lost answer carried')
        t.equal((await me(app, retried.json().accessToken)).statusCode, 200)
        const again = await refresh(app, user.refreshToken)
        t.equal(again.json().refreshToken, retried.json().refreshToken, 'a second retry gets the same answer')
        clock.advance(SECOND)
        const next = await refresh(app, retried.json().refreshToken)
        t.equal(next.statusCode, 200, 'the pair continues the session: its token refreshes, no REUSED')
        t.equal((await refresh(app, next.json().refreshToken)).statusCode, 200)
      })

      t.test('retried while another tab moved the session on twice: the current token', async (t) => {
        const { app, clock } = await start(t)
        const user = await signUpAndLogIn(app, 'retry')
        loseNextAnswer(app)
        t.equal((await refresh(app, user.refreshToken)).statusCode, 503, 'T0 -> T1 happened, its answer was lost')
        clock.advance(SECOND)
        const otherTab = await refresh(app, user.refreshToken)
        t.equal(otherTab.statusCode, 200, 'another tab with T0: the grace answer, T1')
        clock.advance(SECOND)
        const t2 = await refresh(app, otherTab.json().refreshToken)
        t.equal(t2.statusCode, 200, 'which it rotates: T1 -> T2')
        clock.advance(SECOND)
        const retried = await refresh(app, user.refreshToken)
        t.equal(retried.statusCode, 200, 'the retry of T0, two rotations behind, three seconds after its rotation')
        t.equal(retried.json().refreshToken, t2.json().refreshToken, 'answers the current token: no fork')
      })

      t.test('retried after the grace: reuse', async (t) => {
        const { app, clock } = await start(t)
        const user = await signUpAndLogIn(app, 'retry')
        loseNextAnswer(app)
        t.equal((await refresh(app, user.refreshToken)).statusCode, 503)
        clock.advance(10 * SECOND)
        t.equal(codeOf(await refresh(app, user.refreshToken)), 'REFRESH_TOKEN_REUSED', 'a retry a grace later is reuse')
      })

      t.test('what REFRESH_REUSE_GRACE=0s costs: a lost rotation cannot be retried at all', async (t) => {
        const { app } = await start(t, { env: { REFRESH_REUSE_GRACE: '0s' } })
        const user = await signUpAndLogIn(app, 'retry')
        loseNextAnswer(app)
        t.equal((await refresh(app, user.refreshToken)).statusCode, 503)
        t.equal(codeOf(await refresh(app, user.refreshToken)), 'REFRESH_TOKEN_REUSED', 'the immediate retry ends the session')
        t.equal(codeOf(await me(app, user.accessToken)), 'ACCESS_TOKEN_REVOKED', 'and the user must log in again')
      })
    })

    t.test('logging out a session already gone writes and publishes nothing', async (t) => {
      const { app, clock, revocationEntries } = await start(t)
      const published = countRevocations(app)
      const user = await signUpAndLogIn(app, 'logout')
      const before = await revocationEntries()

      const first = await logout(app, user)
      t.equal(first.statusCode, 204)
      t.equal(published.calls, 1, 'the live session: one revocation published')
      t.equal(await revocationEntries(), before + 1, 'and one entry kept')

      const repeats: Array<[string, { refreshToken?: string, accessToken?: string }]> = [
        ['the same refresh token', { refreshToken: user.refreshToken }],
        ['the same access token', { accessToken: user.accessToken }],
        ['both', user]
      ]
      for (const [name, credentials] of repeats) {
        clock.advance(SECOND)
        const response = await logout(app, credentials)
        t.equal(response.statusCode, 204, `${name}: 204, logout is idempotent`)
        t.equal(published.calls, 1, `${name}: nothing published`)
        t.equal(await revocationEntries(), before + 1, `${name}: no new entry`)
      }

      clock.advance(MINUTE)
      t.equal((await logout(app, { accessToken: user.accessToken })).statusCode, 204, 'its access token, expired or not, a minute later')
      t.equal(published.calls, 1, 'nothing published')

      const other = await signUpAndLogIn(app, 'logout')
      const parallel = await Promise.all(Array.from({ length: 5 }, () => logout(app, other)))
      t.ok(parallel.every(({ statusCode }) => statusCode === 204))
      t.equal(published.calls, 2, 'five logouts at once of one live session: one revocation')
      t.equal(await revocationEntries(), before + 2, 'exactly one entry for it')
    })

    t.test('logouts that revoke nothing are rate-limited per address; a real one never is', async (t) => {
      const { app } = await start(t, { env: { REFRESH_RATE_LIMIT: '3/1m' } })
      const user = await signUpAndLogIn(app, 'noop')
      t.equal((await logout(app, user)).statusCode, 204, 'the real logout')
      for (let i = 1; i <= 3; i++) t.equal((await logout(app, user)).statusCode, 204, `logout ${i} of a session already gone`)
      const limited = await logout(app, user)
      t.equal(limited.statusCode, 429, 'the fourth is limited (REFRESH_RATE_LIMIT)')
      t.equal(codeOf(limited), 'RATE_LIMITED')
      t.ok(limited.headers['retry-after'])
      const other = await signUpAndLogIn(app, 'noop')
      const real = await logout(app, other)
      t.equal(real.statusCode, 204, 'a logout that revokes a live session is not held back')
      t.equal(codeOf(await refresh(app, other.refreshToken)), 'REFRESH_TOKEN_REVOKED', 'and it did revoke')
    })

    t.test('MAX_SESSIONS_PER_USER ends the least recently used session; introspection reads one session', async (t) => {
      const { app, clock } = await start(t, { env: { MAX_SESSIONS_PER_USER: '3', INTROSPECTION_SECRET } })
      const first = await signUpAndLogIn(app, 'many')
      clock.advance(SECOND)
      const second = (await loginAttempt(app, first.email)).json()
      clock.advance(SECOND)
      const third = (await loginAttempt(app, first.email)).json()
      clock.advance(SECOND)
      // The oldest is used again: the second becomes the least recently used.
      const firstNow = (await refresh(app, first.refreshToken)).json()
      clock.advance(SECOND)
      const fourth = await loginAttempt(app, first.email)
      t.equal(fourth.statusCode, 200, 'the fourth login')

      t.equal(codeOf(await refresh(app, second.refreshToken)), 'REFRESH_TOKEN_REVOKED', 'the least recently used session is ended: its refresh token')
      t.equal(codeOf(await me(app, second.accessToken)), 'ACCESS_TOKEN_REVOKED', 'and its access token')
      const listed = await app.inject({ method: 'GET', url: '/auth/sessions', headers: { authorization: `Bearer ${firstNow.accessToken}` } })
      t.equal(listed.statusCode, 200)
      const sid = (pair: { accessToken: string }) => claimsOf(pair.accessToken).sid
      t.strictSame(listed.json().map(({ id }: { id: string }) => id).sort(), [sid(first), sid(third), sid(fourth.json())].sort(), 'three live sessions')
      t.equal((await refresh(app, firstNow.refreshToken)).statusCode, 200, 'the first (used recently) goes on')
      t.equal((await me(app, third.accessToken)).statusCode, 200, 'the third too')

      const store = app.sessionStore
      const reads = { get: 0, list: 0 }
      const [get, list] = [store.get.bind(store), store.list.bind(store)]
      store.get = async (...args) => { reads.get += 1; return await get(...args) }
      store.list = async (...args) => { reads.list += 1; return await list(...args) }
      const active = await introspect(app, third.accessToken)
      t.equal(active.json().active, true, 'introspection: active for a live session')
      t.same(reads, { get: 1, list: 0 }, 'reading that one session, never the user\'s list')

      t.equal((await logout(app, { accessToken: third.accessToken })).statusCode, 204)
      t.strictSame((await introspect(app, third.accessToken)).json(), { active: false }, 'inactive after its logout')
      t.equal(reads.list, 0, 'never the list')
    })

    /** Holds the next login between its two Redis writes (the user's index, then the session itself) while `meanwhile` runs. */
    async function loginHeldBetweenWrites (app: FastifyInstance, redis: unknown, email: string, meanwhile: () => Promise<void>) {
      const scripts = redis as Record<string, (...args: unknown[]) => Promise<unknown>>
      const index = scripts.authIndexSession!
      const pause = pausePoint()
      scripts.authIndexSession = async (...args: unknown[]) => {
        scripts.authIndexSession = index
        const answer = await index.apply(redis, args)
        await pause.wait()
        return answer
      }
      const inFlight = loginAttempt(app, email)
      await pause.reached
      await meanwhile()
      pause.release()
      return await inFlight
    }

    t.test('a login is listed and logged out however its store writes interleave with a listing', {
      skip: !backend.realRedis && 'the in-process store creates a session in one step'
    }, async (t) => {
      const { app, redis } = await start(t)
      const user = await signUpAndLogIn(app, 'interleaved')
      const bearer = { authorization: `Bearer ${user.accessToken}` }
      const late = (await loginHeldBetweenWrites(app, redis, user.email, async () => {
        t.equal((await app.inject({ method: 'GET', url: '/auth/sessions', headers: bearer })).statusCode, 200, 'a listing meanwhile')
      })).json()
      const listed = await app.inject({ method: 'GET', url: '/auth/sessions', headers: bearer })
      t.equal(listed.json().length, 2, 'once the login has answered, both sessions are listed')
      t.equal((await app.inject({ method: 'POST', url: '/auth/logout-all', headers: bearer })).statusCode, 204)
      t.equal(codeOf(await refresh(app, late.refreshToken)), 'REFRESH_TOKEN_REVOKED', 'and a later logout-all ends it')
    })

    t.test('a logout-all while a login is between its writes ends that login\'s session too', {
      skip: !backend.realRedis && 'the in-process store creates a session in one step'
    }, async (t) => {
      const { app, redis } = await start(t)
      const user = await signUpAndLogIn(app, 'interleaved-logout')
      const bearer = { authorization: `Bearer ${user.accessToken}` }
      const late = await loginHeldBetweenWrites(app, redis, user.email, async () => {
        t.equal((await app.inject({ method: 'POST', url: '/auth/logout-all', headers: bearer })).statusCode, 204, 'logout-all meanwhile')
      })
      t.equal(late.statusCode, 200, 'the login answers')
      t.equal(codeOf(await refresh(app, late.json().refreshToken)), 'REFRESH_TOKEN_REVOKED', 'but its session was born revoked')
      const me = await app.inject({ method: 'GET', url: '/users/me', headers: { authorization: `Bearer ${late.json().accessToken}` } })
      t.equal(me.json().code, 'ACCESS_TOKEN_REVOKED', 'and its access token is refused')
      t.equal((await app.inject({ method: 'GET', url: '/auth/sessions', headers: { authorization: `Bearer ${late.json().accessToken}` } })).statusCode, 401)
    })

    t.test('a login in flight during a password change ends up with no working session', async (t) => {
      /** Checks the rule: a refused login, or a pair that no longer works. */
      async function noWorkingSession (t: Test, app: FastifyInstance, response: LightMyRequestResponse): Promise<void> {
        if (response.statusCode !== 200) {
          t.equal(response.statusCode, 401)
          t.equal(codeOf(response), 'INVALID_CREDENTIALS', 'the in-flight login is refused')
          return
        }
        const pair = response.json()
        t.equal(codeOf(await refresh(app, pair.refreshToken)), 'REFRESH_TOKEN_REVOKED', 'the in-flight login\'s refresh token is refused')
        t.equal(codeOf(await me(app, pair.accessToken)), 'ACCESS_TOKEN_REVOKED', 'and its access token revoked')
      }

      async function changePassword (app: FastifyInstance, accessToken: string) {
        return await app.inject({
          method: 'POST',
          url: '/auth/password',
          headers: { authorization: `Bearer ${accessToken}` },
          payload: { currentPassword: PASSWORD, newPassword: NEW_PASSWORD }
        })
      }

      async function callerAndOthersAfterwards (t: Test, app: FastifyInstance, caller: { accessToken: string, refreshToken: string }, other: { accessToken: string, refreshToken: string }, email: string): Promise<void> {
        const kept = await refresh(app, caller.refreshToken)
        t.equal(kept.statusCode, 200, 'the caller\'s session refreshes')
        t.equal((await me(app, kept.json().accessToken)).statusCode, 200, '/users/me with its new access token')
        t.equal((await me(app, caller.accessToken)).statusCode, 200, 'and with its access token from before the change')
        t.equal(codeOf(await refresh(app, other.refreshToken)), 'REFRESH_TOKEN_REVOKED', 'every other session is ended')
        t.equal(codeOf(await me(app, other.accessToken)), 'ACCESS_TOKEN_REVOKED', 'with its access tokens')
        const listed = await app.inject({ method: 'GET', url: '/auth/sessions', headers: { authorization: `Bearer ${caller.accessToken}` } })
        t.strictSame(listed.json().map(({ id }: { id: string }) => id), [claimsOf(caller.accessToken).sid], 'only the caller\'s session is listed')
        t.equal(codeOf(await loginAttempt(app, email)), 'INVALID_CREDENTIALS', 'the old password no longer logs in')
        t.equal((await loginAttempt(app, email, NEW_PASSWORD)).statusCode, 200, 'the new one does')
      }

      t.test('its password checked before the change, its session opened after', async (t) => {
        const { hasher, pauseNextVerify } = instrumentedHasher()
        const { app } = await start(t, { passwordHasher: hasher })
        const caller = await signUpAndLogIn(app, 'inflight')
        const other = (await loginAttempt(app, caller.email)).json()

        const paused = pauseNextVerify()
        const inFlight = loginAttempt(app, caller.email)
        await paused.reached
        const changed = await changePassword(app, caller.accessToken)
        t.equal(changed.statusCode, 204, 'the password change completes while the login waits')
        paused.release()
        await noWorkingSession(t, app, await inFlight)
        await callerAndOthersAfterwards(t, app, caller, other, caller.email)
      })

      t.test('its session created before the change lists the sessions, its answer after', async (t) => {
        const { app } = await start(t)
        const caller = await signUpAndLogIn(app, 'inflight')
        const other = (await loginAttempt(app, caller.email)).json()

        const paused = pauseNextSessionCreate(app)
        const inFlight = loginAttempt(app, caller.email)
        await paused.reached
        t.equal((await changePassword(app, caller.accessToken)).statusCode, 204)
        paused.release()
        await noWorkingSession(t, app, await inFlight)
        await callerAndOthersAfterwards(t, app, caller, other, caller.email)
      })
    })

    t.test('an access token never outlives its session', async (t) => {
      t.test('SESSION_MAX_AGE=5m, ACCESS_TOKEN_TTL=10m: exp is the login time + 5 min', async (t) => {
        const { app, clock } = await start(t, { env: { SESSION_MAX_AGE: '5m', ACCESS_TOKEN_TTL: '10m' } })
        const loginTime = clock.now() / 1000
        const user = await signUpAndLogIn(app, 'short')
        const claims = claimsOf(user.accessToken)
        t.equal(claims.iat, loginTime)
        t.equal(claims.exp, loginTime + 300, 'exp: the session\'s end, not iat + 10 min')
        const pair = (await loginAttempt(app, user.email)).json()
        t.equal(pair.expiresIn, 300, 'expiresIn matches')
        t.equal(pair.refreshExpiresIn, 300)

        clock.advance(5 * MINUTE)
        t.equal(codeOf(await me(app, user.accessToken)), 'ACCESS_TOKEN_EXPIRED', 'at the session\'s end the access token is over too')
        t.equal(codeOf(await refresh(app, user.refreshToken)), 'REFRESH_TOKEN_EXPIRED')
      })

      t.test('refreshing near the absolute end caps exp at it', async (t) => {
        const { app, clock } = await start(t, { env: { SESSION_MAX_AGE: '1h', ACCESS_TOKEN_TTL: '10m' } })
        const end = clock.now() / 1000 + 3600
        const user = await signUpAndLogIn(app, 'near-end')
        t.equal(claimsOf(user.accessToken).exp, clock.now() / 1000 + 600, 'far from the end: the full ten minutes')
        let token = user.refreshToken
        for (const [at, expiresIn] of [[55 * MINUTE, 300], [59 * MINUTE + 30 * SECOND, 30]] as const) {
          clock.time = (end - 3600) * 1000 + at
          const response = await refresh(app, token)
          t.equal(response.statusCode, 200)
          const pair = response.json()
          t.equal(claimsOf(pair.accessToken).exp, end, `${at / 1000} s in: exp is the session's absolute end`)
          t.equal(pair.expiresIn, expiresIn, `${at / 1000} s in: expiresIn ${expiresIn}`)
          token = pair.refreshToken
        }
      })

      t.test('REFRESH_TOKEN_TTL=2m, ACCESS_TOKEN_TTL=10m: exp is the idle end', async (t) => {
        const { app, clock } = await start(t, { env: { REFRESH_TOKEN_TTL: '2m', ACCESS_TOKEN_TTL: '10m' } })
        const user = await signUpAndLogIn(app, 'idle')
        t.equal(claimsOf(user.accessToken).exp, clock.now() / 1000 + 120)
        clock.advance(MINUTE)
        const pair = (await refresh(app, user.refreshToken)).json()
        t.equal(claimsOf(pair.accessToken).exp, clock.now() / 1000 + 120, 'moved with the idle end')
        t.equal(pair.expiresIn, 120)
      })
    })
  })
}
