import { buildApp } from './app.js'
import { ConfigError, loadConfig } from './config.js'
import { DatabaseInUseError } from './database.js'
import { ServiceError } from './errors.js'
import { isRoleName } from './roles.js'
import type { AdminActor } from './sessions.js'
import type { AccessChange, User } from './users.js'

/*
 * `npm run admin -- <command> <email> [role]`: what an admin does, for the
 * first admin and for when no admin can log in. It builds the service as the
 * server does (same configuration, same code: the change is recorded as a
 * security event, and with REDIS_URL every running instance hears of it) and
 * exits without listening.
 */

const USAGE = `Usage: npm run admin -- <command> <email> [role]

  grant-role <email> <role>   give the account a role (the first admin: grant-role <email> admin)
  revoke-role <email> <role>  take a role away; its access tokens are refused within a second
  disable <email>             the account can no longer log in or refresh; every session ends
  enable <email>              the account can log in again

It uses the service's configuration: DATABASE_URL (or the embedded database in
DATA_DIR, while the service is stopped) and REDIS_URL.
`

/** What the command line names with its arguments: the change to make, or why it cannot. */
function changeOf (command: string | undefined, role: string | undefined): ((user: User) => AccessChange) | string {
  switch (command) {
    case 'grant-role':
    case 'revoke-role': {
      if (role === undefined || !isRoleName(role)) return `${command} needs a role name: a lower-case letter, then up to 31 of a-z, 0-9, _ and -`
      return command === 'grant-role'
        ? (user) => ({ roles: [...user.roles, role] })
        : (user) => ({ roles: user.roles.filter((held) => held !== role) })
    }
    case 'disable':
    case 'enable':
      if (role !== undefined) return `${command} takes an email only`
      return () => ({ disabled: command === 'disable' })
    default:
      return command === undefined ? 'no command given' : `unknown command: ${command}`
  }
}

/** Recorded as the actor's user agent: who did it, where no account did. */
const CLI_ACTOR: AdminActor = { id: null, ip: null, userAgent: 'npm run admin' }

async function main (args: string[]): Promise<number> {
  const [command, email, role, ...rest] = args
  const change = changeOf(command, role)
  if (typeof change === 'string' || email === undefined || rest.length > 0) {
    process.stderr.write(`${typeof change === 'string' ? change : 'wrong number of arguments'}\n\n${USAGE}`)
    return 2
  }
  let app
  try {
    const config = loadConfig()
    // Quiet unless asked: the answer is the one line below.
    app = await buildApp({ config, logger: { level: process.env.LOG_LEVEL ?? 'warn' } })
  } catch (error) {
    if (error instanceof ConfigError) process.stderr.write(`Invalid configuration: ${error.message}\n`)
    else if (error instanceof DatabaseInUseError) process.stderr.write(`Cannot run: ${error.message}\n`)
    // A database or Redis that cannot be reached, say: one line, not a stack.
    else process.stderr.write(`Cannot run: ${error instanceof Error ? error.message : String(error)}\n`)
    return 1
  }
  try {
    const user = await app.admin.findByEmail(email)
    const changed = await app.admin.updateUser(user.id, change, CLI_ACTOR)
    process.stdout.write(`${changed.email}: roles [${changed.roles.join(', ')}], ${changed.disabled ? 'disabled' : 'enabled'}\n`)
    if (app.config.databaseUrl !== undefined && app.config.redisUrl === undefined) {
      process.stdout.write('REDIS_URL is unset: a service running now sees the change at its next login of the account, ' +
        'but keeps what it remembers of the account for refreshes until it restarts.\n')
    }
    return 0
  } catch (error) {
    if (!(error instanceof ServiceError)) throw error
    process.stderr.write(`${error.code === 'NOT_FOUND' ? `${email}: no account has this email` : error.message}\n`)
    return 1
  } finally {
    // Writes the security events, and closes the database and Redis.
    await app.close()
  }
}

process.exitCode = await main(process.argv.slice(2))
