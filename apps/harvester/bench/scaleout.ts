/**
 * `npm run bench -- scaleout`: several `harvester serve` instances on one PostgreSQL.
 *
 * 1. Pages/s with 1, 2 and 3 instances: a fresh `bench_<random>` database per run on 127.0.0.1:5432 (dropped after),
 *    N real `harvester serve` processes on it (`bin/harvester.mjs`, built first: support/Build.ts; the first starts
 *    alone: it runs the migrations), one job of
 *    SPINDLE_BENCH_SCALEOUT_PAGES (default 4800) single-page targets created through the first instance's API,
 *    against a node:http upstream in its own process answering after 20 ms. Job options: concurrency 50 per instance,
 *    per-host concurrency 50 × 3 (so the shared bound never caps three instances), rate 100000/1s (never reached).
 *    Three ways to hold the per-host limits (SPINDLE_BENCH_STORES, default "postgres,redis,memory"): shared through
 *    PostgreSQL (the default with DATABASE_URL: a store round trip per block of rate starts an instance's waiting
 *    requests of a host take, and per batch of slots it claims or slot it gives back), shared through Redis
 *    (REDIS_URL), or kept in each process (HARVESTER_LIMITS=memory: no cross-instance limit, the floor). Pages/s is the
 *    job's own (created → finished, from `GET /jobs/:id`). Every run is checked: the upstream served every page once,
 *    the job completed. The default was 1200 pages: a job then lasted under a second, so the other instances' wake-up
 *    and the last scan weighed as much as the fetching, and one configuration's runs spread over 2× on this shared
 *    machine; 4800 pages take several seconds per job.
 * 2. Claim throughput: `JobRepo.claim` straight against PostgreSQL (this process), 20k pending targets claimed in
 *    batches of 10/50/100 by 1 or 4 concurrent claimers until none is left; and the whole cycle (claim a batch, then
 *    store a page for each claimed target, fenced, in one statement — what the engine does).
 *
 * Medians of SPINDLE_BENCH_RUNS (default 3) interleaved rounds (the order of 1/2/3 instances rotates each round).
 */
import { NodeRuntime } from "@effect/platform-node"
import { SqlClient } from "@effect/sql"
import { Config, Console, Data, Duration, Effect, Layer, Redacted, Schedule } from "effect"
import type { ChildProcess } from "node:child_process"
import { spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { mkdirSync, writeFileSync } from "node:fs"
import { cpus, loadavg } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import * as Db from "../src/Db/Db.js"
import type { NewPage } from "../src/Jobs/JobRepo.js"
import { JobRepo } from "../src/Jobs/JobRepo.js"
import { buildHarvester, harvesterBin } from "./support/Build.js"
import { createPgDatabase, dropPgDatabase } from "./support/Store.js"

const here = dirname(fileURLToPath(import.meta.url))
const appDir = join(here, "..")
const root = join(appDir, "..", "..")
const resultsDir = join(root, "bench", "results")

const CONCURRENCY = 50
const LATENCY_MS = 20
const INSTANCE_COUNTS = [1, 2, 3] as const
const CLAIM_TARGETS = 20_000

class BenchFailed extends Data.TaggedError("BenchFailed")<{ readonly reason: string }> {
  override get message() {
    return this.reason
  }
}

const BenchConfig = Config.all({
  pages: Config.integer("SPINDLE_BENCH_SCALEOUT_PAGES").pipe(Config.withDefault(4800)),
  runs: Config.integer("SPINDLE_BENCH_RUNS").pipe(Config.withDefault(3)),
  stores: Config.string("SPINDLE_BENCH_STORES").pipe(
    Config.withDefault("postgres,redis,memory"),
    Config.map((raw) => raw.split(",").map((item) => item.trim())),
    Config.validate({
      message: "expected a comma-separated subset of postgres,redis,memory",
      validation: (items): items is Array<LimitsStore> => items.every((item) => STORES.includes(item as LimitsStore))
    })
  )
})

const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length === 0 ? Number.NaN : sorted.length % 2 === 1
    ? sorted[middle]!
    : (sorted[middle - 1]! + sorted[middle]!) / 2
}

const attempt = <A>(what: string, run: () => Promise<A>) =>
  Effect.tryPromise({ try: run, catch: (cause) => new BenchFailed({ reason: `${what}: ${String(cause)}` }) })

// ---------------------------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------------------------

