/**
 * `npm run bench -- core`: the @spindle/core benchmark suite. Runs every part in `bench/parts/` one after another and
 * writes `bench/results/core.json` (raw numbers) and `bench/results/core.md` (tables with ratios).
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect } from "effect"
import { mkdirSync, readdirSync, writeFileSync } from "node:fs"
import { cpus, totalmem } from "node:os"
import { basename, dirname, join } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"

interface Part {
  readonly title: string
  readonly markdown: string
  readonly data: unknown
}

const here = dirname(fileURLToPath(import.meta.url))
const resultsDir = join(here, "..", "..", "..", "bench", "results")

const isPart = (value: unknown): value is Effect.Effect<Part, unknown> => Effect.isEffect(value)

const program = Effect.gen(function*() {
  const only = process.env.SPINDLE_BENCH_PARTS?.split(",").filter((name) => name.length > 0)
  const files = readdirSync(join(here, "parts"))
    .filter((file) => file.endsWith(".ts"))
    .filter((file) => only === undefined || only.includes(basename(file, ".ts")))
    .sort()
  const parts: Array<Part & { readonly name: string }> = []
  for (const file of files) {
    const name = basename(file, ".ts")
    yield* Console.log(`-- ${name}`)
    const module: { readonly run?: unknown } = yield* Effect.promise(() =>
      import(pathToFileURL(join(here, "parts", file)).href)
    )
    if (!isPart(module.run)) {
      yield* Console.error(`${file} does not export an Effect named \`run\`; skipped`)
      continue
    }
    const part = yield* module.run
    yield* Console.log(part.markdown)
    parts.push({ name, ...part })
  }
  const machine = {
    node: process.version,
    cpus: cpus().length,
    cpu: cpus()[0]?.model ?? "unknown",
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    date: new Date().toISOString()
  }
  mkdirSync(resultsDir, { recursive: true })
  writeFileSync(join(resultsDir, "core.json"), JSON.stringify({ machine, parts }, null, 2) + "\n")
  writeFileSync(
    join(resultsDir, "core.md"),
    [
      "# @spindle/core benchmarks",
      "",
      `Node ${machine.node}, ${machine.cpus} × ${machine.cpu}, ${machine.memoryGiB} GiB, ${machine.date}.`,
      "Medians of interleaved runs; ratios compare contenders measured in the same run.",
      "",
      ...parts.map((part) => `## ${part.title}\n\n${part.markdown}\n`)
    ].join("\n")
  )
  yield* Console.log(`wrote ${join(resultsDir, "core.md")}`)
})

NodeRuntime.runMain(program)
