import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join, relative } from 'node:path'
import { projectRoot } from '../src/paths.js'
import { chartOf, formatTable, medianRows, type Results } from './report.js'

/*
 * The medians of several `npm run bench` runs, as the targets are
 * stated: `npx tsx bench/summarize.ts [--markdown] [run.json ...]` (default:
 * the three newest bench/results/run-*.json). Prints the table and writes
 * bench/results/median.json and median.svg.
 */

const args = process.argv.slice(2)
const markdown = args.includes('--markdown')
const resultsDir = join(projectRoot, 'bench', 'results')
let files = args.filter((arg) => !arg.startsWith('--'))
if (files.length === 0) {
  files = (await readdir(resultsDir)).filter((name) => /^run-.*\.json$/.test(name)).sort().slice(-3).map((name) => join(resultsDir, name))
}
if (files.length === 0) {
  process.stderr.write('no runs: run `npm run bench` first (or name result files)\n')
  process.exit(2)
}

const runs = await Promise.all(files.map(async (file) => JSON.parse(await readFile(file, 'utf8')) as Results))
const rows = medianRows(runs.map((run) => run.rows))
const first = runs[0]!
const subtitle = `median of ${runs.length} run${runs.length === 1 ? '' : 's'}, ${first.machine.cpus} × ${first.machine.model}, Node ${first.machine.node}, ` +
  `${String(first.options.duration)} s per workload`

process.stdout.write(`median of ${runs.length} runs: ${files.map((file) => relative(projectRoot, file)).join(', ')}\n\n`)
process.stdout.write(formatTable(rows, { markdown }) + '\n')
await writeFile(join(resultsDir, 'median.json'), JSON.stringify({ runs: files.map((file) => relative(projectRoot, file)), rows }, null, 2) + '\n')
await writeFile(join(resultsDir, 'median.svg'), chartOf(rows, subtitle))
process.stdout.write(`\nwritten: ${relative(projectRoot, join(resultsDir, 'median.json'))}, ${relative(projectRoot, join(resultsDir, 'median.svg'))}\n`)
