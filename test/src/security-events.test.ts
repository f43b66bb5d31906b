import { deepStrictEqual } from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { and, eq, isNull } from 'drizzle-orm'
import fc from 'fast-check'
import t from 'tap'
import type { Test } from 'tap'
import { securityEvents } from '../../drizzle/schema.js'
import type { DatabaseHandle } from '../../src/database.js'
import { ServiceError } from '../../src/errors.js'
import { SecurityEventStore } from '../../src/security-event-store.js'
import { UserRepository } from '../../src/users.js'
import {
  SecurityEventLog, eventCursorOf, parseEventCursor, type EventPosition, type SecurityEvent, type SecurityEventLogOptions,
  type SecurityEventRecord, type SecurityEventSink, type TimedSecurityEventRecord
} from '../../src/security-events.js'
import { FakeClock, eventually, skipUnless, testDatabase } from '../helpers.js'

/*
 * Security events (src/security-events.ts, src/security-event-store.ts):
 * the log that batches records off the request path (over a fake sink), the
 * page cursor, and the store on PGlite and on PostgreSQL, with a property
 * that walks every page of a user's events while new ones arrive.
 * Over HTTP: test/routes/events.test.ts.
 */

// ---------------------------------------------------------------------------
// SecurityEventLog

/** A sink in memory: keeps each insert's batch; fails the next `failures` inserts, or every one while `down`. */
class FakeSink implements SecurityEventSink {
  batches: TimedSecurityEventRecord[][] = []
  pruned: Date[] = []
  failures = 0
  down = false

  async insert (events: TimedSecurityEventRecord[]): Promise<void> {
    if (this.down || this.failures > 0) {
      this.failures = Math.max(0, this.failures - 1)
      throw new Error('the database is away')
    }
    // A copy: what the log does with its array afterwards must not change what was "written".
    this.batches.push(events.map((event) => ({ ...event })))
  }

  async prune (olderThan: Date): Promise<number> {
    this.pruned.push(olderThan)
    return 42
  }

  /** What was written, in order. */
  get written (): TimedSecurityEventRecord[] {
    return this.batches.flat()
  }
}

/** The n-th test event: its user agent numbers it, so order can be read back. */
const nth = (n: number): SecurityEventRecord => ({ type: 'login', userId: 'u-1', sessionId: null, ip: '203.0.113.7', userAgent: `ua-${n}` })
const numbersOf = (events: TimedSecurityEventRecord[]): number[] => events.map((event) => Number(event.userAgent!.slice(3)))
const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i)

/** A log over `sink`; no flush happens by itself unless the test asks for a short interval. Closed when the test ends. */
function logOver (t: Test, sink: SecurityEventSink, options: Partial<SecurityEventLogOptions> = {}): SecurityEventLog {
  const log = new SecurityEventLog(sink, { clock: new FakeClock(), retentionMs: 86_400_000, flushIntervalMs: 60_000, ...options })
  // Stops a retry timer that a failing sink left behind.
  t.teardown(async () => {
    if (sink instanceof FakeSink) sink.down = false
    await log.close()
  })
  return log
}

