import { hashSync, verifySync, type Options } from '@node-rs/argon2'

export type PasswordTask =
  | { op: 'hash', password: string, options: Options }
  | { op: 'verify', passwordHash: string, password: string }

/** A task's result, and when a thread started it (ms since the epoch, sub-millisecond: comparable across threads). */
export interface PasswordTaskResult {
  value: string | boolean
  startedAt: number
}

const timeNow = (): number => performance.timeOrigin + performance.now()

/**
 * One argon2 computation, in a hashing thread of passwords.ts's pool (a
 * Piscina worker of lowered priority). A hash that cannot be read verifies
 * as false.
 */
export default function runPasswordTask (task: PasswordTask): PasswordTaskResult {
  const startedAt = timeNow()
  if (task.op === 'hash') return { value: hashSync(task.password, task.options), startedAt }
  try {
    return { value: verifySync(task.passwordHash, task.password), startedAt }
  } catch {
    return { value: false, startedAt }
  }
}
