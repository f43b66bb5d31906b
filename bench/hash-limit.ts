import { createInterface } from 'node:readline'
import { availableParallelism } from 'node:os'
import { hash, verify } from '@node-rs/argon2'
import { OWASP_ARGON2ID, defaultHashingLimits } from '../src/passwords.js'

/*
 * The hashing limit: how many argon2id verifications per second this CPU
 * allows with the service's parameters (src/passwords.ts OWASP_ARGON2ID) and
 * the service's concurrency (defaultHashingLimits: one hashing thread per
 * available CPU), with nothing else in the way. A login is one verification (one
 * hash computation), so this is the most logins per second the service could
 * answer. Run by bench/run.ts in a child pinned like the service; it warms
 * up, prints "ready <concurrency>", then answers each "measure <ms>" line on stdin with one
 * JSON line (totals over every measurement so far), so the parent can
 * interleave it with the login workload. Ends with its stdin.
 */

export interface HashLimitResult {
  concurrency: number
  availableParallelism: number
  threadpoolSize: number
  params: { memoryCost?: number, timeCost?: number, parallelism?: number }
  verifications: number
  seconds: number
  perSecond: number
  p50Ms: number
  p99Ms: number
}

const password = 'correct horse battery staple'
const { concurrency } = defaultHashingLimits()
const stored = await hash(password, OWASP_ARGON2ID)
const durations: number[] = []
let measuredMs = 0

/** `concurrency` loops of back-to-back verifications until `until`. */
async function saturate (until: number, record: boolean): Promise<void> {
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < until) {
      const started = performance.now()
      if (!await verify(stored, password)) throw new Error('argon2 verification failed')
      if (record) durations.push(performance.now() - started)
    }
  }))
}

function result (): HashLimitResult {
  const sorted = [...durations].sort((a, b) => a - b)
  const at = (q: number): number => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? 0
  return {
    concurrency,
    availableParallelism: availableParallelism(),
    threadpoolSize: Number(process.env.UV_THREADPOOL_SIZE) || 4,
    params: { memoryCost: OWASP_ARGON2ID.memoryCost, timeCost: OWASP_ARGON2ID.timeCost, parallelism: OWASP_ARGON2ID.parallelism },
    verifications: durations.length,
    seconds: measuredMs / 1000,
    perSecond: measuredMs === 0 ? 0 : durations.length / (measuredMs / 1000),
    p50Ms: at(0.5),
    p99Ms: at(0.99)
  }
}

await saturate(performance.now() + Number(process.env.BENCH_WARMUP_MS ?? 1000), false)
process.stdout.write(`ready ${concurrency}\n`)
for await (const line of createInterface({ input: process.stdin })) {
  const match = /^measure (\d+)$/.exec(line.trim())
  if (match === null) continue
  const started = performance.now()
  await saturate(started + Number(match[1]), true)
  measuredMs += performance.now() - started
  process.stdout.write(JSON.stringify(result()) + '\n')
}
