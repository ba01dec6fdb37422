/**
 * Build — the benchmarks run the harvester as users run it: `bin/harvester.mjs`, which runs the build
 * (`dist/harvester.mjs`, bin/build.mjs) when it is fresh. Each bench builds first, so it measures the current sources.
 */
import { Data, Effect } from "effect"
import { spawnSync } from "node:child_process"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"

const appDir = join(dirname(fileURLToPath(import.meta.url)), "..", "..")

/** The harvester's command, `apps/harvester/bin/harvester.mjs`. */
export const harvesterBin = join(appDir, "bin", "harvester.mjs")

export class BuildFailed extends Data.TaggedError("BuildFailed")<{ readonly reason: string }> {}

/** Runs bin/build.mjs (about a second). */
export const buildHarvester: Effect.Effect<void, BuildFailed> = Effect.suspend(() => {
  const result = spawnSync(process.execPath, [join(appDir, "bin", "build.mjs")], { encoding: "utf8" })
  return result.status === 0
    ? Effect.void
    : Effect.fail(new BuildFailed({ reason: `bin/build.mjs exited ${result.status}: ${result.stderr}` }))
})
