import t from 'tap'
import { buildTestApp } from '../helpers.js'

/*
 * Request ids: one per request, in the answer; a proxy's id is reused only
 * behind TRUST_PROXY, and only when it could not forge a log line.
 */

t.test('request ids: one per request, in the answer; a proxy\'s id is reused only behind TRUST_PROXY', async (t) => {
  const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
  const direct = await buildTestApp(t)
  const a = await direct.inject({ method: 'GET', url: '/health' })
  const b = await direct.inject({ method: 'GET', url: '/health', headers: { 'x-request-id': 'client-chosen' } })
  t.match(a.headers['x-request-id'], uuid)
  t.match(b.headers['x-request-id'], uuid, 'a client cannot choose its id')
  t.not(a.headers['x-request-id'], b.headers['x-request-id'])

  const proxied = await buildTestApp(t, { env: { TRUST_PROXY: 'true' } })
  t.equal((await proxied.inject({ method: 'GET', url: '/health', headers: { 'x-request-id': 'lb-1234.abcd' } })).headers['x-request-id'], 'lb-1234.abcd')
  t.equal((await proxied.inject({ method: 'GET', url: '/nowhere', headers: { 'x-request-id': 'lb-404' } })).headers['x-request-id'], 'lb-404', 'a 404 too')
  const forged = await proxied.inject({ method: 'GET', url: '/health', headers: { 'x-request-id': 'x" injected="1' } })
  t.match(forged.headers['x-request-id'], uuid, 'an id that could forge a log line is replaced')
  const long = await proxied.inject({ method: 'GET', url: '/health', headers: { 'x-request-id': 'a'.repeat(200) } })
  t.match(long.headers['x-request-id'], uuid, 'so is an over-long one')
})
