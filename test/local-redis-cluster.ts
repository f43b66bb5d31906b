import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'

const run = promisify(execFile)

/** A throwaway Redis Cluster of master nodes on 127.0.0.1, each on a free port. */
export interface LocalRedisCluster {
  ports: number[]
  /** A `redis://` URL of one node: the seed for REDIS_URL with REDIS_CLUSTER=true. */
  seedUrl: string
  stop(): Promise<void>
}

/** This machine's Redis cannot run a cluster (missing, too old, or built without cluster support). */
export class ClusterUnsupportedError extends Error {}

async function checkClusterSupport (): Promise<void> {
  let version: string
  try {
    version = (await run('redis-server', ['--version'])).stdout.trim()
    await run('redis-cli', ['--version'])
  } catch {
    throw new ClusterUnsupportedError('redis-server or redis-cli is not installed')
  }
  const major = Number(/v=(\d+)\./.exec(version)?.[1])
  if (!(major >= 5)) throw new ClusterUnsupportedError(`${version}: redis-cli --cluster create needs Redis 5 or later`)
}

async function portIsFree (port: number): Promise<boolean> {
  const server = createServer()
  try {
    server.listen(port, '127.0.0.1')
    await once(server, 'listening')
    return true
  } catch {
    return false
  } finally {
    server.close()
  }
}

/** A free port whose cluster bus port (port + 10000) is free too. */
async function freeClusterPort (taken: Set<number>): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 20000 + Math.floor(Math.random() * 30000)
    if (taken.has(port) || taken.has(port + 10000)) continue
    if (await portIsFree(port) && await portIsFree(port + 10000)) return port
  }
  throw new Error('no free port pair for a Redis Cluster node')
}

async function redisCli (port: number, ...args: string[]): Promise<string> {
  const { stdout } = await run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args])
  return stdout
}

async function until (what: string, timeoutMs: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await check().catch(() => false)) return
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(100)
  }
}

/**
 * Starts `size` redis-server processes with cluster mode on, joins them with
 * `redis-cli --cluster create` (masters only, the slots split between them)
 * and waits until every node reports cluster_state:ok. Nothing is persisted.
 * Throws ClusterUnsupportedError when this machine's Redis cannot do it.
 */
export async function startLocalRedisCluster (size = 3): Promise<LocalRedisCluster> {
  await checkClusterSupport()
  const dir = await mkdtemp(join(tmpdir(), 'auth-redis-cluster-'))
  const children: ChildProcess[] = []
  const ports: number[] = []
  const stop = async (): Promise<void> => {
    await Promise.all(children.map(async (child) => {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = once(child, 'exit')
      child.kill('SIGKILL')
      await exited
    }))
    await rm(dir, { recursive: true, force: true })
  }

  try {
    const taken = new Set<number>()
    for (let node = 0; node < size; node++) {
      const port = await freeClusterPort(taken)
      taken.add(port).add(port + 10000)
      ports.push(port)
      const child = spawn('redis-server', [
        '--port', String(port),
        '--bind', '127.0.0.1',
        '--cluster-enabled', 'yes',
        '--cluster-config-file', join(dir, `nodes-${port}.conf`),
        '--cluster-node-timeout', '5000',
        '--dir', dir,
        '--save', '',
        '--appendonly', 'no',
        '--logfile', join(dir, `${port}.log`)
      ], { stdio: 'ignore' })
      children.push(child)
      let exited = false
      child.once('exit', () => { exited = true })
      await until(`redis-server on port ${port}`, 10_000, async () => {
        if (exited) throw new Error(`redis-server on port ${port} exited: see ${join(dir, `${port}.log`)}`)
        return (await redisCli(port, 'ping')).trim() === 'PONG'
      }).catch(async (error: Error) => {
        if (!exited) throw error
        const log = await readFile(join(dir, `${port}.log`), 'utf8').catch(() => '')
        throw new ClusterUnsupportedError(`redis-server refused to start in cluster mode: ${log.trim().split('\n').pop()}`)
      })
    }

    await run('redis-cli', ['--cluster', 'create', ...ports.map((port) => `127.0.0.1:${port}`), '--cluster-replicas', '0', '--cluster-yes'])
    for (const port of ports) {
      await until(`cluster_state:ok on port ${port}`, 20_000, async () => {
        const info = await redisCli(port, 'cluster', 'info')
        return info.includes('cluster_state:ok') && info.includes(`cluster_known_nodes:${size}`) &&
          info.includes('cluster_slots_assigned:16384')
      })
    }
  } catch (error) {
    await stop()
    throw error
  }

  return { ports, seedUrl: `redis://127.0.0.1:${ports[0]}`, stop }
}
