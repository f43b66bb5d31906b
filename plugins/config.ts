import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { Clock } from '../src/clock.js'
import type { Config } from '../src/config.js'

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
    clock: Clock
  }
}

export interface ConfigPluginOptions {
  config: Config
  clock: Clock
}

/** The validated configuration and the clock, the only sources of settings and time for every plugin. */
async function configPlugin (fastify: FastifyInstance, { config, clock }: ConfigPluginOptions): Promise<void> {
  fastify.decorate('config', config)
  fastify.decorate('clock', clock)
}

export default fp(configPlugin, { name: 'config' })