t.test('SecurityEventLog', async (t) => {
  t.test('record() returns at once, even when the sink hangs or throws', async (t) => {
    let inserts = 0
    const hanging: SecurityEventSink = { insert: () => { inserts++; return new Promise(() => {}) }, prune: async () => 0 }
    const throwing: SecurityEventSink = { insert: () => { inserts++; throw new Error('synchronously broken') }, prune: async () => 0 }
    for (const [name, sink] of [['hanging', hanging], ['throwing', throwing]] as const) {
      const log = new SecurityEventLog(sink, { clock: new FakeClock(), retentionMs: 1000, flushIntervalMs: 60_000, batchSize: 2 })
      // A full batch schedules an immediate write: the next record must still not wait for it.
      const results = range(1, 5).map((n) => log.record(nth(n)))
      t.same(results, [undefined, undefined, undefined, undefined, undefined], `${name}: record returns nothing to await`)
      t.equal(log.pending, 5, `${name}: every event is held`)
      if (name === 'throwing') {
        // A sink that throws instead of rejecting is a failed write like any other: nothing is lost, nothing escapes.
        await log.flush()
        t.equal(log.pending, 5, 'throwing: the events are kept after the failed write')
        t.doesNotThrow(() => log.record(nth(6)), 'and record() still does not throw')
        await log.close()
      }
    }
    t.ok(inserts >= 1, 'the writes were attempted')
  })

  t.test('an event is written within flushIntervalMs without anyone calling flush()', async (t) => {
    const sink = new FakeSink()
    const log = logOver(t, sink, { flushIntervalMs: 20 })
    log.record(nth(1))
    log.record(nth(2))
    t.equal(sink.batches.length, 0, 'not written synchronously')
    t.ok(await eventually(() => sink.written.length === 2), 'written by the timer')
    t.same(numbersOf(sink.written), [1, 2], 'in order')
    t.equal(sink.batches.length, 1, 'as one batch')
    t.equal(log.pending, 0)
  })

  t.test('a full batch is written at once, in one insert, without waiting for the interval', async (t) => {
    const sink = new FakeSink()
    // An interval no test waits for: only a full batch can explain a write.
    const log = logOver(t, sink, { flushIntervalMs: 3_600_000, batchSize: 4 })
    for (const n of range(1, 3)) log.record(nth(n))
    t.ok(!await eventually(() => sink.batches.length > 0, { timeoutMs: 50 }), 'three of four: nothing written')
    log.record(nth(4))
    t.ok(await eventually(() => sink.batches.length === 1), 'the fourth fills the batch: written')
    t.same(sink.batches.map(numbersOf), [[1, 2, 3, 4]], 'in one insert')
    t.equal(log.pending, 0)
  })

  t.test('each insert gets at most batchSize events, in order', async (t) => {
    const sink = new FakeSink()
    const log = logOver(t, sink, { batchSize: 4 })
    for (const n of range(1, 10)) log.record(nth(n))
    await log.flush()
    t.same(sink.batches.map(numbersOf), [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]])
    t.equal(log.pending, 0)
  })

  t.test('a failed write keeps its events, calls writeFailed, and a later flush writes them in order', async (t) => {
    const sink = new FakeSink()
    const failures: unknown[] = []
    const log = logOver(t, sink, { batchSize: 2, observer: { writeFailed: (error) => failures.push(error) } })
    for (const n of range(1, 3)) log.record(nth(n))
    sink.failures = 1
    await log.flush()
    t.same(sink.batches, [], 'the first batch failed: nothing written')
    t.equal(log.pending, 3, 'and nothing lost')
    t.equal(failures.length, 1, 'writeFailed told once')
    t.match(String(failures[0]), /the database is away/, 'with the sink\'s error')

    // Recorded while the database is away: written after the older ones.
    log.record(nth(4))
    log.record(nth(5))
    sink.failures = 2
    await log.flush()
    await log.flush()
    t.equal(failures.length, 3, 'each failed write is told')
    t.equal(log.pending, 5)
    await log.flush()
    t.same(numbersOf(sink.written), [1, 2, 3, 4, 5], 'everything, once, in the order recorded')
    t.ok(sink.batches.every((batch) => batch.length <= 2), 'still at most batchSize an insert')
    t.equal(log.pending, 0)
  })

  t.test('after a failed write, the log tries again by itself', async (t) => {
    const sink = new FakeSink()
    const log = logOver(t, sink, { flushIntervalMs: 20 })
    sink.failures = 1
    log.record(nth(1))
    await log.flush()
    t.equal(log.pending, 1, 'failed once')
    t.ok(await eventually(() => sink.written.length === 1), 'written by the retry, no flush() called')
  })

  t.test('past maxPending the oldest are dropped, and dropped() counts them', async (t) => {
    const sink = new FakeSink()
    let dropped = 0
    const failures: unknown[] = []
    const log = logOver(t, sink, { batchSize: 2, maxPending: 5, observer: { dropped: (count) => { dropped += count }, writeFailed: (error) => failures.push(error) } })
    for (const n of range(1, 5)) log.record(nth(n))
    t.equal(dropped, 0, 'up to maxPending: nothing dropped')
    for (const n of range(6, 8)) log.record(nth(n))
    t.equal(dropped, 3, 'three past it: three dropped')
    t.equal(log.pending, 5)

    // A batch that fails goes back in front, and counts against maxPending like the rest.
    sink.down = true
    await log.flush()
    t.equal(failures.length, 1)
    t.equal(log.pending, 5, 'the failed batch is back, nothing more dropped')
    log.record(nth(9))
    t.equal(dropped, 4)
    sink.down = false
    await log.flush()
    t.same(numbersOf(sink.written), [5, 6, 7, 8, 9], 'the newest five, in order: the oldest were the ones dropped')
  })

  t.test('close() writes everything pending, a batch at a time', async (t) => {
    const sink = new FakeSink()
    const log = new SecurityEventLog(sink, { clock: new FakeClock(), retentionMs: 1000, flushIntervalMs: 3_600_000, batchSize: 3 })
    for (const n of range(1, 7)) log.record(nth(n))
    await log.close()
    t.same(sink.batches.map(numbersOf), [[1, 2, 3], [4, 5, 6], [7]])
    t.equal(log.pending, 0)
  })

  t.test('after close() nothing is scheduled: no retry, no timed write', async (t) => {
    const sink = new FakeSink()
    const log = new SecurityEventLog(sink, { clock: new FakeClock(), retentionMs: 1000, flushIntervalMs: 20 })
    log.record(nth(1))
    // The last write fails: the database is closing too.
    sink.down = true
    await log.close()
    t.equal(log.pending, 1, 'the event is still held')
    sink.down = false
    log.record(nth(2))
    // Ten flush intervals: a timer left behind would have written by then.
    t.notOk(await eventually(() => sink.batches.length > 0, { timeoutMs: 200 }), 'nothing written after close')
    await log.flush()
    t.same(numbersOf(sink.written), [1, 2], 'an explicit flush still writes')
  })

  t.test('close() waits for a write under way', async (t) => {
    let release!: () => void
    const gate = new Promise<void>((resolve) => { release = resolve })
    const written: TimedSecurityEventRecord[] = []
    const slow: SecurityEventSink = { insert: async (events) => { await gate; written.push(...events) }, prune: async () => 0 }
    const log = new SecurityEventLog(slow, { clock: new FakeClock(), retentionMs: 1000, flushIntervalMs: 3_600_000 })
    log.record(nth(1))
    const flushing = log.flush()
    log.record(nth(2))
    let closed = false
    const closing = log.close().then(() => { closed = true })
    await new Promise((resolve) => setImmediate(resolve))
    t.notOk(closed, 'not closed while the first write is held')
    release()
    await Promise.all([flushing, closing])
    t.same(numbersOf(written), [1, 2], 'both written before close() resolved')
  })

  t.test('each event is stamped with the injected clock\'s time when recorded', async (t) => {
    const sink = new FakeSink()
    const clock = new FakeClock(Date.UTC(2031, 5, 1))
    const log = logOver(t, sink, { clock })
    log.record(nth(1))
    clock.advance(1234)
    log.record(nth(2))
    clock.advance(60_000)
    await log.flush()
    t.same(sink.written.map((event) => event.at.toISOString()), ['2031-06-01T00:00:00.000Z', '2031-06-01T00:00:01.234Z'],
      'the time of record(), not of the write')
    t.same({ ...sink.written[0], at: undefined }, { ...nth(1), at: undefined }, 'and the record itself unchanged')
  })

  t.test('prune() asks the sink for what is older than now minus the retention, and answers its count', async (t) => {
    const sink = new FakeSink()
    const clock = new FakeClock(Date.UTC(2031, 0, 10))
    const log = logOver(t, sink, { clock, retentionMs: 3 * 86_400_000 })
    t.equal(await log.prune(), 42)
    clock.advance(5000)
    await log.prune()
    t.same(sink.pruned.map((date) => date.toISOString()), ['2031-01-07T00:00:00.000Z', '2031-01-07T00:00:05.000Z'])
  })

  t.test('recorded() is told each type', async (t) => {
    const types: string[] = []
    const log = logOver(t, new FakeSink(), { observer: { recorded: (type) => types.push(type) } })
    log.record({ type: 'signup', userId: 'u' })
    log.record({ type: 'login_failed', userId: null })
    t.same(types, ['signup', 'login_failed'])
  })
})

