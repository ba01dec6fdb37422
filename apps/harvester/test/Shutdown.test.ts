import { FileSystem, HttpApiClient, HttpClient, HttpClientRequest } from "@effect/platform"
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import { SqlClient } from "@effect/sql"
import { assert, describe, layer } from "@effect/vitest"
import { Context, Effect, Fiber, Layer, Option, Redacted, Schedule, Schema, Stream } from "effect"
import type { Scope } from "effect"
import * as Db from "../src/Db/Db.js"
import * as SimulatedApi from "../src/Demo/SimulatedApi.js"
import type { JobId } from "../src/Domain.js"
import { JobSpec } from "../src/Domain.js"
import { Api } from "../src/Http/Api.js"
import * as Databases from "./support/Databases.js"
import { serve } from "./support/Harvester.js"

class Upstream extends Context.Tag("test/Upstream")<Upstream, SimulatedApi.SimulatedApi>() {}

const UpstreamLive = Layer.scoped(
  Upstream,
  SimulatedApi.start({
    routes: {
      "/slow": { json: { ok: true }, delayMillis: 1500 },
      "/stuck": { json: { ok: true }, delayMillis: 60_000 }
    }
  })
)

const Env = UpstreamLive.pipe(Layer.provideMerge(Layer.mergeAll(NodeContext.layer, NodeHttpClient.layerUndici)))

const tempDir = Effect.flatMap(FileSystem.FileSystem, (fs) => fs.makeTempDirectoryScoped({ prefix: "harvester-stop-" }))
  .pipe(Effect.orDie)

/** Target and page counts by status, read from the database file after the process is gone. */
const inspect = (database: Layer.Layer<SqlClient.SqlClient, Db.DatabaseUnavailable>, jobId: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<{ readonly status: string; readonly n: number }>`
      SELECT status, COUNT(*) AS n FROM targets WHERE job_id = ${jobId} GROUP BY status`
    const pages = yield* sql<{ readonly n: number }>`SELECT COUNT(*) AS n FROM pages WHERE job_id = ${jobId}`
    return {
      targets: Object.fromEntries(rows.map((row) => [row.status, Number(row.n)])),
      pages: Number(pages[0].n)
    }
  }).pipe(Effect.provide(database), Effect.orDie)

interface Database {
  /** The environment `harvester serve` gets to use it. */
  readonly env: Record<string, string>
  /** The same database, for inspecting it after the process is gone. */
  readonly layer: Layer.Layer<SqlClient.SqlClient, Db.DatabaseUnavailable>
}

const databases: ReadonlyArray<{
  readonly name: string
  readonly skip: string | null
  readonly make: Effect.Effect<Database, never, FileSystem.FileSystem | Scope.Scope>
}> = [
  {
    name: "sqlite",
    skip: null,
    make: Effect.map(tempDir, (dir) => ({
      env: { HARVESTER_DB_PATH: `${dir}/h.db` },
      layer: Db.layerSqlite(`${dir}/h.db`)
    }))
  },
  {
    name: "pg",
    skip: Databases.all.find((database) => database.name === "pg")?.skip ?? null,
    make: Effect.map(Databases.pgDatabaseScoped, (url) => ({
      env: { DATABASE_URL: url },
      layer: Db.layerPg(Redacted.make(url))
    }))
  }
]

const waitUntil = <E, R>(check: Effect.Effect<boolean, E, R>) =>
  check.pipe(
    Effect.repeat({ until: (done) => done, schedule: Schedule.spaced("20 millis") }),
    Effect.timeout("20 seconds")
  )

const createJob = (baseUrl: string, targets: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const client = yield* HttpApiClient.make(Api, { baseUrl })
    return yield* client.jobs.create({
      payload: Schema.decodeUnknownSync(JobSpec)({
        targets: targets.map((url) => ({ url })),
        options: { concurrency: 2, perHostConcurrency: 2, rate: "50/1s", retries: 0 }
      })
    })
  })

