import { inspect } from 'node:util'
import Fastify from 'fastify'
import { ReplyError } from 'ioredis'
import t from 'tap'
import type { Test } from 'tap'
import { ServiceError, describeStoreError, storeUnavailable } from '../../src/errors.js'
import { skipUnless, testRedis } from '../helpers.js'

/*
 * A store's error as it reaches the log: its message, name, code and the name
 * of the failed command, never the values the command carried.
 */

const SECRETS = ['token-hash-secret', 'sealed-successor-secret', '203.0.113.77', 'LeakCanary/1.0 (unique-ua-string)']

const logged: string[] = []
/** The service's logger (pino, with its error serializer), writing here. */
const { log } = Fastify({ logger: { stream: { write: (line: string) => { logged.push(line) } } } })

/** The error every way it may be written out: JSON, util.inspect, and a log line. */
function renderings (error: Error): string[] {
  logged.length = 0
  log.error({ err: error }, 'request failed')
  return [JSON.stringify(error), inspect(error, { depth: Infinity }), ...logged]
}

function assertNoSecret (t: Test, error: Error): void {
  for (const rendering of renderings(error)) {
    for (const secret of SECRETS) t.notOk(rendering.includes(secret), `${secret} not in ${rendering.slice(0, 40)}…`)
  }
}

/** An ioredis reply error as the client rejects a command with: the command and its arguments attached. */
function replyError (message: string, name: string, args: string[]): Error {
  return Object.assign(new ReplyError(message), { command: { name, args } })
}

t.test('a reply error: message, name and command name kept, arguments dropped', async (t) => {
  const message = 'WRONGTYPE Operation against a key holding the wrong kind of value script: 4688a0f6, on @user_script:5.'
  const error = replyError(message, 'evalsha', ['4688a0f6', '1', 'auth:session:{id}', ...SECRETS])
  t.ok(renderings(error).some((rendering) => rendering.includes(SECRETS[0]!)), 'the raw error would leak')

  const described = describeStoreError(error)
  t.match(described, { name: 'ReplyError', message, command: 'evalsha' })
  t.notOk('args' in described)
  assertNoSecret(t, described)
})

t.test('storeUnavailable keeps only the description as its cause', async (t) => {
  const error = storeUnavailable(replyError('ERR Error running script', 'eval', SECRETS))
  t.ok(error instanceof ServiceError && error.code === 'STORE_UNAVAILABLE')
  t.match(error.cause, { message: 'ERR Error running script', command: 'eval' })
  assertNoSecret(t, error)
  assertNoSecret(t, error.cause as Error)
})

t.test('an aborted transaction: each previous error described, without its arguments', async (t) => {
  const execAbort = Object.assign(replyError('EXECABORT Transaction discarded because of previous errors.', 'exec', []), {
    previousErrors: [replyError("ERR wrong number of arguments for 'hset' command", 'hset', SECRETS)]
  })
  const described = describeStoreError(execAbort)
  t.match(described, {
    message: 'EXECABORT Transaction discarded because of previous errors.',
    command: 'exec',
    previousErrors: [{ name: 'ReplyError', message: "ERR wrong number of arguments for 'hset' command", command: 'hset' }]
  })
  assertNoSecret(t, described)
})

t.test('Redis quoting the arguments of a command it does not know: the quote is cut', async (t) => {
  const described = describeStoreError(replyError(
    `ERR unknown command 'evalsha', with args beginning with: '${SECRETS[0]}' '${SECRETS[1]}' `, 'evalsha', SECRETS))
  t.equal(described.message, "ERR unknown command 'evalsha'")
  assertNoSecret(t, described)
})

t.test('a Cluster that tried every node: its last node\'s error described too; codes kept', async (t) => {
  const lastNodeError = replyError('CLUSTERDOWN The cluster is down', 'evalsha', SECRETS)
  const allFailed = Object.assign(new Error('Failed to refresh slots cache.'), { name: 'ClusterAllFailedError', lastNodeError })
  const described = describeStoreError(allFailed)
  t.match(described, { name: 'ClusterAllFailedError', lastNodeError: { message: 'CLUSTERDOWN The cluster is down', command: 'evalsha' } })
  assertNoSecret(t, described)

  const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED', address: '127.0.0.1' })
  t.strictSame({ ...describeStoreError(refused) }, { name: 'Error', code: 'ECONNREFUSED' })
  t.equal(describeStoreError('not an error').message, 'store operation failed')
})

t.test('errors from a real Redis', { skip: skipUnless({ redis: true }) }, async (t) => {
  const { redis, prefix } = await testRedis(t)
  const key = `${prefix}not-a-hash`
  await redis.set(key, 'a string')
  const script = await redis.eval("return redis.call('HGET', KEYS[1], ARGV[1])", 1, key, SECRETS[0]!).catch((error: unknown) => error)
  t.match(script, { command: { args: [String, '1', key, SECRETS[0]] } }, 'ioredis attaches the arguments')
  t.match(describeStoreError(script), { message: /^WRONGTYPE/, command: 'eval' })
  assertNoSecret(t, describeStoreError(script))

  const aborted = await redis.multi().call('no-such-command', SECRETS[1]!).hset(key, 'f', SECRETS[2]!).exec().catch((error: unknown) => error)
  t.match(aborted, { previousErrors: [{ command: { args: [SECRETS[1]] } }] }, 'and to the errors of an aborted transaction')
  t.match(describeStoreError(aborted), { message: /^EXECABORT/, previousErrors: [{ message: "ERR unknown command 'no-such-command'", command: 'no-such-command' }] })
  assertNoSecret(t, describeStoreError(aborted))
})
