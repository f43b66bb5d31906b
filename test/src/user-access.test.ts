import { inArray, sql } from 'drizzle-orm'
import fc from 'fast-check'
import t from 'tap'
import { users as usersTable } from '../../drizzle/schema.js'
import type { Database } from '../../src/database.js'
import { ServiceError } from '../../src/errors.js'
import { ADMIN_ROLE, MAX_ROLES, normalizeRoles } from '../../src/roles.js'
import { UserDirectory } from '../../src/user-directory.js'
import { UserRepository, normalizeEmail, type AccessChange, type User } from '../../src/users.js'
import { skipUnless, testDatabase } from '../helpers.js'

/*
 * What admins change of accounts, in the database (src/users.ts,
 * src/user-directory.ts; API.md, "Roles and administration"), on PGlite and on
 * a real PostgreSQL (where concurrent changes really race, on several
 * connections):
 *
 * - UserRepository.updateAccess and delete against a model: random sequences
 *   of grant admin, revoke admin, disable, enable, set roles (unsorted,
 *   repeated, past 32) and delete over four accounts, some steps run as
 *   concurrent batches. Sequential steps answer exactly what the model says
 *   ('last-admin' exactly when the account is the last enabled admin,
 *   'too-many-roles' past 32 distinct roles); a batch answers as one of its
 *   orders would have, one after the other. After every step the rows are the
 *   model's, roles sorted and unique, the access version raised by exactly
 *   one for each change made (none for a refused one), and once there was an
 *   enabled admin there always is one.
 * - UserDirectory.page against a filter in JavaScript: the users whose email
 *   contains the query (any case; `%`, `_` and `\` only themselves), newest
 *   first; walking pages of random sizes while users sign up between pages
 *   lists every user that was there exactly once; a cursor this service
 *   could not have given is VALIDATION_ERROR, never a database error.
 *
 * Each variant has a database of its own, emptied before every run: the
 * last-admin rule is about every account there is.
 */

const variants = [
  { name: 'PGlite', real: false, skip: false as const },
  { name: 'PostgreSQL', real: true, skip: skipUnless({ postgres: true }) }
]

const SEED = 20_261_130
const SLOTS = 4
/** Role names to draw from: more than MAX_ROLES, so a set of roles can be too many. */
const ROLE_POOL = [ADMIN_ROLE, ...Array.from({ length: 39 }, (_, index) => `role-${index}`)]

async function emptied (db: Database): Promise<void> {
  await db.delete(usersTable)
}

/**
 * Opens connections for concurrent operations ahead of them (a pool opens them when first needed, which spaces out
 * what a test starts together), so that operations started together really overlap on PostgreSQL.
 */
async function warm (db: Database): Promise<void> {
  await Promise.all(Array.from({ length: 6 }, () => db.execute(sql`select pg_sleep(0.02)`)))
}

// ---------------------------------------------------------------------------
// updateAccess and delete against a model

interface ModelUser {
  id: string
  roles: string[]
  disabled: boolean
  /** The access version: raised by every change made (it orders the changes instances tell each other). */
  version: number
  deleted: boolean
}

type Operation =
  | { kind: 'grant' | 'revoke' | 'disable' | 'enable' | 'delete', slot: number }
  | { kind: 'set', slot: number, roles: string[] }

type Outcome = 'changed' | 'not-found' | 'last-admin' | 'too-many-roles' | 'deleted'

/** What one operation answered (or must answer), with the account before and after a change. */
interface Answer {
  outcome: Outcome
  before?: { roles: string[], disabled: boolean, accessVersion: number }
  after?: { roles: string[], disabled: boolean, accessVersion: number }
}

const isEnabledAdmin = (user: ModelUser): boolean => !user.deleted && !user.disabled && user.roles.includes(ADMIN_ROLE)
const enabledAdmins = (model: readonly ModelUser[]): number => model.filter(isEnabledAdmin).length

function describe (operation: Operation): string {
  return operation.kind === 'set' ? `set(${operation.slot}, [${operation.roles.join(',')}])` : `${operation.kind}(${operation.slot})`
}

