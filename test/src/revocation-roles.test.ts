import fc from 'fast-check'
import type { Redis } from 'ioredis'
import t from 'tap'
import type { Test } from 'tap'
import { RedisRevocationFeed } from '../../src/redis-revocation-feed.js'
import { RevocationList, type RevocationEvent, type RevocationFeed, type RolesChange } from '../../src/revocation-list.js'
import { normalizeRoles, sameRoles } from '../../src/roles.js'
import { FakeClock, eventually, modelRuns, skipUnless, testRedis } from '../helpers.js'

/*
 * How RevocationList handles role changes (src/revocation-list.ts; API.md,
 * "Roles and administration"): removing a role refuses the user's access
 * tokens that claim it, and every token issued before the removal, on every
 * instance within a second, while an added role never refuses a token.
 *
 * A model-based test: fast-check generates role changes made on either of two
 * instances (the database holds the truth; the instance that made a change
 * applies it at once, the other one hears of it through a fake feed, late and
 * in any order; several in one millisecond; each with the account's access
 * version, raised by every change of roles or of the disabled flag), access
 * tokens issued by either instance with the roles its user cache has (stale
 * on the instance that has not heard yet), and the clock moving by
 * milliseconds, seconds, past a whole token lifetime, or to an edge (a
 * token's expiry, an entry's end). After every step, every unexpired token is
 * checked on both instances against the model:
 *   (a) once a removal has reached an instance, no token claiming a role the
 *       user no longer has there is accepted while the entry lives, no token
 *       certainly issued before the removal is accepted until it expires, and
 *       no token issued with a role lost less than a second before (by an
 *       instance that had not heard yet) is accepted until it expires;
 *   (b) a token issued after the user's latest change, with exactly the
 *       user's current roles, is accepted by an instance that heard of that
 *       change: no false refusal, even within the change's own second;
 * and at the end of each run, (c): once every entry has ended (and a token
 * lifetime has passed since the last event), nothing is refused any more and
 * the next revocation sweeps every entry (the list keeps only what matters).
 *
 * Then the Redis feed: a RolesChange published by one RedisRevocationFeed
 * reaches another (and one that starts later) as the same event, and applies
 * there; malformed ones are dropped. Skipped without TEST_REDIS_URL.
 *
 * MODEL_RUNS=<n> runs a longer search with a new seed; MODEL_SEED replays one.
 */

const CI_SEED = 20_261_130
const CI_RUNS = 1000
const { runs: RUNS, seed: SEED } = modelRuns(CI_SEED, CI_RUNS)

const SECOND = 1000
const TTL_SECONDS = 30
const TTL = TTL_SECONDS * SECOND
/** Not on a second boundary: iat's rounding down matters. */
const START = Date.UTC(2030, 0, 1) + 437
const ALPHABET = ['admin', 'editor', 'viewer'] as const
const USERS = ['alice', 'bob'] as const
type Name = 'A' | 'B'

// ---------------------------------------------------------------------------
// The model

interface Change {
  seq: number
  /** The account's access version after the change (raised by every change of roles or disabled). */
  version: number
  userId: string
  origin: Name
  before: string[]
  roles: string[]
  removed: string[]
  narrowed: boolean
  changedAt: number
  until: number
}

interface Instance {
  name: Name
  list: RevocationList
  /** Each user's roles as this instance's user cache has them: re-read from the truth whenever the list says the user changed. */
  view: Map<string, string[]>
  /** The changes applied here while in force (an event past its end is ignored). */
  applied: Change[]
  /** What the other instance published that has not reached this one yet. */
  pending: Array<{ change: Change | undefined, event: RevocationEvent }>
  /** The feed's delivery callback, as RevocationList.listen gave it. */
  deliver: (event: RevocationEvent) => void
  /** When this list last applied anything (a local revocation or a delivery). */
  lastApplyAt: number
}

interface Token {
  label: string
  sid: string
  userId: string
  iat: number
  /** Expiry in ms (exp * 1000). */
  expiresAt: number
  roles: string[]
  issuedAt: number
  issuedBy: Name
  /** The seq of the user's latest change when it was issued (0: none). */
  afterSeq: number
  /** The user's roles when it was issued (the database's). */
  truthAtIssue: string[]
  /** Its roles were not the user's then: the issuing instance had not heard of a change yet. */
  stale: boolean
}

