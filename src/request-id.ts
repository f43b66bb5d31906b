import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'

/** What a proxy's request id may look like to be reused: nothing that could forge a log line. */
const SAFE_REQUEST_ID = /^[\w.:-]{1,128}$/

/**
 * Request ids for Fastify's `genReqId`: a random UUID (unique across
 * instances), or, behind a trusted proxy (TRUST_PROXY), the proxy's
 * X-Request-Id so its logs and ours line up.
 */
export function requestIdGenerator (trustProxy: boolean | number | string[]): (request: IncomingMessage) => string {
  const trustIncoming = trustProxy !== false && trustProxy !== 0
  return (request) => {
    const incoming = request.headers['x-request-id']
    if (trustIncoming && typeof incoming === 'string' && SAFE_REQUEST_ID.test(incoming)) return incoming
    return randomUUID()
  }
}
