/** Every mail the service sends, with what each one says (API.md, "Accounts, mail and links"). */
export type MailTemplate =
  | { kind: 'password_reset', link: string, expiresAt: Date }
  | { kind: 'email_verification', link: string, expiresAt: Date }
  /** Sent to the new address: following the link confirms it. */
  | { kind: 'email_change', link: string, expiresAt: Date, newEmail: string }
  /** Sent to the current address when a change is asked for: whoever knew the password may be taking the account. */
  | { kind: 'email_change_requested', newEmail: string }
  /** Sent to the old address once the change is done. */
  | { kind: 'email_changed', newEmail: string }
  /** After POST /auth/password (`changed`) or a completed reset (`reset`). */
  | { kind: 'password_changed', how: 'changed' | 'reset' }
  /** A spent refresh token came back (stolen, or replayed): its session was ended. */
  | { kind: 'refresh_token_reused', at: Date, ip: string }
  | { kind: 'account_deleted' }
export type MailKind = MailTemplate['kind']

/** Every kind, for the metrics' series that start at 0 (a kind added above and missing here does not compile). */
const KINDS: Record<MailKind, true> = {
  password_reset: true,
  email_verification: true,
  email_change: true,
  email_change_requested: true,
  email_changed: true,
  password_changed: true,
  refresh_token_reused: true,
  account_deleted: true
}
export const MAIL_KINDS = Object.keys(KINDS) as MailKind[]

/** Kinds carrying a link, which a stranger can trigger: throttled per recipient. */
export const LINK_MAIL_KINDS: ReadonlySet<MailKind> = new Set<MailKind>(['password_reset', 'email_verification', 'email_change'])

export interface ComposedMail {
  subject: string
  text: string
  html: string
}

/** A mail before it is written out: the same words make the plain-text and the HTML part. */
interface MailContent {
  subject: string
  /** What happened, or what the link is for: one paragraph each. */
  paragraphs: string[]
  action?: { label: string, link: string, expiresAt: Date }
  /** What to do if the reader did not ask for this. */
  ifNotYou: string
}

const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December']

/**
 * "1 January 2030, 00:30 UTC": written out by hand rather than with Intl, whose
 * wording changes between ICU versions, so a mail reads the same everywhere.
 */
function utcTime (date: Date): string {
  const two = (n: number): string => String(n).padStart(2, '0')
  return `${date.getUTCDate()} ${MONTHS[date.getUTCMonth()]} ${date.getUTCFullYear()}, ${two(date.getUTCHours())}:${two(date.getUTCMinutes())} UTC`
}

/** What a mail with a link asks of its reader: `label`, on the template's link and with its expiry. */
function linkAction (label: string, { link, expiresAt }: { link: string, expiresAt: Date }): NonNullable<MailContent['action']> {
  return { label, link, expiresAt }
}

