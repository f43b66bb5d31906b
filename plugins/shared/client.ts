import type { FastifyRequest } from 'fastify'
import type { ClientInfo } from '../../src/sessions.js'

/** User agents are kept (sessions, security events) to this length. */
const MAX_USER_AGENT_LENGTH = 256

/** Who sent the request, as sessions and security events keep it: the client address (TRUST_PROXY applied) and the user agent. */
export function clientOf (request: FastifyRequest): ClientInfo {
  return { ip: request.ip, userAgent: (request.headers['user-agent'] ?? '').slice(0, MAX_USER_AGENT_LENGTH) }
}
