import { existsSync } from 'node:fs'
import type { Test } from 'tap'
import { chromium, type Browser, type Page } from 'playwright-core'

/*
 * Headless Chromium for the browser suites: Debian's `chromium` package
 * (`apt-get install -y chromium`, which .ci/run does when it is missing),
 * driven by playwright-core. Nothing is downloaded: there is no browser
 * bundled with playwright-core, and none is fetched.
 */

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

/** Why the browser suites cannot run here, or false. Only a missing browser skips them; a browser that fails to start fails them. */
export const browserSkip: string | false = existsSync(CHROMIUM_PATH)
  ? false
  : `Chromium is not installed at ${CHROMIUM_PATH} (apt-get install -y chromium, as .ci/run does): the browser suite is skipped`

const ARGS = [
  '--no-sandbox',
  '--disable-background-networking',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-component-update',
  '--disable-sync'
]

export async function launchBrowser (t: Test): Promise<Browser> {
  const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: ARGS, timeout: 30_000 })
  t.teardown(() => browser.close())
  return browser
}

/** A Content-Security-Policy violation as the page reports it. */
export interface CspViolation {
  directive: string
  blocked: string
  source: string
  sample: string
}

/**
 * Everything a page complains about, across reloads: uncaught errors,
 * console errors and CSP violations (from `securitypolicyviolation` events,
 * which say what was blocked, by which directive, from which script).
 */
export async function watchPage (page: Page): Promise<{ errors: string[], cspViolations: CspViolation[] }> {
  const errors: string[] = []
  const cspViolations: CspViolation[] = []
  page.on('pageerror', (error) => errors.push(`page error: ${error.message}`))
  page.on('console', (message) => {
    // CSP reports are collected (with more detail) below; a 4xx answer the test asked for is no error of the page.
    const text = message.text()
    if (message.type() === 'error' && !text.includes('Content Security Policy') && !/status of 4\d\d/.test(text)) errors.push(`console: ${text}`)
  })
  await page.exposeFunction('reportCspViolation', (violation: CspViolation) => { cspViolations.push(violation) })
  // A string, not a function: it runs in the page, whose DOM types this (Node) project does not load.
  await page.addInitScript(`document.addEventListener('securitypolicyviolation', (event) => window.reportCspViolation({
    directive: event.violatedDirective, blocked: event.blockedURI, source: event.sourceFile, sample: event.sample
  }))`)
  return { errors, cspViolations }
}
