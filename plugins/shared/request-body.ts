import type { FastifyRequest } from 'fastify'
import { normalizeEmail } from '../../src/users.js'

/** Emails are compared trimmed and lower-cased; normalize before the schema's format check (preValidation). */
export async function normalizeEmailField (request: FastifyRequest): Promise<void> {
  const body = request.body as { email?: unknown, newEmail?: unknown } | undefined
  if (typeof body?.email === 'string') body.email = normalizeEmail(body.email)
  if (typeof body?.newEmail === 'string') body.newEmail = normalizeEmail(body.newEmail)
}

/** A route whose body is optional may be sent with none at all; a JSON `null` is a body, and invalid (preValidation). */
export async function defaultToEmptyBody (request: FastifyRequest): Promise<void> {
  if (request.body === undefined) request.body = {}
}