/** The change an operation asks for, computed from the account as stored (as AdminService passes it). */
function changeOf (operation: Operation): (user: User) => AccessChange {
  switch (operation.kind) {
    case 'grant': return (user) => ({ roles: [...user.roles, ADMIN_ROLE] })
    case 'revoke': return (user) => ({ roles: user.roles.filter((role) => role !== ADMIN_ROLE) })
    case 'disable': return () => ({ disabled: true })
    case 'enable': return () => ({ disabled: false })
    case 'set': return () => ({ roles: operation.roles })
    default: throw new Error(`not an access change: ${operation.kind}`)
  }
}

/** What `operation` must answer on `model`, and the model afterwards. */
function expect (model: readonly ModelUser[], operation: Operation): { answer: Answer, next: ModelUser[] } {
  const user = model[operation.slot]!
  if (user.deleted) return { answer: { outcome: 'not-found' }, next: [...model] }
  const othersEnabledAdmin = model.some((other) => other !== user && isEnabledAdmin(other))
  if (operation.kind === 'delete') {
    if (isEnabledAdmin(user) && !othersEnabledAdmin) return { answer: { outcome: 'last-admin' }, next: [...model] }
    return { answer: { outcome: 'deleted' }, next: model.map((other) => other === user ? { ...user, deleted: true } : other) }
  }
  const requested = {
    grant: () => ({ roles: [...user.roles, ADMIN_ROLE], disabled: user.disabled }),
    revoke: () => ({ roles: user.roles.filter((role) => role !== ADMIN_ROLE), disabled: user.disabled }),
    disable: () => ({ roles: user.roles, disabled: true }),
    enable: () => ({ roles: user.roles, disabled: false }),
    set: () => ({ roles: (operation as { roles: string[] }).roles, disabled: user.disabled })
  }[operation.kind]()
  const after = { ...user, roles: normalizeRoles(requested.roles), disabled: requested.disabled, version: user.version + 1 }
  if (after.roles.length > MAX_ROLES) return { answer: { outcome: 'too-many-roles' }, next: [...model] }
  if (isEnabledAdmin(user) && !isEnabledAdmin(after) && !othersEnabledAdmin) return { answer: { outcome: 'last-admin' }, next: [...model] }
  return {
    answer: {
      outcome: 'changed',
      before: { roles: user.roles, disabled: user.disabled, accessVersion: user.version },
      after: { roles: after.roles, disabled: after.disabled, accessVersion: after.version }
    },
    next: model.map((other) => other === user ? after : other)
  }
}

async function perform (repository: UserRepository, model: readonly ModelUser[], operation: Operation): Promise<Answer> {
  const { id } = model[operation.slot]!
  if (operation.kind === 'delete') return { outcome: await repository.delete(id) }
  const result = await repository.updateAccess(id, changeOf(operation))
  if (result === undefined) return { outcome: 'not-found' }
  if (typeof result === 'string') return { outcome: result }
  return {
    outcome: 'changed',
    before: { roles: result.before.roles, disabled: result.before.disabled, accessVersion: result.before.accessVersion },
    after: { roles: result.after.roles, disabled: result.after.disabled, accessVersion: result.after.accessVersion }
  }
}

const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b)

function permutations<T> (items: readonly T[]): T[][] {
  if (items.length <= 1) return [[...items]]
  return items.flatMap((item, index) => permutations([...items.slice(0, index), ...items.slice(index + 1)]).map((rest) => [item, ...rest]))
}

interface AccessWorld {
  db: Database
  /** On PostgreSQL, where operations started together overlap on several connections. */
  real: boolean
  repository: UserRepository
  model: ModelUser[]
  /** Whether an enabled admin ever existed in this run: from then on there always is one. */
  everAdmin: boolean
  trace: string[]
  counts: Map<string, number>
}

function failed (world: AccessWorld, message: string): never {
  throw new Error(`${message}\n  steps:\n    ${world.trace.join('\n    ')}`)
}

function count (world: AccessWorld, what: string): void {
  world.counts.set(what, (world.counts.get(what) ?? 0) + 1)
}

