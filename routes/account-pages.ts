import { createHash } from 'node:crypto'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { errorResponses } from '../plugins/shared/openapi.js'

/*
 * The built-in account pages that emailed links open when APP_URL is unset:
 * `/account/reset-password#token=…` and `/account/verify-email#token=…`.
 * Each is one constant HTML document (nothing from the request is written
 * into it) whose inline script reads the token from the fragment, which no
 * browser sends to a server or in a Referer, and posts it with fetch. The
 * CSP allows exactly that script and stylesheet, by hash, and fetch to this
 * origin only.
 */

const STYLE = `
:root {
  color-scheme: light dark;
  --page: #f3f4f7; --card: #fff; --text: #1c2230; --muted: #596171; --line: #cdd2da;
  --accent: #2453c2; --on-accent: #fff;
  --ok: #125f36; --ok-back: #e6f4ec; --bad: #a1222b; --bad-back: #fcebec;
}
@media (prefers-color-scheme: dark) {
  :root {
    --page: #13161b; --card: #1d222a; --text: #e7e9ed; --muted: #a2a9b4; --line: #3a424f;
    --accent: #7fa3f2; --on-accent: #0d1320;
    --ok: #8edbad; --ok-back: #15321f; --bad: #f2a5ab; --bad-back: #391a1d;
  }
}
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body {
  margin: 0; min-height: 100vh; padding: 3rem 1rem;
  display: flex; justify-content: center; align-items: flex-start;
  background: var(--page); color: var(--text);
  font: 1rem/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
}
main {
  width: 100%; max-width: 27rem; padding: 2rem 1.75rem;
  background: var(--card); border: 1px solid var(--line); border-radius: 12px;
  box-shadow: 0 1px 3px rgb(0 0 0 / 8%);
}
h1 { margin: 0 0 .5rem; font-size: 1.375rem; line-height: 1.3; }
p { margin: 0; }
.lead { color: var(--muted); }
label { display: block; margin: 1.25rem 0 .375rem; font-weight: 600; }
input {
  width: 100%; padding: .625rem .75rem; font: inherit; color: inherit;
  background: var(--card); border: 1px solid var(--line); border-radius: 8px;
}
input[aria-invalid="true"] { border-color: var(--bad); }
.hint { margin-top: .375rem; font-size: .875rem; color: var(--muted); }
button {
  width: 100%; margin-top: 1.5rem; padding: .75rem 1rem;
  font: inherit; font-weight: 600; color: var(--on-accent);
  background: var(--accent); border: 0; border-radius: 8px; cursor: pointer;
}
button:disabled { opacity: .65; cursor: progress; }
input:focus-visible, button:focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; }
/* Focused only so that screen readers read the outcome: it is not a control. */
.message:focus { outline: none; }
.message { margin-top: 1.5rem; padding: .875rem 1rem; border-left: 4px solid; border-radius: 8px; }
.message:empty { display: none; }
.message strong { display: block; margin-bottom: .25rem; }
.message.success { color: var(--ok); background: var(--ok-back); }
.message.error { color: var(--bad); background: var(--bad-back); }
.message.progress { color: var(--muted); border-color: var(--line); }
@media (max-width: 30rem) {
  body { padding: 1rem .75rem; }
  main { padding: 1.5rem 1.25rem; }
}
`

/**
 * What both pages' scripts share: the token, taken out of the address bar at
 * once (so it stays out of history, bookmarks and screen shares); messages
 * written as text into the live region; and the POST with what a message needs
 * from its answer. Runs inside each page's function (see script()).
 */
