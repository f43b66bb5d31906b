import autocannon from 'autocannon'
import { cpuJiffies, cpuTimeMs } from './processes.js'

/** Monotonic-clock µs (V8 CPU profiles use the same clock), to cut a profile to the measured time. */
export interface TimeWindow {
  startUs: number
  endUs: number
}

/** One measured load, possibly made of several slices: what the table, the JSON and the chart show. */
export interface Measurement {
  /** 2xx responses per second over the measured time. */
  rps: number
  /** Latency of 2xx responses, ms, measured per response (autocannon's own histogram rounds to whole ms). */
  p50: number
  p90: number
  p97_5: number
  p99: number
  max: number
  /** 2xx responses. */
  ok: number
  /** Connection errors and timeouts (autocannon `errors`). */
  errors: number
  /** Responses that were not 2xx. */
  non2xx: number
  /** Every status code seen, with its count. */
  statusCodes: Record<string, number>
  seconds: number
  connections: number
  slices: number
  /** CPU used, in % of one core: the load generator (this process) and the server child. */
  generatorCpu: number
  serverCpu: number | undefined
  /** The server child's CPU time per 2xx response, ms: what neighbours on its cores change least. */
  serverCpuMsPerOk: number | undefined
  /**
   * How busy the servers' cores were, in % of one core each (summed): what is
   * above serverCpu was used by other processes, the noise of a shared machine.
   */
  serverCoresBusy: number | undefined
  windows: TimeWindow[]
}

export interface LoadOptions {
  url: string
  connections: number
  seconds: number
  requests?: autocannon.Request[]
  setupClient?: (client: autocannon.Client) => void
  /** The server child, for its CPU use. */
  serverPid?: number | undefined
  /** The CPUs the servers are pinned to, to measure what else ran there. */
  serverCpus?: number[] | undefined
}

/** Latency samples, ms, in a growable typed array (half a million a run is common). */
class Samples {
  #values = new Float64Array(1 << 16)
  #length = 0

  push (value: number): void {
    if (this.#length === this.#values.length) {
      const grown = new Float64Array(this.#values.length * 2)
      grown.set(this.#values)
      this.#values = grown
    }
    this.#values[this.#length++] = value
  }

  percentiles (): { p50: number, p90: number, p97_5: number, p99: number, max: number } {
    const sorted = this.#values.slice(0, this.#length).sort()
    const at = (q: number): number => sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!
    return { p50: at(0.5), p90: at(0.9), p97_5: at(0.975), p99: at(0.99), max: sorted.length === 0 ? 0 : sorted[sorted.length - 1]! }
  }
}

interface Slice {
  seconds: number
  wallMs: number
  errors: number
  non2xx: number
  statusCodes: Record<string, number>
  generatorCpuMs: number
  serverCpuMs: number | undefined
  coresBusyShare: number | undefined
  window: TimeWindow
}

/**
 * A measurement taken in slices (so two workloads can be interleaved and a
 * shared machine's drifting load hits both alike): latencies and counts
 * accumulate over every slice.
 */
export class Series {
  readonly #samples = new Samples()
  readonly #slices: Slice[] = []
  #connections = 0

  async run (options: LoadOptions): Promise<void> {
    this.#connections = options.connections
    const serverBefore = cpuTimeMs(options.serverPid)
    const coresBefore = options.serverCpus === undefined ? undefined : cpuJiffies(options.serverCpus)
    const generatorBefore = process.cpuUsage()
    const started = performance.now()
    const startUs = Number(process.hrtime.bigint() / 1000n)

    // autocannon's own duration also counts setting its clients up and up to a sampling interval after the
    // stop; the rate is taken between the first and the last response instead.
    let first = 0
    let last = 0
    let responses = 0
    const result = await new Promise<autocannon.Result>((resolve, reject) => {
      const instance = autocannon({
        url: options.url,
        connections: options.connections,
        duration: options.seconds,
        requests: options.requests,
        setupClient: options.setupClient,
        timeout: 10,
        sampleInt: 100
      }, (error, done) => { if (error) reject(error); else resolve(done) })
      instance.on('response', (_client, statusCode, _bytes, responseTime) => {
        last = performance.now()
        if (responses++ === 0) first = last
        if (statusCode >= 200 && statusCode < 300) this.#samples.push(responseTime)
      })
    })

    const wallMs = performance.now() - started
    const endUs = Number(process.hrtime.bigint() / 1000n)
    const generator = process.cpuUsage(generatorBefore)
    const serverAfter = cpuTimeMs(options.serverPid)
    const coresAfter = options.serverCpus === undefined ? undefined : cpuJiffies(options.serverCpus)
    const statusCodes: Record<string, number> = {}
    for (const [code, { count }] of Object.entries(result.statusCodeStats ?? {})) statusCodes[code] = Number(count ?? 0)
    this.#slices.push({
      // n responses span n - 1 intervals between the first and the last.
      seconds: responses > 1 ? (last - first) / 1000 * responses / (responses - 1) : result.duration,
      wallMs,
      errors: result.errors,
      non2xx: result.non2xx,
      statusCodes,
      generatorCpuMs: (generator.user + generator.system) / 1000,
      serverCpuMs: serverBefore === undefined || serverAfter === undefined ? undefined : serverAfter - serverBefore,
      coresBusyShare: coresBefore === undefined || coresAfter === undefined || coresAfter.total === coresBefore.total
        ? undefined
        : (coresAfter.busy - coresBefore.busy) / (coresAfter.total - coresBefore.total) * options.serverCpus!.length,
      window: { startUs, endUs }
    })
  }

  result (): Measurement {
    const slices = this.#slices
    const statusCodes: Record<string, number> = {}
    for (const slice of slices) {
      for (const [code, count] of Object.entries(slice.statusCodes)) statusCodes[code] = (statusCodes[code] ?? 0) + count
    }
    const ok = Object.entries(statusCodes).filter(([code]) => code.startsWith('2')).reduce((sum, [, count]) => sum + count, 0)
    const seconds = slices.reduce((sum, slice) => sum + slice.seconds, 0)
    const wallMs = slices.reduce((sum, slice) => sum + slice.wallMs, 0)
    const known = <T>(values: Array<T | undefined>): values is T[] => values.every((value) => value !== undefined)
    const serverMs = slices.map((slice) => slice.serverCpuMs)
    const busy = slices.map((slice) => slice.coresBusyShare)
    return {
      rps: seconds === 0 ? 0 : ok / seconds,
      ...this.#samples.percentiles(),
      ok,
      errors: slices.reduce((sum, slice) => sum + slice.errors, 0),
      non2xx: slices.reduce((sum, slice) => sum + slice.non2xx, 0),
      statusCodes,
      seconds,
      connections: this.#connections,
      slices: slices.length,
      generatorCpu: slices.reduce((sum, slice) => sum + slice.generatorCpuMs, 0) / wallMs * 100,
      serverCpu: known(serverMs) ? serverMs.reduce((sum, ms) => sum + ms, 0) / wallMs * 100 : undefined,
      serverCpuMsPerOk: known(serverMs) && ok > 0 ? serverMs.reduce((sum, ms) => sum + ms, 0) / ok : undefined,
      serverCoresBusy: known(busy) && busy.length > 0
        ? slices.reduce((sum, slice) => sum + slice.coresBusyShare! * slice.wallMs, 0) / wallMs * 100
        : undefined,
      windows: slices.map((slice) => slice.window)
    }
  }
}

/** One unsliced measurement. */
export async function runLoad (options: LoadOptions): Promise<Measurement> {
  const series = new Series()
  await series.run(options)
  return series.result()
}
