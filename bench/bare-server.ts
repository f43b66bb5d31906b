import Fastify from 'fastify'

/*
 * The yardstick: one Fastify route answering a small JSON, no plugins, no
 * logger. It answers GET /users/me (the request the service's "me" workload
 * sends, headers and all) so both see byte-for-byte the same load.
 */
const body = {
  id: '0190f3a0-0000-7000-8000-000000000000',
  email: 'bench-user@example.com',
  createdAt: '2025-01-01T00:00:00.000Z'
}

const app = Fastify({ logger: false })
app.get('/users/me', async () => body)

await app.listen({ host: process.env.HOST ?? '127.0.0.1', port: Number(process.env.PORT ?? 0) })
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => { app.close().finally(() => process.exit(0)) })
}