/** The rows as stored are the model's: roles sorted, unique, at most 32; and an enabled admin once there was one. */
async function checkRows (world: AccessWorld): Promise<void> {
  const ids = world.model.map((user) => user.id)
  const rows = await world.db.select({ id: usersTable.id, roles: usersTable.roles, disabled: usersTable.disabled, version: usersTable.accessVersion })
    .from(usersTable).where(inArray(usersTable.id, ids))
  const byId = new Map(rows.map((row) => [row.id, row]))
  for (const user of world.model) {
    const row = byId.get(user.id)
    if (user.deleted) {
      if (row !== undefined) failed(world, `${user.id} was deleted, but its row is there`)
      continue
    }
    if (row === undefined) failed(world, `${user.id} is gone, but the model has it`)
    if (!same(row.roles, user.roles) || row.disabled !== user.disabled || row.version !== user.version) {
      failed(world, `${user.id} is stored as ${JSON.stringify(row)}, the model has ${JSON.stringify({ roles: user.roles, disabled: user.disabled, version: user.version })}`)
    }
    if (!same(row.roles, normalizeRoles(row.roles)) || row.roles.length > MAX_ROLES) failed(world, `${user.id}: roles stored as ${JSON.stringify(row.roles)}`)
  }
  const [{ admins } = { admins: 0 }] = await world.db.select({ admins: sql<number>`count(*)::int` }).from(usersTable)
    .where(sql`${usersTable.roles} @> ${sql.raw(`'{${ADMIN_ROLE}}'`)}::text[] and not ${usersTable.disabled}`)
  if (admins !== enabledAdmins(world.model)) failed(world, `${admins} enabled admins stored, the model has ${enabledAdmins(world.model)}`)
  world.everAdmin ||= admins > 0
  if (world.everAdmin && admins === 0) failed(world, 'no enabled admin left')
}

class AccessStep implements fc.AsyncCommand<AccessWorld, AccessWorld> {
  constructor (readonly label: string, readonly act: (world: AccessWorld) => Promise<void>) {}
  check (): boolean {
    return true
  }

  async run (_model: AccessWorld, world: AccessWorld): Promise<void> {
    world.trace.push(this.label)
    await this.act(world)
    await checkRows(world)
  }

  toString (): string {
    return this.label
  }
}

const slot = fc.nat({ max: SLOTS - 1 })
const roleList = fc.oneof(
  fc.array(fc.constantFrom(...ROLE_POOL), { maxLength: 6 }),
  // Near and past the limit, repeated and unsorted: the limit counts distinct roles.
  fc.shuffledSubarray(ROLE_POOL, { minLength: MAX_ROLES - 2, maxLength: MAX_ROLES + 3 })
    .chain((roles) => fc.array(fc.constantFrom(...roles), { maxLength: 4 }).map((again) => [...roles, ...again]))
)
const operation: fc.Arbitrary<Operation> = fc.oneof(
  { weight: 6, arbitrary: slot.map((at): Operation => ({ kind: 'grant', slot: at })) },
  { weight: 4, arbitrary: slot.map((at): Operation => ({ kind: 'revoke', slot: at })) },
  { weight: 3, arbitrary: slot.map((at): Operation => ({ kind: 'disable', slot: at })) },
  { weight: 3, arbitrary: slot.map((at): Operation => ({ kind: 'enable', slot: at })) },
  { weight: 1, arbitrary: slot.map((at): Operation => ({ kind: 'delete', slot: at })) },
  { weight: 2, arbitrary: fc.tuple(slot, roleList).map(([at, roles]): Operation => ({ kind: 'set', slot: at, roles })) }
)

const sequential = operation.map((op) => new AccessStep(describe(op), async (world) => {
  const { answer: expected, next } = expect(world.model, op)
  const answer = await perform(world.repository, world.model, op)
  if (!same(answer, expected)) failed(world, `${describe(op)} answered ${JSON.stringify(answer)}, the model says ${JSON.stringify(expected)}`)
  count(world, answer.outcome)
  world.trace.push(`  → ${answer.outcome}`)
  world.model = next
}))

