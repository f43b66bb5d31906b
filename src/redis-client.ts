import { Cluster, Redis, type ChainableCommander, type ClusterOptions, type RedisOptions } from 'ioredis'

/*
 * Fail fast instead of queueing commands while Redis is away: requests answer
 * STORE_UNAVAILABLE in bounded time, and the client keeps reconnecting in the
 * background so the service recovers by itself. The same holds for a single
 * node and for every node of a Cluster.
 */
const COMMAND_OPTIONS = {
  connectTimeout: 2000,
  commandTimeout: 2000,
  maxRetriesPerRequest: 1
} satisfies RedisOptions

/**
 * Commands issued in the same tick of the event loop (the refreshes of many
 * clients at once, say) go out in one write and come back in one read: under
 * load a refresh costs a fraction of a system call, not two.
 */
const AUTO_PIPELINING = { enableAutoPipelining: true }

const reconnectDelay = (attempt: number): number => Math.min(attempt * 100, 1000)

/**
 * A client for `url`: a single node, or with `cluster` a Redis Cluster that
 * `url` is a seed node of (the other nodes are discovered from it). Not
 * connected yet: call `connect()`.
 */
export function createRedisClient (url: string, { cluster = false } = {}): Redis | Cluster {
  if (!cluster) {
    return new Redis(url, { ...COMMAND_OPTIONS, ...AUTO_PIPELINING, lazyConnect: true, enableOfflineQueue: false, retryStrategy: reconnectDelay })
  }
  const { seed, credentials } = clusterSeed(url)
  const options: ClusterOptions = {
    ...AUTO_PIPELINING,
    lazyConnect: true,
    enableOfflineQueue: false,
    clusterRetryStrategy: reconnectDelay,
    // A slot map that cannot be fetched, or a node that answers MOVED forever, fails the command in bounded time too.
    slotsRefreshTimeout: 2000,
    maxRedirections: 6,
    // Every node discovered from the seed is reached with the seed's credentials and TLS.
    redisOptions: { ...COMMAND_OPTIONS, ...credentials }
  }
  return new Cluster([seed], options)
}

/** The seed node of a `redis://` or `rediss://` URL, and what every node of the cluster is reached with. */
export function clusterSeed (url: string): { seed: { host: string, port: number }, credentials: Pick<RedisOptions, 'username' | 'password' | 'tls'> } {
  const parsed = new URL(url)
  const credentials: Pick<RedisOptions, 'username' | 'password' | 'tls'> = {}
  if (parsed.username !== '') credentials.username = decodeURIComponent(parsed.username)
  if (parsed.password !== '') credentials.password = decodeURIComponent(parsed.password)
  if (parsed.protocol === 'rediss:') credentials.tls = {}
  // A bracketed IPv6 literal comes back with its brackets.
  const host = parsed.hostname.replace(/^\[(.*)\]$/, '$1') || '127.0.0.1'
  return { seed: { host, port: parsed.port === '' ? 6379 : Number(parsed.port) }, credentials }
}

/**
 * Runs a MULTI to the end: a command that fails inside it fails the whole
 * (EXEC reports such a failure as one of its results, not as an error).
 */
export async function transaction (multi: ChainableCommander): Promise<void> {
  for (const [error] of await multi.exec() ?? []) {
    if (error !== null) throw error
  }
}