const COMMON = `
  const token = new URLSearchParams(location.hash.slice(1)).get('token') || ''
  if (location.hash !== '') history.replaceState(null, '', location.pathname + location.search)
  const intro = document.getElementById('intro')
  const message = document.getElementById('message')

  /** Shows a message (title, then details) as text; a final one ends the page's task and takes the focus. */
  function show (kind, title, detail, final) {
    const heading = document.createElement('strong')
    heading.textContent = title
    message.replaceChildren(heading, document.createTextNode(detail || ''))
    message.className = 'message ' + kind
    if (final) {
      intro.hidden = true
      message.focus()
    }
  }

  /** POSTs JSON to one of the service's routes; answers its status (0: unreachable), error code and Retry-After. */
  async function post (path, body) {
    let response
    try {
      // Relative: the routes are beside the pages, under whatever path PUBLIC_URL gives the service.
      // No cookies: the link's token is the only credential these calls need.
      response = await fetch('../' + path, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
        credentials: 'omit',
        cache: 'no-store'
      })
    } catch {
      return { status: 0 }
    }
    let code
    if (response.status >= 400) {
      try {
        code = (await response.json()).code
      } catch {}
    }
    return { status: response.status, code, retryAfter: Number(response.headers.get('retry-after')) || 0 }
  }

  /** The message for an answer that neither worked nor was about the link. */
  function showFailure (answer) {
    if (answer.status === 429) {
      const wait = answer.retryAfter > 90 ? Math.ceil(answer.retryAfter / 60) + ' minutes' : (answer.retryAfter || 60) + ' seconds'
      show('error', 'Too many attempts.', 'Please wait ' + wait + ', then try again.')
    } else if (answer.status === 0 || answer.status >= 500) {
      show('error', 'The service cannot be reached right now.', 'Your link has not been used. Please try again in a moment.')
    } else {
      show('error', 'Something went wrong (HTTP ' + answer.status + ').', 'Please try again in a moment, or request a new link.')
    }
  }
`

const RESET_SCRIPT = `
  const form = document.getElementById('form')
  const password = document.getElementById('password')
  const confirmation = document.getElementById('confirmation')
  const submit = form.querySelector('button')

  function refuse (field, title, detail) {
    field.setAttribute('aria-invalid', 'true')
    show('error', title, detail)
    field.focus()
  }

  if (token === '') {
    show('error', 'This page needs the link from your email.',
      'Open the password-reset link from the mail, in full. If it no longer works, request a new password reset.', true)
  } else {
    form.hidden = false
    password.focus()
  }

  form.addEventListener('input', (event) => event.target.removeAttribute('aria-invalid'))
  form.addEventListener('submit', async (event) => {
    event.preventDefault()
    if (submit.disabled) return
    // Counted as the service counts them: characters, not UTF-16 units.
    const length = [...password.value].length
    if (length < 8 || length > 256) return refuse(password, 'The password must be 8 to 256 characters long.', 'This one has ' + length + (length === 1 ? ' character.' : ' characters.'))
    if (confirmation.value !== password.value) return refuse(confirmation, 'The two passwords are not the same.', 'Type the new password again in both fields.')

    submit.disabled = true
    show('progress', 'Setting your new password…', '')
    const answer = await post('auth/password-reset', { token, newPassword: password.value })
    submit.disabled = false
    if (answer.status === 204) {
      form.hidden = true
      form.reset()
      show('success', 'Your new password is set.',
        'For your safety, every session of your account has been signed out, on all devices. You can log in now with your new password.', true)
    } else if (answer.code === 'LINK_TOKEN_INVALID') {
      form.hidden = true
      form.reset()
      show('error', 'This link no longer works.',
        'It is invalid, was already used, was replaced by a newer link, or has expired. Request a new password reset and open the link in the newest mail.', true)
    } else if (answer.code === 'VALIDATION_ERROR') {
      show('error', 'The service did not accept this request.',
        'Check that the password is 8 to 256 characters long. If it is, the link may be incomplete: open it again from the mail, in full.')
    } else {
      showFailure(answer)
    }
  })
`

const VERIFY_SCRIPT = `
  const confirm = document.getElementById('confirm')

  if (token === '') {
    show('error', 'This page needs the link from your email.',
      'Open the verification link from the mail, in full. If it no longer works, request a new verification mail.', true)
  } else {
    // A button rather than on load: mail scanners that open links must not spend them.
    confirm.hidden = false
  }

  confirm.addEventListener('click', async () => {
    if (confirm.disabled) return
    confirm.disabled = true
    show('progress', 'Confirming your email address…', '')
    const answer = await post('auth/verify-email', { token })
    confirm.disabled = false
    if (answer.status === 204) {
      confirm.hidden = true
      show('success', 'Your email address is confirmed.',
        'Thank you. If you were changing your address, your account now uses this one. You can close this page.', true)
    } else if (answer.code === 'LINK_TOKEN_INVALID') {
      confirm.hidden = true
      show('error', 'This link no longer works.',
        'It is invalid, was already used, was replaced by a newer link, or has expired. If your address is not confirmed yet, request a new verification mail and open the link in the newest one.', true)
    } else if (answer.code === 'EMAIL_TAKEN') {
      confirm.hidden = true
      show('error', 'This email address is already taken.',
        'Another account registered it while your change was waiting for confirmation, so your account keeps its current address. This link is now used up.', true)
    } else {
      showFailure(answer)
    }
  })
`

