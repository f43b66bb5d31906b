import type { ServerResponse } from 'node:http'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'

export interface DrainOptions {
  /** The drain ends once nothing has been in flight or arrived for this long (ms)... */
  quietMs: number
  /** ...or after this long (ms) in any case. */
  maxMs: number
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Graceful shutdown's first step: switches to draining and resolves when the traffic has stopped (or maxMs has passed). */
    drain(options: DrainOptions): Promise<void>
  }
}

/**
 * For a server that is still listening when shutdown starts. While draining,
 * every answer carries `Connection: close` (so no client reuses a connection
 * that is about to go), and the caller waits until no request is in flight or
 * arriving before it stops listening: requests already on their way (sent, or
 * queued in the accept backlog) are served instead of being cut off with a
 * reset. close-with-grace and Fastify's close stop listening first, so they
 * cannot do this part.
 */
async function drainPlugin (fastify: FastifyInstance): Promise<void> {
  const { server } = fastify
  const inFlight = new Set<ServerResponse>()
  let lastActivity = Date.now()
  let draining = false

  // One shared listener, not a closure per request: this runs on every request.
  function settled (this: ServerResponse): void {
    inFlight.delete(this)
    lastActivity = Date.now()
  }

  server.on('request', (_request, response: ServerResponse) => {
    lastActivity = Date.now()
    if (draining) response.shouldKeepAlive = false
    inFlight.add(response)
    response.on('close', settled)
  })

  fastify.decorate('drain', async function drain ({ quietMs, maxMs }: DrainOptions) {
    draining = true
    for (const response of inFlight) if (!response.headersSent) response.shouldKeepAlive = false
    // Connections idle between requests will not be reused: close them now.
    server.closeIdleConnections()
    const deadline = Date.now() + maxMs
    while (Date.now() < deadline && (inFlight.size > 0 || Date.now() - lastActivity < quietMs)) {
      await new Promise((resolve) => setTimeout(resolve, Math.min(50, quietMs)))
      server.closeIdleConnections()
    }
  })
}

export default fp(drainPlugin, { name: 'drain' })
