import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createServer, type AddressInfo } from 'node:net'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Test } from 'tap'
import { projectRoot } from '../src/paths.js'

/** The service as `npm start` runs it (from source), in a process of its own. */
export interface ServiceProcess {
  child: ChildProcess
  url: string
  output: () => string
}

/** Runs `src/<script>` with only PATH and `env` as its environment. */
export function runScript (script: string, env: Record<string, string>): ChildProcess {
  return runTypeScript(join('src', script), env)
}

/** Runs a TypeScript file of the repository (path from its root) with only PATH and `env` as its environment. */
export function runTypeScript (path: string, env: Record<string, string>): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', join(projectRoot, path)], {
    cwd: projectRoot,
    env: { PATH: process.env.PATH, ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
}

/** Starts the service on a free port (unless env names one) and waits until it listens; killed when the test ends. */
export async function startService (t: Test, env: Record<string, string>): Promise<ServiceProcess> {
  return startFastifyProcess(t, 'src/server.ts', env)
}

/** Starts a Fastify server from a TypeScript file and waits until it logs that it listens. */
export async function startFastifyProcess (t: Test, path: string, env: Record<string, string>): Promise<ServiceProcess> {
  const child = runTypeScript(path, { PORT: '0', LOG_LEVEL: 'info', ...env })
  let output = ''
  child.stderr!.on('data', (chunk) => { output += chunk })
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (chunk) => {
      output += chunk
      const listening = /"msg":"Server listening at (http:\/\/127\.0\.0\.1:\d+)"/.exec(output)
      if (listening !== null) resolve(listening[1]!)
    })
    child.once('exit', (code) => reject(new Error(`service exited with ${code}: ${output}`)))
  })
  t.teardown(() => { child.kill('SIGKILL') })
  return { child, url, output: () => output }
}

/** SIGTERM, then the exit code. */
export async function stopService (service: ServiceProcess): Promise<number | null> {
  if (service.child.exitCode !== null) return service.child.exitCode
  service.child.kill('SIGTERM')
  const [code] = await once(service.child, 'exit')
  return code
}

/** A port nothing listens on right now. */
export async function freePort (): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  server.close()
  return port
}

export async function temporaryDataDir (t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'auth-server-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}

export async function requestJson (url: string, init?: RequestInit): Promise<{ status: number, body: any, headers: Headers }> {
  const response = await fetch(url, init)
  const text = await response.text()
  return { status: response.status, body: text === '' ? undefined : JSON.parse(text), headers: response.headers }
}

export function jsonPost (body: unknown, headers: Record<string, string> = {}): RequestInit {
  return { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) }
}
