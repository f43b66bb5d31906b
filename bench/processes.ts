import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { createServer, type AddressInfo } from 'node:net'
import { join } from 'node:path'
import { projectRoot } from '../src/paths.js'

/** How the run places processes on cores, and what it tells the reader about it. */
export interface Placement {
  /** `taskset -c <serviceCpus>` for every server child (bare route, service, hashing limit); undefined: not pinned. */
  serviceCpus: string | undefined
  /** The core this process (the load generator) was moved to; undefined: not pinned. */
  generatorCpu: string | undefined
  /** One sentence per fact, printed and stored with the results. */
  notes: string[]
}

function hasTaskset (): boolean {
  return spawnSync('taskset', ['--version'], { stdio: 'ignore' }).status === 0
}

/** The CPUs the kernel lets `pid` run on (e.g. "0-1"), or undefined. */
export function affinityOf (pid: number): string | undefined {
  try {
    const listed = /^Cpus_allowed_list:\s*(\S+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]
    if (listed !== undefined) return listed
  } catch {}
  const result = spawnSync('taskset', ['-cp', String(pid)], { encoding: 'utf8' })
  if (result.status !== 0) return undefined
  return /:\s*(\S+)\s*$/.exec(result.stdout.trim())?.[1]
}

/**
 * Pins this process (autocannon's only thread that matters) to `generatorCpu`
 * and arranges for children to run on `serviceCpus`, when taskset exists and
 * the machine has at least two CPUs. Never fails: without taskset, nothing is
 * pinned and the notes say so.
 */
export function placeProcesses (cpuCount: number, serviceCpus: string, generatorCpu: string, pin: boolean): Placement {
  if (!pin) {
    return { serviceCpus: undefined, generatorCpu: undefined, notes: ['not pinned (--no-pin): the load generator and the servers share all cores'] }
  }
  if (cpuCount < 2) {
    return { serviceCpus: undefined, generatorCpu: undefined, notes: ['not pinned: one CPU only, the load generator shares it with the servers'] }
  }
  if (!hasTaskset()) {
    return { serviceCpus: undefined, generatorCpu: undefined, notes: ['not pinned: taskset is not installed (util-linux); the load generator and the servers share all cores'] }
  }
  const moved = spawnSync('taskset', ['-cp', generatorCpu, String(process.pid)], { stdio: 'ignore' }).status === 0
  const notes = [
    `servers (bare route, service, hashing limit) pinned to CPU ${serviceCpus} with taskset -c ${serviceCpus}`,
    moved
      ? `load generator (this process, autocannon) pinned to CPU ${generatorCpu} with taskset -cp ${generatorCpu} ${process.pid}`
      : `load generator NOT pinned: taskset -cp ${generatorCpu} ${process.pid} failed`
  ]
  return { serviceCpus, generatorCpu: moved ? generatorCpu : undefined, notes }
}

/** A port nothing listens on right now. */
export async function freePort (): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  server.close()
  await once(server, 'close')
  return port
}

/** A Node child running a TypeScript file of the repository, on the servers' cores. */
export interface ServerProcess {
  name: string
  child: ChildProcess
  url: string
  /** The last few KiB of its stdout and stderr, for an error message. */
  output: () => string
}

export interface StartOptions {
  name: string
  /** From the repository root. */
  script: string
  env: Record<string, string>
  placement: Placement
  nodeArgs?: string[]
  /** Answers 200 once the server is ready. */
  readyPath: string
  readyTimeoutMs?: number
}

const KEPT_OUTPUT = 8192

/** Environment every child gets, whatever the parent's: nothing leaks in (no REDIS_URL into an embedded run). */
export function baseEnv (): Record<string, string> {
  const env: Record<string, string> = {}
  for (const name of ['PATH', 'HOME', 'TMPDIR', 'UV_THREADPOOL_SIZE', 'NODE_EXTRA_CA_CERTS']) {
    const value = process.env[name]
    if (value !== undefined) env[name] = value
  }
  return env
}

