/**
 * Scale-out: three real `harvester serve` processes on one fresh PostgreSQL database, one simulated upstream in this
 * process on 127.0.0.1. Everything is judged from the upstream's own record of requests and from the database.
 * The per-host limits are shared through PostgreSQL (the default with DATABASE_URL), and through Redis (REDIS_URL).
 * PostgreSQL / Redis variants are skipped, with the reason printed, when unreachable — except under CI=true.
 */
import { HttpApiClient } from "@effect/platform"
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import { SqlClient } from "@effect/sql"
import { assert, describe, layer } from "@effect/vitest"
import { Clock, Context, Effect, Fiber, Layer, Redacted, Ref, Schedule, Schema } from "effect"
import * as Db from "../src/Db/Db.js"
import * as SimulatedApi from "../src/Demo/SimulatedApi.js"
import type { JobId } from "../src/Domain.js"
import { isFinished, JobSpec } from "../src/Domain.js"
import { Api } from "../src/Http/Api.js"
import * as Databases from "./support/Databases.js"
import { maxInWindow, pollUntil } from "./support/Harness.js"
import type { Serving } from "./support/Harvester.js"
import { serve } from "./support/Harvester.js"
import { PG_PORT, probe, REDIS_PORT, required } from "./support/Services.js"

const pgSkip = required ? null : await probe(PG_PORT)
const redisSkip = required ? null : pgSkip ?? await probe(REDIS_PORT)
if (pgSkip !== null) process.stderr.write(`[harvester tests] ScaleOut skipped: PostgreSQL ${pgSkip}\n`)
else if (redisSkip !== null) process.stderr.write(`[harvester tests] ScaleOut on Redis skipped: Redis ${redisSkip}\n`)

const LEASE_TTL_MILLIS = 2000
const INSTANCES = ["scale-1", "scale-2", "scale-3"] as const

interface Cluster {
  readonly upstream: SimulatedApi.SimulatedApi
  readonly servers: ReadonlyArray<Serving>
  /** The database the instances share, for the test's own queries. */
  readonly sql: SqlClient.SqlClient
}

class ClusterTag extends Context.Tag("test/Cluster")<ClusterTag, Cluster>() {}

const routes: Record<string, SimulatedApi.Route> = {
  "/quick/*": { json: { ok: true }, delayMillis: 30 },
  "/stuck/*": { json: { ok: true }, delayMillis: 60_000 },
  "/rated/*": { json: { ok: true } },
  "/slow/*": { json: { ok: true }, delayMillis: 250 },
  "/held/*": { json: { ok: true }, delayMillis: 40 }
}

/** A fresh database, an upstream, and three instances on them (the first one migrates alone, then two more). */
const cluster = (store: "postgres" | "redis") =>
  Layer.scoped(
    ClusterTag,
    Effect.gen(function*() {
      const url = yield* Databases.pgDatabaseScoped
      const upstream = yield* SimulatedApi.start({ routes })
      const env = (instanceId: string): Record<string, string> => ({
        DATABASE_URL: url,
        HARVESTER_ALLOW_HOSTS: "127.0.0.1",
        HARVESTER_INSTANCE_ID: instanceId,
        HARVESTER_LEASE_TTL: `${LEASE_TTL_MILLIS}ms`,
        HARVESTER_SCAN_EVERY: "250ms",
        HARVESTER_SHUTDOWN_GRACE: "200ms",
        ...(store === "redis"
          ? { REDIS_URL: "redis://127.0.0.1:6379", REDIS_PREFIX: `spindle:scaleout:${url.split("/").pop()}:` }
          : {})
      })
      const first = yield* serve(env(INSTANCES[0]))
      const rest = yield* Effect.all(INSTANCES.slice(1).map((id) => serve(env(id))), { concurrency: "unbounded" })
      const sql = yield* Effect.map(Layer.build(Db.layerPg(Redacted.make(url))), Context.get(SqlClient.SqlClient))
      return { upstream, servers: [first, ...rest], sql }
    }).pipe(Effect.orDie)
  )

const clientOf = (server: Serving) => HttpApiClient.make(Api, { baseUrl: server.baseUrl })