// ---------------------------------------------------------------------------
// The cursor

/** The VALIDATION_ERROR a cursor this service never gave must get. */
function assertRefused (t: Test, cursor: string, name: string): void {
  let caught: unknown
  try {
    parseEventCursor(cursor)
  } catch (error) {
    caught = error
  }
  t.ok(caught instanceof ServiceError && caught.code === 'VALIDATION_ERROR', `${name} (${JSON.stringify(cursor.slice(0, 40))}): VALIDATION_ERROR`)
}

const encode = (text: string): string => Buffer.from(text).toString('base64url')

/** The last valid time a PostgreSQL timestamp and an ISO string share: 9999-12-31T23:59:59.999Z. */
const LAST_TIME = 253_402_300_799_999
const MAX_BIGINT = 2n ** 63n - 1n

t.test('event cursor', async (t) => {
  t.test('parseEventCursor(eventCursorOf(p)) is p', async (t) => {
    for (const position of [
      { at: new Date(0), id: '1' },
      { at: new Date(Date.UTC(2030, 0, 1, 12, 0, 0, 7)), id: '1042' },
      { at: new Date(LAST_TIME), id: MAX_BIGINT.toString() }
    ]) {
      t.same(parseEventCursor(eventCursorOf(position)), position, `${position.at.toISOString()} / ${position.id}`)
    }
    fc.assert(fc.property(fc.integer({ min: 0, max: LAST_TIME }), fc.bigInt({ min: 1n, max: MAX_BIGINT }), (ms, id) => {
      const position: EventPosition = { at: new Date(ms), id: id.toString() }
      const cursor = eventCursorOf(position)
      deepStrictEqual(parseEventCursor(cursor), position)
      // The query string carries it as is.
      deepStrictEqual(/^[A-Za-z0-9_-]+$/.test(cursor), true)
    }), { seed: 20_310_601, numRuns: 500 })
    t.pass('500 random positions round-trip')
  })

  t.test('garbage is VALIDATION_ERROR', async (t) => {
    for (const cursor of ['', '.', '!!!!', 'not a cursor', '∆∆∆', '\u0000', '%00', 'MTAwMC4y\n']) assertRefused(t, cursor, 'garbage')
    for (const text of ['', '1000', '1000.', '.42', 'abc.def', '1000.42.7', '-1000.42', '1000.-42', '1e3.42', '1000.4e2', '0x10.42', '1000,42', '1000 .42', ' 1000.42', '1000.42 ', '1000.42\n', '١٠٠٠.٤٢']) {
      assertRefused(t, encode(text), `the text ${JSON.stringify(text)}`)
    }
  })

  t.test('a tampered cursor that is no longer one the service writes is VALIDATION_ERROR', async (t) => {
    // The service writes plain decimals: the same numbers spelled otherwise are refused, not reinterpreted.
    for (const text of ['01000.42', '+1000.42', '1000.+42', '00.1', '1000.4_2', '1000..42']) assertRefused(t, encode(text), `the text ${JSON.stringify(text)}`)
    const good = eventCursorOf({ at: new Date(Date.UTC(2030, 0, 1)), id: '1042' })
    assertRefused(t, `${good}A`, 'a character more')
    assertRefused(t, `x${good}`, 'a character in front')
    assertRefused(t, good.replace(/^./, '!'), 'a character that base64url has not')
    // Cursors are not signed: a change may name another position, which only pages the caller's own events.
    // What must never happen is a cursor accepted for a position it does not spell exactly.
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=. '
    const variants = new Set<string>()
    for (let i = 0; i <= good.length; i++) {
      variants.add(good.slice(0, i))
      variants.add(good.slice(0, i) + good.slice(i + 1))
      for (const c of alphabet) {
        variants.add(good.slice(0, i) + c + good.slice(i + 1))
        variants.add(good.slice(0, i) + c + good.slice(i))
      }
    }
    variants.delete(good)
    const misread: string[] = []
    let refused = 0
    for (const variant of variants) {
      try {
        if (eventCursorOf(parseEventCursor(variant)) !== variant) misread.push(variant)
      } catch (error) {
        if (!(error instanceof ServiceError && error.code === 'VALIDATION_ERROR')) misread.push(`${variant}: ${String(error)}`)
        refused++
      }
    }
    t.same(misread, [], `of ${variants.size} one-character changes, each is refused or spells its own position`)
    t.ok(refused > variants.size / 2, `${refused} refused`)
  })

  t.test('non-canonical base64 of a good position is VALIDATION_ERROR', async (t) => {
    // 7 bytes: its base64 ends in a partial group, which can be padded or carry stray low bits.
    const position = { at: new Date(1000), id: '42' }
    const good = eventCursorOf(position)
    t.same(parseEventCursor(good), position, 'the canonical form parses')
    t.equal(Buffer.from(good, 'base64url').length, 7)
    assertRefused(t, `${good}=`, 'padded')
    assertRefused(t, Buffer.from('1000.42').toString('base64'), 'padded standard base64')
    const last = good.at(-1)!
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
    // The last character of 7 bytes carries 2 bits of data and 4 unused bits: set one of those.
    const stray = alphabet[alphabet.indexOf(last) + 1]!
    t.equal(Buffer.from(`${good.slice(0, -1)}${stray}`, 'base64url').toString(), '1000.42', 'decodes to the same text')
    assertRefused(t, `${good.slice(0, -1)}${stray}`, 'non-zero unused bits')
    assertRefused(t, `${good.slice(0, 4)} ${good.slice(4)}`, 'a space inside (the decoder skips it)')
    assertRefused(t, `${good.slice(0, 4)}.${good.slice(4)}`, 'a character the decoder skips')
  })

  t.test('an overlong cursor is VALIDATION_ERROR', async (t) => {
    assertRefused(t, encode(`${'9'.repeat(16)}.42`), 'a 16-digit time')
    assertRefused(t, encode(`1000.${'9'.repeat(20)}`), 'a 20-digit id')
    assertRefused(t, encode(`1000.${'1'.repeat(5000)}`), 'a 5000-digit id')
    assertRefused(t, 'A'.repeat(100_000), '100 000 characters')
  })

  t.test('a well-formed position that no event can have is VALIDATION_ERROR', async (t) => {
    // Else the store's query would fail (STORE_UNAVAILABLE) rather than refuse the request.
    assertRefused(t, encode('1000.042'), 'an id with a leading zero')
    assertRefused(t, encode('1000.0'), 'id 0, which no event has')
    assertRefused(t, eventCursorOf({ at: new Date(1000), id: (MAX_BIGINT + 1n).toString() }), 'an id past PostgreSQL\'s bigint')
    assertRefused(t, eventCursorOf({ at: new Date(1000), id: '9'.repeat(19) }), 'the largest 19-digit id')
    assertRefused(t, encode(`${LAST_TIME + 1}.42`), 'a time past 9999-12-31')
    assertRefused(t, encode('999999999999999.42'), 'the largest 15-digit time')
  })
})

