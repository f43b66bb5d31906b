import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'

/** What a proxy's request id may look like to be reused: nothing that could forge a log line. */
const SAFE_REQUEST_ID = /^[\w.:-]{1,128}$/

/**
 * Request ids: a random UUID (unique across instances), or, behind a trusted
 * proxy (TRUST_PROXY), the proxy's X-Request-Id so its logs and ours line up.
 * Every answer names its id in `x-request-id`.
 */
async function requestIdPlugin (fastify: FastifyInstance): Promise<void> {
  const { trustProxy } = fastify.config
  const trustIncoming = trustProxy !== false && trustProxy !== 0
  fastify.setGenReqId((request: IncomingMessage) => {
    const incoming = request.headers['x-request-id']
    if (trustIncoming && typeof incoming === 'string' && SAFE_REQUEST_ID.test(incoming)) return incoming
    return randomUUID()
  })
  fastify.addHook('onRequest', function requestIdHeader (request, reply, done) {
    reply.header('x-request-id', request.id)
    done()
  })
}

export default fp(requestIdPlugin, { name: 'request-id', dependencies: ['config'] })
