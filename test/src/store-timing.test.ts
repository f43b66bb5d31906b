import t from 'tap'
import { ServiceError } from '../../src/errors.js'
import { timedQuery, withTiming } from '../../src/store-timing.js'

/*
 * The timing every store operation reports to the metrics (src/store-timing.ts):
 * each call is counted once with its outcome, and wrapping a store changes
 * nothing else about it.
 */

class CountingStore {
  #calls = 0
  async add (by: number): Promise<number> {
    this.#calls += by
    return this.#calls
  }

  async fail (): Promise<never> {
    throw new Error('connection lost')
  }

  get calls (): number {
    return this.#calls
  }

  describe (): string {
    return `${this.#calls} calls`
  }
}

t.test('withTiming reports each listed operation once, with whether it failed, and stays the same store', async (t) => {
  const reports: Array<[string, boolean]> = []
  const original = new CountingStore()
  const store = withTiming(original, ['add', 'fail'], (operation, seconds, failed) => {
    t.ok(seconds >= 0 && Number.isFinite(seconds), `${operation}: a duration in seconds`)
    reports.push([operation, failed])
  })
  t.equal(await store.add(2), 2, 'answers as the original')
  await t.rejects(store.fail(), { message: 'connection lost' }, 'fails as the original, with its error')
  t.strictSame(reports, [['add', false], ['fail', true]])
  t.equal(store.calls, 2, 'a getter reads the original\'s private state')
  t.equal(store.describe(), '2 calls', 'an operation not listed works, untimed')
  t.equal(reports.length, 2)
  t.ok(store instanceof CountingStore, 'still an instance of its class')

  // A stand-in put on the original (as tests do to make one call fail) is what callers get.
  const real = store.add.bind(store)
  original.add = async () => { original.add = real; throw new Error('stand-in') }
  await t.rejects(store.add(1), { message: 'stand-in' })
  t.equal(await store.add(1), 3, 'and the stand-in can put the timed operation back')
  t.strictSame(reports.at(-1), ['add', false])
})

t.test('timedQuery reports the query and turns its failure into STORE_UNAVAILABLE, quoting no value', async (t) => {
  const reports: Array<[string, boolean]> = []
  const timing = (operation: string, _seconds: number, failed: boolean): void => { reports.push([operation, failed]) }
  t.equal(await timedQuery(timing, 'userById', async () => 'row'), 'row')
  const failure = Object.assign(new Error('duplicate key value violates unique constraint'), { code: '23505', detail: 'Key (email)=(ada@example.com) exists' })
  const error = await timedQuery(timing, 'createUser', async () => { throw failure }).catch((caught: unknown) => caught)
  t.ok(error instanceof ServiceError && error.code === 'STORE_UNAVAILABLE', 'STORE_UNAVAILABLE')
  t.notMatch(JSON.stringify((error as Error).cause), /ada@example\.com/, 'the cause keeps no value of the row')
  t.strictSame(reports, [['userById', false], ['createUser', true]])
  t.equal(await timedQuery(undefined, 'untimed', async () => 1), 1, 'timing is optional')
})