/** One page's script: the shared part and its own, in a function of their own (no globals). */
const script = (own: string): string => `
(() => {
  'use strict'
${COMMON}${own}})()
`

const sha256 = (text: string): string => `'sha256-${createHash('sha256').update(text).digest('base64')}'`

interface Page {
  html: string
  csp: string
}

/** The page as sent, and the CSP that lets exactly its inline script and stylesheet run. */
function page ({ title, lead, body, ownScript }: { title: string, lead: string, body: string, ownScript: string }): Page {
  const pageScript = script(ownScript)
  const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>${title}</title>
<style>${STYLE}</style>
</head>
<body>
<main>
<h1>${title}</h1>
<p id="intro" class="lead">${lead}</p>
<noscript><p class="message error">This page needs JavaScript: please turn it on, then open the link from your email again.</p></noscript>
${body}
<div id="message" class="message" role="status" aria-live="polite" tabindex="-1"></div>
</main>
<script>${pageScript}</script>
</body>
</html>
`
  const csp = [
    "default-src 'none'",
    `script-src ${sha256(pageScript)}`,
    `style-src ${sha256(STYLE)}`,
    "connect-src 'self'",
    "img-src 'none'",
    "form-action 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'"
  ].join('; ')
  return { html, csp }
}

const RESET_PAGE = page({
  title: 'Choose a new password',
  lead: 'Choose the new password for your account.',
  // Hidden until the script has found a token: without one, or without JavaScript, there is nothing to submit.
  body: `<form id="form" hidden novalidate>
<label for="password">New password</label>
<input id="password" name="password" type="password" autocomplete="new-password" minlength="8" maxlength="256" required aria-describedby="password-hint">
<p id="password-hint" class="hint">8 to 256 characters.</p>
<label for="confirmation">New password again</label>
<input id="confirmation" name="confirmation" type="password" autocomplete="new-password" minlength="8" maxlength="256" required>
<button type="submit">Set the new password</button>
</form>`,
  ownScript: RESET_SCRIPT
})

const VERIFY_PAGE = page({
  title: 'Confirm your email address',
  lead: 'Press the button to confirm that this email address is yours.',
  body: '<button id="confirm" type="button" hidden>Confirm my email address</button>',
  ownScript: VERIFY_SCRIPT
})

const accountPageRoutes: FastifyPluginAsyncTypebox = async (fastify) => {
  const routes: Array<{ url: string, operationId: string, summary: string, description: string, page: Page }> = [
    {
      url: '/account/reset-password',
      operationId: 'resetPasswordPage',
      summary: 'The page a password-reset link opens',
      description: 'An HTML page, for people: the link mailed by `POST /auth/password-reset/request` opens it as ' +
        '`/account/reset-password#token=…` (when `APP_URL` is unset). It asks for the new password twice and posts it, ' +
        'with the token from the fragment, to `POST /auth/password-reset`.',
      page: RESET_PAGE
    },
    {
      url: '/account/verify-email',
      operationId: 'verifyEmailPage',
      summary: 'The page an email-verification link opens',
      description: 'An HTML page, for people: the link mailed at signup, by `POST /auth/verify-email/request` and by ' +
        '`POST /users/me/email` opens it as `/account/verify-email#token=…` (when `APP_URL` is unset). A button posts the ' +
        'token from the fragment to `POST /auth/verify-email`.',
      page: VERIFY_PAGE
    }
  ]
  for (const { url, operationId, summary, description, page } of routes) {
    fastify.get(url, {
      config: { public: true },
      schema: {
        tags: ['account'],
        operationId,
        summary,
        description,
        response: {
          200: {
            description: 'The page (constant HTML with an inline script and stylesheet allowed by hash in its CSP)',
            content: { 'text/html': { schema: { type: 'string' } } }
          },
          ...errorResponses()
        }
      }
    }, (_request, reply) => {
      // Over the API's headers (plugins/security-headers.ts): this answer is a page, with a CSP of its own.
      reply
        .header('content-type', 'text/html; charset=utf-8')
        .header('content-security-policy', page.csp)
        .header('referrer-policy', 'no-referrer')
        .header('cache-control', 'no-store')
        .send(page.html)
    })
  }
}

export default accountPageRoutes
