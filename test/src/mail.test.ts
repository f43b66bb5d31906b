import { createHash } from 'node:crypto'
import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import fc from 'fast-check'
import Fastify, { type FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import configPlugin from '../../plugins/config.js'
import mailPlugin, { type MailPluginOptions } from '../../plugins/mail.js'
import metricsPlugin from '../../plugins/metrics.js'
import redisPlugin from '../../plugins/redis.js'
import { systemClock } from '../../src/clock.js'
import type { Config } from '../../src/config.js'
import {
  MailQueue, createMailTransport, describeMailError, type MailQueueObserver, type MailQueueOptions, type MailTransport, type OutgoingMail
} from '../../src/mail.js'
import { LINK_MAIL_KINDS, MAIL_KINDS, composeMail, type MailKind, type MailTemplate } from '../../src/mail-templates.js'
import { linkOf, readOutbox, startMailServer, tokenOf } from '../fixtures/mail-server.js'
import { capturedLog, skipUnless, testConfig, testRedis } from '../helpers.js'

/*
 * Mail: what each message says (src/mail-templates.ts), how it leaves
 * (src/mail.ts's transport: SMTP plain, STARTTLS with a self-signed
 * certificate, smtps, or the outbox), the queue that keeps it off the request
 * path (retries, the per-recipient throttle in process and in Redis, flush,
 * graceful close), and the plugin that wires them to the app (logs without a
 * link, metrics, the outbox of a fresh DATA_DIR). Real SMTP servers come from
 * test/fixtures/mail-server.ts.
 */

const TOKEN = 'kq3Fz1X9mJ0b4n8vR2cT6yW5uA7sD1fG3hJ5kL7zX9c'
const LINK = `https://app.example.com/reset-password#token=${TOKEN}`
const EXPIRES_AT = new Date(Date.UTC(2030, 0, 1, 0, 30))
const EXPIRES_AT_TEXT = '1 January 2030, 00:30 UTC'

/** One template of each kind (a Record: a new kind does not compile until it has a sample). */
const SAMPLES: Record<MailKind, MailTemplate> = {
  password_reset: { kind: 'password_reset', link: LINK, expiresAt: EXPIRES_AT },
  email_verification: { kind: 'email_verification', link: LINK.replace('reset-password', 'verify-email'), expiresAt: EXPIRES_AT },
  email_change: { kind: 'email_change', link: LINK.replace('reset-password', 'verify-email'), expiresAt: EXPIRES_AT, newEmail: 'new@example.com' },
  email_change_requested: { kind: 'email_change_requested', newEmail: 'new@example.com' },
  email_changed: { kind: 'email_changed', newEmail: 'new@example.com' },
  password_changed: { kind: 'password_changed', how: 'changed' },
  refresh_token_reused: { kind: 'refresh_token_reused', at: new Date(Date.UTC(2030, 5, 15, 13, 5)), ip: '203.0.113.7' },
  account_deleted: { kind: 'account_deleted' }
}

/** A composed mail of `kind` to `to`, as the plugin queues it. */
const outgoing = (kind: MailKind, to = 'someone@example.com'): OutgoingMail => ({ ...composeMail(SAMPLES[kind]), to, kind })

const occurrences = (text: string, part: string): number => text.split(part).length - 1

// ---------------------------------------------------------------------------
// composeMail

t.test('composeMail', async (t) => {
  t.test('every kind: a subject of its own, a text and an HTML part, and what to do if it was not you', async (t) => {
    const subjects = new Set<string>()
    for (const kind of MAIL_KINDS) {
      const template = SAMPLES[kind]
      t.equal(template.kind, kind, `${kind}: the sample is of its kind`)
      const { subject, text, html } = composeMail(template)
      t.ok(subject.length > 5 && subject.length < 80, `${kind}: subject "${subject}"`)
      subjects.add(subject)
      t.ok(text.length > 40, `${kind}: a text part`)
      t.match(html, /^<!doctype html>\n<html lang="en">/, `${kind}: an HTML document`)
      t.match(html, `<title>${subject}</title>`, `${kind}: titled with the subject`)
      t.match(text, /\bIf (you|this)\b/, `${kind}: says what to do if it was not the reader`)
      t.notMatch(html, /<img|<script|<style|<link|src=|url\(/i, `${kind}: no image, script, stylesheet or remote resource`)
      if (LINK_MAIL_KINDS.has(kind)) {
        const { link } = template as { link: string }
        t.equal(occurrences(text, link), 1, `${kind}: the link in the text part`)
        t.ok(occurrences(html, `href="${link}"`) >= 1, `${kind}: the link in the HTML part`)
        t.match(text, EXPIRES_AT_TEXT, `${kind}: when it expires, in UTC, in the text`)
        t.match(html, EXPIRES_AT_TEXT, `${kind}: and in the HTML`)
        // The token is in the link, and nowhere else.
        t.equal(occurrences(text, TOKEN), occurrences(text, link), `${kind}: the token only inside the link (text)`)
        t.equal(occurrences(html, TOKEN), occurrences(html, link), `${kind}: the token only inside the link (HTML)`)
        t.notMatch(subject, TOKEN, `${kind}: never in the subject`)
      } else {
        t.notMatch(text, /https?:/, `${kind}: a notice carries no link`)
      }
    }
    t.equal(subjects.size, MAIL_KINDS.length, 'each kind has its own subject')
  })

  t.test('what each notice says happened', async (t) => {
    t.match(composeMail(SAMPLES.email_change).text, 'new@example.com', 'email_change: names the new address')
    t.match(composeMail(SAMPLES.email_changed).text, 'changed to new@example.com', 'email_changed: names the new address')
    t.match(composeMail(SAMPLES.refresh_token_reused).text, '15 June 2030, 13:05 UTC', 'refresh_token_reused: when, in UTC')
    t.match(composeMail(SAMPLES.refresh_token_reused).text, '203.0.113.7', 'and from where')
    const changed = composeMail({ kind: 'password_changed', how: 'changed' })
    const reset = composeMail({ kind: 'password_changed', how: 'reset' })
    t.not(changed.subject, reset.subject, 'password_changed: a reset and a change say which')
    t.match(changed.text, 'every other session', 'a change keeps the caller signed in')
    t.match(reset.text, 'every session', 'a reset signs out everywhere')
  })

  t.test('an address or a client address is escaped in the HTML, verbatim in the text', async (t) => {
    const hostile = '"><script>alert(1)</script><img src=x onerror=alert(2)>&@evil.example'
    for (const template of [
      { kind: 'email_change', link: LINK, expiresAt: EXPIRES_AT, newEmail: hostile },
      { kind: 'email_changed', newEmail: hostile },
      { kind: 'refresh_token_reused', at: EXPIRES_AT, ip: hostile }
    ] satisfies MailTemplate[]) {
      const { text, html } = composeMail(template)
      t.notMatch(html, /<script|<img/, `${template.kind}: no markup of the value's in the HTML`)
      t.match(html, '&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;&amp;@evil.example', `${template.kind}: escaped`)
      t.match(text, hostile, `${template.kind}: the text part says it as it is`)
    }
  })

  t.test('property: no value, however written, adds markup or ends an attribute', async (t) => {
    const harmless = (template: MailTemplate): string => composeMail(template).html
    const markup = (html: string): number[] => ['<', '>', '"', "'"].map((character) => occurrences(html, character))
    const value = fc.oneof(fc.string({ unit: 'binary' }), fc.string({ unit: fc.constantFrom('<', '>', '&', '"', "'", '/', '=', 'a', ' ', '\n') }))
    fc.assert(fc.property(value, value, value, (newEmail, ip, link) => {
      const pairs: Array<[MailTemplate, MailTemplate]> = [
        [{ kind: 'email_change', link, expiresAt: EXPIRES_AT, newEmail }, { kind: 'email_change', link: 'x', expiresAt: EXPIRES_AT, newEmail: 'x' }],
        [{ kind: 'email_changed', newEmail }, { kind: 'email_changed', newEmail: 'x' }],
        [{ kind: 'refresh_token_reused', at: EXPIRES_AT, ip }, { kind: 'refresh_token_reused', at: EXPIRES_AT, ip: 'x' }]
      ]
      for (const [template, plain] of pairs) {
        if (markup(harmless(template)).join() !== markup(harmless(plain)).join()) return false
        if (!composeMail(template).text.includes(template.kind === 'refresh_token_reused' ? ip : newEmail)) return false
      }
      return true
    }))
    t.pass('the HTML has the same tags and quotes whatever the values')
  })
})

// ---------------------------------------------------------------------------
// The transport

t.test('createMailTransport', async (t) => {
  const from = 'Auth service <no-reply@localhost>'

  t.test('over plain SMTP, with the credentials of the URL', async (t) => {
    const server = await startMailServer(t)
    const transport = createMailTransport({ smtpUrl: `smtp://mailer:s3cret@127.0.0.1:${server.port}`, outboxDir: '/nonexistent' })
    t.teardown(() => transport.close())
    const mail = outgoing('password_reset', 'alice@example.com')
    t.same(await transport.send(mail, from), {}, 'no outbox path over SMTP')
    const received = await server.waitFor('alice@example.com')
    t.same(received.to, ['alice@example.com'], 'to the recipient')
    t.match(received.from, /Auth service.*<no-reply@localhost>/, 'from MAIL_FROM')
    t.equal(received.subject, mail.subject, 'the subject')
    t.equal(received.text.trim(), mail.text.trim(), 'the text part')
    t.equal(received.html.trim(), mail.html.trim(), 'the HTML part')
    t.equal(linkOf(received), LINK, 'the link survives the encoding')
    t.equal(tokenOf(received), TOKEN, 'and its token')
    t.equal(received.user, 'mailer', 'authenticated with the user of the URL')
    t.equal(received.secure, false, 'in the clear: the server offered nothing else')
    t.match(received.raw, /^Auto-Submitted: auto-generated\r?$/m, 'marked as machine-sent')
  })

  t.test('over STARTTLS, verifying the certificate', async (t) => {
    const server = await startMailServer(t, { tls: 'starttls' })
    const trusting = createMailTransport({ smtpUrl: server.url, outboxDir: '/nonexistent', tls: { ca: server.ca } })
    t.teardown(() => trusting.close())
    await trusting.send(outgoing('email_verification', 'bob@example.com'), from)
    const received = await server.waitFor('bob@example.com')
    t.equal(received.secure, true, 'upgraded to TLS, as the server offered it')
    t.equal(received.subject, 'Verify your email address')

    const untrusting = createMailTransport({ smtpUrl: server.url, outboxDir: '/nonexistent' })
    t.teardown(() => untrusting.close())
    await t.rejects(untrusting.send(outgoing('email_verification', 'carol@example.com'), from), /self[- ]signed|certificate/i,
      'a certificate nobody vouches for is refused, not used in the clear')
    t.notOk(server.received.some((mail) => mail.to.includes('carol@example.com')), 'nothing was delivered')
  })

  t.test('over smtps://', async (t) => {
    const server = await startMailServer(t, { tls: 'implicit' })
    t.match(server.url, /^smtps:\/\//)
    const transport = createMailTransport({ smtpUrl: server.url, outboxDir: '/nonexistent', tls: { ca: server.ca } })
    t.teardown(() => transport.close())
    await transport.send(outgoing('account_deleted', 'dave@example.com'), from)
    t.equal((await server.waitFor('dave@example.com')).secure, true, 'TLS from the start')
  })

  t.test('without SMTP, into an outbox it creates: 0700, files 0600, in order, parseable', async (t) => {
    const outboxDir = join((await testConfig(t)).dataDir, 'nested', 'outbox')
    const transport = createMailTransport({ outboxDir })
    t.teardown(() => transport.close())
    const kinds: MailKind[] = ['password_reset', 'email_changed', 'password_changed', 'email_verification']
    const paths: string[] = []
    for (const kind of kinds) {
      const { outboxPath } = await transport.send(outgoing(kind, 'erin@example.com'), from)
      t.type(outboxPath, 'string', `${kind}: its path answered`)
      paths.push(outboxPath!)
    }
    t.equal((await stat(outboxDir)).mode & 0o777, 0o700, 'the outbox is its owner\'s only')
    t.equal((await stat(paths[0]!)).mode & 0o777, 0o600, 'and so is each file: it holds a live link')
    const outbox = await readOutbox(outboxDir)
    t.same(outbox.map((mail) => mail.path), paths, 'the file names sort in the order they were written')
    t.same(outbox.map((mail) => mail.subject), kinds.map((kind) => composeMail(SAMPLES[kind]).subject), 'each a parseable message')
    t.same(outbox[0]!.to, ['erin@example.com'])
    t.match(outbox[0]!.from, /<no-reply@localhost>/)
    t.equal(tokenOf(outbox[0]!), TOKEN, 'the link, whole, in the text part')
    t.match(outbox[0]!.html, `href="${LINK}"`, 'and in the HTML part')
  })
})

// ---------------------------------------------------------------------------
// MailQueue

/** A transport in memory: keeps what it sent; fails the next `failures` sends, or hangs every one while `hanging`. */
class FakeTransport implements MailTransport {
  sent: OutgoingMail[] = []
  attempts = 0
  failures = 0
  hanging = false
  closed = false

  async send (mail: OutgoingMail): Promise<{ outboxPath?: string }> {
    this.attempts++
    if (this.hanging) return new Promise(() => {})
    if (this.failures > 0) {
      this.failures--
      throw new Error('connect ECONNREFUSED 127.0.0.1:25')
    }
    this.sent.push(mail)
    return {}
  }

  close (): void {
    this.closed = true
  }
}

/** What the queue reported, one line per event, in order. */
function recorder (): { events: string[], observer: MailQueueObserver } {
  const events: string[] = []
  return {
    events,
    observer: {
      sent: (kind) => events.push(`sent ${kind}`),
      failed: (kind, _error, attempt, final) => events.push(`${final ? 'gave up' : 'failed'} ${kind} #${attempt}`),
      throttled: (kind) => events.push(`throttled ${kind}`)
    }
  }
}

/** A queue over `transport`, closed when the test ends. */
function queueOver (t: Test, transport: MailTransport, options: Partial<MailQueueOptions> = {}): MailQueue {
  const queue = new MailQueue({ transport, from: 'Auth service <no-reply@localhost>', retryDelaysMs: [0, 0, 0], ...options })
  t.teardown(() => queue.close())
  return queue
}

t.test('MailQueue', async (t) => {
  t.test('enqueue returns at once: nothing is sent on the caller\'s time, flush waits for it', async (t) => {
    const transport = new FakeTransport()
    const { events, observer } = recorder()
    const queue = queueOver(t, transport, { observer })
    t.equal(queue.enqueue(outgoing('password_reset')), undefined, 'nothing to await')
    queue.enqueue(outgoing('account_deleted'))
    t.equal(transport.attempts, 0, 'no send has started yet')
    t.equal(queue.pending, 2, 'both pending')
    await queue.flush()
    t.equal(queue.pending, 0)
    t.same(transport.sent.map((mail) => mail.kind).sort(), ['account_deleted', 'password_reset'], 'both sent')
    t.same(events.sort(), ['sent account_deleted', 'sent password_reset'], 'and reported')
    await queue.flush()
    t.pass('flush with nothing pending resolves')
  })

  t.test('a transport that throws, or an observer that throws, never reaches the caller or stops the queue', async (t) => {
    const throwing: MailTransport = { send: () => { throw new Error('synchronously broken') }, close: () => {} }
    const queue = queueOver(t, throwing, { retryDelaysMs: [], observer: { failed: () => { throw new Error('observer broken') } } })
    t.doesNotThrow(() => queue.enqueue(outgoing('account_deleted')))
    await queue.flush()
    t.equal(queue.pending, 0, 'given up')

    const transport = new FakeTransport()
    const second = queueOver(t, transport, { observer: { sent: () => { throw new Error('observer broken') } } })
    second.enqueue(outgoing('account_deleted'))
    second.enqueue(outgoing('email_changed'))
    await second.flush()
    t.equal(transport.sent.length, 2, 'the next mail still goes')
  })

  t.test('a failed send is retried after each delay, then succeeds (a real server refusing the first two)', async (t) => {
    const server = await startMailServer(t, { rejectWith: 451, rejectFirst: 2 })
    const { events, observer } = recorder()
    const queue = queueOver(t, createMailTransport({ smtpUrl: server.url, outboxDir: '/nonexistent' }), { observer })
    queue.enqueue(outgoing('password_reset', 'frank@example.com'))
    await queue.flush()
    t.same(events, ['failed password_reset #1', 'failed password_reset #2', 'sent password_reset'])
    t.equal(server.rejected, 2, 'refused twice')
    t.equal(tokenOf(await server.waitFor('frank@example.com')), TOKEN, 'then delivered, whole')
  })

  t.test('a send that keeps failing is given up once the delays are used up', async (t) => {
    const server = await startMailServer(t, { rejectWith: 550 })
    const errors: unknown[] = []
    const { events, observer } = recorder()
    const queue = queueOver(t, createMailTransport({ smtpUrl: server.url, outboxDir: '/nonexistent' }), {
      retryDelaysMs: [0, 0],
      observer: { ...observer, failed: (...args) => { errors.push(args[1]); observer.failed!(...args) } }
    })
    queue.enqueue(outgoing('email_verification', 'grace@example.com'))
    await queue.flush()
    t.same(events, ['failed email_verification #1', 'failed email_verification #2', 'gave up email_verification #3'])
    t.equal(server.rejected, 3)
    t.equal(queue.pending, 0)
    t.match(describeMailError(errors[2]), { message: /550/, responseCode: 550 }, 'the server\'s answer, for the log')
  })

  t.test('describeMailError keeps the message and codes, and cuts out an address or a link a server quoted', async (t) => {
    const error = Object.assign(new Error(`Message failed: 554 rejected content ${LINK}`), { code: 'EMESSAGE', responseCode: 554, response: 'body' })
    t.same(describeMailError(error), { message: 'Message failed: 554 rejected content https://app.example.com/reset-password#token=[redacted]', code: 'EMESSAGE', responseCode: 554 })
    const recipient = Object.assign(new Error('Can\'t send mail - all recipients were rejected: 550 5.1.1 <ann.lee+x@example.com>: Recipient address rejected'), { responseCode: 550 })
    t.same(describeMailError(recipient), { message: 'Can\'t send mail - all recipients were rejected: 550 5.1.1 <[address]>: Recipient address rejected', responseCode: 550 })
    t.same(describeMailError('a string'), { message: 'unknown error' })
  })

  t.test('the throttle: 5 link mails per recipient an hour, notices never throttled, recipients apart', async (t) => {
    const transport = new FakeTransport()
    const { events, observer } = recorder()
    const queue = queueOver(t, transport, { observer })
    const kinds: MailKind[] = ['password_reset', 'email_verification', 'email_change', 'password_reset', 'password_reset', 'password_reset']
    // Case does not make another recipient.
    kinds.forEach((kind, index) => queue.enqueue(outgoing(kind, index % 2 === 0 ? 'heidi@example.com' : 'Heidi@Example.COM')))
    for (let n = 0; n < 3; n++) queue.enqueue(outgoing('password_changed', 'heidi@example.com'))
    queue.enqueue(outgoing('password_reset', 'ivan@example.com'))
    await queue.flush()
    t.same(events.filter((event) => event.startsWith('throttled')), ['throttled password_reset'], 'the sixth link mail is dropped')
    t.equal(transport.sent.filter((mail) => mail.to.toLowerCase() === 'heidi@example.com').length, 8, 'five links and three notices reach heidi')
    t.same(transport.sent.filter((mail) => mail.to === 'ivan@example.com').map((mail) => mail.kind), ['password_reset'], 'another recipient has a count of its own')
  })

  t.test('a link mail retried counts once against its recipient', async (t) => {
    const transport = new FakeTransport()
    transport.failures = 2
    const queue = queueOver(t, transport, { throttle: { perHour: 2 } })
    queue.enqueue(outgoing('password_reset', 'judy@example.com'))
    queue.enqueue(outgoing('password_reset', 'judy@example.com'))
    await queue.flush()
    t.equal(transport.sent.length, 2, 'both sent: the retries did not use up the second')
  })

  t.test('property: for any interleaving of recipients and kinds, at most perHour link mails reach each recipient, and every notice does', async (t) => {
    const recipients = ['a@example.com', 'b@example.com', 'c@example.com']
    await fc.assert(fc.asyncProperty(
      fc.integer({ min: 1, max: 4 }),
      fc.array(fc.record({ to: fc.constantFrom(...recipients), kind: fc.constantFrom(...MAIL_KINDS) }), { maxLength: 30 }),
      async (perHour, mails) => {
        const transport = new FakeTransport()
        const queue = new MailQueue({ transport, from: 'x@localhost', throttle: { perHour } })
        for (const { to, kind } of mails) queue.enqueue(outgoing(kind, to))
        await queue.flush()
        await queue.close()
        for (const to of recipients) {
          const asked = mails.filter((mail) => mail.to === to)
          const sent = transport.sent.filter((mail) => mail.to === to)
          const links = (list: Array<{ kind: MailKind }>): number => list.filter((mail) => LINK_MAIL_KINDS.has(mail.kind)).length
          if (links(sent) !== Math.min(perHour, links(asked))) return false
          if (sent.length - links(sent) !== asked.length - links(asked)) return false
        }
        return true
      }
    ))
    t.pass('held for every generated case')
  })

  t.test('the throttle keeps counting in process while Redis is away', async (t) => {
    // Never connected: the limiter falls back to its in-process insurance at once.
    const away = new Redis('redis://127.0.0.1:1', { lazyConnect: true, enableOfflineQueue: false })
    t.teardown(() => away.disconnect())
    const transport = new FakeTransport()
    const { events, observer } = recorder()
    const queue = queueOver(t, transport, { throttle: { redis: away, prefix: 'unused:', perHour: 2 }, observer })
    for (let n = 0; n < 3; n++) queue.enqueue(outgoing('password_reset', 'kim@example.com'))
    await queue.flush()
    t.same(events, ['sent password_reset', 'sent password_reset', 'throttled password_reset'])
  })

  t.test('the throttle in Redis: shared by every instance, keyed by a hash of the address under the prefix', { skip: skipUnless({ redis: true }) }, async (t) => {
    const { redis, prefix } = await testRedis(t)
    const throttle = { redis, prefix: `${prefix}mail-throttle:`, perHour: 5 }
    const first = new FakeTransport()
    const second = new FakeTransport()
    const instances = [queueOver(t, first, { throttle }), queueOver(t, second, { throttle })]
    for (let n = 0; n < 6; n++) instances[n % 2]!.enqueue(outgoing('password_reset', 'Leo@Example.com'))
    instances[0]!.enqueue(outgoing('email_verification', 'mia@example.com'))
    await Promise.all(instances.map((queue) => queue.flush()))
    t.equal(first.sent.filter((mail) => mail.to === 'Leo@Example.com').length + second.sent.length, 5, 'five of six across both instances')
    t.equal(first.sent.filter((mail) => mail.to === 'mia@example.com').length, 1, 'another recipient is not affected')
    const hash = (address: string): string => createHash('sha256').update(address).digest('hex')
    const keys = (await redis.keys(`${prefix}*`)).sort()
    t.same(keys, [`${prefix}mail-throttle:${hash('leo@example.com')}`, `${prefix}mail-throttle:${hash('mia@example.com')}`].sort(), 'one key a recipient, no address in it')
    const ttl = await redis.ttl(keys[0]!)
    t.ok(ttl > 0 && ttl <= 3600, `expires within the hour (${ttl} s)`)
  })

  t.test('past maxPending, a new mail is dropped and reported, not held', async (t) => {
    const transport = new FakeTransport()
    transport.hanging = true
    const { events, observer } = recorder()
    const queue = queueOver(t, transport, { maxPending: 2, closeTimeoutMs: 50, observer })
    for (const kind of ['account_deleted', 'email_changed', 'password_changed'] as const) queue.enqueue(outgoing(kind))
    t.equal(queue.pending, 2, 'two held')
    t.same(events, ['gave up password_changed #0'], 'the third reported as given up at once')
  })

  t.test('close(): every pending mail, a retry waiting included, gets one last attempt at once; then the transport closes', async (t) => {
    const transport = new FakeTransport()
    transport.failures = 1
    const { events, observer } = recorder()
    let firstFailure: () => void = () => {}
    const failedOnce = new Promise<void>((resolve) => { firstFailure = resolve })
    // A retry an hour away: only close() can explain it being sent.
    const queue = queueOver(t, transport, {
      retryDelaysMs: [3_600_000],
      observer: { ...observer, failed: (...args) => { observer.failed!(...args); firstFailure() } }
    })
    queue.enqueue(outgoing('password_reset', 'nina@example.com'))
    await failedOnce
    queue.enqueue(outgoing('email_changed', 'nina@example.com'))
    queue.enqueue(outgoing('account_deleted', 'nina@example.com'))
    t.equal(queue.pending, 3)
    await queue.close()
    t.equal(queue.pending, 0, 'nothing left')
    t.same(transport.sent.map((mail) => mail.kind).sort(), ['account_deleted', 'email_changed', 'password_reset'], 'all three sent')
    t.ok(transport.closed, 'the transport is closed')

    queue.enqueue(outgoing('account_deleted', 'nina@example.com'))
    t.equal(queue.pending, 0, 'after close, nothing is queued')
    t.equal(events.at(-1), 'gave up account_deleted #0', 'and the mail is reported as given up')
    t.equal(transport.sent.length, 3)
  })

  t.test('close(): a last attempt that fails is not retried, and a hung server does not hold shutdown past closeTimeoutMs', async (t) => {
    const transport = new FakeTransport()
    transport.failures = 1
    const { events, observer } = recorder()
    const queue = queueOver(t, transport, { retryDelaysMs: [0, 0], closeTimeoutMs: 50, observer })
    queue.enqueue(outgoing('email_changed'))
    const closed = queue.close()
    await closed
    t.same(events, ['gave up email_changed #1'], 'one attempt only: the queue is closing')

    const hung = new FakeTransport()
    hung.hanging = true
    const { events: hungEvents, observer: hungObserver } = recorder()
    const stuck = queueOver(t, hung, { closeTimeoutMs: 50, observer: hungObserver })
    stuck.enqueue(outgoing('account_deleted'))
    stuck.enqueue(outgoing('email_changed'))
    await stuck.close()
    t.equal(stuck.pending, 0, 'close resolved, with nothing pending')
    t.same(hungEvents.map((event) => event.replace(/ #\d+$/, '')).sort(), ['gave up account_deleted', 'gave up email_changed'], 'both reported as given up')
    t.ok(hung.closed, 'and the transport closed')
  })
})

// ---------------------------------------------------------------------------
// The plugin

/** An app of the plugins mail needs (config, metrics, Redis when given) and mail, its log captured; closed when the test ends. */
async function mailApp (
  t: Test, { env = {}, redis, options = {} }: { env?: Record<string, string>, redis?: Redis, options?: MailPluginOptions } = {}
): Promise<{ app: FastifyInstance, config: Config, lines: string[] }> {
  const config = await testConfig(t, env)
  const { lines, stream } = capturedLog()
  const app = Fastify({ logger: { level: 'debug', stream } })
  await app.register(configPlugin, { config, clock: systemClock })
  await app.register(metricsPlugin)
  await app.register(redisPlugin, { redis })
  await app.register(mailPlugin, options)
  await app.ready()
  t.teardown(() => app.close())
  return { app, config, lines }
}

const logged = (lines: string[]): Array<Record<string, unknown>> => lines.map((line) => JSON.parse(line))
const WARN = 40
const INFO = 30

t.test('plugins/mail.ts', async (t) => {
  t.test('without SMTP_URL: a fresh DATA_DIR gets outbox/, and the log says where each mail is', async (t) => {
    const { app, config, lines } = await mailApp(t)
    app.mail.send('olga@example.com', SAMPLES.password_reset)
    t.equal(app.mail.pending, 1, 'queued')
    await app.mail.flush()
    const outbox = await readOutbox(join(config.dataDir, 'outbox'))
    t.equal(outbox.length, 1, 'one .eml file')
    t.same(outbox[0]!.to, ['olga@example.com'])
    t.match(outbox[0]!.from, /Auth service.*<no-reply@localhost>/, 'from the default MAIL_FROM')
    t.equal(tokenOf(outbox[0]!), TOKEN)
    const line = logged(lines).find((entry) => entry.outboxPath !== undefined)
    t.match(line, { level: INFO, kind: 'password_reset', outboxPath: outbox[0]!.path }, 'its path logged at info')
    t.notMatch(lines.join('\n'), TOKEN, 'the token is not in the log')
    t.notMatch(lines.join('\n'), 'olga@', 'nor the address')
  })

  t.test('over SMTP_URL with STARTTLS: its credentials, MAIL_FROM, the certificate verified', async (t) => {
    const server = await startMailServer(t, { tls: 'starttls' })
    const { app } = await mailApp(t, {
      env: { SMTP_URL: `smtp://relay-user:relay-pass@127.0.0.1:${server.port}`, MAIL_FROM: 'Example Accounts <accounts@example.com>' },
      options: { tls: { ca: server.ca } }
    })
    app.mail.send('paul@example.com', SAMPLES.email_change)
    await app.mail.flush()
    const received = await server.waitFor('paul@example.com', { subject: /new email address/ })
    t.equal(received.user, 'relay-user', 'authenticated with SMTP_URL\'s user')
    t.equal(received.secure, true, 'over TLS')
    t.match(received.from, /Example Accounts.*<accounts@example.com>/, 'from MAIL_FROM')
  })

  t.test('a mail server that refuses: warn lines with the kind and attempt, never the link, the token or the address; counted', async (t) => {
    const server = await startMailServer(t, { rejectWith: 550 })
    const { app, lines } = await mailApp(t, { env: { SMTP_URL: server.url }, options: { retryDelaysMs: [0, 0] } })
    app.mail.send('quinn@example.com', SAMPLES.password_reset)
    await app.mail.flush()
    const warnings = logged(lines).filter((entry) => entry.level === WARN)
    t.match(warnings, [
      { kind: 'password_reset', attempt: 1, err: { responseCode: 550 } },
      { kind: 'password_reset', attempt: 2 },
      { kind: 'password_reset', attempt: 3, msg: /given up/ }
    ], 'each failed attempt, and the giving up, at warn')
    const log = lines.join('\n')
    for (const secret of [TOKEN, LINK, 'quinn@example.com']) t.notMatch(log, secret, `the log holds no ${secret === TOKEN ? 'token' : secret === LINK ? 'link' : 'address'}`)
    const { text } = await app.metrics.exposition()
    t.match(text, /auth_mails_total\{kind="password_reset",outcome="retried"\} 2/)
    t.match(text, /auth_mails_total\{kind="password_reset",outcome="failed"\} 1/)
    t.match(text, /auth_mails_total\{kind="account_deleted",outcome="throttled"\} 0/, 'every series starts at 0')
    t.match(text, /auth_mail_pending 0/)
  })

  t.test('the throttle: dropped at info with the kind only, counted, per LINK_MAILS option', async (t) => {
    const { app, lines } = await mailApp(t, { options: { linkMailsPerRecipientPerHour: 1 } })
    app.mail.send('rita@example.com', SAMPLES.email_verification)
    app.mail.send('rita@example.com', SAMPLES.email_verification)
    await app.mail.flush()
    const dropped = logged(lines).filter((entry) => /dropped/.test(String(entry.msg)))
    t.match(dropped, [{ level: INFO, kind: 'email_verification' }], 'logged at info')
    t.notMatch(lines.join('\n'), /rita@|#token=/, 'without the address or the link')
    t.match((await app.metrics.exposition()).text, /auth_mails_total\{kind="email_verification",outcome="throttled"\} 1/)
  })

  t.test('a template it cannot compose does not reach the caller: logged at error, counted as failed', async (t) => {
    const { app, lines } = await mailApp(t)
    t.doesNotThrow(() => app.mail.send('uma@example.com', { kind: 'not_a_kind' } as unknown as MailTemplate))
    t.equal(app.mail.pending, 0, 'nothing queued')
    t.match(logged(lines).find((entry) => entry.level === 50), { kind: 'not_a_kind', msg: 'mail not composed' })
  })

  t.test('closing the app sends what is queued', async (t) => {
    const { app, config } = await mailApp(t)
    app.mail.send('sam@example.com', SAMPLES.account_deleted)
    app.mail.send('sam@example.com', SAMPLES.email_changed)
    await app.close()
    const outbox = await readOutbox(join(config.dataDir, 'outbox'))
    t.same(outbox.map((mail) => mail.subject).sort(), [SAMPLES.account_deleted, SAMPLES.email_changed].map((template) => composeMail(template).subject).sort())
  })

  t.test('with Redis: the throttle under the app\'s key prefix', { skip: skipUnless({ redis: true }) }, async (t) => {
    const { redis, prefix } = await testRedis(t)
    const { app } = await mailApp(t, { redis, options: { redisKeyPrefix: prefix } })
    app.mail.send('tina@example.com', SAMPLES.password_reset)
    await app.mail.flush()
    t.same(await redis.keys(`${prefix}*`), [`${prefix}mail-throttle:${createHash('sha256').update('tina@example.com').digest('hex')}`])
  })
})
