import { FileSystem } from "@effect/platform"
import { NodeFileSystem } from "@effect/platform-node"
import { SqlClient } from "@effect/sql"
import { assert, describe, layer } from "@effect/vitest"
import { Data, Effect, Layer, Redacted, Schema } from "effect"
import type { ChildProcess } from "node:child_process"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import * as Db from "../src/Db/Db.js"
import * as SimulatedApi from "../src/Demo/SimulatedApi.js"
import { JobOptions, JobSpec } from "../src/Domain.js"
import * as Databases from "./support/Databases.js"
import { pollUntil } from "./support/Harness.js"

const appDir = fileURLToPath(new URL("..", import.meta.url))
const worker = fileURLToPath(new URL("./fixtures/crash-worker.ts", import.meta.url))

class WorkerFailed extends Data.TaggedError("WorkerFailed")<{ readonly output: string }> {}

interface Worker {
  readonly child: ChildProcess
  readonly output: () => string
}

/** A harvester process; SIGKILLed on scope close if still alive. */
const startWorker = (args: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.sync((): Worker => {
      const child = spawn(process.execPath, ["--import", "tsx", worker, ...args], {
        cwd: appDir,
        env: { ...process.env, HARVESTER_LEASE_TTL: "1s", HARVESTER_SCAN_EVERY: "200ms" },
        stdio: ["ignore", "pipe", "pipe"]
      })
      let output = ""
      child.stdout.on("data", (chunk) => (output += String(chunk)))
      child.stderr.on("data", (chunk) => (output += String(chunk)))
      return { child, output: () => output }
    }),
    ({ child }) => Effect.sync(() => child.exitCode === null && child.signalCode === null && child.kill("SIGKILL"))
  )

const exited = (worker: Worker) =>
  Effect.async<number | null>((resume) => {
    if (worker.child.exitCode !== null || worker.child.signalCode !== null) {
      return resume(Effect.succeed(worker.child.exitCode))
    }
    worker.child.once("exit", (code) => resume(Effect.succeed(code)))
  })

const line = (worker: Worker, pattern: RegExp) =>
  pollUntil(Effect.sync(() => pattern.exec(worker.output())), (match) => match !== null).pipe(
    Effect.map((match) => match!),
    Effect.timeoutFail({ duration: "30 seconds", onTimeout: () => new WorkerFailed({ output: worker.output() }) })
  )

const storedPages = (jobId: string) =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) =>
      sql<{ readonly target_id: string; readonly page_no: number | string; readonly url: string }>`
      SELECT target_id, page_no, url FROM pages WHERE job_id = ${jobId} AND error IS NULL`
  ).pipe(Effect.orDie)

const leased = (jobId: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ readonly n: number | string }>`SELECT COUNT(*) AS n FROM targets
      WHERE job_id = ${jobId} AND status = 'leased'`).pipe(Effect.map((rows) => Number(rows[0]!.n)), Effect.orDie)

const pathOf = (url: string) => new URL(url).pathname + new URL(url).search

/** Where each variant's worker finds its database (a SQLite file, a fresh PostgreSQL database). */
const databaseFor = (name: Databases.DatabaseName) =>
  name === "sqlite"
    ? Effect.flatMap(FileSystem.FileSystem, (fs) => fs.makeTempDirectoryScoped({ prefix: "harvester-crash-" })).pipe(
      Effect.map((dir) => `${dir}/harvester.db`),
      Effect.provide(NodeFileSystem.layer),
      Effect.orDie
    )
    : Databases.pgDatabaseScoped

const clientFor = (location: string) =>
  location.startsWith("postgres://") ? Db.layerPg(Redacted.make(location)) : Db.layerSqlite(location)

for (const db of Databases.all) {
  describe.skipIf(db.skip !== null)(`Crash on ${db.name}`, () => {
    layer(Layer.empty, { excludeTestServices: true })((it) => {
      it.scoped(
        "SIGKILL mid-job, restart: the job completes, no page stored twice, no stored page fetched again",
        () =>
          Effect.gen(function*() {
            const api = yield* SimulatedApi.start({
              routes: {
                "/items": { collection: { items: 60, pageSize: 5, style: "page" }, delayMillis: 40 },
                "/one/*": { json: { one: true }, delayMillis: 40 }
              }
            })
            const location = yield* databaseFor(db.name)
            const spec = new JobSpec({
              targets: [
                { url: `${api.baseUrl}/items`, paginate: "page:page" },
                ...Array.from({ length: 16 }, (_, i) => ({ url: `${api.baseUrl}/one/${i}` }))
              ],
              options: new JobOptions({ concurrency: 3, perHostConcurrency: 3, rate: "100/1s" })
            })
            const encoded = JSON.stringify(yield* Schema.encode(JobSpec)(spec))

            const first = yield* startWorker([location, "create", encoded])
            const jobId = (yield* line(first, /^job (\S+)$/m))[1]!
            const database = clientFor(location)
            yield* pollUntil(
              Effect.provide(storedPages(jobId), database),
              (pages) => pages.length >= 8,
              "25 millis"
            )
            first.child.kill("SIGKILL")
            assert.strictEqual(yield* exited(first), null, "killed, not exited")

            const before = yield* Effect.provide(storedPages(jobId), database)
            const leasedAtCrash = yield* Effect.provide(leased(jobId), database)
            assert.isBelow(before.length, 12 + 16, "killed mid-job")
            assert.isAtLeast(leasedAtCrash, 1, "targets were in flight at the crash")

            const second = yield* startWorker([location, "resume", jobId])
            const done = yield* line(second, /^done (\S+) (\d+)$/m)
            assert.strictEqual(yield* exited(second), 0)
            assert.deepStrictEqual([done[1], Number(done[2])], ["completed", 12 + 16])

            const after = yield* Effect.provide(storedPages(jobId), database)
            assert.strictEqual(after.length, 12 + 16)
            assert.strictEqual(new Set(after.map((p) => `${p.target_id}#${p.page_no}`)).size, after.length)
            assert.strictEqual(yield* Effect.provide(leased(jobId), database), 0)

            const fetched = (yield* api.requests).filter((r) => r.outcome === "ok").map((r) => r.url)
            for (const page of before) {
              const path = pathOf(page.url)
              assert.strictEqual(fetched.filter((url) => url === path).length, 1, `${path} stored before the crash`)
            }
          }),
        90_000
      )
    })
  })
}