// ---------------------------------------------------------------------------
// SecurityEventStore

const variants = [
  { name: 'PGlite', onServer: false, skip: false as const },
  { name: 'PostgreSQL', onServer: true, skip: skipUnless({ postgres: true }) }
]

const T0 = Date.UTC(2030, 3, 1, 12)
const at = (offsetMs: number): Date => new Date(T0 + offsetMs)
const CLIENT = { ip: '203.0.113.7', userAgent: 'Laptop/1.0' }

/** Every page of a user's events, `limit` at a time; `between` runs after each page that has a next one. */
async function walk (
  store: SecurityEventStore, userId: string, limit: number, between: (pagesRead: number) => Promise<void> = async () => {}
): Promise<{ events: SecurityEvent[], pages: SecurityEvent[][] }> {
  const pages: SecurityEvent[][] = []
  let before: EventPosition | undefined
  for (;;) {
    const page = await store.list({ userId, limit, before })
    pages.push(page.events)
    if (page.events.length > limit) throw new Error(`a page of ${page.events.length} for a limit of ${limit}`)
    if (page.next === null) break
    if (page.events.length < limit) throw new Error(`a short page (${page.events.length} of ${limit}) with a next one`)
    if (pages.length > 1000) throw new Error('the walk never ends')
    before = parseEventCursor(page.next)
    await between(pages.length)
  }
  return { events: pages.flat(), pages }
}