/** Several operations at once: each answers as in one order of them, one after the other, and the rows end as that order leaves them. */
const concurrent = fc.array(operation, { minLength: 2, maxLength: 4 }).map((ops) =>
  new AccessStep(`together(${ops.map(describe).join(', ')})`, (world) => together(world, ops)))

async function together (world: AccessWorld, ops: Operation[]): Promise<void> {
  if (world.real) await warm(world.db)
  const answers = await Promise.all(ops.map((op) => perform(world.repository, world.model, op)))
  const rows = await world.db.select({ id: usersTable.id, roles: usersTable.roles, disabled: usersTable.disabled, version: usersTable.accessVersion })
    .from(usersTable).where(inArray(usersTable.id, world.model.map((user) => user.id)))
  const stored = new Map(rows.map((row) => [row.id, row]))
  const order = permutations(ops.map((_, index) => index)).find((candidate) => {
    let model = world.model
    for (const index of candidate) {
      const step = expect(model, ops[index]!)
      if (!same(step.answer, answers[index])) return false
      model = step.next
    }
    return model.every((user) => user.deleted
      ? !stored.has(user.id)
      : same(stored.get(user.id)?.roles, user.roles) && stored.get(user.id)?.disabled === user.disabled && stored.get(user.id)?.version === user.version)
  })
  if (order === undefined) failed(world, `answers ${JSON.stringify(answers.map((answer) => answer.outcome))} and rows ${JSON.stringify(rows)} fit no order of them`)
  for (const index of order) world.model = expect(world.model, ops[index]!).next
  for (const answer of answers) count(world, `${answer.outcome} (together)`)
  world.trace.push(`  → ${answers.map((answer) => answer.outcome).join(', ')} (as in the order ${order.join(', ')})`)
}

/** Every enabled admin demoted, disabled or deleted at once (the race the lock is for): one of them stays. */
const allAdminsAtOnce = fc.array(fc.constantFrom<Operation['kind']>('revoke', 'disable', 'delete'), { minLength: SLOTS, maxLength: SLOTS }).map((kinds) =>
  new AccessStep(`allAdminsAtOnce(${kinds.join(', ')})`, async (world) => {
    const ops = world.model.flatMap((user, index): Operation[] => isEnabledAdmin(user) ? [{ kind: kinds[index] as 'revoke' | 'disable' | 'delete', slot: index }] : [])
    if (ops.length < 2) return
    count(world, 'admins at once')
    world.trace.push(`  = together(${ops.map(describe).join(', ')})`)
    await together(world, ops)
  }))

/** A deleted account's slot gets a new account (the email can sign up again). */
const signUpAgain = slot.map((at) => new AccessStep(`signUpAgain(${at})`, async (world) => {
  if (!world.model[at]!.deleted) return
  const created = await world.repository.create(`again-${at}-${world.trace.length}@example.com`, 'hash')
  world.model = world.model.map((user, index) => index === at ? { id: created!.id, roles: [], disabled: false, version: 0, deleted: false } : user)
}))

const accessSteps = fc.commands([fc.oneof(
  { weight: 8, arbitrary: sequential },
  { weight: 2, arbitrary: concurrent },
  { weight: 2, arbitrary: allAdminsAtOnce },
  { weight: 1, arbitrary: signUpAgain }
)], { maxCommands: 30, size: 'medium' })

