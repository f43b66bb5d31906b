import { hashSync, verifySync, type Options } from '@node-rs/argon2'

export type PasswordTask =
  | { op: 'hash', password: string, options: Options }
  | { op: 'verify', passwordHash: string, password: string }

/**
 * One argon2 computation, in a hashing thread of passwords.ts's pool (a
 * Piscina worker of lowered priority). A hash that cannot be read verifies
 * as false.
 */
export default function runPasswordTask (task: PasswordTask): string | boolean {
  if (task.op === 'hash') return hashSync(task.password, task.options)
  try {
    return verifySync(task.passwordHash, task.password)
  } catch {
    return false
  }
}