/** A user's rows, read without the store, in (at desc, id desc) order: the order the store must give. */
async function rowsOf (database: DatabaseHandle, userId: string): Promise<Array<{ id: string, at: number }>> {
  const rows = await database.db.select({ id: securityEvents.id, at: securityEvents.at }).from(securityEvents).where(eq(securityEvents.userId, userId))
  return rows
    .map((row) => ({ id: row.id, at: row.at.getTime() }))
    .sort((a, b) => b.at - a.at || (b.id > a.id ? 1 : b.id < a.id ? -1 : 0))
    .map((row) => ({ id: row.id.toString(), at: row.at }))
}

const positionsOf = (events: SecurityEvent[]): Array<{ id: string, at: number }> => events.map((event) => ({ id: event.id, at: event.at.getTime() }))

for (const { name, onServer, skip } of variants) {
  t.test(`SecurityEventStore (${name})`, { skip }, async (t) => {
    // The file's shared database: every test uses accounts of its own.
    const database = await testDatabase(t, { real: onServer })
    const store = new SecurityEventStore(database.db)
    const users = new UserRepository(database.db)
    /**
     * A new account's id. Events of an id no account has lose their client
     * details as they are stored (a deleted account's: migration 0004), so the
     * tests that read them back record them for accounts that exist.
     */
    const account = async (): Promise<string> => (await users.create(`events-${randomUUID()}@example.com`, 'not a real hash'))!.id

    t.test('insert then list: every field back, newest first', async (t) => {
      const user = await account()
      const session = randomUUID()
      const admin = randomUUID()
      await store.insert([
        { type: 'signup', userId: user, at: at(0), ...CLIENT },
        { type: 'login', userId: user, at: at(2000), sessionId: session, ...CLIENT },
        { type: 'roles_changed', userId: user, at: at(1000), actorId: admin, ip: '198.51.100.1', userAgent: 'Admin/2.0' }
      ])
      const page = await store.list({ userId: user, limit: 10 })
      t.same(page.events.map((event) => ({ ...event, id: undefined })), [
        { id: undefined, type: 'login', at: at(2000), userId: user, sessionId: session, actorId: null, ...CLIENT },
        { id: undefined, type: 'roles_changed', at: at(1000), userId: user, sessionId: null, actorId: admin, ip: '198.51.100.1', userAgent: 'Admin/2.0' },
        { id: undefined, type: 'signup', at: at(0), userId: user, sessionId: null, actorId: null, ...CLIENT }
      ])
      t.ok(page.events.every((event) => /^[1-9]\d*$/.test(event.id)), 'ids are decimal strings')
      t.equal(page.next, null, 'one page')
      t.same(await store.list({ userId: randomUUID(), limit: 10 }), { events: [], next: null }, 'a user with no events: an empty last page')
      await store.insert([])
      t.pass('an empty batch is no error')
    })

    t.test('ties on `at` are ordered by id, newest (highest id) first, across pages', async (t) => {
      const user = await account()
      await store.insert(range(1, 5).map((n) => ({ type: 'login_failed' as const, userId: user, at: at(0), userAgent: `ua-${n}` })))
      await store.insert([{ type: 'login', userId: user, at: at(0), userAgent: 'ua-6' }])
      const all = (await store.list({ userId: user, limit: 10 })).events
      t.same(all.map((event) => event.userAgent), ['ua-6', 'ua-5', 'ua-4', 'ua-3', 'ua-2', 'ua-1'], 'the last inserted first')
      t.ok(all.every((event, i) => i === 0 || BigInt(event.id) < BigInt(all[i - 1]!.id)), 'ids descending')
      const { events, pages } = await walk(store, user, 2)
      t.same(pages.map((page) => page.map((event) => event.userAgent)), [['ua-6', 'ua-5'], ['ua-4', 'ua-3'], ['ua-2', 'ua-1']],
        'pages split inside the tie lose and repeat nothing')
      t.same(events.map((event) => event.id), all.map((event) => event.id))
    })

    t.test('paging through every page yields each event exactly once, and next is null only on the last', async (t) => {
      const user = await account()
      // Milliseconds apart and seconds apart, some equal, inserted out of order.
      const offsets = [0, 1, 1, 999, 1000, 1000, 1001, 60_000, 2, 0, 1000, 59_999]
      await store.insert(offsets.map((offset, i) => ({ type: 'login' as const, userId: user, at: at(offset), userAgent: `ua-${i}` })))
      const expected = await rowsOf(database, user)
      t.equal(expected.length, offsets.length)
      for (const limit of [1, 2, 3, 5, 12, 13, 100]) {
        const { events, pages } = await walk(store, user, limit)
        t.same(positionsOf(events), expected, `limit ${limit}: every event once, at desc then id desc`)
        t.equal(pages.length, Math.max(1, Math.ceil(offsets.length / limit)), `limit ${limit}: no empty page at the end`)
      }
    })

    t.test('a user sees only their own events; events without a user are nobody\'s', async (t) => {
      const [alice, bob] = [await account(), await account()]
      // What a failed login of an unknown email records, in the same moments as Alice's own events.
      const probe = `Probe/${randomUUID()}`
      await store.insert([
        { type: 'login', userId: alice, at: at(0), userAgent: 'alice' },
        { type: 'login_failed', userId: null, at: at(0), userAgent: probe },
        { type: 'login', userId: bob, at: at(0), userAgent: 'bob' },
        { type: 'login_failed', userId: null, at: at(1), userAgent: probe },
        { type: 'logout', userId: alice, at: at(1), userAgent: 'alice' },
        { type: 'signup', userId: bob, at: at(2), userAgent: 'bob' }
      ])
      for (const [user, label] of [[alice, 'alice'], [bob, 'bob']] as const) {
        const { events } = await walk(store, user, 1)
        t.equal(events.length, 2, `${label}: two events`)
        t.ok(events.every((event) => event.userId === user && event.userAgent === label), `${label}: only their own`)
      }
      const orphans = await database.db.select().from(securityEvents)
        .where(and(isNull(securityEvents.userId), eq(securityEvents.userAgent, probe)))
      t.equal(orphans.length, 2, 'the events without a user were stored')
      t.ok(orphans.every((row) => row.type === 'login_failed'))
      const orphanIds = new Set(orphans.map((row) => row.id.toString()))
      for (const user of [alice, bob, randomUUID()]) {
        const { events } = await walk(store, user, 100)
        t.notOk(events.some((event) => orphanIds.has(event.id)), 'in no user\'s list')
      }
    })

    t.test('forgetClientDetails drops the address and user agent of that user\'s events only, keeping the rows', async (t) => {
      const [leaving, staying] = [await account(), await account()]
      const session = randomUUID()
      await store.insert([
        { type: 'signup', userId: leaving, at: at(0), ...CLIENT },
        { type: 'login', userId: leaving, at: at(1), sessionId: session, ...CLIENT },
        { type: 'login', userId: staying, at: at(1), sessionId: randomUUID(), ...CLIENT }
      ])
      const before = (await store.list({ userId: leaving, limit: 10 })).events
      await store.forgetClientDetails(leaving)
      const after = (await store.list({ userId: leaving, limit: 10 })).events
      t.same(after, before.map((event) => ({ ...event, ip: null, userAgent: null })), 'same rows, same ids, user and session; no address, no user agent')
      t.same((await store.list({ userId: staying, limit: 10 })).events.map((event) => [event.ip, event.userAgent]), [[CLIENT.ip, CLIENT.userAgent]],
        'another user\'s events keep theirs')
      await store.forgetClientDetails(randomUUID())
      t.pass('a user without events is no error')
    })

    // Pruning reaches every user's events: the prune tests share a database of their own, so the counts are exactly theirs.
    let prunable: Promise<DatabaseHandle> | undefined
    const pruneDatabase = () => (prunable ??= testDatabase(t, { real: onServer, fresh: true }))

    t.test('prune deletes only what is older, in batches, and answers how many', async (t) => {
      const own = await pruneDatabase()
      const pruner = new SecurityEventStore(own.db)
      // An account's: the test reads the user agents back (an id no account has would lose them).
      const user = (await new UserRepository(own.db).create(`prune-${randomUUID()}@example.com`, 'not a real hash'))!.id
      const cutoff = at(10_000)
      // 2500 old events (more than two batches of 1000), in five inserts.
      for (let i = 0; i < 5; i++) {
        await pruner.insert(range(1, 500).map((n) => ({ type: 'login' as const, userId: user, at: at((n * 7 + i) % 10_000), ip: '203.0.113.7' })))
      }
      await pruner.insert([
        { type: 'login', userId: user, at: cutoff, userAgent: 'at the cutoff' },
        { type: 'logout', userId: user, at: at(20_000), userAgent: 'newer' },
        { type: 'login_failed', userId: null, at: at(30_000), userAgent: 'newer' }
      ])
      t.equal(await pruner.prune(cutoff), 2500, '2500 deleted')
      const left = await own.db.select({ userAgent: securityEvents.userAgent }).from(securityEvents)
      t.same(left.map((row) => row.userAgent).sort(), ['at the cutoff', 'newer', 'newer'], 'the newer ones stay, and the one exactly at the cutoff')
      t.equal(await pruner.prune(cutoff), 0, 'nothing left to prune')
    })

    t.test('two prunes at once delete each old event once, and all of them together', async (t) => {
      const own = await pruneDatabase()
      const pruner = new SecurityEventStore(own.db)
      const user = randomUUID()
      for (let i = 0; i < 3; i++) await pruner.insert(range(1, 800).map((n) => ({ type: 'login' as const, userId: user, at: at(n - 1000) })))
      await pruner.insert([{ type: 'logout', userId: user, at: at(5000) }])
      const counts = await Promise.all([pruner.prune(at(0)), pruner.prune(at(0))])
      t.equal(counts[0] + counts[1], 2400, `${counts.join(' + ')}: every old event counted once`)
      const left = await own.db.select({ type: securityEvents.type }).from(securityEvents).where(eq(securityEvents.userId, user))
      t.same(left, [{ type: 'logout' }])
    })

    t.test('property: walking every page gives exactly the user\'s events, in order, while newer ones arrive', async (t) => {
      await pagingProperty(t, database, store)
    })
  })
}

