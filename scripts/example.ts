/**
 * `npm run example -- <name>` runs `packages/core/examples/<name>.ts`; with no name it lists the programs.
 *
 * Every example module exports `main`, an Effect that needs nothing and does what the tutorial section does.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Array, Console, Data, Effect, Order } from "effect"
import { readdirSync, readFileSync } from "node:fs"
import { basename, dirname, join } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"

const examplesDir = join(dirname(fileURLToPath(import.meta.url)), "..", "packages", "core", "examples")

class UnknownExample extends Data.TaggedError("UnknownExample")<{ readonly name: string }> {
  override get message() {
    return `no example named "${this.name}" (run \`npm run example\` to list them)`
  }
}

class NotAProgram extends Data.TaggedError("NotAProgram")<{ readonly file: string }> {
  override get message() {
    return `${this.file} does not export an Effect named \`main\``
  }
}

const programs = () =>
  Array.sort(
    readdirSync(examplesDir).filter((file) => file.endsWith(".ts")).map((file) => basename(file, ".ts")),
    Order.string
  )

const summary = (name: string) => {
  const source = readFileSync(join(examplesDir, `${name}.ts`), "utf8")
  const doc = /\/\*\*\s*\n?\s*\*?\s*(.+)/.exec(source)
  return doc?.[1]?.replace(/\*\/\s*$/, "").replace(new RegExp(`^${name} — `), "").trim() ?? ""
}

const list = Effect.gen(function*() {
  const names = programs()
  const width = Math.max(...names.map((name) => name.length))
  for (const name of names) {
    yield* Console.log(`${name.padEnd(width)}  ${summary(name)}`)
  }
})

const run = (name: string) =>
  Effect.gen(function*() {
    if (!programs().includes(name)) return yield* new UnknownExample({ name })
    const file = join(examplesDir, `${name}.ts`)
    const module: { readonly main?: unknown } = yield* Effect.promise(() => import(pathToFileURL(file).href))
    const main = module.main
    if (!Effect.isEffect(main)) return yield* new NotAProgram({ file })
    return yield* (main as Effect.Effect<unknown, unknown>)
  })

const name = process.argv[2]

NodeRuntime.runMain(name === undefined ? list : run(name))
