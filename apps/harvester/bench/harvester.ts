/**
 * `npm run bench -- harvester`: the harvester against a plain script and Crawlee — N pages (SPINDLE_BENCH_PAGES,
 * default 20000) of 1 KB JSON from a local zero-latency upstream (node:http in its own process on 127.0.0.1) at
 * concurrency 50, stored in SQLite (a fresh temp file per run) and in PostgreSQL (a fresh `bench_<random>` database
 * per run on 127.0.0.1:5432, dropped after).
 *
 * Contenders, each run in its own child process (peak RSS = its `process.resourceUsage().maxRSS` at exit):
 * - harvester: the real CLI, built first (`bin/harvester.mjs run --file targets.jsonl --concurrency 50 ...` runs
 *   `dist/harvester.mjs`: support/Build.ts; SQLite through `--db`, PostgreSQL through `DATABASE_URL`); its time is the job's own, created → finished, read from its database
 *   (target insertion included, process start-up excluded; the wall time column includes start-up), with its
 *   default limits (`HARVESTER_LIMITS=auto`: per-host limits shared through PostgreSQL on PostgreSQL, in memory on
 *   SQLite); `harvester-memory` (PostgreSQL only) is the same with `HARVESTER_LIMITS=memory`;
 * - plain: `undici.request` + `p-limit(50)`, rows stored 100 per transaction (support/plain.ts);
 * - crawlee: `@crawlee/http` HttpCrawler, min = max concurrency 50, persisted queue, rows stored 100 per transaction
 *   (support/crawlee.ts); `crawlee-memory` (not run by default) is the same with Crawlee's in-memory queue.
 * Every run is checked: the database holds exactly N pages with N distinct URLs, and the upstream served N requests.
 *
 * Runs are interleaved (the contenders' order rotates each round); the tables show medians and ratios. Knobs:
 * SPINDLE_BENCH_PAGES, SPINDLE_BENCH_RUNS (3: Crawlee's persisted queue needs over a minute per 20k-page run, so 5
 * runs would not fit the ~10-minute budget), SPINDLE_BENCH_DATABASES ("sqlite,pg"), SPINDLE_BENCH_CONTENDERS
 * ("harvester,plain,crawlee"; also "crawlee-memory"), SPINDLE_BENCH_CRAWLEE_PAGES (Crawlee's page count per run,
 * default N; a smaller one only for quick trials: its pages/s grows with the page count).
 */