// ---------------------------------------------------------------------------
// The paging property

const PROPERTY_SEED = 20_310_417
const PROPERTY_RUNS = 60

/*
 * Times few enough to collide often, and apart by one millisecond, one second
 * and more: a cursor that dropped the id, compared with <= instead of <,
 * truncated to seconds or compared ids as text would each lose, repeat or
 * misorder an event of some run.
 */
const OFFSETS = [0, 1, 2, 999, 1000, 1001, 60_000]

const pagingScenario = fc.record({
  users: fc.integer({ min: 2, max: 3 }),
  // Half the events at one time: pages often end inside a tie.
  events: fc.array(fc.record({ user: fc.nat(2), offset: fc.oneof(fc.constant(0), fc.constantFrom(...OFFSETS)) }), { maxLength: 30, size: 'medium' }),
  // Several inserts: ids then follow neither the times nor one batch's order.
  inserts: fc.integer({ min: 1, max: 3 }),
  limit: fc.integer({ min: 1, max: 7 }),
  // Inserted after each page read (the i-th list after the i-th page): newer than everything, or as new with higher ids.
  arrivals: fc.array(fc.array(fc.record({ user: fc.nat(2), later: fc.constantFrom(0, 1, 1000) }), { maxLength: 3 }), { maxLength: 10 })
})

