import { readFileSync } from 'node:fs'
import { relative } from 'node:path'
import { pathToFileURL } from 'node:url'
import { projectRoot } from '../src/paths.js'

/*
 * Where the service's time went, from a V8 .cpuprofile (written by
 * `npm run bench -- --cpu-prof`): self time per function and per package.
 * Also usable alone: `npx tsx bench/profile.ts <file.cpuprofile> [top]`.
 */

interface ProfileNode {
  id: number
  callFrame: { functionName: string, url: string, lineNumber: number }
  children?: number[]
}

export interface CpuProfile {
  startTime: number
  endTime: number
  nodes: ProfileNode[]
  samples: number[]
  timeDeltas: number[]
}

export interface ProfileEntry {
  name: string
  selfMs: number
  share: number
}

export interface ProfileSummary {
  /** Sampled time the main thread was busy (everything but "(idle)"): the shares are of this. */
  busyMs: number
  idleMs: number
  functions: ProfileEntry[]
  packages: ProfileEntry[]
}

function where (url: string): string {
  if (url === '') return ''
  const path = url.startsWith('file://') ? new URL(url).pathname : url
  return path.startsWith(projectRoot) ? relative(projectRoot, path) : path
}

/** The package (or project folder, or V8/Node category) a frame belongs to. */
function packageOf (url: string, functionName: string): string {
  if (url === '') return `(${functionName || 'native'})`
  const path = where(url)
  const modules = path.lastIndexOf('node_modules/')
  if (modules >= 0) {
    const [scope, name] = path.slice(modules + 'node_modules/'.length).split('/')
    return scope!.startsWith('@') ? `${scope}/${name}` : scope!
  }
  if (path.startsWith('node:')) return 'node core'
  return path.split('/')[0] ?? path
}

/** Monotonic-clock µs (V8's profile clock, and process.hrtime's): only samples inside count. */
export interface ProfileWindow {
  startUs: number
  endUs: number
}

const inside = (at: number, windows: ProfileWindow[]): boolean => windows.some(({ startUs, endUs }) => at >= startUs && at <= endUs)

export function readProfile (file: string): CpuProfile {
  return JSON.parse(readFileSync(file, 'utf8')) as CpuProfile
}

/**
 * Self time per function and package, over the whole profile or some windows
 * of it. A sample's time is the gap to the next sample (as DevTools counts it).
 */
export function summarizeProfile (profile: CpuProfile, top = 15, windows?: ProfileWindow[]): ProfileSummary {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]))
  const selfByNode = new Map<number, number>()
  let at = profile.startTime
  profile.samples.forEach((id, index) => {
    at += profile.timeDeltas[index] ?? 0
    if (windows !== undefined && !inside(at, windows)) return
    const ms = (profile.timeDeltas[index + 1] ?? 0) / 1000
    selfByNode.set(id, (selfByNode.get(id) ?? 0) + ms)
  })
  let busyMs = 0
  let idleMs = 0
  for (const [id, ms] of selfByNode) {
    if (byId.get(id)!.callFrame.functionName === '(idle)') idleMs += ms
    else busyMs += ms
  }
  const functions = new Map<string, number>()
  const packages = new Map<string, number>()
  for (const [id, ms] of selfByNode) {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame
    if (functionName === '(idle)') continue
    const location = url === '' ? '' : ` ${where(url)}:${lineNumber + 1}`
    const name = `${functionName || '(anonymous)'}${location}`
    functions.set(name, (functions.get(name) ?? 0) + ms)
    const pkg = packageOf(url, functionName)
    packages.set(pkg, (packages.get(pkg) ?? 0) + ms)
  }
  const ranked = (entries: Map<string, number>): ProfileEntry[] => [...entries]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([name, selfMs]) => ({ name, selfMs, share: busyMs === 0 ? 0 : selfMs / busyMs }))
  return { busyMs, idleMs, functions: ranked(functions), packages: ranked(packages) }
}

export function formatProfile (summary: ProfileSummary, { packages = 8, functions = 12, indent = '  ' } = {}): string {
  const line = ({ name, share }: ProfileEntry): string => `${indent}  ${(share * 100).toFixed(1).padStart(5)}%  ${name}`
  return [
    `${indent}main thread ${(summary.busyMs / 1000).toFixed(1)} s busy, ${(summary.idleMs / 1000).toFixed(1)} s idle; self time by package:`,
    ...summary.packages.slice(0, packages).map(line),
    `${indent}by function:`,
    ...summary.functions.slice(0, functions).map(line)
  ].join('\n')
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [file, top] = process.argv.slice(2)
  if (file === undefined) {
    process.stderr.write('usage: npx tsx bench/profile.ts <file.cpuprofile> [top]\n')
    process.exit(2)
  }
  const count = Number(top ?? 20)
  process.stdout.write(formatProfile(summarizeProfile(readProfile(file), count), { packages: count, functions: count, indent: '' }) + '\n')
}
