#!/usr/bin/env node
// The `harvester` command. Runs the build (`dist/harvester.mjs`, bin/build.mjs) when it is newer than every source
// file of the harvester and of @spindle/core; otherwise registers tsx in this process and runs the TypeScript entry
// point, so the command needs no build step and never runs stale code. Either way the harvester runs in this process
// (signals reach it).
import { readdirSync, statSync } from "node:fs"
import { fileURLToPath } from "node:url"

const bundle = new URL("../dist/harvester.mjs", import.meta.url)
const sources = [new URL("../src/", import.meta.url), new URL("../../../packages/core/src/", import.meta.url)]

const mtime = (path) => {
  try {
    return statSync(path).mtimeMs
  } catch {
    return undefined
  }
}

const newestSource = () => {
  let newest = 0
  for (const dir of sources) {
    const base = fileURLToPath(dir)
    for (const file of readdirSync(base, { recursive: true })) newest = Math.max(newest, mtime(base + file) ?? 0)
  }
  return newest
}

const built = mtime(bundle)
if (built !== undefined && built >= newestSource()) {
  await import(bundle.href)
} else {
  const { register } = await import("tsx/esm/api")
  register()
  await import("../src/bin.ts")
}