import { NodeRuntime } from "@effect/platform-node"
import { Config, Console, Data, Duration, Effect, Option } from "effect"
import { spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { cpus, loadavg, tmpdir, totalmem } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import { buildHarvester, harvesterBin } from "./support/Build.js"
import type { ChildReport } from "./support/Report.js"
import { parseReport } from "./support/Report.js"
import type { Database, Stored } from "./support/Store.js"
import { createPgDatabase, dropPgDatabase, formatDatabase, PG_ADMIN_URL, stored } from "./support/Store.js"

const here = dirname(fileURLToPath(import.meta.url))
const root = join(here, "..", "..", "..")
const support = join(here, "support")
const resultsDir = join(root, "bench", "results")

const CONCURRENCY = 50
const RUN_TIMEOUT = Duration.minutes(10)

const contenderNames = ["harvester", "harvester-memory", "plain", "crawlee", "crawlee-memory"] as const
type Contender = typeof contenderNames[number]
const DEFAULT_CONTENDERS: ReadonlyArray<Contender> = ["harvester", "harvester-memory", "plain", "crawlee"]

const isHarvester = (contender: Contender) => contender === "harvester" || contender === "harvester-memory"

/** `harvester-memory` differs from `harvester` only where the limits are shared by default: on PostgreSQL. */
const appliesTo = (contender: Contender, database: DatabaseName) =>
  contender !== "harvester-memory" || database === "pg"
const databaseNames = ["sqlite", "pg"] as const
type DatabaseName = typeof databaseNames[number]

/** Inherited variables that would change what a contender does; each run sets what it needs. */
const CONTROLLED_ENV = /^(HARVESTER_|CRAWLEE_|DATABASE_URL$|REDIS_URL$)/

const LABELS: Record<Contender, string> = {
  harvester: "harvester (`harvester run`)",
  "harvester-memory": "harvester (`harvester run`), `HARVESTER_LIMITS=memory`",
  plain: "plain script (undici.request + p-limit, batched inserts)",
  crawlee: "Crawlee HttpCrawler 3.15.3, persisted queue (batched inserts)",
  "crawlee-memory": "Crawlee HttpCrawler 3.15.3, in-memory queue (batched inserts)"
}

const SHORT: Record<Contender, string> = {
  harvester: "harvester",
  "harvester-memory": "harvester with `HARVESTER_LIMITS=memory`",
  plain: "plain script",
  crawlee: "Crawlee (persisted queue)",
  "crawlee-memory": "Crawlee (in-memory queue, not resumable)"
}

class BenchFailed extends Data.TaggedError("BenchFailed")<{ readonly reason: string }> {
  override get message() {
    return this.reason
  }
}

const listConfig = <A extends string>(name: string, all: ReadonlyArray<A>, defaults: ReadonlyArray<A> = all) =>
  Config.string(name).pipe(
    Config.withDefault(defaults.join(",")),
    Config.map((raw) => raw.split(",").map((item) => item.trim()).filter((item) => item.length > 0)),
    Config.validate({
      message: `expected a comma-separated subset of ${all.join(",")}`,
      validation: (items): items is Array<A> => items.every((item) => all.includes(item as A))
    })
  )

const BenchConfig = Config.all({
  pages: Config.integer("SPINDLE_BENCH_PAGES").pipe(Config.withDefault(20_000)),
  crawleePages: Config.option(Config.integer("SPINDLE_BENCH_CRAWLEE_PAGES")),
  runs: Config.integer("SPINDLE_BENCH_RUNS").pipe(Config.withDefault(3)),
  databases: listConfig<DatabaseName>("SPINDLE_BENCH_DATABASES", databaseNames),
  contenders: listConfig<Contender>("SPINDLE_BENCH_CONTENDERS", contenderNames, DEFAULT_CONTENDERS)
})

// ---------------------------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------------------------

interface ChildOutcome {
  readonly exitCode: number | null
  readonly stdout: string
  readonly stderr: string
  readonly wallMillis: number
}

/** Runs `node <args>` to its end (killed on interruption, or after RUN_TIMEOUT: that run then fails its check). */
const runNode = (args: ReadonlyArray<string>, env: Readonly<Record<string, string>>) =>
  Effect.async<ChildOutcome>((resume) => {
    const started = performance.now()
    const child = spawn(process.execPath, args, {
      cwd: root,
      env: {
        ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !CONTROLLED_ENV.test(name))),
        ...env
      },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk: Buffer) => {
      stdout += chunk.toString()
    })
    child.stderr.on("data", (chunk: Buffer) => {
      stderr = (stderr + chunk.toString()).slice(-20_000)
    })
    child.on(
      "close",
      (exitCode) => resume(Effect.succeed({ exitCode, stdout, stderr, wallMillis: performance.now() - started }))
    )
    return Effect.sync(() => void child.kill("SIGKILL"))
  }).pipe(
    Effect.timeoutTo({
      duration: RUN_TIMEOUT,
      onSuccess: (outcome): ChildOutcome => outcome,
      onTimeout: (): ChildOutcome => ({
        exitCode: null,
        stdout: "",
        stderr: `killed after ${Duration.format(RUN_TIMEOUT)}`,
        wallMillis: Duration.toMillis(RUN_TIMEOUT)
      })
    })
  )

/** The upstream in its own process; its port, and how many pages it has served. */
const startUpstream = Effect.acquireRelease(
  Effect.async<{ readonly port: number; readonly stop: () => void }, BenchFailed>((resume) => {
    const child = spawn(process.execPath, ["--import", "tsx", join(support, "upstream.ts")], {
      cwd: root,
      stdio: ["pipe", "pipe", "inherit"]
    })
    let out = ""
    let settled = false
    const settle = (effect: Effect.Effect<{ readonly port: number; readonly stop: () => void }, BenchFailed>) => {
      if (settled) return
      settled = true
      resume(effect)
    }
    child.stdout.on("data", (chunk: Buffer) => {
      out += chunk.toString()
      const newline = out.indexOf("\n")
      if (newline >= 0) {
        const { port } = JSON.parse(out.slice(0, newline)) as { readonly port: number }
        settle(Effect.succeed({ port, stop: () => void child.stdin.end() }))
      }
    })
    child.on("error", (cause) => settle(Effect.fail(new BenchFailed({ reason: `upstream: ${cause.message}` }))))
    child.on("exit", (code) => settle(Effect.fail(new BenchFailed({ reason: `upstream exited ${code}` }))))
  }),
  (upstream) => Effect.sync(() => upstream.stop())
)

