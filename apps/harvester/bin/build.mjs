#!/usr/bin/env node
/**
 * Builds `dist/harvester.mjs`: the harvester and `@spindle/core` as one ES module, their npm dependencies left as
 * imports. Run through tsx, every function of ours carries a `__name` wrapper (tsx keeps names) and every start
 * compiles the sources first: the build runs the same code without either (a harvest at 20k pages/s spends ~10%
 * less CPU; bench/results/harvester.md). `harvester` (bin/harvester.mjs) runs the build when it is newer than every
 * source file, the sources through tsx otherwise; `npm start` builds first.
 *
 * Usage: `node apps/harvester/bin/build.mjs [outfile]`.
 */
import { build } from "esbuild"
import { fileURLToPath } from "node:url"

const root = new URL("..", import.meta.url)
const outfile = process.argv[2] ?? fileURLToPath(new URL("dist/harvester.mjs", root))

/** Bare imports stay imports (node_modules), except the workspace's own TypeScript packages, which are bundled. */
const dependenciesExternal = {
  name: "dependencies-external",
  setup(builder) {
    builder.onResolve(
      { filter: /^[^./]/ },
      (args) => args.path.startsWith("@spindle/") ? undefined : { path: args.path, external: true }
    )
  }
}

await build({
  entryPoints: [fileURLToPath(new URL("src/bin.ts", root))],
  outfile,
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  sourcemap: "linked",
  keepNames: false,
  logLevel: "warning",
  plugins: [dependenciesExternal]
})