interface World {
  clock: FakeClock
  /** The database: each user's roles now, and its access version. */
  truth: Map<string, string[]>
  versions: Map<string, number>
  changes: Change[]
  instances: Record<Name, Instance>
  tokens: Token[]
  trace: string[]
}

const other = (name: Name): Name => name === 'A' ? 'B' : 'A'
const rolesText = (roles: readonly string[] | undefined): string => `[${(roles ?? []).join(',')}]`
const at = (world: World): string => `t+${world.clock.now() - START}ms`

function note (world: World, line: string): void {
  world.trace.push(line)
}

function violated (world: World, message: string): never {
  throw new Error(`${message}\n  steps:\n    ${world.trace.join('\n    ')}`)
}

function latestChange (changes: readonly Change[], userId: string): Change | undefined {
  let latest: Change | undefined
  for (const change of changes) {
    if (change.userId === userId && (latest === undefined || change.seq > latest.seq)) latest = change
  }
  return latest
}

function makeWorld (initial: Record<string, string[]>): World {
  const clock = new FakeClock(START)
  const world = {
    clock, truth: new Map(Object.entries(initial)), versions: new Map(USERS.map((userId) => [userId, 0])), changes: [], tokens: [], trace: []
  } as unknown as World
  const instance = (name: Name): Instance => {
    const self = { name, view: new Map(Object.entries(initial)), applied: [], pending: [], lastApplyAt: -Infinity } as unknown as Instance
    const feed: RevocationFeed = {
      async publish (event) {
        // The other instance hears of it when a delivery step says so (the change step says which change it carries).
        world.instances[other(name)].pending.push({ change: undefined, event })
      },
      async start (deliver) { self.deliver = deliver },
      connected: true,
      async close () {}
    }
    self.list = new RevocationList(clock, TTL, feed, {
      // The user cache forgets the user and reads it again: the database as it is now.
      changed: (userId) => { self.view.set(userId, [...world.truth.get(userId) ?? []]) }
    })
    return self
  }
  world.instances = { A: instance('A'), B: instance('B') }
  return world
}

