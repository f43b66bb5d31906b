import fastifyCookie from '@fastify/cookie'
import type { FastifyInstance, FastifyReply } from 'fastify'
import fp from 'fastify-plugin'

export const REFRESH_COOKIE = 'refresh_token'
/** The cookie goes only to /auth routes: never to the API calls that carry access tokens. */
export const REFRESH_COOKIE_PATH = '/auth'

declare module 'fastify' {
  interface FastifyReply {
    setRefreshCookie(token: string, maxAgeSeconds: number): FastifyReply
    clearRefreshCookie(): FastifyReply
  }
}

/** The refresh_token cookie with the attributes API.md fixes. */
async function cookiePlugin (fastify: FastifyInstance): Promise<void> {
  await fastify.register(fastifyCookie)
  const attributes = {
    httpOnly: true,
    sameSite: 'strict',
    path: REFRESH_COOKIE_PATH,
    secure: fastify.config.cookieSecure
  } as const

  fastify.decorateReply('setRefreshCookie', function (this: FastifyReply, token: string, maxAgeSeconds: number) {
    return this.setCookie(REFRESH_COOKIE, token, { ...attributes, maxAge: maxAgeSeconds })
  })
  fastify.decorateReply('clearRefreshCookie', function (this: FastifyReply) {
    return this.clearCookie(REFRESH_COOKIE, attributes)
  })
}

export default fp(cookiePlugin, { name: 'cookie', dependencies: ['config'] })
