/**
 * The service's Prometheus metrics (`GET /metrics` with METRICS_TOKEN), read
 * by the bench to tell what a workload left behind it: mails sent or dropped by
 * the throttle, security events recorded, work still queued.
 */
export class ServiceMetrics {
  private constructor (private readonly series: Array<{ name: string, labels: Record<string, string>, value: number }>) {}

  static async scrape (url: string, token: string): Promise<ServiceMetrics> {
    const response = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(10_000) })
    const text = await response.text()
    if (response.status !== 200) throw new Error(`GET /metrics answered ${response.status}: ${text.slice(0, 200)}`)
    const series = []
    for (const line of text.split('\n')) {
      // name{label="value",…} number; label values here never hold a quote or a comma.
      const match = /^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})? (\S+)$/.exec(line)
      if (match === null) continue
      const labels: Record<string, string> = {}
      for (const [, key, value] of (match[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)) labels[key!] = value!
      series.push({ name: match[1]!, labels, value: Number(match[3]) })
    }
    return new ServiceMetrics(series)
  }

  /** The sum of the series of `name` that have every label of `labels`. */
  value (name: string, labels: Record<string, string> = {}): number {
    return this.series
      .filter((series) => series.name === name && Object.entries(labels).every(([key, value]) => series.labels[key] === value))
      .reduce((sum, series) => sum + series.value, 0)
  }
}