const servedBy = (port: number) =>
  Effect.tryPromise({
    try: async () => {
      const response = await fetch(`http://127.0.0.1:${port}/__stats`)
      return ((await response.json()) as { readonly served: number }).served
    },
    catch: (cause) => new BenchFailed({ reason: `upstream stats: ${String(cause)}` })
  })

// ---------------------------------------------------------------------------------------------------------------
// One run
// ---------------------------------------------------------------------------------------------------------------

interface Sample {
  readonly round: number
  readonly contender: Contender
  readonly database: DatabaseName
  readonly pages: number
  /** Harvest time: the harvester's job (created → finished), the peers' first request → last row stored. */
  readonly elapsedMillis: number
  readonly pagesPerSecond: number
  /** Process start → exit, as seen by the driver (start-up and shutdown included). */
  readonly wallMillis: number
  readonly peakRssMiB: number
  /** The contender process's CPU time (user + system, start-up included) per page. */
  readonly cpuMillisPerPage: number
  readonly requests: number
  readonly stored: Stored
  readonly correct: boolean
  readonly problem: string | null
}

/** A fresh database for one run (a temp SQLite file, or a new PostgreSQL database), removed afterwards. */
const freshDatabase = (name: DatabaseName, dir: string) =>
  name === "sqlite"
    ? Effect.succeed<Database>({ _tag: "Sqlite", path: join(dir, "bench.db") })
    : Effect.acquireRelease(
      Effect.tryPromise({
        try: async () => {
          const database = `bench_${randomBytes(6).toString("hex")}`
          await createPgDatabase(database)
          return { database, db: { _tag: "Pg", url: `postgres://postgres@127.0.0.1:5432/${database}` } as const }
        },
        catch: (cause) => new BenchFailed({ reason: `create database: ${String(cause)}` })
      }),
      ({ database }) => Effect.promise(() => dropPgDatabase(database).catch(() => undefined))
    ).pipe(Effect.map(({ db }): Database => db))

