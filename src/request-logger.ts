import type { FastifyBaseLogger } from 'fastify'

type Bindings = Parameters<FastifyBaseLogger['child']>[0]
type ChildLoggerOptions = NonNullable<Parameters<FastifyBaseLogger['child']>[1]>

type Level = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace'
type LogArguments = [unknown, ...unknown[]]

interface LevelAwareLogger extends FastifyBaseLogger {
  isLevelEnabled(level: string): boolean
}

/**
 * A request's logger that becomes a real child of the app's logger (pino)
 * only when something is logged at an enabled level. Making a pino child
 * serializes its bindings through the redaction, whose wildcard paths cost
 * about 5% of a `/users/me` request, and at the usual levels (info and up)
 * most requests log nothing of their own.
 */
class LazyChildLogger implements FastifyBaseLogger {
  #child: FastifyBaseLogger | undefined

  constructor (private readonly parent: LevelAwareLogger, private readonly bindings: Bindings) {}

  get level (): string {
    return this.#child?.level ?? this.parent.level
  }

  set level (level: string) {
    this.#materialized().level = level
  }

  fatal (...args: LogArguments): void { this.#log('fatal', args) }
  error (...args: LogArguments): void { this.#log('error', args) }
  warn (...args: LogArguments): void { this.#log('warn', args) }
  info (...args: LogArguments): void { this.#log('info', args) }
  debug (...args: LogArguments): void { this.#log('debug', args) }
  trace (...args: LogArguments): void { this.#log('trace', args) }
  silent (): void {}

  child (bindings: Bindings, options?: ChildLoggerOptions): FastifyBaseLogger {
    return this.#materialized().child(bindings, options)
  }

  #log (level: Level, args: LogArguments): void {
    if (this.#child === undefined && !this.parent.isLevelEnabled(level)) return
    (this.#materialized()[level] as (...args: LogArguments) => void)(...args)
  }

  #materialized (): FastifyBaseLogger {
    this.#child ??= this.parent.child(this.bindings)
    return this.#child
  }
}

/**
 * Fastify's `childLoggerFactory`: a lazy child, unless the route asks for
 * options of its own (a log level, say) or the logger is not pino.
 */
export function lazyChildLogger (logger: FastifyBaseLogger, bindings: Bindings, options: ChildLoggerOptions): FastifyBaseLogger {
  const parent = logger as Partial<LevelAwareLogger> & FastifyBaseLogger
  if (typeof parent.isLevelEnabled !== 'function' || Object.keys(options).length > 0) return logger.child(bindings, options)
  return new LazyChildLogger(parent as LevelAwareLogger, bindings)
}