for (const { name, real, skip } of variants) {
  t.test(`updateAccess and delete follow the model (${name})`, { skip }, async (t) => {
    const { db } = await testDatabase(t, { real, fresh: true })
    const repository = new UserRepository(db)
    const counts = new Map<string, number>()
    let run = 0
    await fc.assert(fc.asyncProperty(accessSteps, async (commands) => {
      run += 1
      await emptied(db)
      const model: ModelUser[] = []
      for (let index = 0; index < SLOTS; index++) {
        const created = await repository.create(`access-${run}-${index}@example.com`, 'hash')
        model.push({ id: created!.id, roles: [], disabled: false, version: 0, deleted: false })
      }
      const world: AccessWorld = { db, real, repository, model, everAdmin: false, trace: [], counts }
      await fc.asyncModelRun(() => ({ model: world, real: world }), commands)
    }), { seed: SEED, numRuns: 30 })
    t.pass(`${run} runs answered as the model says`)
    t.comment(`outcomes: ${JSON.stringify(Object.fromEntries([...counts].sort()))}`)
    for (const outcome of ['changed', 'last-admin', 'too-many-roles', 'deleted', 'not-found']) {
      t.ok((counts.get(outcome) ?? 0) > 0, `the runs reached '${outcome}'`)
    }
    t.ok((counts.get('last-admin (together)') ?? 0) + (counts.get('changed (together)') ?? 0) > 0, 'and concurrent batches')
    t.ok((counts.get('admins at once') ?? 0) >= 10, `every admin acted on at once, ${counts.get('admins at once') ?? 0} times`)
  })

  t.test(`the last enabled admin, by example (${name})`, { skip }, async (t) => {
    const { db } = await testDatabase(t, { real, fresh: true })
    const repository = new UserRepository(db)
    await emptied(db)
    let [first, second] = [await repository.create('first-admin@example.com', 'hash'), await repository.create('second-admin@example.com', 'hash')]
    const grant = (user: User) => repository.updateAccess(user.id, (stored) => ({ roles: [...stored.roles, ADMIN_ROLE] }))
    const revoke = (user: User) => repository.updateAccess(user.id, (stored) => ({ roles: stored.roles.filter((role) => role !== ADMIN_ROLE) }))
    t.match(await revoke(first!), { after: { roles: [] } }, 'no admin yet: revoking the role one does not have is no demotion')
    t.match(await grant(first!), { before: { roles: [] }, after: { roles: [ADMIN_ROLE] } })
    t.equal(await revoke(first!), 'last-admin', 'the only admin cannot be demoted')
    t.equal(await repository.updateAccess(first!.id, () => ({ disabled: true })), 'last-admin', 'nor disabled')
    t.equal(await repository.delete(first!.id), 'last-admin', 'nor deleted')
    t.match(await repository.updateAccess(first!.id, () => ({ roles: ['zeta', ADMIN_ROLE, 'alpha', 'zeta'] })), { after: { roles: ['admin', 'alpha', 'zeta'] } },
      'but its other roles change freely, stored sorted and unique')
    t.match(await grant(second!), { after: { roles: [ADMIN_ROLE] } })
    t.match(await repository.updateAccess(second!.id, () => ({ disabled: true })), { after: { disabled: true } }, 'a second admin can be disabled')
    t.equal(await revoke(first!), 'last-admin', 'a disabled admin does not count')
    t.match(await repository.updateAccess(second!.id, () => ({ disabled: false })), { after: { disabled: false } })

    // Two admins demoting (or disabling, or deleting) each other at once: one of them stays, every time.
    const races: Array<[string, (user: User) => Promise<unknown>]> = [
      ['demote', revoke],
      ['disable', (user) => repository.updateAccess(user.id, () => ({ disabled: true }))],
      ['delete', (user) => repository.delete(user.id)]
    ]
    let outcomes: string[] = []
    for (let round = 0; round < 8; round++) {
      for (const [what, act] of races) {
        if (real) await warm(db)
        const answers = await Promise.all([act(first!), act(second!)])
        const admins = await db.select({ id: usersTable.id }).from(usersTable)
          .where(sql`${usersTable.roles} @> '{admin}'::text[] and not ${usersTable.disabled}`)
        outcomes = [...outcomes, `${what}: ${answers.map((answer) => typeof answer === 'object' ? 'changed' : String(answer)).sort().join(', ')}, ${admins.length} left`]
        // Both admins again, for the next race.
        const restored: User[] = []
        for (const user of [first!, second!]) {
          const current = await repository.findById(user.id) ?? (await repository.create(`${what}-${round}-${restored.length}@example.com`, 'hash'))!
          await repository.updateAccess(current.id, (stored) => ({ roles: [...stored.roles, ADMIN_ROLE], disabled: false }))
          restored.push(current)
        }
        [first, second] = restored
      }
    }
    t.strictSame(outcomes.filter((outcome) => !/^\w+: (changed|deleted), last-admin, 1 left$/.test(outcome)), [],
      `exactly one of each pair of concurrent demotions, disablings and deletions succeeds (${outcomes.length} races)`)

    // The limit, on an account of its own (one of the two above is the last admin now).
    const third = (await repository.create('many-roles@example.com', 'hash'))!
    const roles = (n: number) => Array.from({ length: n }, (_, index) => `r${String(index).padStart(2, '0')}`)
    t.match(await repository.updateAccess(third.id, () => ({ roles: roles(MAX_ROLES) })), { after: { roles: roles(MAX_ROLES) } }, '32 roles: stored')
    t.equal(await repository.updateAccess(third.id, () => ({ roles: roles(MAX_ROLES + 1) })), 'too-many-roles', '33: refused')
    t.match(await repository.findById(third.id), { roles: roles(MAX_ROLES) }, 'the refused change left the roles as they were')
    t.match(await repository.updateAccess(third.id, () => ({ roles: [...roles(MAX_ROLES), ...roles(MAX_ROLES).reverse()] })), { after: { roles: roles(MAX_ROLES) } },
      '32 distinct roles given twice, in any order: stored once each, sorted')
    t.equal(await repository.updateAccess(third.id, (stored) => ({ roles: [...stored.roles, ADMIN_ROLE] })), 'too-many-roles', 'a 33rd role by a grant: refused too')
    t.equal(await repository.updateAccess('00000000-0000-4000-8000-000000000000', () => ({ disabled: true })), undefined, 'no such user: undefined')
    t.equal(await repository.delete('00000000-0000-4000-8000-000000000000'), 'not-found')
  })
}