const createJob = (
  server: Serving,
  urls: ReadonlyArray<string>,
  options: { readonly concurrency: number; readonly perHostConcurrency: number; readonly rate: string }
) =>
  Effect.gen(function*() {
    const client = yield* clientOf(server)
    return yield* client.jobs.create({
      payload: Schema.decodeUnknownSync(JobSpec)({
        targets: urls.map((url) => ({ url })),
        options: { ...options, retries: 0, timeout: "90 seconds" }
      })
    })
  }).pipe(Effect.orDie)

const awaitJob = (server: Serving, id: JobId) =>
  pollUntil(
    Effect.flatMap(clientOf(server), (client) => client.jobs.get({ path: { id } })),
    (view) => isFinished(view.status),
    "50 millis"
  ).pipe(
    Effect.timeout("40 seconds"),
    Effect.orDie
  )

/** Samples which instances hold leases of the job, every 20 ms, until interrupted. */
const watchOwners = (sql: SqlClient.SqlClient, jobId: string) =>
  Effect.gen(function*() {
    const owners = yield* Ref.make(new Set<string>())
    const sample = sql<{ readonly lease_owner: string }>`SELECT DISTINCT lease_owner FROM targets
      WHERE job_id = ${jobId} AND status = 'leased'`.pipe(
      Effect.flatMap((rows) => Ref.update(owners, (seen) => new Set([...seen, ...rows.map((row) => row.lease_owner)]))),
      Effect.orDie
    )
    const fiber = yield* Effect.fork(Effect.repeat(sample, Schedule.spaced("20 millis")))
    return { owners: Ref.get(owners), stop: Fiber.interrupt(fiber) }
  })

const storedPages = (sql: SqlClient.SqlClient, jobId: string) =>
  Effect.orDie(sql<{ readonly target_id: string; readonly url: string }>`SELECT target_id, url FROM pages
    WHERE job_id = ${jobId} AND error IS NULL`)

const leasesOf = (sql: SqlClient.SqlClient, jobId: string, owner: string) =>
  sql<{ readonly url: string }>`SELECT url FROM targets
    WHERE job_id = ${jobId} AND status = 'leased' AND lease_owner = ${owner}`.pipe(
    Effect.map((rows) => rows.map((row) => row.url)),
    Effect.orDie
  )

const waitFor = <A, E, R>(check: Effect.Effect<A, E, R>, until: (a: A) => boolean) =>
  pollUntil(check, until).pipe(Effect.timeout("20 seconds"))

const pathOf = (url: string) => new URL(url).pathname

const requestsUnder = (upstream: SimulatedApi.SimulatedApi, prefix: string) =>
  Effect.map(upstream.requests, (requests) => requests.filter((request) => request.path.startsWith(prefix)))

const Env = (store: "postgres" | "redis") =>
  cluster(store).pipe(Layer.provideMerge(Layer.mergeAll(NodeContext.layer, NodeHttpClient.layerUndici)))

/** At most `limit` starts in any window of `perMillis`, judged from arrivals (see Engine.test for the slack). */
const assertRate = (instants: ReadonlyArray<number>, limit: number, perMillis: number) => {
  assert.isAtMost(maxInWindow(instants, perMillis - 150), limit, "per-host rate in any window, across instances")
  const span = Math.max(...instants) - Math.min(...instants)
  assert.isAtLeast(span, (Math.ceil(instants.length / limit) - 1) * perMillis - 150, "long-run per-host rate")
}

/** 30 targets at 5 per 500 ms on one host, created through instance `creator`: no window of the upstream's log holds
 * more than 5 arrivals, and several instances did the fetching. */
