#!/usr/bin/env node
/**
 * Builds `dist/harvester.mjs`: the harvester, `@spindle/core` and the Effect packages (`effect`, `@effect/*`) as one
 * ES module; the other npm dependencies (pg, ioredis, undici, better-sqlite3, ...) stay imports. Run through tsx,
 * every function of ours carries a `__name` wrapper (tsx keeps names) and every start compiles the sources first: the
 * build runs the same code without either (a harvest at 20k pages/s spends ~10% less CPU; bench/results/harvester.md).
 * Effect bundled with the rest: its ~400 ES modules are not resolved and linked one by one at each start (`harvester
 * --help` 1.4–1.5 s -> 0.6–0.9 s; `harvester run` of 20k pages peaks ~40 MiB lower). Every Effect package goes in,
 * so there is one copy of Effect. `harvester` (bin/harvester.mjs) runs the build when it is newer than every source
 * file, the sources through tsx otherwise; `npm start` builds first.
 *
 * Usage: `node apps/harvester/bin/build.mjs [outfile]`.
 */
import { build } from "esbuild"
import { fileURLToPath } from "node:url"

const root = new URL("..", import.meta.url)
const outfile = process.argv[2] ?? fileURLToPath(new URL("dist/harvester.mjs", root))

/** Bundled: the workspace's own TypeScript packages and the Effect packages; every other bare import stays one. */
const bundled = /^(?:@spindle\/|effect(?:\/|$)|@effect\/)/

const dependenciesExternal = {
  name: "dependencies-external",
  setup(builder) {
    builder.onResolve(
      { filter: /^[^./]/ },
      (args) => bundled.test(args.path) ? undefined : { path: args.path, external: true }
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
  // A bundled CommonJS module's `require` of an external package needs a `require` in this ES module.
  banner: {
    js:
      "import { createRequire as __createRequire } from \"node:module\"\nconst require = __createRequire(import.meta.url)"
  },
  plugins: [dependenciesExternal]
})