// ---------------------------------------------------------------------------
// UserDirectory.page against a filter in JavaScript

interface Listed {
  id: string
  email: string
  createdAtUs: bigint
}

/** Every user, newest first, as the directory must order them: creation time (microseconds), then id. */
async function everyone (db: Database): Promise<Listed[]> {
  const result = await db.execute(sql`select id, email, (extract(epoch from created_at) * 1000000)::bigint::text as "createdAtUs" from users`) as unknown as
    { rows: Array<{ id: string, email: string, createdAtUs: string }> }
  return result.rows.map((row) => ({ id: row.id, email: row.email, createdAtUs: BigInt(row.createdAtUs) }))
    .sort((a, b) => a.createdAtUs === b.createdAtUs ? (a.id < b.id ? 1 : -1) : (a.createdAtUs < b.createdAtUs ? 1 : -1))
}

/** The users a query must find: the (trimmed, lower-cased) query as a plain substring of the email. */
const matching = (listed: readonly Listed[], query: string): Listed[] => listed.filter((user) => user.email.includes(normalizeEmail(query)))

/** Characters LIKE treats specially, the escape character, case, and a few ordinary ones. */
const emailChar = fc.constantFrom('a', 'b', 'A', 'B', '%', '_', '\\', '.', '-', 'x', 'ß', 'é')
const localPart = fc.string({ unit: emailChar, minLength: 1, maxLength: 8 })
const emailsOf = ({ minLength }: { minLength: number }) => fc.uniqueArray(
  fc.tuple(localPart, fc.constantFrom('example.com', 'a_b.test', 'x%y.test')).map(([local, domain]) => `${local}@${domain}`),
  { minLength, maxLength: 24, selector: normalizeEmail, size: 'medium' })
const emails = emailsOf({ minLength: 0 })

/** Queries: a piece of an email in any case, or any string of the same characters (matching nothing, often). */
function queryFor (addresses: readonly string[]): fc.Arbitrary<string> {
  const piece = addresses.length === 0
    ? fc.constant('')
    : fc.tuple(fc.constantFrom(...addresses), fc.nat(), fc.nat(), fc.boolean()).map(([address, from, length, upper]) => {
      const start = from % address.length
      const text = address.slice(start, start + 1 + (length % 6))
      return upper ? text.toUpperCase() : text
    })
  return fc.oneof(piece, fc.string({ unit: emailChar, maxLength: 4 }), fc.constantFrom('', '%', '_', '\\', '%%', '\\%', '_@', '@'))
}

