/**
 * `npm run bench -- [suite...]` runs the benchmark suites (`packages/<p>/bench/<suite>.ts`, `apps/<a>/bench/<suite>.ts`)
 * one after another, each in its own Node process; every suite writes `bench/results/<suite>.{json,md}`.
 */
import { Command } from "@effect/platform"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Array, Console, Data, Effect, Order } from "effect"
import { existsSync, readdirSync } from "node:fs"
import { basename, dirname, join } from "node:path"
import { fileURLToPath } from "node:url"

const root = join(dirname(fileURLToPath(import.meta.url)), "..")

class UnknownSuite extends Data.TaggedError("UnknownSuite")<{ readonly name: string; readonly known: string }> {
  override get message() {
    return `no benchmark suite named "${this.name}" (known: ${this.known || "none"})`
  }
}

class SuiteFailed extends Data.TaggedError("SuiteFailed")<{ readonly name: string; readonly exitCode: number }> {
  override get message() {
    return `benchmark suite "${this.name}" exited with code ${this.exitCode}`
  }
}

const suites = () =>
  Array.sort(
    ["packages", "apps"].flatMap((group) =>
      readdirSync(join(root, group)).flatMap((member) => {
        const dir = join(root, group, member, "bench")
        return existsSync(dir)
          ? readdirSync(dir).filter((file) => file.endsWith(".ts")).map((file) => ({
            name: basename(file, ".ts"),
            file: join(dir, file)
          }))
          : []
      })
    ),
    Order.mapInput(Order.string, (suite: { readonly name: string }) => suite.name)
  )

const program = Effect.gen(function*() {
  const all = suites()
  const wanted = process.argv.slice(2)
  const selected = wanted.length === 0 ? all : wanted.map((name) => all.find((suite) => suite.name === name) ?? name)
  if (all.length === 0) return yield* Console.log("no benchmark suites yet")
  for (const suite of selected) {
    if (typeof suite === "string") {
      return yield* new UnknownSuite({ name: suite, known: all.map((known) => known.name).join(", ") })
    }
    yield* Console.log(`== ${suite.name}`)
    const exitCode = yield* Command.make(process.execPath, "--expose-gc", "--import", "tsx", suite.file).pipe(
      Command.workingDirectory(root),
      Command.stdout("inherit"),
      Command.stderr("inherit"),
      Command.exitCode
    )
    if (exitCode !== 0) return yield* new SuiteFailed({ name: suite.name, exitCode })
  }
})

NodeRuntime.runMain(program.pipe(Effect.provide(NodeContext.layer)))
