/** Swagger UI and its assets, registered by @fastify/swagger-ui under this prefix. */
export const DOCS_PREFIX = '/docs'

/** Whether a route (by its url) is Swagger UI's: public, and with headers of its own. */
export function isDocsRoute (url: string): boolean {
  return url === DOCS_PREFIX || url.startsWith(`${DOCS_PREFIX}/`)
}