const tempDir = Effect.acquireRelease(
  Effect.sync(() => mkdtempSync(join(tmpdir(), "spindle-bench-"))),
  (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
)

const writeTargets = (dir: string, port: number, pages: number) => {
  const path = join(dir, "targets.jsonl")
  const lines = Array.from({ length: pages }, (_, i) => JSON.stringify({ url: `http://127.0.0.1:${port}/items/${i}` }))
  writeFileSync(path, `${lines.join("\n")}\n`)
  return path
}

const commandOf = (contender: Contender, db: Database, dir: string, port: number, pages: number) => {
  const baseUrl = `http://127.0.0.1:${port}`
  switch (contender) {
    case "harvester":
    case "harvester-memory":
      return {
        args: [
          "--import",
          pathToFileURL(join(support, "exit-report.mjs")).href,
          harvesterBin,
          "run",
          "--file",
          writeTargets(dir, port, pages),
          "--concurrency",
          String(CONCURRENCY),
          "--per-host-concurrency",
          String(CONCURRENCY),
          "--rate",
          "1000000/1s",
          "--timeout",
          "30s",
          "--allow-host",
          "127.0.0.1",
          ...(db._tag === "Sqlite" ? ["--db", db.path] : [])
        ],
        env: {
          HARVESTER_LIMITS: contender === "harvester" ? "auto" : "memory",
          ...(db._tag === "Pg" ? { DATABASE_URL: db.url } : {})
        }
      }
    case "plain":
      return {
        args: ["--import", "tsx", join(support, "plain.ts"), baseUrl, String(pages), formatDatabase(db)],
        env: {}
      }
    case "crawlee":
    case "crawlee-memory": {
      const storage = join(dir, "crawlee-storage")
      mkdirSync(storage)
      return {
        args: ["--import", "tsx", join(support, "crawlee.ts"), baseUrl, String(pages), formatDatabase(db)],
        env: {
          CRAWLEE_STORAGE_DIR: storage,
          CRAWLEE_PURGE_ON_START: "true",
          // Crawlee's environment variables override its constructor options.
          CRAWLEE_PERSIST_STORAGE: contender === "crawlee" ? "true" : "false"
        }
      }
    }
  }
}

const problemsOf = (
  pages: number,
  outcome: ChildOutcome,
  report: ChildReport | undefined,
  stored: Stored,
  requests: number,
  elapsedMillis: number | null
): ReadonlyArray<string> => [
  ...(outcome.exitCode === 0 ? [] : [`exit code ${outcome.exitCode}`]),
  ...(report === undefined ? ["no report line"] : []),
  ...(stored.pages === pages ? [] : [`${stored.pages} pages stored, expected ${pages}`]),
  ...(stored.distinctUrls === pages ? [] : [`${stored.distinctUrls} distinct URLs stored, expected ${pages}`]),
  ...(stored.failed === 0 ? [] : [`${stored.failed} failed pages`]),
  ...((report?.failures ?? 0) === 0 ? [] : [`${report?.failures} failures reported`]),
  ...(requests === pages ? [] : [`upstream served ${requests} requests, expected ${pages}`]),
  ...(elapsedMillis === null ? ["no harvest time"] : [])
]

const fixed = (value: number, digits: number) => Number.isFinite(value) ? value.toFixed(digits) : "—"

const runOnce = (round: number, contender: Contender, database: DatabaseName, port: number, pages: number) =>
  Effect.scoped(Effect.gen(function*() {
    const dir = yield* tempDir
    const db = yield* freshDatabase(database, dir)
    const command = commandOf(contender, db, dir, port, pages)
    const before = yield* servedBy(port)
    const outcome = yield* runNode(command.args, command.env)
    const requests = (yield* servedBy(port)) - before
    const report = parseReport(outcome.stdout)
    const counted = yield* Effect.tryPromise({
      try: () => stored(db, isHarvester(contender) ? "harvester" : "peer"),
      catch: (cause) => new BenchFailed({ reason: `counting rows: ${String(cause)}` })
    }).pipe(
      Effect.catchAll((error) =>
        Effect.as(Console.error(`   ${error.reason}`), {
          pages: 0,
          distinctUrls: 0,
          failed: 0,
          jobMillis: null,
          firstPageMillis: null
        })
      )
    )
    const elapsedMillis = isHarvester(contender) ? counted.jobMillis : report?.elapsedMillis ?? null
    const problems = problemsOf(pages, outcome, report, counted, requests, elapsedMillis)
    if (problems.length > 0) {
      yield* Console.error(`   ${contender}/${database}: ${problems.join("; ")}\n${outcome.stderr.slice(-2_000)}`)
    }
    const sample: Sample = {
      round,
      contender,
      database,
      pages,
      elapsedMillis: elapsedMillis ?? Number.NaN,
      pagesPerSecond: elapsedMillis === null ? Number.NaN : pages / (elapsedMillis / 1000),
      wallMillis: outcome.wallMillis,
      peakRssMiB: (report?.maxRssKiB ?? Number.NaN) / 1024,
      cpuMillisPerPage: (report?.cpuMicros ?? Number.NaN) / 1000 / pages,
      requests,
      stored: counted,
      correct: problems.length === 0,
      problem: problems.length === 0 ? null : problems.join("; ")
    }
    const columns = [
      `round ${round}`,
      database.padEnd(6),
      contender.padEnd(14),
      `${fixed(sample.pagesPerSecond, 0).padStart(6)} pages/s`,
      `wall ${fixed(sample.wallMillis / 1000, 1)} s`,
      `peak RSS ${fixed(sample.peakRssMiB, 0)} MiB`,
      `CPU ${fixed(sample.cpuMillisPerPage, 2)} ms/page`,
      sample.correct ? "ok" : "FAILED"
    ]
    yield* Console.log(`   ${columns.join("  ")}`)
    return sample
  }))

// ---------------------------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------------------------

const median = (values: ReadonlyArray<number>): number => {
  const sorted = values.filter((value) => Number.isFinite(value)).sort((a, b) => a - b)
  if (sorted.length === 0) return Number.NaN
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

interface Summary {
  readonly contender: Contender
  readonly database: DatabaseName
  readonly pages: number
  readonly runs: number
  readonly correctRuns: number
  readonly pagesPerSecond: number
  readonly wallSeconds: number
  readonly peakRssMiB: number
  readonly cpuMillisPerPage: number
  /** Median over rounds of (this contender's pages/s ÷ the plain script's in the same round). */
  readonly versusPlain: number
}

/**
 * Median over rounds of `contender`'s pages/s ÷ `other`'s in the same round and database: runs adjacent in time
 * are paired, so the machine's drift (it is shared) cancels out better than in a ratio of medians.
 */
const versus = (samples: ReadonlyArray<Sample>, database: DatabaseName, contender: Contender, other: Contender) => {
  const find = (name: Contender, round: number) =>
    samples.find((sample) =>
      sample.contender === name && sample.database === database && sample.round === round && sample.correct
    )
  const rounds = [...new Set(samples.map((sample) => sample.round))]
  return median(rounds.flatMap((round) => {
    const mine = find(contender, round)
    const theirs = find(other, round)
    return mine === undefined || theirs === undefined ? [] : [mine.pagesPerSecond / theirs.pagesPerSecond]
  }))
}

const summarize = (samples: ReadonlyArray<Sample>, contender: Contender, database: DatabaseName): Summary => {
  const mine = samples.filter((sample) => sample.contender === contender && sample.database === database)
  const correct = mine.filter((sample) => sample.correct)
  return {
    contender,
    database,
    pages: mine[0]?.pages ?? 0,
    runs: mine.length,
    correctRuns: correct.length,
    pagesPerSecond: median(correct.map((sample) => sample.pagesPerSecond)),
    wallSeconds: median(correct.map((sample) => sample.wallMillis / 1000)),
    peakRssMiB: median(correct.map((sample) => sample.peakRssMiB)),
    cpuMillisPerPage: median(correct.map((sample) => sample.cpuMillisPerPage)),
    versusPlain: versus(samples, database, contender, "plain")
  }
}

interface Goal {
  readonly database: DatabaseName
  readonly subject: Contender
  readonly versus: Contender
  /** Median of per-round ratios of pages/s. */
  readonly ratio: number
  readonly target: number | null
  readonly met: boolean | null
}

/** The goals (the harvester as configured by default), and ratios shown for information (target null). */
const TARGETS: ReadonlyArray<readonly [Contender, Contender, number | null]> = [
  ["harvester", "plain", 0.8],
  ["harvester", "crawlee", 2],
  ["harvester", "crawlee-memory", null],
  ["harvester-memory", "plain", null],
  ["harvester-memory", "crawlee", null]
]

const goalsOf = (samples: ReadonlyArray<Sample>, databases: ReadonlyArray<DatabaseName>): ReadonlyArray<Goal> =>
  databases.flatMap((database) =>
    TARGETS.flatMap(([subject, other, target]): ReadonlyArray<Goal> => {
      const present = (name: Contender) =>
        samples.some((sample) => sample.contender === name && sample.database === database)
      if (!present(subject) || !present(other)) return []
      const ratio = versus(samples, database, subject, other)
      return [{
        database,
        subject,
        versus: other,
        ratio,
        target,
        met: target === null || !Number.isFinite(ratio) ? null : ratio >= target
      }]
    })
  )

const databaseTitle: Record<DatabaseName, string> = {
  sqlite: "SQLite (fresh temp file per run, WAL)",
  pg: "PostgreSQL 127.0.0.1:5432 (fresh database per run)"
}

const markdownOf = (
  summaries: ReadonlyArray<Summary>,
  goals: ReadonlyArray<Goal>,
  samples: ReadonlyArray<Sample>,
  settings: { readonly pages: number; readonly runs: number; readonly seconds: number },
  notes: ReadonlyArray<string>
) => {
  const sections = databaseNames.flatMap((database) => {
    const rows = summaries.filter((summary) => summary.database === database)
    if (rows.length === 0) return []
    const table = [
      "| contender | pages | pages/s | × plain | peak RSS (MiB) | CPU (ms/page) | wall (s) | correct runs |",
      "|---|---:|---:|---:|---:|---:|---:|---:|",
      ...rows.map((row) =>
        `| ${LABELS[row.contender]} | ${row.pages} | ${fixed(row.pagesPerSecond, 0)} | ` +
        `${fixed(row.versusPlain, 2)} | ${fixed(row.peakRssMiB, 0)} | ${fixed(row.cpuMillisPerPage, 2)} | ` +
        `${fixed(row.wallSeconds, 1)} | ${row.correctRuns}/${row.runs} |`
      )
    ]
    const lines = goals.filter((goal) => goal.database === database).map((goal) =>
      `- ${SHORT[goal.subject]} ÷ ${SHORT[goal.versus]}: ${fixed(goal.ratio, 2)}×` +
      (goal.target === null
        ? " (for information)"
        : ` (goal ≥ ${goal.target}×: ${goal.met ? "met" : "NOT met"})`)
    )
    return [`## ${databaseTitle[database]}`, "", ...table, ...(lines.length > 0 ? ["", ...lines] : []), ""]
  })
  const runs = [
    "## Every run",
    "",
    "| round | database | contender | pages/s | harvest (s) | to 1st page (s) | wall (s) | peak RSS (MiB) | " +
    "CPU (ms/page) | requests | stored | check |",
    "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ...samples.map((sample) =>
      `| ${sample.round} | ${sample.database} | ${sample.contender} | ${fixed(sample.pagesPerSecond, 0)} | ` +
      `${fixed(sample.elapsedMillis / 1000, 2)} | ${
        fixed((sample.stored.firstPageMillis ?? Number.NaN) / 1000, 2)
      } | ` +
      `${fixed(sample.wallMillis / 1000, 1)} | ` +
      `${fixed(sample.peakRssMiB, 0)} | ${fixed(sample.cpuMillisPerPage, 2)} | ${sample.requests} | ` +
      `${sample.stored.pages} | ` +
      `${sample.problem ?? "ok"} |`
    )
  ]
  return [
    "# Harvester benchmarks",
    "",
    `${settings.pages} pages of 1 KB JSON from a zero-latency node:http upstream (its own process, 127.0.0.1), ` +
    `concurrency ${CONCURRENCY}, every contender in its own process. Medians of ${settings.runs} interleaved runs ` +
    `(the order rotates each round); suite time ${(settings.seconds / 60).toFixed(1)} min.`,
    "",
    "- **pages/s** = pages ÷ harvest time: the harvester's job from created (targets inserted) to finished, read " +
    "from its own database; the peers' first request to last row committed. Process start-up is excluded from " +
    "pages/s and included in **wall**.",
    "- **× plain** = median over rounds of pages/s ÷ the plain script's pages/s in the same round (runs adjacent in " +
    "time are paired: the machine is shared and drifts). The goal lines use the same paired ratios.",
    "- **to 1st page** (harvester only): job created → first page stored (job and targets inserted, first claim, " +
    "first fetch).",
    "- **peak RSS** = `process.resourceUsage().maxRSS` of the contender's process at exit; **CPU** = its user + " +
    "system CPU time (start-up included) ÷ pages: steadier than pages/s on a busy machine.",
    "- **correct** = exit 0, exactly the expected pages stored with distinct URLs and no failed rows, and the " +
    "upstream served exactly that many requests (nothing fetched twice).",
    "- harvester: `harvester run --file targets.jsonl --concurrency 50 --per-host-concurrency 50 " +
    "--rate 1000000/1s --timeout 30s --allow-host 127.0.0.1` (`--db <file>` on SQLite, `DATABASE_URL` on " +
    "PostgreSQL), the real CLI with a peak-RSS reporter preloaded, default limits (`HARVESTER_LIMITS=auto`: on " +
    "PostgreSQL the per-host rate window and slots live in PostgreSQL so several instances share them; on SQLite " +
    "in memory). `HARVESTER_LIMITS=memory` (PostgreSQL only) keeps them in the process.",
    "- plain script: `undici.request` + `p-limit(50)`, JSON parsed, selected headers kept, 100 rows per " +
    "transaction (better-sqlite3 / `pg`, the client @effect/sql-pg runs on), same columns as the harvester's pages.",
    "- Crawlee: `HttpCrawler` with minConcurrency = maxConcurrency = 50 (its autoscaled pool cannot scale below " +
    "50 whatever its CPU/memory snapshots say), no per-minute cap, default retries/sessions, request queue " +
    "persisted to a temp `CRAWLEE_STORAGE_DIR` purged at start, rows stored like the plain script's.",
    ...notes.map((note) => `- ${note}`),
    "",
    ...sections,
    ...runs,
    ""
  ].join("\n")
}

// ---------------------------------------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------------------------------------

const pgReachable = Effect.tryPromise(() => createPgDatabase("bench_probe_unused").then(() => true)).pipe(
  Effect.zipLeft(Effect.promise(() => dropPgDatabase("bench_probe_unused").catch(() => undefined))),
  Effect.orElseSucceed(() => false)
)

const program = Effect.gen(function*() {
  const settings = yield* BenchConfig
  const started = performance.now()
  const notes: Array<string> = []
  let databases = settings.databases
  if (databases.includes("pg") && !(yield* pgReachable)) {
    notes.push(`PostgreSQL (${PG_ADMIN_URL.replace("/postgres", "")}) was unreachable: its runs were skipped.`)
    yield* Console.error(notes[notes.length - 1])
    databases = databases.filter((name) => name !== "pg")
  }
  const crawleePages = Option.getOrElse(settings.crawleePages, () => settings.pages)
  if (crawleePages !== settings.pages && settings.contenders.some((name) => name.startsWith("crawlee"))) {
    notes.push(
      `Crawlee ran ${crawleePages} pages per run (SPINDLE_BENCH_CRAWLEE_PAGES), not ${settings.pages}: a quick ` +
        `trial only. Its pages/s grows with the page count (its start-up is amortized: ~100/s at 2k pages, ~290/s ` +
        `at 20k in trials), so compare only at the same count.`
    )
  }
  if (settings.contenders.some((name) => name.startsWith("harvester"))) yield* buildHarvester
  const upstream = yield* startUpstream
  yield* Console.log(
    `harvester bench: ${settings.pages} pages, ${settings.runs} run(s), ${databases.join("+")}, ` +
      `${settings.contenders.join(", ")}; upstream on 127.0.0.1:${upstream.port}; load ${loadavg()[0].toFixed(1)}`
  )
  const samples: Array<Sample> = []
  for (let round = 1; round <= settings.runs; round++) {
    for (const database of databases) {
      const contenders = settings.contenders.filter((name) => appliesTo(name, database))
      const shift = (round - 1) % contenders.length
      for (const contender of [...contenders.slice(shift), ...contenders.slice(0, shift)]) {
        const pages = contender.startsWith("crawlee") ? crawleePages : settings.pages
        samples.push(yield* runOnce(round, contender, database, upstream.port, pages))
      }
    }
  }
  const summaries = databases.flatMap((database) =>
    settings.contenders.filter((name) => appliesTo(name, database)).map((contender) =>
      summarize(samples, contender, database)
    )
  )
  const seconds = (performance.now() - started) / 1000
  const machine = {
    node: process.version,
    cpus: cpus().length,
    cpu: cpus()[0]?.model ?? "unknown",
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    loadAverageAtEnd: loadavg()[0],
    date: new Date().toISOString()
  }
  const goals = goalsOf(samples, databases)
  const markdown = markdownOf(summaries, goals, samples, { pages: settings.pages, runs: settings.runs, seconds }, [
    `Machine: Node ${machine.node}, ${machine.cpus} × ${machine.cpu}, ${machine.memoryGiB} GiB; load average ` +
    `${machine.loadAverageAtEnd.toFixed(1)} at the end (the upstream and the contender share these cores).`,
    ...notes
  ])
  mkdirSync(resultsDir, { recursive: true })
  writeFileSync(
    join(resultsDir, "harvester.json"),
    `${
      JSON.stringify(
        { machine, settings: { ...settings, crawleePages, concurrency: CONCURRENCY }, summaries, goals, samples },
        null,
        2
      )
    }\n`
  )
  writeFileSync(join(resultsDir, "harvester.md"), markdown)
  yield* Console.log(markdown)
  yield* Console.log(`wrote ${join(resultsDir, "harvester.md")}`)
  const failed = samples.filter((sample) => !sample.correct)
  if (failed.length > 0) {
    return yield* new BenchFailed({ reason: `${failed.length} run(s) failed their correctness check` })
  }
}).pipe(Effect.scoped)

NodeRuntime.runMain(program)