/** Spawns `node --import tsx <script>`, pinned when the placement says so, with only `env` (and PATH etc.). */
export function spawnNode (script: string, env: Record<string, string>, placement: Placement, nodeArgs: string[] = [], { stdin = false } = {}): ChildProcess {
  const args = [...nodeArgs, '--import', 'tsx', join(projectRoot, script)]
  const [command, commandArgs] = placement.serviceCpus === undefined
    ? [process.execPath, args]
    : ['taskset', ['-c', placement.serviceCpus, process.execPath, ...args]]
  return spawn(command, commandArgs, { cwd: projectRoot, env: { ...baseEnv(), ...env }, stdio: [stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'] })
}

/** Starts a server on a free port (PORT in its env) and waits until `readyPath` answers 200. */
export async function startServer (options: StartOptions): Promise<ServerProcess> {
  const port = await freePort()
  const child = spawnNode(options.script, { ...options.env, HOST: '127.0.0.1', PORT: String(port) }, options.placement, options.nodeArgs)
  let output = ''
  const keep = (chunk: Buffer): void => {
    output = (output + chunk.toString()).slice(-KEPT_OUTPUT)
  }
  child.stdout!.on('data', keep)
  child.stderr!.on('data', keep)
  const url = `http://127.0.0.1:${port}`
  const server: ServerProcess = { name: options.name, child, url, output: () => output }

  const deadline = Date.now() + (options.readyTimeoutMs ?? 90_000)
  while (true) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${options.name} exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${output}`)
    }
    try {
      const response = await fetch(url + options.readyPath, { signal: AbortSignal.timeout(2000) })
      await response.arrayBuffer()
      if (response.status === 200) return server
    } catch {}
    if (Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new Error(`${options.name} was not ready on ${url}${options.readyPath} in time:\n${output}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

/** SIGTERM (the service closes gracefully and writes its CPU profile), SIGKILL after `graceMs`. */
export async function stopServer (server: { child: ChildProcess }, graceMs = 15_000): Promise<void> {
  const { child } = server
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs)
  await exited
  clearTimeout(timer)
}

/** A child spoken to in lines: a command on its stdin, an answer line on its stdout. */
export interface LineChild {
  child: ChildProcess
  /** The next line it prints. */
  nextLine: () => Promise<string>
  send: (line: string) => void
  /** Closes its stdin and waits for it to exit. */
  stop: () => Promise<void>
}

export function startLineChild (script: string, env: Record<string, string>, placement: Placement): LineChild {
  const child = spawnNode(script, env, placement, [], { stdin: true })
  let buffered = ''
  let stderr = ''
  const lines: string[] = []
  const waiting: Array<{ resolve: (line: string) => void, reject: (error: Error) => void }> = []
  child.stdout!.on('data', (chunk: Buffer) => {
    buffered += chunk.toString()
    let newline: number
    while ((newline = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, newline)
      buffered = buffered.slice(newline + 1)
      const waiter = waiting.shift()
      if (waiter === undefined) lines.push(line)
      else waiter.resolve(line)
    }
  })
  child.stderr!.on('data', (chunk: Buffer) => { stderr = (stderr + chunk.toString()).slice(-KEPT_OUTPUT) })
  child.once('exit', (code) => {
    for (const waiter of waiting.splice(0)) waiter.reject(new Error(`${script} exited (${code}):\n${stderr}`))
  })
  return {
    child,
    nextLine: async () => {
      const line = lines.shift()
      if (line !== undefined) return line
      if (child.exitCode !== null) throw new Error(`${script} exited (${child.exitCode}):\n${stderr}`)
      return new Promise<string>((resolve, reject) => waiting.push({ resolve, reject }))
    },
    send: (line) => { child.stdin!.write(line + '\n') },
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = once(child, 'exit')
      child.stdin!.end()
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(timer)
    }
  }
}

/** CPU time (user + system) a Linux process has used, in ms; undefined elsewhere or once it is gone. */
export function cpuTimeMs (pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name (which may hold spaces) start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const ticks = Number(fields[11]) + Number(fields[12])
    return Number.isFinite(ticks) ? ticks * 10 : undefined // USER_HZ is 100 on Linux
  } catch {
    return undefined
  }
}

/** CPU indexes of a taskset list such as "0", "0-1" or "0,2-3". */
export function cpuIndexes (list: string): number[] {
  return list.split(',').flatMap((part) => {
    const [from, to] = part.split('-').map(Number)
    if (!Number.isInteger(from)) return []
    return Array.from({ length: (Number.isInteger(to) ? to! : from!) - from! + 1 }, (_, i) => from! + i)
  })
}

/** Busy and total jiffies of some CPUs (from /proc/stat), to tell how much of a core others used; undefined off Linux. */
export function cpuJiffies (indexes: number[]): { busy: number, total: number } | undefined {
  try {
    let busy = 0
    let total = 0
    for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
      const match = /^cpu(\d+) (.*)$/.exec(line)
      if (match === null || !indexes.includes(Number(match[1]))) continue
      const [user, nice, system, idle, iowait, irq, softirq, steal] = match[2]!.trim().split(/\s+/).map(Number)
      const idleAll = idle! + iowait!
      const busyAll = user! + nice! + system! + irq! + softirq! + steal!
      busy += busyAll
      total += busyAll + idleAll
    }
    return total === 0 ? undefined : { busy, total }
  } catch {
    return undefined
  }
}
