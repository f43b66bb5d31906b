import type { FastifyInstance, RouteOptions } from 'fastify'
import fp from 'fastify-plugin'
import { routeAccessOf, type RouteAccess } from './shared/route-access.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Every route's access as declared, by "METHOD url": what the docs show and a test checks in one list. */
    routeAccess: ReadonlyMap<string, RouteAccess>
  }
}

/**
 * Every route's declared access (public, role-gated or authenticated), read
 * once the app is built (a later onRoute hook may still declare a route:
 * CORS's preflight route is made public so), and a stop at start-up on a
 * contradictory declaration. Registered before any plugin that adds routes,
 * so the list holds them all; the check itself is the auth plugin's hook.
 */
async function routeAccessPlugin (fastify: FastifyInstance): Promise<void> {
  // Each route's methods and url as registered (Fastify may reuse the options object for a variant of the url), and its options.
  const routes: Array<{ methods: string[], url: string, route: RouteOptions }> = []
  const routeAccess = new Map<string, RouteAccess>()
  fastify.decorate('routeAccess', routeAccess)
  fastify.addHook('onRoute', (route) => { routes.push({ methods: [route.method].flat(), url: route.url, route }) })
  fastify.addHook('onReady', async () => {
    for (const { methods, url, route } of routes) {
      const access = routeAccessOf(url, route.config)
      for (const method of methods) routeAccess.set(`${method} ${url}`, access)
    }
  })
}

export default fp(routeAccessPlugin, { name: 'route-access' })