const rateHoldsAcrossInstances = (creator: number) =>
  Effect.gen(function*() {
    const { servers, sql, upstream } = yield* ClusterTag
    const urls = Array.from({ length: 30 }, (_, i) => `${upstream.baseUrl}/rated/${i}`)
    const job = yield* createJob(servers[creator]!, urls, { concurrency: 3, perHostConcurrency: 9, rate: "5/500ms" })
    const owners = yield* watchOwners(sql, job.id)
    const view = yield* awaitJob(servers[0]!, job.id)
    yield* owners.stop
    assert.strictEqual(view.counts.done, 30)
    const requests = yield* requestsUnder(upstream, "/rated/")
    assert.strictEqual(requests.length, 30)
    assert.isAtLeast((yield* owners.owners).size, 2, "several instances fetched")
    assertRate(requests.map((request) => request.at), 5, 500)
  })

/** 90 targets on one host, 4 workers per instance (12 in all) but 5 per host: the upstream never has more than 5 open. */
const concurrencyHoldsAcrossInstances = (creator: number) =>
  Effect.gen(function*() {
    const { servers, sql, upstream } = yield* ClusterTag
    const urls = Array.from({ length: 90 }, (_, i) => `${upstream.baseUrl}/held/${i}`)
    const job = yield* createJob(servers[creator]!, urls, { concurrency: 4, perHostConcurrency: 5, rate: "100000/1s" })
    const owners = yield* watchOwners(sql, job.id)
    const view = yield* awaitJob(servers[0]!, job.id)
    yield* owners.stop
    assert.strictEqual(view.counts.done, 90)
    const requests = yield* requestsUnder(upstream, "/held/")
    assert.strictEqual(requests.length, 90)
    assert.isAtLeast((yield* owners.owners).size, 2, "several instances fetched")
    // Only these requests are open meanwhile, so `concurrent` (open at arrival) counts the host's requests in flight.
    const most = Math.max(...requests.map((request) => request.concurrent))
    assert.isAtMost(most, 5, "per-host concurrency across instances")
    assert.isAtLeast(most, 4, "the instances never pressed against the bound: the test did not contend")
  })

