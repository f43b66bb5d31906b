import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { STATUS_CODES } from 'node:http'
import type { LightMyRequestResponse } from 'fastify'
import type { Test } from 'tap'

/*
 * Helpers shared by the hardening suites (rate limits, browsers, fuzz, logs,
 * shutdown). Kept apart from helpers.ts, which other suites own.
 */

export const PASSWORD = 'correct horse battery'

/** Exactly API.md's error shape: statusCode, code, error, message; JSON; nothing internal. */
export function errorShapeProblems (status: number, contentType: string | undefined, text: string): string[] {
  const problems: string[] = []
  if (!/^application\/json/.test(contentType ?? '')) problems.push(`content-type ${contentType}`)
  let body: Record<string, unknown>
  try {
    body = JSON.parse(text)
  } catch {
    return [...problems, `not JSON: ${text.slice(0, 80)}`]
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return [...problems, 'not an object']
  const keys = Object.keys(body).sort().join(',')
  if (keys !== 'code,error,message,statusCode') problems.push(`members ${keys}`)
  if (body.statusCode !== status) problems.push(`statusCode ${String(body.statusCode)} for HTTP ${status}`)
  if (body.error !== STATUS_CODES[status]) problems.push(`error ${String(body.error)}`)
  if (typeof body.code !== 'string' || !/^[A-Z_]+$/.test(body.code)) problems.push(`code ${String(body.code)}`)
  if (typeof body.message !== 'string' || body.message === '') problems.push('no message')
  if (/stack|node_modules|\/work\/|\bat .+:\d+:\d+/.test(text)) problems.push('a stack or a path')
  return problems
}

export function assertErrorShape (t: Test, response: LightMyRequestResponse, status: number, code: string, name = code): void {
  t.equal(response.statusCode, status, `${name}: status ${status}`)
  t.same(errorShapeProblems(response.statusCode, response.headers['content-type'] as string | undefined, response.body), [], `${name}: the error shape`)
  if (response.statusCode === status) t.equal(response.json().code, code, `${name}: code ${code}`)
}

/** The refresh_token cookie's value set by a response, if any. */
export function refreshCookieOf (response: LightMyRequestResponse): string | undefined {
  return response.cookies.find((cookie) => cookie.name === 'refresh_token')?.value
}

export const hasRedisServer = spawnSync('redis-server', ['--version']).status === 0

/** A redis-server of the test's own on `port`, persisting nothing; killed when the test ends. */
export async function privateRedis (t: Test, port: number): Promise<ChildProcess> {
  const server = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => { server.kill('SIGKILL') })
  let output = ''
  await new Promise<void>((resolve, reject) => {
    server.stdout!.on('data', (chunk) => {
      output += chunk
      if (output.includes('Ready to accept connections')) resolve()
    })
    server.once('exit', (code) => reject(new Error(`redis-server exited with ${code}: ${output}`)))
  })
  return server
}