/** A child process that printed `pattern`; killed (SIGKILL) when the scope closes if still running. */
const startChild = (args: ReadonlyArray<string>, env: Readonly<Record<string, string>>, pattern: RegExp) =>
  Effect.acquireRelease(
    Effect.async<{ readonly child: ChildProcess; readonly match: RegExpExecArray }, BenchFailed>((resume) => {
      const child = spawn(process.execPath, args, {
        cwd: appDir,
        env: { ...process.env, ...env },
        stdio: ["pipe", "pipe", "pipe"]
      })
      let output = ""
      let settled = false
      const onData = (chunk: Buffer) => {
        output = (output + chunk.toString()).slice(-20_000)
        const match = pattern.exec(output)
        if (match !== null && !settled) {
          settled = true
          resume(Effect.succeed({ child, match }))
        }
      }
      child.stdout.on("data", onData)
      child.stderr.on("data", onData)
      child.on("exit", (code) => {
        if (!settled) {
          settled = true
          resume(Effect.fail(new BenchFailed({ reason: `${args[0]} exited ${code}: ${output.slice(-2000)}` })))
        }
      })
    }).pipe(Effect.timeoutFail({ duration: "60 seconds", onTimeout: () => new BenchFailed({ reason: "start" }) })),
    ({ child }) =>
      Effect.async<void>((resume) => {
        if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
        child.once("exit", () => resume(Effect.void))
        child.stdin?.end()
        child.kill("SIGTERM")
        const timer = setTimeout(() => child.kill("SIGKILL"), 10_000)
        return Effect.sync(() => clearTimeout(timer))
      })
  )

const startUpstream = Effect.map(
  startChild(
    ["--import", "tsx", join(here, "support", "upstream.ts")],
    { SPINDLE_BENCH_LATENCY_MS: String(LATENCY_MS) },
    /\{"port":(\d+)\}/
  ),
  ({ match }) => Number(match[1])
)

const upstreamStats = (port: number) =>
  attempt("upstream stats", async () => {
    const response = await fetch(`http://127.0.0.1:${port}/__stats`)
    return (await response.json()) as { readonly served: number; readonly distinct: number }
  })

const freshDatabase = Effect.acquireRelease(
  attempt("create database", async () => {
    const name = `bench_${randomBytes(6).toString("hex")}`
    await createPgDatabase(name)
    return name
  }),
  (name) => Effect.promise(() => dropPgDatabase(name).catch(() => undefined))
).pipe(Effect.map((name) => ({ name, url: `postgres://postgres@127.0.0.1:5432/${name}` })))

type LimitsStore = "postgres" | "redis" | "memory"
const STORES: ReadonlyArray<LimitsStore> = ["postgres", "redis", "memory"]

const limitsEnv = (store: LimitsStore, url: string): Record<string, string> =>
  store === "memory"
    ? { HARVESTER_LIMITS: "memory" }
    : store === "redis"
    ? { REDIS_URL: "redis://127.0.0.1:6379", REDIS_PREFIX: `spindle:bench:${url.split("/").pop()}:` }
    : {}

const startInstance = (url: string, index: number, store: LimitsStore) =>
  Effect.map(
    startChild([harvesterBin, "serve"], {
      PORT: "0",
      DATABASE_URL: url,
      HARVESTER_ALLOW_HOSTS: "127.0.0.1",
      HARVESTER_INSTANCE_ID: `bench-${index}`,
      HARVESTER_SHUTDOWN_GRACE: "1s",
      ...limitsEnv(store, url)
    }, /listening on (http:\/\/[\d.]+:\d+)/),
    ({ match }) => match[1]!
  )

// ---------------------------------------------------------------------------------------------------------------
// Pages/s with N instances
// ---------------------------------------------------------------------------------------------------------------

interface JobState {
  readonly status: string
  readonly counts: { readonly done: number; readonly pages: number }
  readonly rates: { readonly pagesPerSecond: number }
}

interface HarvestSample {
  readonly round: number
  readonly store: LimitsStore
  readonly instances: number
  readonly pages: number
  readonly pagesPerSecond: number
  readonly jobSeconds: number
  readonly served: number
  readonly correct: boolean
}

