import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** The project's root: the nearest folder above this file holding package.json (from src/ or dist/src/). */
function findProjectRoot (): string {
  let folder = dirname(fileURLToPath(import.meta.url))
  while (!existsSync(join(folder, 'package.json'))) {
    const parent = dirname(folder)
    if (parent === folder) throw new Error('package.json not found above ' + fileURLToPath(import.meta.url))
    folder = parent
  }
  return folder
}

export const projectRoot = findProjectRoot()
export const migrationsFolder = join(projectRoot, 'drizzle', 'migrations')
export const packageVersion: string = JSON.parse(readFileSync(join(projectRoot, 'package.json'), 'utf8')).version
