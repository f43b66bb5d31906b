import { join } from 'node:path'
import type { ConnectionOptions } from 'node:tls'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { MailQueue, createMailTransport, describeMailError } from '../src/mail.js'
import { composeMail, type MailTemplate } from '../src/mail-templates.js'

/** Mail as the rest of the app sends it: queued, never awaited, never failing the caller. */
export interface Mailer {
  send (to: string, template: MailTemplate): void
  /** Resolves when every mail sent so far is delivered or given up (tests, and nothing else, wait for mail). */
  flush (): Promise<void>
  /** Mails queued, being sent or waiting for a retry. */
  readonly pending: number
}

declare module 'fastify' {
  interface FastifyInstance {
    mail: Mailer
  }
}

export interface MailPluginOptions {
  redisKeyPrefix?: string
  /** The waits before each new attempt of a failed send (src/mail.ts has the defaults); tests shorten them. */
  retryDelaysMs?: number[]
  linkMailsPerRecipientPerHour?: number
  /** Extra TLS options for SMTP: tests trust their self-signed certificate with them. */
  tls?: ConnectionOptions
}

/**
 * Mail (src/mail.ts) over SMTP_URL, or into DATA_DIR/outbox/ as .eml files
 * without it. The throttle of link mails per recipient is counted in Redis
 * when the app has it, so every instance shares it. What is queued when the
 * app closes gets one last attempt before Redis (registered earlier) closes.
 */
async function mailPlugin (fastify: FastifyInstance, options: MailPluginOptions): Promise<void> {
  const { config, metrics, log } = fastify
  const outboxDir = join(config.dataDir, 'outbox')
  const transport = createMailTransport({ smtpUrl: config.smtpUrl, outboxDir, tls: options.tls })
  const queue = new MailQueue({
    transport,
    from: config.mailFrom,
    throttle: {
      redis: fastify.hasDecorator('redis') ? fastify.redis : undefined,
      prefix: `${options.redisKeyPrefix ?? config.redisKeyPrefix}mail-throttle:`,
      perHour: options.linkMailsPerRecipientPerHour
    },
    retryDelaysMs: options.retryDelaysMs,
    // Never an address, a link or a body: the kind says which mail, the outbox path where to read it.
    observer: {
      sent (kind, outboxPath) {
        metrics.mail(kind, 'sent')
        if (outboxPath !== undefined) log.info({ kind, outboxPath }, 'mail written to the outbox (SMTP_URL is not set)')
        else log.debug({ kind }, 'mail sent')
      },
      failed (kind, error, attempt, final) {
        metrics.mail(kind, final ? 'failed' : 'retried')
        if (final) log.warn({ kind, attempt, err: describeMailError(error) }, 'mail not sent: given up')
        else log.warn({ kind, attempt, err: describeMailError(error) }, 'mail not sent: will retry')
      },
      throttled (kind) {
        metrics.mail(kind, 'throttled')
        log.info({ kind }, 'mail dropped: its recipient had too many links this hour')
      }
    }
  })
  if (config.smtpUrl === undefined) log.info({ outboxDir }, 'mail: SMTP_URL is not set, mail is written to the outbox')
  metrics.watch({ mailPending: () => queue.pending })
  fastify.addHook('onClose', async () => {
    await queue.close()
  })

  const mailer: Mailer = {
    send (to, template) {
      try {
        queue.enqueue({ ...composeMail(template), to, kind: template.kind })
      } catch (error) {
        // Cannot happen with a valid template; if it does, the caller's answer must still not change.
        metrics.mail(template.kind, 'failed')
        log.error({ kind: template.kind, err: describeMailError(error) }, 'mail not composed')
      }
    },
    flush: () => queue.flush(),
    get pending () {
      return queue.pending
    }
  }
  fastify.decorate('mail', mailer)
}

export default fp(mailPlugin, { name: 'mail', dependencies: ['config', 'redis', 'metrics'] })