const harvestRun = (round: number, store: LimitsStore, instances: number, pages: number, upstreamPort: number) =>
  Effect.scoped(Effect.gen(function*() {
    const db = yield* freshDatabase
    const first = yield* startInstance(db.url, 1, store)
    yield* Effect.all(Array.from({ length: instances - 1 }, (_, i) => startInstance(db.url, i + 2, store)), {
      concurrency: "unbounded"
    })
    const before = yield* upstreamStats(upstreamPort)
    const spec = {
      targets: Array.from(
        { length: pages },
        (_, i) => ({ url: `http://127.0.0.1:${upstreamPort}/items/${before.served + i}` })
      ),
      options: {
        concurrency: CONCURRENCY,
        perHostConcurrency: CONCURRENCY * 3,
        rate: "100000/1s",
        retries: 0
      }
    }
    const created = yield* attempt("create job", async () => {
      const response = await fetch(`${first}/jobs`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(spec)
      })
      if (!response.ok) throw new Error(`${response.status} ${await response.text()}`)
      return (await response.json()) as { readonly id: string }
    })
    const state = yield* attempt("job state", async () => {
      const response = await fetch(`${first}/jobs/${created.id}`)
      return (await response.json()) as JobState
    }).pipe(
      Effect.repeat(
        Schedule.recurUntil((job: JobState) => job.status !== "running").pipe(
          Schedule.addDelay(() => "100 millis"),
          Schedule.passthrough
        )
      ),
      Effect.timeout("5 minutes")
    )
    const after = yield* upstreamStats(upstreamPort)
    const served = after.served - before.served
    const correct = state.status === "completed" && state.counts.pages === pages && served === pages &&
      after.distinct - before.distinct === pages
    const sample: HarvestSample = {
      round,
      store,
      instances,
      pages: state.counts.pages,
      pagesPerSecond: state.rates.pagesPerSecond,
      jobSeconds: state.counts.pages / state.rates.pagesPerSecond,
      served,
      correct
    }
    yield* Console.log(
      `round ${round}, limits in ${store}, ${instances} instance(s): ${sample.pagesPerSecond.toFixed(0)} pages/s` +
        ` (${sample.pages} pages, ${served} requests${correct ? "" : ", INCORRECT"})`
    )
    return sample
  }))

// ---------------------------------------------------------------------------------------------------------------
// Claim throughput
// ---------------------------------------------------------------------------------------------------------------

interface ClaimSample {
  readonly mode: "claim" | "claim+store"
  readonly batch: number
  readonly claimers: number
  readonly targetsPerSecond: number
}

const CLAIM_CASES: ReadonlyArray<Omit<ClaimSample, "targetsPerSecond">> = [
  { mode: "claim", batch: 10, claimers: 1 },
  { mode: "claim", batch: 50, claimers: 1 },
  { mode: "claim", batch: 100, claimers: 1 },
  { mode: "claim", batch: 50, claimers: 4 },
  { mode: "claim", batch: 100, claimers: 4 },
  { mode: "claim+store", batch: 50, claimers: 4 }
]

const pageOf = (pageNo: number): NewPage => ({
  page_no: pageNo,
  url: "http://127.0.0.1/x",
  status: 200,
  headers: "{}",
  body: "{\"ok\":true}",
  bytes: 11,
  duration_ms: 1,
  attempts: 1,
  error: null,
  error_message: null,
  fetched_at: 0
})

const claimRuns = (runs: number) =>
  Effect.gen(function*() {
    const repo = yield* JobRepo
    const sql = yield* SqlClient.SqlClient
    const samples: Array<ClaimSample> = []
    for (let round = 1; round <= runs; round++) {
      for (const kase of CLAIM_CASES) {
        const jobId = `claim_${round}_${kase.mode}_${kase.batch}_${kase.claimers}`
        yield* repo.insertJob({
          id: jobId,
          options: "{}",
          createdAt: Date.now(),
          deadlineAt: null,
          secrets: null,
          targets: Array.from({ length: CLAIM_TARGETS }, (_, i) => ({ url: `http://127.0.0.1/${i}`, paginate: null }))
        })
        yield* sql`ANALYZE targets`.pipe(Effect.orDie)
        const claimer = (owner: string) =>
          Effect.gen(function*() {
            let claimed = 0
            while (true) {
              const targets = yield* repo.claim(jobId, owner, 60_000, kase.batch)
              if (targets.length === 0) return claimed
              claimed += targets.length
              if (kase.mode === "claim+store") {
                yield* repo.storePages(targets.map((target) => ({
                  fence: { targetId: target.id, jobId, owner, attempt: target.attempt },
                  page: pageOf(1),
                  done: true
                })))
              }
            }
          })
        const started = performance.now()
        const counts = yield* Effect.all(
          Array.from({ length: kase.claimers }, (_, i) => claimer(`claimer-${i}`)),
          { concurrency: "unbounded" }
        )
        const seconds = (performance.now() - started) / 1000
        const total = counts.reduce((a, b) => a + b, 0)
        if (total !== CLAIM_TARGETS) {
          return yield* new BenchFailed({ reason: `${jobId}: claimed ${total} of ${CLAIM_TARGETS}` })
        }
        const sample = { ...kase, targetsPerSecond: total / seconds }
        samples.push(sample)
        yield* Console.log(
          `round ${round}, ${kase.mode} batch ${kase.batch} × ${kase.claimers}: ${
            sample.targetsPerSecond.toFixed(0)
          } targets/s`
        )
      }
    }
    return samples
  }).pipe(Effect.withTracerEnabled(false))

