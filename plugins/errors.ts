import type { Socket } from 'node:net'
import type { FastifyError, FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { ServiceError } from '../src/errors.js'
import { RateLimitedError } from '../src/rate-limited.js'

/**
 * Every error leaves in the one shape of API.md: Fastify's own (validation,
 * malformed JSON, body size, content type) are mapped into the catalogue, and
 * anything unexpected becomes a logged 500 that reveals nothing.
 */
function toServiceError (error: FastifyError): ServiceError {
  if (error instanceof ServiceError) return error
  if (error.validation !== undefined) return new ServiceError('VALIDATION_ERROR', error.message)
  switch (error.statusCode) {
    case 404: return new ServiceError('NOT_FOUND')
    case 413: return new ServiceError('PAYLOAD_TOO_LARGE')
    case 415: return new ServiceError('UNSUPPORTED_MEDIA_TYPE')
    case 429: return new ServiceError('RATE_LIMITED', error.message)
    case 503: return new ServiceError('STORE_UNAVAILABLE', error.message)
  }
  if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500) {
    // Malformed JSON, an empty JSON body, a bad Content-Length and the like.
    return new ServiceError('VALIDATION_ERROR', error.message)
  }
  return new ServiceError('INTERNAL_ERROR')
}

/**
 * Requests Node's HTTP parser refuses before Fastify sees them (a malformed
 * request line or header, headers over 16 KiB, a request too slow to arrive)
 * get the one shape too, as 400 VALIDATION_ERROR, and their connection is closed.
 */
export function clientErrorHandler (this: FastifyInstance, error: Error & { code?: string }, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return
  const message = error.code === 'HPE_HEADER_OVERFLOW'
    ? 'The request headers are too large'
    : error.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'The request took too long to arrive' : 'Malformed HTTP request'
  const body = JSON.stringify(new ServiceError('VALIDATION_ERROR', message).toJSON())
  this.log.debug({ code: error.code }, 'client error')
  if (socket.writable) {
    socket.write('HTTP/1.1 400 Bad Request\r\nContent-Type: application/json; charset=utf-8\r\n' +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`)
  }
  socket.destroy(error)
}

async function errorsPlugin (fastify: FastifyInstance): Promise<void> {
  fastify.setErrorHandler(async (error: FastifyError, request, reply) => {
    const serviceError = toServiceError(error)
    if (serviceError.statusCode >= 500) {
      request.log.error({ err: error.cause ?? error, code: serviceError.code }, 'request failed')
    } else {
      request.log.debug({ code: serviceError.code }, serviceError.message)
    }
    // API.md: a 429 always says when to come back.
    if (serviceError instanceof RateLimitedError) reply.header('retry-after', serviceError.retryAfterSeconds)
    else if (serviceError.code === 'RATE_LIMITED' && !reply.hasHeader('retry-after')) reply.header('retry-after', 1)
    return reply.code(serviceError.statusCode).send(serviceError.toJSON())
  })

  fastify.setNotFoundHandler(async () => {
    throw new ServiceError('NOT_FOUND', 'No such route')
  })
}

export default fp(errorsPlugin, { name: 'errors' })