describe.skipIf(pgSkip !== null)("ScaleOut: three instances on one PostgreSQL (limits shared in PostgreSQL)", () => {
  layer(Env("postgres"), { excludeTestServices: true, timeout: 60_000 })((it) => {
    it.scoped(
      "no target is fetched twice while leases are live; all three instances take part",
      () =>
        Effect.gen(function*() {
          const { servers, sql, upstream } = yield* ClusterTag
          const urls = Array.from({ length: 60 }, (_, i) => `${upstream.baseUrl}/quick/${i}`)
          const job = yield* createJob(servers[0]!, urls, { concurrency: 3, perHostConcurrency: 9, rate: "1000/1s" })
          const owners = yield* watchOwners(sql, job.id)
          const view = yield* awaitJob(servers[1]!, job.id)
          yield* owners.stop
          assert.strictEqual(view.status, "completed")
          assert.strictEqual(view.counts.done, 60)
          const fetched = (yield* requestsUnder(upstream, "/quick/")).map((request) => request.path)
          assert.strictEqual(fetched.length, 60, "one request per target")
          assert.deepStrictEqual(new Set(fetched), new Set(urls.map(pathOf)))
          assert.deepStrictEqual([...(yield* owners.owners)].sort(), [...INSTANCES], "every instance claimed work")
          const pages = yield* storedPages(sql, job.id)
          assert.strictEqual(pages.length, 60)
          assert.strictEqual(new Set(pages.map((page) => page.target_id)).size, 60, "every page stored once")
        }),
      30_000
    )

    it.scoped(
      "a cancel sent to one instance stops the job's requests on all three within 1 s",
      () =>
        Effect.gen(function*() {
          const { servers, sql, upstream } = yield* ClusterTag
          const urls = Array.from({ length: 30 }, (_, i) => `${upstream.baseUrl}/stuck/${i}`)
          const job = yield* createJob(servers[0]!, urls, { concurrency: 3, perHostConcurrency: 9, rate: "1000/1s" })
          const owners = yield* watchOwners(sql, job.id)
          yield* waitFor(upstream.openRequests, (open) => open === 9)
          yield* waitFor(owners.owners, (seen) => seen.size === 3)
          yield* owners.stop

          const cancelledAt = yield* Clock.currentTimeMillis
          const view = yield* Effect.flatMap(
            clientOf(servers[1]!),
            (client) => client.jobs.cancel({ path: { id: job.id } })
          )
          assert.strictEqual(view.status, "cancelled")
          yield* waitFor(upstream.openRequests, (open) => open === 0)
          yield* Effect.sleep("500 millis")

          const requests = yield* requestsUnder(upstream, "/stuck/")
          assert.strictEqual(requests.length, 9, "nothing started after the cancel")
          for (const request of requests) {
            assert.isFalse(request.completed, `${request.path} was cut, not answered`)
            assert.isAtMost(request.endedAt! - cancelledAt, 1000, `${request.path} closed within 1 s of the cancel`)
          }
          const final = yield* awaitJob(servers[2]!, job.id)
          assert.deepStrictEqual([final.status, final.counts.cancelled, final.counts.pages], ["cancelled", 30, 0])
        }),
      30_000
    )

    it.scoped(
      "the upstream never sees more than the per-host rate in any window, across all instances",
      () => rateHoldsAcrossInstances(2),
      30_000
    )

    it.scoped(
      "the upstream never has more than the per-host concurrency open, across all instances; slots are given back",
      () =>
        Effect.gen(function*() {
          const { sql } = yield* ClusterTag
          yield* concurrencyHoldsAcrossInstances(1)
          const held = sql<{ readonly n: number | string }>`SELECT COUNT(*) AS n FROM limit_host_slots`.pipe(
            Effect.map((rows) => Number(rows[0]?.n ?? 0)),
            Effect.orDie
          )
          yield* waitFor(held, (n) => n === 0)
        }),
      30_000
    )

    it.scoped(
      "SIGKILL one instance mid-job: the others finish its targets after lease expiry, pages stored once",
      () =>
        Effect.gen(function*() {
          const { servers, sql, upstream } = yield* ClusterTag
          const urls = Array.from({ length: 36 }, (_, i) => `${upstream.baseUrl}/slow/${i}`)
          const job = yield* createJob(servers[0]!, urls, { concurrency: 2, perHostConcurrency: 6, rate: "1000/1s" })
          const victim = servers[2]!
          yield* waitFor(leasesOf(sql, job.id, INSTANCES[2]), (leases) => leases.length >= 2)
          yield* waitFor(requestsUnder(upstream, "/slow/"), (requests) => requests.some((r) => r.completed))
          yield* Effect.fork(victim.process.kill("SIGKILL"))
          yield* victim.exitCode.pipe(Effect.timeout("10 seconds"), Effect.ignore)
          const orphaned = yield* leasesOf(sql, job.id, INSTANCES[2])
          assert.isAtLeast(orphaned.length, 1, "the killed instance held leases")

          const view = yield* awaitJob(servers[1]!, job.id)
          assert.deepStrictEqual([view.status, view.counts.done], ["completed", 36])
          const pages = yield* storedPages(sql, job.id)
          assert.strictEqual(pages.length, 36)
          assert.strictEqual(new Set(pages.map((page) => page.target_id)).size, 36, "every page stored exactly once")
          const fetches = new Map<string, number>()
          for (const request of yield* requestsUnder(upstream, "/slow/")) {
            fetches.set(request.path, (fetches.get(request.path) ?? 0) + 1)
          }
          const orphanedPaths = new Set(orphaned.map(pathOf))
          for (const [path, count] of fetches) {
            if (count > 1) assert.isTrue(orphanedPaths.has(path), `${path} fetched ${count}× but was not orphaned`)
          }
          assert.strictEqual(fetches.size, 36, "every target fetched")
        }),
      30_000
    )
  })
})

describe.skipIf(redisSkip !== null)("ScaleOut: three instances on one PostgreSQL (limits shared in Redis)", () => {
  layer(Env("redis"), { excludeTestServices: true, timeout: 60_000 })((it) => {
    it.scoped(
      "the upstream never sees more than the per-host rate in any window, across all instances",
      () => rateHoldsAcrossInstances(1),
      30_000
    )

    it.scoped(
      "the upstream never has more than the per-host concurrency open, across all instances",
      () => concurrencyHoldsAcrossInstances(2),
      30_000
    )
  })
})
