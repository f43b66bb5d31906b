# syntax=docker/dockerfile:1

# Build: compile TypeScript with the dev dependencies. Dependencies are
# installed before the sources are copied (a layer that survives source
# changes), so without scripts: `npm ci` would otherwise run `prepare` (the
# build) with no sources yet. The build is the explicit step below.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY plugins ./plugins
COPY routes ./routes
COPY drizzle ./drizzle
RUN npm run build

# Run: production dependencies, compiled code and migrations only, as a non-root user.
# --ignore-scripts: `prepare` (the build) needs TypeScript, a dev dependency;
# dist/ comes from the build stage. No production dependency has install scripts.
FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000 \
    DATA_DIR=/data
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY drizzle/migrations ./drizzle/migrations
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME ["/data"]
EXPOSE 3000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3000) + '/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# SIGTERM from `docker stop` drains in-flight requests, then exits (src/server.ts).
CMD ["node", "dist/src/server.js"]