for (const database of databases) {
  describe.skipIf(database.skip !== null)(
    `graceful shutdown of \`harvester serve\` on ${database.name} (SIGTERM to a child process)`,
    () => {
      layer(Env, { timeout: "120 seconds", excludeTestServices: true })((it) => {
        it.scoped(
          "in-flight requests finish within the grace, nothing new is claimed, leases released, exit 0; a restart resumes",
          () =>
            Effect.gen(function*() {
              const upstream = yield* Upstream
              yield* upstream.reset
              const db = yield* database.make
              const env = {
                ...db.env,
                HARVESTER_ALLOW_HOSTS: "127.0.0.1",
                HARVESTER_SHUTDOWN_GRACE: "8s",
                // Claim only what runs at once, so "in flight" and "claimed" are the same two targets.
                HARVESTER_CLAIM_BATCH: "2"
              }
              const targets = Array.from({ length: 6 }, (_, i) => `${upstream.baseUrl}/slow?n=${i}`)
              const first = yield* Effect.scoped(
                Effect.gen(function*() {
                  const server = yield* serve(env)
                  const job = yield* createJob(server.baseUrl, targets)
                  yield* waitUntil(Effect.map(upstream.openRequests, (open) => open === 2))
                  // Past the millisecond of the arrivals just seen (they are stamped in whole milliseconds): every
                  // request stamped before `atSignal` then arrived before the signal, and none after it.
                  yield* Effect.sleep("2 millis")
                  const atSignal = Date.now()
                  yield* Effect.fork(server.process.kill("SIGTERM"))
                  const code = yield* server.exitCode.pipe(Effect.timeout("30 seconds"))
                  return { job, code, atSignal, output: yield* server.output }
                })
              )
              assert.strictEqual(first.code, 0, first.output)
              const requests = yield* upstream.requests
              assert.strictEqual(requests.length, 2, "nothing claimed after the signal")
              assert.isTrue(requests.every((request) => request.completed), "the in-flight requests were answered")
              assert.isTrue(requests.every((request) => request.at < first.atSignal))
              const afterStop = yield* inspect(db.layer, first.job.id)
              assert.deepStrictEqual(afterStop, { targets: { done: 2, pending: 4 }, pages: 2 }, first.output)

              const second = yield* Effect.scoped(
                Effect.gen(function*() {
                  const server = yield* serve(env)
                  const client = yield* HttpApiClient.make(Api, { baseUrl: server.baseUrl })
                  const view = yield* client.jobs.get({ path: { id: first.job.id } }).pipe(
                    Effect.repeat({ until: (view) => view.status !== "running" }),
                    Effect.timeout("30 seconds")
                  )
                  yield* Effect.fork(server.process.kill("SIGTERM"))
                  return { view, code: yield* server.exitCode }
                })
              )
              assert.strictEqual(second.view.status, "completed")
              assert.strictEqual(second.view.counts.done, 6)
              assert.strictEqual(second.code, 0)
              const urls = (yield* upstream.requests).map((request) => request.url)
              assert.strictEqual(urls.length, 6, "every target fetched once across both runs")
              assert.strictEqual(new Set(urls).size, 6)
            }),
          120_000
        )

        it.scoped(
          "past the grace the rest is interrupted (sockets closed), an open SSE stream does not hold the exit",
          () =>
            Effect.gen(function*() {
              const upstream = yield* Upstream
              yield* upstream.reset
              const db = yield* database.make
              const server = yield* serve({
                ...db.env,
                HARVESTER_ALLOW_HOSTS: "127.0.0.1",
                HARVESTER_SHUTDOWN_GRACE: "300ms"
              })
              const job = yield* createJob(server.baseUrl, [
                `${upstream.baseUrl}/stuck?a`,
                `${upstream.baseUrl}/stuck?b`
              ])
              const http = yield* HttpClient.HttpClient
              const events = yield* http.execute(HttpClientRequest.get(`${server.baseUrl}/jobs/${job.id}/events`)).pipe(
                Effect.flatMap((response) => Stream.runDrain(response.stream)),
                Effect.either,
                Effect.fork
              )
              yield* waitUntil(Effect.map(upstream.openRequests, (open) => open === 2))
              yield* Effect.fork(server.process.kill("SIGTERM"))
              const code = yield* server.exitCode.pipe(Effect.timeout("20 seconds"), Effect.option)
              assert.deepStrictEqual(code, Option.some(0), yield* server.output)
              yield* Fiber.join(events).pipe(Effect.timeout("10 seconds"))
              yield* waitUntil(Effect.map(upstream.openRequests, (open) => open === 0))
              const requests = yield* upstream.requests
              assert.strictEqual(requests.length, 2)
              assert.isTrue(requests.every((request) => !request.completed), "the stuck requests were cut, not awaited")
              const state = yield* inspect(db.layer, job.id as JobId)
              assert.deepStrictEqual(state, { targets: { pending: 2 }, pages: 0 }, "leases released, nothing stored")
            }),
          60_000
        )
      })
    }
  )
}
