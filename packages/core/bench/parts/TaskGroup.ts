/**
 * TaskGroup — spawn 100k tasks into one group and join every handle: our `TaskGroup` against `Effect.forEach`
 * (`concurrency: "unbounded"`), `FiberSet` (run + awaitEmpty + join each fiber), `Promise.all` over 100k async
 * functions and Python's `asyncio.TaskGroup` (`create_task` + `task.result()`).
 *
 * Workload: each task is `Effect.succeed(i)` (Python: `async def work(i): return i`; JS: `async (i) => i`), so the
 * numbers are the cost of the machinery itself (spawn, schedule, run, complete, join), not of the work; the result is
 * the sum of all values, checked. Every contender runs in its own child process (Node: `--expose-gc --import tsx`,
 * the same imports for all; Python: a script written to a temp file at run time), does a 1,000-task warm-up, then the
 * timed 100k run; wall time of that run and the process's peak RSS (`maxRSS` / `ru_maxrss`) are reported, medians
 * of interleaved rounds (the order rotates each round). "idle" rows are the same processes doing nothing: the RSS a
 * contender starts from.
 */
import { Data, Effect, Fiber, FiberSet } from "effect"
import { spawn } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import * as TaskGroup from "../../src/TaskGroup.js"

const TASKS = 100_000
const WARMUP = 1_000
const ROUNDS = 5

const contenders = ["TaskGroup", "Effect.forEach unbounded", "FiberSet", "Promise.all", "asyncio.TaskGroup"] as const
type Contender = (typeof contenders)[number]
const nodeContenders: ReadonlyArray<Contender> = contenders.filter((name) => name !== "asyncio.TaskGroup")

interface Sample {
  readonly contender: Contender | "node idle" | "python idle"
  readonly millis: number
  readonly peakRssMiB: number
  readonly sum: number
}

class BenchFailed extends Data.TaggedError("BenchFailed")<{ readonly reason: string }> {}

const expectedSum = (n: number) => (n * (n - 1)) / 2

// ---------------------------------------------------------------------------------------------------------------
// The workloads (run inside a child process)
// ---------------------------------------------------------------------------------------------------------------

const viaTaskGroup = (n: number) =>
  Effect.gen(function*() {
    const tasks = yield* TaskGroup.scoped((group) =>
      Effect.gen(function*() {
        const tasks: Array<TaskGroup.Task<number, never>> = []
        for (let i = 0; i < n; i++) tasks.push(yield* group.spawn(Effect.succeed(i)))
        return tasks
      })
    )
    let sum = 0
    for (const task of tasks) sum += yield* task.join
    return sum
  })

const viaForEach = (n: number) =>
  Effect.map(
    Effect.forEach(Array.from({ length: n }, (_, i) => i), (i) => Effect.succeed(i), { concurrency: "unbounded" }),
    (values) => values.reduce((sum, value) => sum + value, 0)
  )

const viaFiberSet = (n: number) =>
  Effect.scoped(
    Effect.gen(function*() {
      const set = yield* FiberSet.make<number>()
      const fibers: Array<Fiber.RuntimeFiber<number>> = []
      for (let i = 0; i < n; i++) fibers.push(yield* FiberSet.run(set, Effect.succeed(i)))
      yield* FiberSet.awaitEmpty(set)
      let sum = 0
      for (const fiber of fibers) sum += yield* Fiber.join(fiber)
      return sum
    })
  )

const viaPromiseAll = (n: number) =>
  Effect.promise(async () => {
    const work = async (i: number) => i
    const values = await Promise.all(Array.from({ length: n }, (_, i) => work(i)))
    return values.reduce((sum, value) => sum + value, 0)
  })

const workloads: Record<Exclude<Contender, "asyncio.TaskGroup">, (n: number) => Effect.Effect<number>> = {
  "TaskGroup": viaTaskGroup,
  "Effect.forEach unbounded": viaForEach,
  "FiberSet": viaFiberSet,
  "Promise.all": viaPromiseAll
}

const collectGarbage = () => {
  const gc: unknown = Reflect.get(globalThis, "gc")
  if (typeof gc === "function") gc()
}

const childMain = (contender: Contender | "node idle") =>
  Effect.gen(function*() {
    let millis = 0
    let sum = 0
    if (contender !== "node idle" && contender !== "asyncio.TaskGroup") {
      const workload = workloads[contender]
      yield* workload(WARMUP)
      collectGarbage()
      const started = performance.now()
      sum = yield* workload(TASKS)
      millis = performance.now() - started
    }
    const sample: Sample = { contender, millis, peakRssMiB: process.resourceUsage().maxRSS / 1024, sum }
    process.stdout.write(JSON.stringify(sample) + "\n")
  })

const pythonScript = `
import asyncio, json, resource, sys, time

async def work(i):
    return i

async def group(n):
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(work(i)) for i in range(n)]
    return sum(task.result() for task in tasks)

def main():
    if sys.argv[1] == "idle":
        millis, total, name = 0, 0, "python idle"
    else:
        asyncio.run(group(${WARMUP}))
        started = time.perf_counter()
        total = asyncio.run(group(${TASKS}))
        millis, name = (time.perf_counter() - started) * 1000, "asyncio.TaskGroup"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"contender": name, "millis": millis, "peakRssMiB": peak, "sum": total}))

main()
`

