/** Roles (API.md, "Roles and administration"): names stored with the user and copied into access tokens. */

/** The role of the accounts that may use the /admin routes; at least one enabled account keeps it. */
export const ADMIN_ROLE = 'admin'

/** At most this many roles per user: they travel in every access token. */
export const MAX_ROLES = 32

/** What a role name may be: short, lower-case, safe in a URL, a log line and a claim. */
export const ROLE_NAME_PATTERN = '^[a-z][a-z0-9_-]{0,31}$'

const ROLE_NAME = new RegExp(ROLE_NAME_PATTERN)

/** Whether a value (a token's claim, a feed's message) is a list of names. */
export function isRoleList (value: unknown): value is string[] {
  return Array.isArray(value) && value.every((role) => typeof role === 'string')
}

export function isRoleName (name: string): boolean {
  return ROLE_NAME.test(name)
}

/** A set of roles as it is stored and issued: unique and sorted, so equal sets compare equal. */
export function normalizeRoles (roles: Iterable<string>): string[] {
  return [...new Set(roles)].sort()
}

/** Whether `held` (a token's roles claim) includes every role of `required`. */
export function hasRoles (held: readonly string[] | undefined, required: readonly string[]): boolean {
  if (held === undefined) return required.length === 0
  for (const role of required) {
    if (!held.includes(role)) return false
  }
  return true
}

export function sameRoles (a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((role, index) => role === b[index])
}