/** Every unexpired token, on both instances, against the rules (a) and (b). */
function checkTokens (world: World): void {
  const now = world.clock.now()
  for (const token of world.tokens) {
    if (now >= token.expiresAt) continue
    for (const instance of Object.values(world.instances)) {
      const refused = instance.list.rejects({ sid: token.sid, sub: token.userId, iat: token.iat, roles: token.roles })
      const applied = instance.applied.filter((change) => change.userId === token.userId)
      const latest = latestChange(applied, token.userId)
      const where = `${token.label} (by ${token.issuedBy} at t+${token.issuedAt - START}ms, iat ${token.iat}, roles ${rolesText(token.roles)}) on ${instance.name} at ${at(world)}`

      // (a) A removal reached this instance: tokens issued certainly before it are refused until they expire ...
      const cutoff = applied.find((change) => change.narrowed && (token.iat + 1) * SECOND <= change.changedAt)
      if (cutoff !== undefined && !refused) {
        violated(world, `${where} is accepted, but it was issued before change #${cutoff.seq} removed ${rolesText(cutoff.removed)} (at t+${cutoff.changedAt - START}ms)`)
      }
      // ... and so is any token claiming a removed role the user does not have (as far as this instance knows), while the entry lives.
      const removal = applied.find((change) => change.removed.some((role) => token.roles.includes(role) && latest !== undefined && !latest.roles.includes(role)))
      const entryEnds = Math.max(...applied.map((change) => change.until))
      if (removal !== undefined && now < entryEnds && !refused) {
        violated(world, `${where} is accepted, but it claims a role that change #${removal.seq} removed ` +
          `(${rolesText(removal.removed)}; roles here ${rolesText(latest?.roles)}; the entry ends at t+${entryEnds - START}ms)`)
      }
      // A token issued with a role the user had lost less than a second before (by an instance that had not heard yet: the
      // feed's "within a second"), which the user still does not have, is refused until it expires, not only while the
      // entry lives, once that removal has reached this instance.
      if (!refused) {
        const lost = token.roles.find((role) => {
          const lostBy = world.changes.filter((change) => change.userId === token.userId && change.seq <= token.afterSeq && change.removed.includes(role)).at(-1)
          return lostBy !== undefined && token.issuedAt - lostBy.changedAt < SECOND && !token.truthAtIssue.includes(role) &&
            !world.truth.get(token.userId)!.includes(role) && latest !== undefined && !latest.roles.includes(role) &&
            applied.includes(lostBy)
        })
        if (lost !== undefined) {
          violated(world, `${where} is accepted, but it claims ${lost}, which the user had lost less than a second before it was issued ` +
            `and still has not (the entry here ended at t+${entryEnds - START}ms, the token ends at t+${token.expiresAt - START}ms)`)
        }
      }

      // (b) Issued after the latest change, with exactly the current roles, on an instance that heard of that change: accepted.
      const truthLatest = latestChange(world.changes, token.userId)
      const current = world.truth.get(token.userId)!
      if (refused && sameRoles(token.roles, current) && token.afterSeq === (truthLatest?.seq ?? 0) && latest?.seq === truthLatest?.seq) {
        violated(world, `${where} is refused, but it was issued after the latest change${truthLatest === undefined ? '' : ` (#${truthLatest.seq} at t+${truthLatest.changedAt - START}ms)`} with the user's current roles ${rolesText(current)}`)
      }
    }
  }
  // The list holds at most one roles entry per user, whatever happened.
  for (const instance of Object.values(world.instances)) {
    if (instance.list.size > USERS.length) violated(world, `${instance.name} holds ${instance.list.size} entries for ${USERS.length} users`)
  }
}

// ---------------------------------------------------------------------------
// The steps

class Step implements fc.AsyncCommand<World, World> {
  constructor (readonly label: string, readonly act: (world: World) => Promise<void> | void, readonly can: (world: World) => boolean = () => true) {}
  check (world: Readonly<World>): boolean {
    return this.can(world as World)
  }

  async run (_model: World, world: World): Promise<void> {
    note(world, `${at(world)} ${this.label}`)
    await this.act(world)
    checkTokens(world)
  }

  toString (): string {
    return this.label
  }
}

const origin = fc.constantFrom<Name>('A', 'B')
const user = fc.constantFrom(...USERS)
const someRoles = fc.subarray<string>([...ALPHABET])

/**
 * An admin changes the user's roles on `origin`: stored first (the access version raised), then the list told, as
 * AdminService.updateUser does, even when the roles stay the same (a retry must still reach every instance).
 */
const change = fc.tuple(origin, user, someRoles, someRoles).map(([on, userId, add, remove]) =>
  new Step(`change(${on}, ${userId}, +${rolesText(add)} -${rolesText(remove)})`, async (world) => {
    const before = world.truth.get(userId)!
    const roles = normalizeRoles([...before.filter((role) => !remove.includes(role)), ...add])
    const removed = before.filter((role) => !roles.includes(role))
    const now = world.clock.now()
    const version = world.versions.get(userId)! + 1
    const record: Change = {
      seq: world.changes.length + 1, version, userId, origin: on, before, roles, removed, narrowed: removed.length > 0, changedAt: now, until: now + TTL
    }
    world.changes.push(record)
    world.truth.set(userId, roles)
    world.versions.set(userId, version)
    const instance = world.instances[on]
    await instance.list.rolesChanged(userId, roles, { version, narrowed: record.narrowed })
    // The event the list published is the object its feed received: which change it carries, and until when it is kept.
    const sent = world.instances[other(on)].pending.at(-1)
    if (sent === undefined || !('rolesUserId' in sent.event)) violated(world, `${on} published no RolesChange for change #${record.seq}`)
    const published = sent.event as RolesChange
    if (!(published.rolesUserId === userId && sameRoles(published.roles, roles) && published.version === version && published.changedAt === now &&
      published.narrowed === record.narrowed && published.until >= now + TTL && published.until <= now + 2 * TTL)) {
      violated(world, `change #${record.seq} was published as ${JSON.stringify(published)}: kept for one to two token lifetimes`)
    }
    record.until = published.until
    sent.change = record
    instance.applied.push(record)
    instance.lastApplyAt = now
    note(world, `  #${record.seq} (version ${version}): ${rolesText(before)} → ${rolesText(roles)}${record.narrowed ? ' (narrowed)' : ''}`)
  }))

/** The disabled flag changes (or a change of roles fails before it is told): the access version is raised, no roles event. */
const otherAccessChange = user.map((userId) => new Step(`otherAccessChange(${userId})`, (world) => {
  world.versions.set(userId, world.versions.get(userId)! + 1)
}))

/** An instance issues an access token with the roles its user cache has (a refresh there). */
const issue = fc.tuple(origin, user).map(([by, userId]) => new Step(`issue(${by}, ${userId})`, (world) => {
  const now = world.clock.now()
  const iat = Math.floor(now / SECOND)
  const token: Token = {
    label: `token ${world.tokens.length + 1}`,
    sid: `session-${world.tokens.length + 1}`,
    userId,
    iat,
    expiresAt: (iat + TTL_SECONDS) * SECOND,
    roles: [...world.instances[by].view.get(userId)!],
    issuedAt: now,
    issuedBy: by,
    afterSeq: latestChange(world.changes, userId)?.seq ?? 0,
    truthAtIssue: [...world.truth.get(userId)!],
    stale: !sameRoles(world.instances[by].view.get(userId)!, world.truth.get(userId)!)
  }
  world.tokens.push(token)
  note(world, `  ${token.label}: iat ${iat}, roles ${rolesText(token.roles)}${token.stale ? ' (stale)' : ''}`)
}))

/** The feed brings one of the other instance's events, whichever: late and out of order. */
const deliverOne = fc.tuple(origin, fc.nat()).map(([to, pick]) => new Step(`deliver(to ${to}, #${pick})`, (world) => {
  const instance = world.instances[to]
  const [{ change, event }] = instance.pending.splice(pick % instance.pending.length, 1) as [Instance['pending'][number]]
  deliver(world, instance, change, event)
}, (world) => world.instances[to].pending.length > 0))

const deliverAll = origin.map((to) => new Step(`deliverAll(to ${to})`, (world) => {
  const instance = world.instances[to]
  for (const { change, event } of instance.pending.splice(0)) deliver(world, instance, change, event)
}, (world) => world.instances[to].pending.length > 0))

function deliver (world: World, instance: Instance, change: Change | undefined, event: RevocationEvent): void {
  const now = world.clock.now()
  instance.deliver(event)
  instance.lastApplyAt = now
  if (change !== undefined && change.until > now) instance.applied.push(change)
  note(world, `  ${instance.name} hears of #${change?.seq ?? '?'}${change !== undefined && change.until <= now ? ' (past its end: ignored)' : ''}`)
}

const advance = (ms: number, why: string) => new Step(`advance(+${ms}ms, ${why})`, (world) => { world.clock.advance(ms) })

const subSecond = fc.integer({ min: 1, max: 999 }).map((ms) => advance(ms, 'under a second'))
const seconds = fc.integer({ min: 1, max: TTL_SECONDS + 5 }).map((s) => advance(s * SECOND, 'seconds'))
const toSecondBoundary = fc.integer({ min: -1, max: 1 }).map((offset) => new Step(`toNextSecond(${offset >= 0 ? '+' : ''}${offset}ms)`, (world) => {
  const now = world.clock.now()
  world.clock.advance(Math.max(1, (Math.floor(now / SECOND) + 1) * SECOND + offset - now))
}))

/** To just before, at or after an edge: a token's expiry or a change's end, where off-by-ones live. */
const toEdge = fc.tuple(fc.nat(), fc.integer({ min: -1, max: 1 })).map(([pick, offset]) => {
  const edges = (world: World): number[] => [...world.tokens.map((token) => token.expiresAt), ...world.changes.map((change) => change.until)]
    .map((edge) => edge + offset).filter((edge) => edge > world.clock.now())
  return new Step(`toEdge(#${pick}, ${offset >= 0 ? '+' : ''}${offset}ms)`, (world) => {
    const candidates = edges(world)
    world.clock.time = candidates[pick % candidates.length]!
  }, (world) => edges(world).length > 0)
})

const steps = fc.commands([fc.oneof(
  { weight: 5, arbitrary: change },
  { weight: 1, arbitrary: otherAccessChange },
  { weight: 6, arbitrary: issue },
  { weight: 5, arbitrary: deliverOne },
  { weight: 1, arbitrary: deliverAll },
  { weight: 3, arbitrary: subSecond },
  { weight: 2, arbitrary: seconds },
  { weight: 1, arbitrary: toSecondBoundary },
  { weight: 2, arbitrary: toEdge }
)], { maxCommands: 50, size: 'max' })

const initialRoles = fc.record({ alice: someRoles, bob: someRoles }).map((roles) =>
  Object.fromEntries(Object.entries(roles).map(([userId, list]) => [userId, normalizeRoles(list)])))

/** (c): once every entry has ended, and a token lifetime after the last event, nothing is refused, and the next revocation sweeps everything else. */
async function checkSwept (world: World): Promise<void> {
  for (const instance of Object.values(world.instances)) {
    for (const { change, event } of instance.pending.splice(0)) deliver(world, instance, change, event)
  }
  const lastApply = Math.max(...Object.values(world.instances).map((instance) => instance.lastApplyAt))
  const ends = Math.max(lastApply + TTL, ...world.changes.map((change) => change.until))
  if (Number.isFinite(ends) && ends > world.clock.now()) world.clock.time = ends
  note(world, `${at(world)} (every entry ended)`)
  const iat = Math.floor(world.clock.now() / SECOND)
  for (const instance of Object.values(world.instances)) {
    for (const userId of USERS) {
      for (const roles of [[], [...ALPHABET]]) {
        for (const tokenIat of [iat - TTL_SECONDS, iat]) {
          if (instance.list.rejects({ sid: `late-${userId}`, sub: userId, iat: tokenIat, roles })) {
            violated(world, `${instance.name} still refuses a token of ${userId} (iat ${tokenIat}, roles ${rolesText(roles)}) after every entry ended`)
          }
        }
      }
    }
    await instance.list.revokeSession(`sweep-probe-${instance.name}`)
    if (instance.list.size !== 1) violated(world, `${instance.name} holds ${instance.list.size} entries after the sweep, expected only the new one`)
  }
}

async function runModel (t: Test, { runs = RUNS, seed = SEED }: { runs?: number, seed?: number } = {}): Promise<void> {
  let stats = { changes: 0, narrowed: 0, tokens: 0, stale: 0 }
  const details = await fc.check(fc.asyncProperty(initialRoles, steps, async (initial, commands) => {
    const world = makeWorld(initial)
    await Promise.all(Object.values(world.instances).map((instance) => instance.list.listen()))
    note(world, `initial roles: ${USERS.map((userId) => `${userId} ${rolesText(initial[userId])}`).join(', ')}`)
    await fc.asyncModelRun(() => ({ model: world, real: world }), commands)
    await checkSwept(world)
    stats = {
      changes: stats.changes + world.changes.length,
      narrowed: stats.narrowed + world.changes.filter((change) => change.narrowed).length,
      tokens: stats.tokens + world.tokens.length,
      stale: stats.stale + world.tokens.filter((token) => token.stale).length
    }
  }), { seed, numRuns: runs })
  const failure = details.failed ? `${fc.defaultReportMessage(details) ?? 'failed'}\n${String(details.errorInstance)}` : ''
  t.notOk(details.failed, details.failed ? failure : `${runs} runs (seed ${seed}) followed the model`)
  t.comment(`over all runs: ${stats.changes} changes (${stats.narrowed} removing a role), ${stats.tokens} tokens (${stats.stale} stale)`)
}

if (RUNS > CI_RUNS) t.setTimeout(Math.max(120_000, RUNS * 50))

t.test('role changes, stale caches and late, out-of-order delivery: (a), (b) and (c) hold', async (t) => {
  await runModel(t)
})

t.test('by example: a removal refuses older tokens and tokens claiming the role; a token of the new roles issued in the same second is accepted', async (t) => {
  const clock = new FakeClock(START)
  const list = new RevocationList(clock, TTL)
  const iat = Math.floor(clock.now() / SECOND)
  await list.rolesChanged('alice', ['viewer'], { version: 1, narrowed: true })
  t.equal(list.rejects({ sid: 's', sub: 'alice', iat: iat - 1, roles: ['viewer'] }), true, 'issued the second before: refused whatever its roles')
  t.equal(list.rejects({ sid: 's', sub: 'alice', iat, roles: ['admin', 'viewer'] }), true, 'this second, still claiming admin: refused')
  t.equal(list.rejects({ sid: 's', sub: 'alice', iat, roles: ['viewer'] }), false, 'this second, the new roles: accepted')
  t.equal(list.rejects({ sid: 's', sub: 'alice', iat }), false, 'a token without the claim claims no role')
  t.equal(list.rejects({ sid: 's', sub: 'bob', iat: iat - 1, roles: ['admin'] }), false, 'another user: untouched')
  clock.advance(TTL - 1)
  t.equal(list.rejects({ sid: 's', sub: 'alice', iat: iat - 1, roles: ['viewer'] }), true, 'an older token, until the last of them expires')
  t.equal(list.rejects({ sid: 's', sub: 'alice', iat: iat + 1, roles: ['admin', 'viewer'] }), true,
    'a token claiming admin from an instance that had not heard, a second after the change, a millisecond before it expires')
  clock.advance(2 * TTL)
  t.equal(list.rejects({ sid: 's', sub: 'alice', iat: iat + TTL_SECONDS * 3, roles: ['admin'] }), false, 'gone once no token it covers is left')

  const grant = new RevocationList(clock, TTL)
  const now = Math.floor(clock.now() / SECOND)
  await grant.rolesChanged('alice', ['admin', 'viewer'], { version: 2, narrowed: false })
  t.equal(grant.rejects({ sid: 's', sub: 'alice', iat: now - 5, roles: ['viewer'] }), false, 'an added role refuses no older token')
  t.equal(grant.rejects({ sid: 's', sub: 'alice', iat: now - 5, roles: ['editor'] }), true, 'but one claiming a role the user does not have is refused')
})

t.test('a role removed while another instance had not heard: its stale tokens are refused until they expire', async (t) => {
  // The second instance refreshes a session half a second after the removal, before the feed brought it.
  const clock = new FakeClock(Date.UTC(2030, 0, 1, 0, 0, 0, 700))
  const published: RevocationEvent[] = []
  const feed: RevocationFeed = { async publish (event) { published.push(event) }, async start () {}, connected: true, async close () {} }
  const a = new RevocationList(clock, TTL, feed)
  const b = new RevocationList(clock, TTL)
  await a.rolesChanged('alice', ['viewer'], { version: 3, narrowed: true })
  const [event] = published as [RolesChange]
  clock.advance(500)
  const stale = { sid: 's', sub: 'alice', iat: Math.floor(clock.now() / SECOND), roles: ['admin', 'viewer'] }
  const expiresAt = (stale.iat + TTL_SECONDS) * SECOND
  clock.advance(300)
  b.apply(event)
  t.equal(b.rejects(stale), true, 'refused once the removal arrived')
  clock.time = expiresAt - 1
  t.equal(a.rejects(stale), true, 'still refused by the instance that made the change, a millisecond before the token expires')
  t.equal(b.rejects(stale), true, 'and by the one that issued it')
})

t.test('two changes of one user in the same millisecond, delivered in the other order: the later one wins', async (t) => {
  const clock = new FakeClock(START)
  const b = new RevocationList(clock, TTL)
  const now = clock.now()
  const first: RolesChange = { rolesUserId: 'alice', roles: ['admin', 'viewer'], version: 4, changedAt: now, narrowed: false, until: now + TTL }
  const second: RolesChange = { rolesUserId: 'alice', roles: ['viewer'], version: 5, changedAt: now, narrowed: true, until: now + TTL }
  b.apply(second)
  b.apply(first)
  clock.advance(2 * SECOND)
  const iat = Math.floor(clock.now() / SECOND)
  t.equal(b.rejects({ sid: 's', sub: 'alice', iat, roles: ['admin', 'viewer'] }), true, 'a token still claiming the removed admin role is refused')
  t.equal(b.rejects({ sid: 's', sub: 'alice', iat, roles: ['viewer'] }), false, 'a token of the current roles is accepted')

  // Made on an instance whose clock is behind: the version orders them all the same.
  const skewed = new RevocationList(clock, TTL)
  skewed.apply({ ...second, changedAt: now - 5 * SECOND, version: 7 })
  skewed.apply({ ...first, changedAt: now, version: 6 })
  t.equal(skewed.rejects({ sid: 's', sub: 'alice', iat, roles: ['admin', 'viewer'] }), true, 'the later change wins, whatever the clocks said')
})

// ---------------------------------------------------------------------------
// Through Redis

/** A connection of an instance's own (a feed closes only the subscriber it made), closed when the test ends. */
function connection (t: Test, redis: Redis): Redis {
  const own = redis.duplicate()
  t.teardown(() => { own.disconnect() })
  return own
}

t.test('a RolesChange through RedisRevocationFeed: published on one feed, applied by a list on another', { skip: skipUnless({ redis: true }) }, async (t) => {
  const { redis, prefix } = await testRedis(t)
  const clock = new FakeClock(Date.now())
  const changedOnB: string[] = []
  const a = new RevocationList(clock, TTL, new RedisRevocationFeed(connection(t, redis), { prefix, clock }))
  const b = new RevocationList(clock, TTL, new RedisRevocationFeed(connection(t, redis), { prefix, clock }), { changed: (userId) => changedOnB.push(userId) })
  t.teardown(() => Promise.all([a.close(), b.close()]))
  await Promise.all([a.listen(), b.listen()])

  const iat = Math.floor(clock.now() / SECOND)
  const older = { sid: 'session-1', sub: 'alice', iat: iat - 1, roles: ['viewer'] }
  const claiming = { sid: 'session-2', sub: 'alice', iat, roles: ['admin', 'viewer'] }
  const current = { sid: 'session-3', sub: 'alice', iat, roles: ['viewer'] }
  t.equal(b.rejects(claiming), false, 'before the change')
  await a.rolesChanged('alice', ['viewer'], { version: 1, narrowed: true })
  t.ok(await eventually(() => b.rejects(claiming)), 'the other instance comes to refuse a token claiming the removed role')
  t.equal(b.rejects(older), true, 'and a token issued before the removal')
  t.equal(b.rejects(current), false, 'but not one of the current roles')
  t.ok(changedOnB.includes('alice'), 'its user cache was told to re-read the user')

  // An instance starting later reads it from the set of revocations in force.
  const late = new RevocationList(clock, TTL, new RedisRevocationFeed(connection(t, redis), { prefix, clock }))
  t.teardown(() => late.close())
  await late.listen()
  t.equal(late.rejects(claiming), true, 'an instance started afterwards refuses it at once')
  t.equal(late.rejects(current), false)
})

t.test('RolesChange events survive the trip through Redis exactly; malformed ones are dropped', { skip: skipUnless({ redis: true }) }, async (t) => {
  const { redis, prefix } = await testRedis(t)
  const clock = new FakeClock(Date.now())
  const publisher = new RedisRevocationFeed(connection(t, redis), { prefix, clock })
  const listener = new RedisRevocationFeed(connection(t, redis), { prefix, clock })
  t.teardown(() => Promise.all([publisher.close(), listener.close()]))
  const heard: RevocationEvent[] = []
  await listener.start((event) => heard.push(event), () => {})

  const channel = `${prefix}revocations`
  // Published straight on the channel, as another (older or broken) instance might: none is an event.
  const good = { rolesUserId: 'alice', roles: ['admin'], version: 1, changedAt: clock.now(), narrowed: true, until: clock.now() + TTL }
  const { version: _version, ...withoutVersion } = good
  const { changedAt: _changedAt, ...withoutChangedAt } = good
  const { until: _until, ...withoutUntil } = good
  const malformed = [
    { ...good, narrowed: 'yes' },
    { ...good, roles: 'admin' },
    { ...good, roles: [1] },
    withoutChangedAt,
    { ...good, changedAt: String(clock.now()) },
    withoutVersion,
    { ...good, version: '1' },
    { ...good, rolesUserId: 7 },
    withoutUntil
  ]
  for (const event of malformed) await redis.publish(channel, JSON.stringify(event))
  await redis.publish(channel, 'not json')

  const roleName = fc.stringMatching(/^[a-z][a-z0-9_-]{0,31}$/)
  const events = fc.sample(fc.record({
    rolesUserId: fc.uuid(),
    roles: fc.uniqueArray(roleName, { maxLength: 32 }).map((roles) => normalizeRoles(roles)),
    version: fc.nat(),
    changedAt: fc.integer({ min: clock.now() - TTL, max: clock.now() }),
    narrowed: fc.boolean()
  }).map((event): RolesChange => ({ ...event, until: event.changedAt + TTL })), { seed: CI_SEED, numRuns: 25 })
  for (const event of events) await publisher.publish(event)
  t.ok(await eventually(() => heard.length >= events.length), `${events.length} events heard`)
  t.strictSame(heard, events, 'each as published, field for field, and none of the malformed ones')
})