const claimBench = (runs: number) =>
  Effect.scoped(Effect.gen(function*() {
    const db = yield* freshDatabase
    const layer = JobRepo.Default.pipe(Layer.provideMerge(Db.layerPg(Redacted.make(db.url))))
    const context = yield* Layer.build(layer)
    return yield* claimRuns(runs).pipe(Effect.provide(context))
  }))

// ---------------------------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------------------------

const program = Effect.gen(function*() {
  const config = yield* BenchConfig
  const started = Date.now()
  yield* buildHarvester
  const upstreamPort = yield* startUpstream
  const harvests: Array<HarvestSample> = []
  for (let round = 1; round <= config.runs; round++) {
    const order = INSTANCE_COUNTS.map((_, i) => INSTANCE_COUNTS[(i + round - 1) % INSTANCE_COUNTS.length]!)
    for (const store of config.stores) {
      for (const instances of order) {
        harvests.push(yield* harvestRun(round, store, instances, config.pages, upstreamPort))
      }
    }
  }
  const claims = yield* claimBench(config.runs)

  const byInstances = config.stores.flatMap((store) => {
    const rows = INSTANCE_COUNTS.map((instances) => {
      const samples = harvests.filter((s) => s.store === store && s.instances === instances && s.correct)
      return { store, instances, runs: samples.length, pagesPerSecond: median(samples.map((s) => s.pagesPerSecond)) }
    })
    return rows.map((row) => ({ ...row, vsOne: row.pagesPerSecond / rows[0]!.pagesPerSecond }))
  })
  const claimTable = CLAIM_CASES.map((kase) => ({
    ...kase,
    targetsPerSecond: median(
      claims.filter((s) => s.mode === kase.mode && s.batch === kase.batch && s.claimers === kase.claimers)
        .map((s) => s.targetsPerSecond)
    )
  }))
  const incorrect = harvests.filter((s) => !s.correct).length
  const machine = { cpus: cpus().length, model: cpus()[0]?.model ?? "?", node: process.version, loadavg: loadavg() }

  const markdown = [
    "# Scale-out: harvester instances on one PostgreSQL",
    "",
    `${config.pages} single-page targets per run, upstream latency ${LATENCY_MS} ms (node:http in its own process),`,
    `concurrency ${CONCURRENCY} per instance; per-host limits shared through PostgreSQL (the default with DATABASE_URL),`,
    `through Redis (REDIS_URL), or kept in each process (HARVESTER_LIMITS=memory); medians of ${config.runs}`,
    `interleaved rounds; ${machine.cpus} cores (${machine.model}), Node ${machine.node}. Everything (PostgreSQL, the`,
    "upstream, every instance) shares the same cores.",
    "",
    "| per-host limits in | instances | pages/s (median) | vs 1 instance | correct runs |",
    "|---|---|---|---|---|",
    ...byInstances.map((row) =>
      `| ${row.store} | ${row.instances} | ${row.pagesPerSecond.toFixed(0)} | ${
        row.vsOne.toFixed(2)
      }× | ${row.runs}/${config.runs} |`
    ),
    "",
    `Claim throughput, \`JobRepo.claim\` against PostgreSQL, ${CLAIM_TARGETS} targets (medians):`,
    "",
    "| mode | batch | claimers | targets/s |",
    "|---|---|---|---|",
    ...claimTable.map((row) => `| ${row.mode} | ${row.batch} | ${row.claimers} | ${row.targetsPerSecond.toFixed(0)} |`),
    "",
    incorrect === 0 ? "Every run was checked correct." : `**${incorrect} run(s) were incorrect** (see the JSON).`,
    `Total time ${((Date.now() - started) / 1000).toFixed(0)} s.`,
    ""
  ].join("\n")
  mkdirSync(resultsDir, { recursive: true })
  writeFileSync(
    join(resultsDir, "scaleout.json"),
    `${
      JSON.stringify(
        { machine, config, latencyMs: LATENCY_MS, concurrency: CONCURRENCY, byInstances, claimTable, harvests, claims },
        null,
        2
      )
    }\n`
  )
  writeFileSync(join(resultsDir, "scaleout.md"), markdown)
  yield* Console.log(markdown)
  if (incorrect > 0) return yield* new BenchFailed({ reason: `${incorrect} incorrect run(s)` })
}).pipe(Effect.scoped, Effect.timeout(Duration.minutes(15)))

NodeRuntime.runMain(program)