// ---------------------------------------------------------------------------------------------------------------
// The part (parent process)
// ---------------------------------------------------------------------------------------------------------------

const thisFile = fileURLToPath(import.meta.url)

const runChild = (command: string, args: ReadonlyArray<string>) =>
  Effect.async<Sample, BenchFailed>((resume) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "inherit"] })
    let out = ""
    child.stdout.on("data", (chunk: Buffer) => {
      out += chunk.toString()
    })
    child.on("error", (error) => resume(Effect.fail(new BenchFailed({ reason: `${command}: ${error.message}` }))))
    child.on("close", (code) => {
      const line = out.trim().split("\n").pop() ?? ""
      try {
        resume(Effect.succeed(JSON.parse(line) as Sample))
      } catch {
        resume(Effect.fail(new BenchFailed({ reason: `${args.join(" ")} exited ${code} with output ${out}` })))
      }
    })
    return Effect.sync(() => child.kill())
  })

const median = (values: ReadonlyArray<number>) => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

const ratio = (value: number, base: number) => `${(value / base).toFixed(2)}×`

export const run = Effect.acquireUseRelease(
  Effect.sync(() => mkdtempSync(join(tmpdir(), "spindle-taskgroup-"))),
  (dir) =>
    Effect.gen(function*() {
      const script = join(dir, "taskgroup.py")
      yield* Effect.sync(() => writeFileSync(script, pythonScript))
      const node = (name: Contender | "node idle") =>
        runChild(process.execPath, ["--expose-gc", "--import", "tsx", thisFile, name])
      const python = (mode: "run" | "idle") => runChild("python3", [script, mode])
      const samples: Array<Sample> = []
      for (let round = 0; round < ROUNDS; round++) {
        for (let i = 0; i < contenders.length; i++) {
          const contender = contenders[(i + round) % contenders.length]
          const sample = yield* (contender === "asyncio.TaskGroup" ? python("run") : node(contender))
          if (sample.sum !== expectedSum(TASKS)) {
            return yield* new BenchFailed({ reason: `${contender} summed ${sample.sum}` })
          }
          samples.push(sample)
        }
      }
      samples.push(yield* node("node idle"), yield* python("idle"))
      const summary = [...contenders, "node idle" as const, "python idle" as const].map((contender) => {
        const mine = samples.filter((sample) => sample.contender === contender)
        return {
          contender,
          millis: median(mine.map((sample) => sample.millis)),
          peakRssMiB: median(mine.map((sample) => sample.peakRssMiB)),
          runs: mine.length
        }
      })
      const asyncio = summary.find((row) => row.contender === "asyncio.TaskGroup")!
      const ours = summary.find((row) => row.contender === "TaskGroup")!
      const idle = (contender: string) =>
        summary.find((row) => row.contender === (contender === "asyncio.TaskGroup" ? "python idle" : "node idle"))!
          .peakRssMiB
      const rows = summary.map((row) =>
        row.millis > 0
          ? `| ${row.contender} | ${row.millis.toFixed(0)} | ${ratio(row.millis, asyncio.millis)} | ${
            ratio(row.millis, ours.millis)
          } | ${((row.millis * 1000) / TASKS).toFixed(2)} | ${row.peakRssMiB.toFixed(0)} | ${
            ratio(row.peakRssMiB, asyncio.peakRssMiB)
          } | ${ratio(row.peakRssMiB, ours.peakRssMiB)} | ${(row.peakRssMiB - idle(row.contender)).toFixed(0)} |`
          : `| ${row.contender} | — | — | — | — | ${row.peakRssMiB.toFixed(0)} | — | — | — |`
      )
      const markdown = [
        `Spawn ${TASKS.toLocaleString("en")} tasks (each \`Effect.succeed(i)\`; \`async def work(i): return i\`; ` +
        "`async (i) => i`) and join every one; each contender in its own child process after a 1,000-task warm-up;",
        `medians of ${ROUNDS} interleaved rounds. Peak RSS is the whole process's; the idle rows are the same processes`,
        "doing nothing (Node with tsx and effect loaded, Python with asyncio), subtracted in the last column.",
        "",
        "| contender | wall ms | vs asyncio | vs TaskGroup | µs/task | peak RSS MiB | vs asyncio | vs TaskGroup | " +
        "RSS above idle MiB |",
        "|---|---|---|---|---|---|---|---|---|",
        ...rows
      ].join("\n")
      return {
        title: "TaskGroup: spawn and join 100k tasks",
        markdown,
        data: { tasks: TASKS, warmup: WARMUP, rounds: ROUNDS, summary, samples }
      }
    }),
  (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
)

const isChild = process.argv[1] !== undefined && pathToFileURL(process.argv[1]).href === import.meta.url
if (isChild) {
  const contender = [...nodeContenders, "node idle" as const].find((name) => name === process.argv[2])
  if (contender !== undefined) Effect.runFork(childMain(contender))
}