/** Inserts the emails: some one by one, some in one statement (one creation time for all: the id decides their order). */
async function insertAll (db: Database, repository: UserRepository, addresses: readonly string[], together: number): Promise<void> {
  const batch = addresses.slice(0, together)
  if (batch.length > 0) await db.insert(usersTable).values(batch.map((email) => ({ email: normalizeEmail(email), passwordHash: 'hash' })))
  for (const email of addresses.slice(together)) await repository.create(email, 'hash')
}

const ids = (list: ReadonlyArray<{ id: string }>): string[] => list.map((user) => user.id)

for (const { name, real, skip } of variants) {
  t.test(`UserDirectory.page (${name})`, { skip }, async (t) => {
    const { db } = await testDatabase(t, { real, fresh: true })
    const repository = new UserRepository(db)
    const directory = new UserDirectory(db)

    t.test('a query finds exactly the emails containing it, literally, in any case, newest first', async (t) => {
      let queries = 0
      let found = 0
      await fc.assert(fc.asyncProperty(emails.chain((addresses) => fc.tuple(
        fc.constant(addresses), fc.nat({ max: addresses.length }), fc.array(queryFor(addresses), { minLength: 1, maxLength: 6 })
      )), async ([addresses, together, queryList]) => {
        await emptied(db)
        await insertAll(db, repository, addresses, together)
        const listed = await everyone(db)
        for (const query of queryList) {
          const page = await directory.page({ query, limit: 100 })
          const expected = matching(listed, query)
          if (!same(ids(page.users), ids(expected))) {
            throw new Error(`query ${JSON.stringify(query)}: found ${JSON.stringify(page.users.map((user) => user.email))}, ` +
              `expected ${JSON.stringify(expected.map((user) => user.email))} among ${JSON.stringify(listed.map((user) => user.email))}`)
          }
          if (page.next !== null) throw new Error(`query ${JSON.stringify(query)}: a next page after every match`)
          queries += 1
          found += page.users.length
        }
      }), { seed: SEED, numRuns: real ? 40 : 60 })
      t.pass(`${queries} queries found what the filter finds (${found} users in all)`)
    })

    t.test('walking pages of random sizes while users sign up: every user that was there, once, in order', async (t) => {
      let walks = 0
      let pages = 0
      let arrived = 0
      await fc.assert(fc.asyncProperty(emailsOf({ minLength: 6 }).chain((addresses) => fc.tuple(
        fc.constant(addresses),
        fc.nat({ max: addresses.length }),
        // Often every user or a common character, so that walks span many pages.
        fc.oneof(fc.constantFrom('', 'a', '.', '@'), queryFor(addresses)),
        fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 30 }),
        fc.array(fc.array(fc.tuple(localPart, fc.boolean()), { maxLength: 3 }), { maxLength: 30 })
      )), async ([addresses, together, query, limits, arrivals]) => {
        await emptied(db)
        await insertAll(db, repository, addresses, together)
        const before = matching(await everyone(db), query)
        const seen: Listed[] = []
        let cursor: string | undefined
        for (let index = 0; ; index++) {
          const page = await directory.page({ query, limit: limits[index % limits.length]!, cursor })
          pages += 1
          if (page.users.length > limits[index % limits.length]!) throw new Error(`a page of ${page.users.length} for a limit of ${limits[index % limits.length]}`)
          seen.push(...page.users.map((user) => ({ id: user.id, email: user.email, createdAtUs: 0n })))
          if (page.next === null) break
          if (page.users.length === 0) throw new Error('an empty page with a next one')
          cursor = page.next
          // Sign-ups between pages, some of them matching the query.
          for (const [local, matches] of arrivals[index] ?? []) {
            await repository.create(`${local}${matches ? normalizeEmail(query) : ''}-${++arrived}@new.test`, 'hash')
          }
        }
        walks += 1
        if (!same(ids(seen), ids(before))) {
          throw new Error(`query ${JSON.stringify(query)}, limits ${JSON.stringify(limits)}: listed ${JSON.stringify(seen.map((user) => user.email))}, ` +
            `expected ${JSON.stringify(before.map((user) => user.email))}`)
        }
      }), { seed: SEED, numRuns: real ? 30 : 40 })
      t.pass(`${walks} walks (${pages} pages) listed every user that was there exactly once, newest first`)
    })

    t.test('a cursor this service could not have given: VALIDATION_ERROR, never a database error', async (t) => {
      await emptied(db)
      await insertAll(db, repository, ['cursor-a@example.com', 'cursor-b@example.com', 'cursor-c@example.com'], 1)
      const listed = await everyone(db)
      const valid = (await directory.page({ limit: 1 })).next!
      t.type(valid, 'string')
      const LAST_US = BigInt(Date.UTC(9999, 11, 31, 23, 59, 59, 999)) * 1000n + 999n
      const encode = (text: string) => Buffer.from(text).toString('base64url')
      const refused = async (cursor: string): Promise<string | undefined> => {
        try {
          await directory.page({ limit: 5, cursor })
          return undefined
        } catch (error) {
          return error instanceof ServiceError ? error.code : `not a ServiceError: ${String(error)}`
        }
      }
      const uuid = '3f2b8c1e-5d4a-4b6c-9e8f-0a1b2c3d4e5f'
      const examples: Array<[string, string]> = [
        ['not base64url', '!!!'],
        ['empty', ''],
        ['no separator', encode(`123${uuid}`)],
        ['a negative time', encode(`-1.${uuid}`)],
        ['a leading zero', encode(`0123.${uuid}`)],
        ['past the year 9999', encode(`${LAST_US + 1n}.${uuid}`)],
        ['19 digits', encode(`${'9'.repeat(19)}.${uuid}`)],
        ['an id that is no UUID', encode('1700000000000000.not-a-uuid')],
        ['an upper-case UUID', encode(`1700000000000000.${uuid.toUpperCase()}`)],
        ['an SQL injection', encode(`1700000000000000.${uuid}'); drop table users; --`)],
        ['padded', `${encode(`1700000000000000.${uuid}`)}=`],
        ['the valid cursor with its separator changed', encode(Buffer.from(valid, 'base64url').toString().replace('.', ':'))],
        ['the valid cursor with a space added', encode(`${Buffer.from(valid, 'base64url').toString()} `)],
        ['the valid cursor cut short', valid.slice(0, -3)]
      ]
      for (const [what, cursor] of examples) t.equal(await refused(cursor), 'VALIDATION_ERROR', `${what}: VALIDATION_ERROR`)

      // Well-formed positions, even ones it never gave (the first and last instants it reads), list what comes after them.
      for (const createdAtUs of [0n, LAST_US, listed[1]!.createdAtUs]) {
        for (const id of [uuid, listed[1]!.id, '00000000-0000-0000-0000-000000000000', 'ffffffff-ffff-ffff-ffff-ffffffffffff']) {
          const page = await directory.page({ limit: 5, cursor: encode(`${createdAtUs}.${id}`) })
          const after = listed.filter((user) => user.createdAtUs < createdAtUs || (user.createdAtUs === createdAtUs && user.id < id))
          t.same(ids(page.users), ids(after), `after ${createdAtUs}.${id.slice(0, 8)}: the users older than it`)
        }
      }

      let problems: string[] = []
      await fc.assert(fc.asyncProperty(fc.oneof(
        fc.string({ maxLength: 80 }),
        fc.base64String({ maxLength: 80 }),
        fc.tuple(fc.oneof(fc.bigInt({ min: -10n, max: 10n ** 19n }).map(String), fc.string({ maxLength: 20 })), fc.oneof(fc.uuid(), fc.string({ maxLength: 40 })))
          .map(([time, id]) => encode(`${time}.${id}`)),
        fc.tuple(fc.nat({ max: valid.length }), fc.string({ minLength: 1, maxLength: 3 })).map(([at, text]) => valid.slice(0, at) + text + valid.slice(at + 1))
      ), async (cursor) => {
        const code = await refused(cursor)
        if (code !== undefined && code !== 'VALIDATION_ERROR') problems = [...problems, `${JSON.stringify(cursor)}: ${code}`]
      }), { seed: SEED, numRuns: 300 })
      t.strictSame(problems, [], 'any cursor at all: a page or VALIDATION_ERROR')
    })
  })
}
