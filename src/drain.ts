import type { Server, ServerResponse } from 'node:http'

export interface DrainOptions {
  /** The drain ends once nothing has been in flight or arrived for this long (ms)... */
  quietMs: number
  /** ...or after this long (ms) in any case. */
  maxMs: number
}

export interface Drain {
  /** Switches to draining and resolves when the traffic has stopped (or maxMs has passed). */
  drain(options: DrainOptions): Promise<void>
}

/**
 * Graceful shutdown's first step, for a server that is still listening.
 * While draining, every answer carries `Connection: close` (so no client
 * reuses a connection that is about to go), and the caller waits until no
 * request is in flight or arriving before it stops listening: requests
 * already on their way (sent, or queued in the accept backlog) are served
 * instead of being cut off with a reset.
 */
export function trackRequests (server: Server): Drain {
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

  return {
    async drain ({ quietMs, maxMs }) {
      draining = true
      for (const response of inFlight) if (!response.headersSent) response.shouldKeepAlive = false
      // Connections idle between requests will not be reused: close them now.
      server.closeIdleConnections()
      const deadline = Date.now() + maxMs
      while (Date.now() < deadline && (inFlight.size > 0 || Date.now() - lastActivity < quietMs)) {
        await new Promise((resolve) => setTimeout(resolve, Math.min(50, quietMs)))
        server.closeIdleConnections()
      }
    }
  }
}
