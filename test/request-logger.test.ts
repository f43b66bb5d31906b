import { Writable } from 'node:stream'
import Fastify, { type FastifyBaseLogger } from 'fastify'
import t from 'tap'
import { lazyChildLogger } from '../src/request-logger.js'

/*
 * The request logger (Fastify's childLoggerFactory): a pino child made only
 * when a line is written, with the same lines as an eager child.
 */

function capture (): { stream: Writable, lines: () => Array<Record<string, unknown>> } {
  const written: string[] = []
  const stream = new Writable({ write (chunk, _encoding, callback) { written.push(String(chunk)); callback() } })
  return { stream, lines: () => written.join('').split('\n').filter(Boolean).map((line) => JSON.parse(line)) }
}

t.test('lines at enabled levels carry the request id; lines below the level cost no child', async (t) => {
  const { stream, lines } = capture()
  const app = Fastify({ logger: { level: 'warn', stream }, childLoggerFactory: lazyChildLogger, disableRequestLogging: true })
  t.teardown(() => app.close())
  const children: string[] = []
  app.get('/quiet', async (request) => {
    request.log.info('below the level')
    request.log.debug({ detail: 1 }, 'also below')
    children.push(request.log.constructor.name)
    return { level: request.log.level }
  })
  app.get('/loud', async (request) => {
    request.log.warn({ event: 'something' }, 'at the level')
    request.log.info('still below')
    request.log.error(new Error('an error'))
    const nested = request.log.child({ part: 'nested' })
    nested.warn('from a child of the request logger')
    request.log.fatal('fatal')
    request.log.trace('never')
    request.log.silent('never')
    return 'ok'
  })

  const quiet = await app.inject({ method: 'GET', url: '/quiet' })
  t.same(quiet.json(), { level: 'warn' }, 'the level is the app\'s')
  t.same(lines(), [], 'nothing written')
  t.same(children, ['LazyChildLogger'])

  const loud = await app.inject({ method: 'GET', url: '/loud', headers: { 'x-request-id': 'ignored' } })
  t.equal(loud.statusCode, 200)
  const written = lines()
  t.same(written.map((line) => line.msg), ['at the level', 'an error', 'from a child of the request logger', 'fatal'])
  const reqIds = new Set(written.map((line) => line.reqId))
  t.equal(reqIds.size, 1, 'one request id on every line')
  t.match([...reqIds][0], /^req-/)
  t.match(written[0], { level: 40, event: 'something' })
  t.match(written[2], { part: 'nested' })
})

t.test('the level can be changed per request, and a route\'s own log level gets an eager child', async (t) => {
  const { stream, lines } = capture()
  const app = Fastify({ logger: { level: 'warn', stream }, childLoggerFactory: lazyChildLogger, disableRequestLogging: true })
  t.teardown(() => app.close())
  app.get('/verbose', async (request) => {
    request.log.level = 'debug'
    request.log.debug('now enabled')
    return request.log.level
  })
  app.get('/route-level', { logLevel: 'info' }, async (request) => {
    request.log.info('the route logs at info')
    return request.log.constructor.name
  })
  t.equal((await app.inject({ method: 'GET', url: '/verbose' })).body, 'debug')
  t.not((await app.inject({ method: 'GET', url: '/route-level' })).body, 'LazyChildLogger')
  t.same(lines().map((line) => line.msg), ['now enabled', 'the route logs at info'])
  t.equal(app.log.level, 'warn', 'the app\'s level is unchanged')
})

t.test('a logger that cannot tell its enabled levels gets an eager child', async (t) => {
  const made: unknown[] = []
  const logger = {
    level: 'info',
    child (bindings: unknown) { made.push(bindings); return logger },
    fatal () {},
    error () {},
    warn () {},
    info () {},
    debug () {},
    trace () {},
    silent () {}
  } as unknown as FastifyBaseLogger
  t.equal(lazyChildLogger(logger, { reqId: 'r1' }, {}), logger)
  t.same(made, [{ reqId: 'r1' }])
})
