/** One bar: a ratio, and the target it is held to (if any). */
export interface ChartRow {
  label: string
  /** The ratio drawn, e.g. 0.62 (× the bare route). */
  value: number
  /** Drawn as a marker; `atLeast`: the bar should reach it, `atMost`: it should stay under it. */
  target?: { value: number, direction: 'atLeast' | 'atMost' }
  /** Printed after the bar, e.g. "0.62× bare". */
  text: string
}

const WIDTH = 900
const LABEL_WIDTH = 290
const BAR_AREA = 400
const ROW_HEIGHT = 34
const TOP = 58

function escapeXml (text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
}

function met (row: ChartRow): boolean | undefined {
  if (row.target === undefined) return undefined
  return row.target.direction === 'atLeast' ? row.value >= row.target.value : row.value <= row.target.value
}

/**
 * A horizontal bar per workload, its ratio to a yardstick (the bare route,
 * the hashing limit, the idle p99, 1 KiB). Each row's scale runs to 1.1× the
 * largest of 1, its value and its target, so a thin line marks the yardstick
 * (1.0) and a dashed one the target; green bars meet it, red ones miss it,
 * grey ones have none.
 */
export function renderChart (title: string, subtitle: string, rows: ChartRow[]): string {
  const height = TOP + rows.length * ROW_HEIGHT + 44
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif" font-size="13">`,
    `<rect width="${WIDTH}" height="${height}" fill="#ffffff"/>`,
    `<text x="16" y="24" font-size="16" font-weight="600" fill="#111">${escapeXml(title)}</text>`,
    `<text x="16" y="44" fill="#555">${escapeXml(subtitle)}</text>`
  ]
  rows.forEach((row, index) => {
    const y = TOP + index * ROW_HEIGHT
    const scale = Math.max(1, row.value, row.target?.value ?? 0) * 1.1
    const one = LABEL_WIDTH + BAR_AREA / scale
    const barWidth = Math.max(1, Math.min(BAR_AREA, (row.value / scale) * BAR_AREA))
    const verdict = met(row)
    const fill = verdict === undefined ? '#9aa5b1' : verdict ? '#2f9e44' : '#e03131'
    parts.push(
      `<text x="16" y="${y + 17}" fill="#222">${escapeXml(row.label)}</text>`,
      `<rect x="${LABEL_WIDTH}" y="${y + 4}" width="${BAR_AREA}" height="18" fill="#f1f3f5"/>`,
      `<rect x="${LABEL_WIDTH}" y="${y + 4}" width="${barWidth.toFixed(1)}" height="18" fill="${fill}"/>`,
      `<line x1="${one.toFixed(1)}" y1="${y + 2}" x2="${one.toFixed(1)}" y2="${y + 24}" stroke="#adb5bd" stroke-width="1"/>`,
      `<text x="${LABEL_WIDTH + BAR_AREA + 8}" y="${y + 17}" fill="#222">${escapeXml(row.text)}</text>`
    )
    if (row.target !== undefined) {
      const x = LABEL_WIDTH + (row.target.value / scale) * BAR_AREA
      const sign = row.target.direction === 'atLeast' ? '≥' : '≤'
      parts.push(
        `<line x1="${x.toFixed(1)}" y1="${y}" x2="${x.toFixed(1)}" y2="${y + 26}" stroke="#111" stroke-width="1.5" stroke-dasharray="3,2"/>`,
        `<text x="${(x + 3).toFixed(1)}" y="${y + 33}" font-size="10" fill="#444">target ${sign} ${row.target.value}</text>`
      )
    }
  })
  const legendY = TOP + rows.length * ROW_HEIGHT + 16
  parts.push(
    `<text x="16" y="${legendY}" font-size="11" fill="#666">Ratios to a yardstick measured in the same run (grey line: 1.0, the yardstick; dashed: the target). ` +
      'Green: target met, red: missed, grey: no target.</text>',
    `<text x="16" y="${legendY + 15}" font-size="11" fill="#666">Each row has its own scale. Quote ratios, not absolute figures: the machine is shared and noisy.</text>`,
    '</svg>'
  )
  return parts.join('\n') + '\n'
}
