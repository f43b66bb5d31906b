import neostandard from 'neostandard'

/*
 * The layout's rules (README, "Layout"), checked on every `npm test`:
 * - the domain (src/) knows nothing of HTTP, Fastify, plugins or routes;
 * - only the entry files (src/app.ts, src/server.ts) assemble plugins and routes;
 * - a plugin never imports another plugin or a route: what plugins and routes
 *   share lives in a small module of its own under plugins/shared/;
 * - routes reach storage only through the domain's services and repositories.
 */
const HTTP_FRAMEWORK = {
  paths: [
    { name: 'node:http', allowImportNames: ['STATUS_CODES'], message: 'The domain does not handle HTTP (a status text table is fine).' },
    ...['node:https', 'node:http2', 'http', 'https', 'http2', 'fastify', 'fastify-plugin', 'light-my-request'].map((name) => ({
      name, message: 'The domain does not handle HTTP: that belongs in plugins/ or routes/.'
    }))
  ],
  patterns: [
    { group: ['@fastify/*'], message: 'The domain does not handle HTTP: that belongs in plugins/ or routes/.' },
    { group: ['**/plugins/**', '**/routes/**'], message: 'The domain never imports plugins or routes; only src/app.ts and src/server.ts assemble them.' }
  ]
}

const ENTRY_FILES = { group: ['**/src/app.js', '**/src/server.js'], message: 'Only the entry files assemble the app.' }

const STORAGE = {
  group: [
    'drizzle-orm', 'drizzle-orm/*', 'pg', 'ioredis', '@electric-sql/pglite', '**/drizzle/**',
    '**/src/database.js', '**/src/redis-*.js', '**/src/*session-store.js'
  ],
  message: 'Routes reach storage only through the domain (the decorators plugins/ provides).'
}

export default [
  ...neostandard({
    ts: true,
    ignores: ['dist/**', 'dist.next/**', 'dist.old/**', 'coverage/**', '.tap/**', 'data/**', 'drizzle/migrations/**']
  }),
  {
    files: ['src/**/*.ts'],
    ignores: ['src/app.ts', 'src/server.ts'],
    rules: { 'no-restricted-imports': ['error', HTTP_FRAMEWORK] }
  },
  {
    files: ['plugins/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [
          { group: ['./*', '!./shared'], message: 'A plugin never imports another plugin: share a constant through plugins/shared/.' },
          { group: ['**/routes/**'], message: 'Plugins never import routes.' },
          ENTRY_FILES
        ]
      }]
    }
  },
  {
    files: ['plugins/shared/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [
          { group: ['../*.js'], message: 'Shared modules never import plugins.' },
          { group: ['**/routes/**'], message: 'Shared modules never import routes.' },
          ENTRY_FILES
        ]
      }]
    }
  },
  {
    files: ['routes/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [
          { group: ['./*', '!./schemas.js'], message: 'A route module never imports another one: shared schemas live in routes/schemas.ts.' },
          { group: ['**/plugins/*', '!**/plugins/shared'], message: 'Routes use what plugins decorate, never their files: shared HTTP vocabulary lives in plugins/shared/.' },
          STORAGE,
          ENTRY_FILES
        ]
      }]
    }
  }
]
