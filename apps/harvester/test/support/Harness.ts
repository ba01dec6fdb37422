/**
 * Test harness for the engine: a `Jobs` service on a given database with fast lease/scan settings and an SSRF guard
 * that allows 127.0.0.1 only, plus helpers reading the upstream's own record and the database.
 */
import { SqlClient } from "@effect/sql"
import type { Duration } from "effect"
import { ConfigProvider, Effect, Layer, Schedule } from "effect"
import type { JobSpec } from "../../src/Domain.js"
import { SsrfGuard } from "../../src/Fetch/SsrfGuard.js"
import { Engine, layer as engineLayer } from "../../src/Jobs/Engine.js"
import { JobRepo } from "../../src/Jobs/JobRepo.js"
import { Jobs } from "../../src/Jobs/Jobs.js"

export interface EngineTestSettings {
  readonly leaseTtl?: string
  readonly scanEvery?: string
  readonly shutdownGrace?: string
  readonly instanceId?: string
  readonly allow?: ReadonlyArray<string>
  /** `HARVESTER_SECRET_KEY` (none by default). */
  readonly secretKey?: string
}

/** `Jobs` (and its `Engine`) over the `SqlClient` in context, with settings fit for tests. */
export const jobsLayer = (settings: EngineTestSettings = {}): Layer.Layer<Jobs | Engine, never, SqlClient.SqlClient> =>
  Jobs.DefaultWithoutDependencies.pipe(
    Layer.provideMerge(engineLayer.pipe(Layer.provide(SsrfGuard.layer(settings.allow ?? ["127.0.0.1"])))),
    Layer.provide(JobRepo.Default),
    Layer.provide(
      Layer.setConfigProvider(
        ConfigProvider.fromMap(
          new Map([
            ["HARVESTER_LEASE_TTL", settings.leaseTtl ?? "5s"],
            ["HARVESTER_SCAN_EVERY", settings.scanEvery ?? "200ms"],
            ["HARVESTER_SHUTDOWN_GRACE", settings.shutdownGrace ?? "2s"],
            ...(settings.instanceId === undefined ? [] : [["HARVESTER_INSTANCE_ID", settings.instanceId] as const]),
            ...(settings.secretKey === undefined ? [] : [["HARVESTER_SECRET_KEY", settings.secretKey] as const])
          ])
        )
      )
    ),
    // A limit store that cannot start (Redis down) is a broken test environment.
    Layer.orDie
  )

/** Runs `f` with a fresh engine that stops (gracefully) when `f` ends. */
export const withJobs = <A, E, R>(
  f: (jobs: Jobs, engine: Engine) => Effect.Effect<A, E, R>,
  settings: EngineTestSettings = {}
): Effect.Effect<A, E, R | SqlClient.SqlClient> =>
  Effect.scoped(
    Effect.flatMap(Effect.zip(Jobs, Engine), ([jobs, engine]) => f(jobs, engine)).pipe(
      Effect.provide(jobsLayer(settings))
    )
  )

/** Targets `${prefix}/0` … `${prefix}/${n - 1}`, as a job spec wants them (at least one). */
export const targetsAt = (prefix: string, n: number) =>
  [{ url: `${prefix}/0` }, ...Array.from({ length: n - 1 }, (_, i) => ({ url: `${prefix}/${i + 1}` }))] as const

/** Runs a job to its end and returns its final view. */
export const harvest = (jobs: Jobs, spec: JobSpec) =>
  Effect.flatMap(jobs.create(spec), (view) => jobs.awaitJob(view.id))

/** Rows of a table for a job, straight from the database. */
export const rowCount = (table: "pages" | "targets", jobId: string, where?: "leased") =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) =>
      sql<{ readonly n: number | string }>`SELECT COUNT(*) AS n FROM ${sql(table)} WHERE job_id = ${jobId} ${
        where === "leased" ? sql`AND status = 'leased'` : sql``
      }`
  ).pipe(Effect.map((rows) => Number(rows[0]!.n)), Effect.orDie)

/** Pages stored per (target, page) — every value must be 1. */
export const storedPageKeys = (jobId: string) =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) =>
      sql<{ readonly target_id: string; readonly page_no: number; readonly url: string; readonly attempts: number }>`
      SELECT target_id, page_no, url, attempts FROM pages WHERE job_id = ${jobId} AND error IS NULL
      ORDER BY target_id, page_no`
  ).pipe(Effect.orDie)

/** The largest number of arrivals inside any window of `perMillis` (sliding, from sorted instants). */
export const maxInWindow = (instants: ReadonlyArray<number>, perMillis: number): number => {
  const sorted = [...instants].sort((a, b) => a - b)
  let best = 0
  let start = 0
  for (let end = 0; end < sorted.length; end++) {
    while (sorted[end]! - sorted[start]! >= perMillis) start++
    best = Math.max(best, end - start + 1)
  }
  return best
}

/** Repeats `effect` every `every` until `done` holds for its value, and returns that value. */
export const pollUntil = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  done: (a: A) => boolean,
  every: Duration.DurationInput = "20 millis"
) =>
  Effect.repeat(
    effect,
    Schedule.recurUntil(done).pipe(Schedule.addDelay(() => every), Schedule.passthrough)
  )
