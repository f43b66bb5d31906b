import type { FastifyContextConfig } from 'fastify'
import { isRoleName } from '../../src/roles.js'
import { isDocsRoute } from './docs.js'

/**
 * Who may call a route, as the route declares it where it is declared:
 * `config: { public: true }`, `config: { roles: [...] }` (an access token with
 * every role listed), or nothing (any valid access token).
 */
export type RouteAccess =
  | { kind: 'public' }
  | { kind: 'authenticated' }
  | { kind: 'roles', roles: readonly string[] }

/**
 * A route's access from its declaration. Throws (and so stops the app
 * from starting) on one that contradicts itself: public and role-gated at
 * once, or an empty or malformed list of roles.
 */
export function routeAccessOf (url: string, config: FastifyContextConfig | undefined): RouteAccess {
  const roles = config?.roles
  if (roles !== undefined) {
    if (config?.public === true) throw new Error(`route ${url}: public and role-gated at once`)
    if (roles.length === 0 || !roles.every(isRoleName)) throw new Error(`route ${url}: config.roles must list role names`)
    return { kind: 'roles', roles }
  }
  return config?.public === true || isDocsRoute(url) ? { kind: 'public' } : { kind: 'authenticated' }
}

/** How the OpenAPI document says which roles a route requires. */
export function describeRoles (roles: readonly string[]): string {
  return `Requires an access token with the role${roles.length > 1 ? 's' : ''} ${roles.map((role) => `\`${role}\``).join(', ')} ` +
    '(403 `FORBIDDEN` without it).'
}
