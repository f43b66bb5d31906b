import closeWithGrace from 'close-with-grace'
import { buildApp } from './app.js'
import { ConfigError, loadConfig } from './config.js'
import { DatabaseInUseError } from './database.js'

/** Traffic still arriving after SIGTERM (a balancer has not noticed yet) is served for up to this long. */
const DRAIN = { quietMs: 250, maxMs: 5_000 }

/** Start-up: configuration first, and one clear line naming the variable if it is wrong. */
async function main (): Promise<void> {
  let app
  try {
    const config = loadConfig()
    app = await buildApp({ config })
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`Invalid configuration: ${error.message}\n`)
      process.exit(1)
    }
    if (error instanceof DatabaseInUseError) {
      process.stderr.write(`Cannot start: ${error.message}\n`)
      process.exit(1)
    }
    throw error
  }

  // Requests on their way are served (drain), in-flight requests finish,
  // connections close, the stores close, then the process exits 0. A refresh
  // whose answer is lost with the connection can be retried within the grace window.
  closeWithGrace({ delay: 15_000 }, async ({ signal, err }) => {
    if (err !== undefined) app.log.error({ err }, 'shutting down after an error')
    else app.log.info({ signal }, 'shutting down')
    await app.drain(DRAIN)
    await app.close()
  })

  await app.listen({ host: app.config.host, port: app.config.port })
}

await main()