async function pagingProperty (t: Test, database: DatabaseHandle, store: SecurityEventStore): Promise<void> {
  let walks = 0
  let walksWithArrivals = 0
  let crossedTies = 0
  await fc.assert(fc.asyncProperty(pagingScenario, async ({ users: userCount, events, inserts, limit, arrivals }) => {
    const users = Array.from({ length: userCount }, () => randomUUID())
    const userOf = (index: number): string => users[index % userCount]!
    const records: TimedSecurityEventRecord[] = events.map((event, i) => ({ type: 'login', userId: userOf(event.user), at: at(event.offset), userAgent: `e-${i}` }))
    const size = Math.ceil(records.length / inserts)
    for (let i = 0; i < records.length; i += size) await store.insert(records.slice(i, i + size))
    // The latest time in the database for these users: an arrival is never older (and, at the same time, has a higher id).
    let newest = Math.max(0, ...events.map((event) => event.offset))

    for (const user of users) {
      const expected = await rowsOf(database, user)
      // Without arrivals: exactly the rows, in order.
      const still = await walk(store, user, limit)
      deepStrictEqual(positionsOf(still.events), expected)
      // With arrivals between page reads, for every user: the walk sees the events of when it started, none of the newer.
      let arrived = 0
      const moving = await walk(store, user, limit, async (pagesRead) => {
        const batch = arrivals[(pagesRead - 1) % Math.max(1, arrivals.length)] ?? []
        if (batch.length === 0) return
        arrived += batch.length
        const base = newest
        newest += Math.max(...batch.map((arrival) => arrival.later))
        await store.insert(batch.map((arrival) => ({ type: 'logout', userId: userOf(arrival.user), at: at(base + arrival.later), userAgent: 'arrival' })))
      })
      deepStrictEqual(positionsOf(moving.events), expected)
      const now = await rowsOf(database, user)
      deepStrictEqual(now.slice(now.length - expected.length), expected, 'the arrivals are all ahead of what existed')
      walks += 2
      if (arrived > 0) walksWithArrivals++
      if (still.pages.some((page, i) => i > 0 && page[0] !== undefined && still.pages[i - 1]!.at(-1)!.at.getTime() === page[0].at.getTime())) crossedTies++
    }
  }), { seed: PROPERTY_SEED, numRuns: PROPERTY_RUNS })
  t.pass(`${PROPERTY_RUNS} runs (seed ${PROPERTY_SEED}), ${walks} walks: every event once, in order`)
  t.ok(walksWithArrivals > 10, `${walksWithArrivals} walks had newer events inserted while they went`)
  t.ok(crossedTies > 10, `${crossedTies} walks had a page boundary inside a tie: the case a broken cursor gets wrong`)
}