function contentOf (template: MailTemplate): MailContent {
  switch (template.kind) {
    case 'password_reset':
      return {
        subject: 'Reset your password',
        paragraphs: [
          'Someone asked to reset the password of the account that uses this email address.',
          'To choose a new password, open the link below. Setting a new password signs the account out everywhere.'
        ],
        action: linkAction('Choose a new password', template),
        ifNotYou: 'If you did not ask for this, ignore this message: your password stays as it is.'
      }
    case 'email_verification':
      return {
        subject: 'Verify your email address',
        paragraphs: ['Please confirm that this email address is yours by opening the link below.'],
        action: linkAction('Verify my email address', template),
        ifNotYou: 'If you did not sign up or ask for this link, ignore this message: the address stays unverified.'
      }
    case 'email_change':
      return {
        subject: 'Confirm your new email address',
        paragraphs: [
          `Someone asked to change the email address of an account to ${template.newEmail}.`,
          'To confirm, open the link below. The address changes only when the link is opened.'
        ],
        action: linkAction('Confirm my new email address', template),
        ifNotYou: 'If you did not ask for this, ignore this message: nothing changes.'
      }
    case 'email_change_requested':
      return {
        subject: 'A change of your email address was requested',
        paragraphs: [
          `Someone signed in to your account asked to move it to the address ${template.newEmail}.`,
          'A link was mailed to that address; the change happens only if it is opened. Until then this address stays the account\'s.'
        ],
        // Changing the password cancels a pending email change (the one asked for under the old password).
        ifNotYou: 'If this was not you, change your password at once: that cancels the change and signs out every other session.'
      }
    case 'email_changed':
      return {
        subject: 'Your email address was changed',
        paragraphs: [
          `The email address of your account was changed to ${template.newEmail}.`,
          'From now on, sign in with the new address; mail about the account, password resets included, goes there.'
        ],
        // This address no longer reaches the account, so a reset is no way back: only the operator can help.
        ifNotYou: 'If you did not make this change, someone else may control your account: contact the service\'s administrator at once.'
      }
    case 'password_changed':
      return {
        subject: template.how === 'reset' ? 'Your password was reset' : 'Your password was changed',
        paragraphs: [template.how === 'reset'
          ? 'The password of your account was reset with a link sent to this address, and every session of the account was signed out.'
          : 'The password of your account was changed, and every other session of the account was signed out.'],
        ifNotYou: 'If this was not you, reset your password at once with this email address (a reset signs the account out everywhere), and look at the account\'s recent security events.'
      }
    case 'refresh_token_reused':
      return {
        subject: 'Security alert: a session of your account was ended',
        paragraphs: [
          `On ${utcTime(template.at)}, a sign-in token of your account that had already been used came back, from the address ${template.ip}.`,
          'This happens when a token has been copied and replayed, or, more rarely, when an app misbehaves. To be safe, that session was ended: the device that used it must sign in again.'
        ],
        ifNotYou: 'If you do not recognise this, change your password: that signs out every other session.'
      }
    case 'account_deleted':
      return {
        subject: 'Your account was deleted',
        paragraphs: ['Your account and all its sessions were deleted. This email address can be used to sign up again.'],
        ifNotYou: 'If you did not do this, someone knew your password: change it wherever else you use it, and contact the service\'s administrator.'
      }
  }
}

function textOf ({ paragraphs, action, ifNotYou }: MailContent): string {
  const blocks = [...paragraphs]
  if (action !== undefined) blocks.push(action.link, `The link works once and expires on ${utcTime(action.expiresAt)}.`)
  blocks.push(ifNotYou)
  return `${blocks.join('\n\n')}\n`
}

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }
const escapeHtml = (value: string): string => value.replace(/[&<>"']/g, (character) => HTML_ESCAPES[character]!)

/** Inline styles only (mail clients drop <style> and never load remote resources). Every value is escaped here, once. */
function htmlOf ({ subject, paragraphs, action, ifNotYou }: MailContent): string {
  const paragraph = (text: string, style = ''): string => `<p style="margin:0 0 16px;${style}">${escapeHtml(text)}</p>`
  const parts = paragraphs.map((text) => paragraph(text))
  if (action !== undefined) {
    const link = escapeHtml(action.link)
    parts.push(
      `<p style="margin:24px 0"><a href="${link}" style="display:inline-block;padding:12px 20px;border-radius:6px;background:#1d4ed8;color:#ffffff;text-decoration:none;font-weight:600">${escapeHtml(action.label)}</a></p>`,
      `<p style="margin:0 0 16px;font-size:13px;color:#4b5563">If the button does not work, copy this link into your browser:<br><a href="${link}" style="color:#1d4ed8;word-break:break-all">${link}</a></p>`,
      paragraph(`The link works once and expires on ${utcTime(action.expiresAt)}.`, 'font-size:13px;color:#4b5563')
    )
  }
  parts.push(paragraph(ifNotYou, 'font-size:13px;color:#4b5563'))
  return [
    '<!doctype html>',
    `<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>${escapeHtml(subject)}</title></head>`,
    '<body style="margin:0;padding:24px;background:#f3f4f6;font-family:-apple-system,\'Segoe UI\',Helvetica,Arial,sans-serif;font-size:15px;line-height:1.5;color:#111827">',
    '<div style="max-width:560px;margin:0 auto;padding:32px;border-radius:8px;background:#ffffff">',
    `<h1 style="margin:0 0 24px;font-size:20px">${escapeHtml(subject)}</h1>`,
    ...parts,
    '</div></body></html>',
    ''
  ].join('\n')
}

/** The subject, plain-text and HTML parts of a mail. */
export function composeMail (template: MailTemplate): ComposedMail {
  const content = contentOf(template)
  return { subject: content.subject, text: textOf(content), html: htmlOf(content) }
}
