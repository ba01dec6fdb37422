/**
 * Jobs — the harvester's service: create a job (persisted with its targets, then run by the `Engine`), list and
 * inspect jobs (counts, rates, failures by tag, from the database, so every instance sees the same), page through or
 * stream the stored results, follow progress events, cancel (in-flight requests stop at once), await the end.
 *
 * The HTTP handlers and the CLI call it; it owns no state the database does not have, except the real values of
 * sensitive request headers of the jobs it created (stored redacted, and sealed under `HARVESTER_SECRET_KEY` when
 * set: `HeaderSeal`).
 */
import { SqlClient } from "@effect/sql"
import * as Paginate from "@spindle/core/Paginate"
import { Chunk, Clock, DateTime, Duration, Effect, Either, Layer, Option, Schedule, Schema, Stream } from "effect"
import { randomBytes } from "node:crypto"
import * as Db from "../Db/Db.js"
import type { JobId, JobSpec, Page, ResultsFilter } from "../Domain.js"
import {
  InvalidJobSpec,
  isFinished,
  isSensitiveHeader,
  JobAlreadyFinished,
  JobCounts,
  JobNotFound,
  JobOptions,
  JobRates,
  JobStatus,
  JobSummary,
  JobView,
  PageRecord,
  parseDuration,
  parseRate,
  ProgressEvent,
  redactHeaders,
  TargetId
} from "../Domain.js"
import { SsrfGuard } from "../Fetch/SsrfGuard.js"
import type { LimitStoreError } from "../Limits/LimitStore.js"
import * as Engine from "./Engine.js"
import type { JobRow, JobSummaryRow, PageRow, TargetCounts } from "./JobRepo.js"
import { JobRepo } from "./JobRepo.js"

/** Sortable by creation time (base-36 millis), unique by 48 random bits. */
const newJobId = (now: number): JobId =>
  `job_${now.toString(36).padStart(9, "0")}${randomBytes(6).toString("hex")}` as JobId

const encodeOptions = Schema.encodeSync(Schema.parseJson(JobOptions))
const decodeOptions = Schema.decodeUnknownSync(Schema.parseJson(JobOptions))
const decodeStatus = Schema.decodeUnknownSync(JobStatus)

/** Checks what the schema cannot: pagination specs, and (for specs built in code) the option syntax. */
const validate = (spec: JobSpec): Effect.Effect<void, InvalidJobSpec> =>
  Effect.gen(function*() {
    for (const [index, target] of spec.targets.entries()) {
      if (target.paginate !== undefined) {
        yield* Paginate.parseStrategy(target.paginate).pipe(
          Effect.mapError((error) => InvalidJobSpec.of(`targets.${index}.paginate`, error.reason))
        )
      }
    }
    const { options } = spec
    const syntax: ReadonlyArray<readonly [string, Either.Either<unknown, string>]> = [
      ["options.rate", parseRate(options.rate)],
      ["options.timeout", parseDuration(options.timeout)],
      ...(options.deadline === undefined ? [] : [["options.deadline", parseDuration(options.deadline)] as const])
    ]
    for (const [field, parsed] of syntax) {
      if (Either.isLeft(parsed)) return yield* InvalidJobSpec.of(field, parsed.left)
    }
  })

const toDateTime = (millis: number) => DateTime.unsafeMake(millis)

const countsOf = (row: JobRow, counts: TargetCounts) =>
  new JobCounts({
    total: row.total,
    pending: counts.byStatus.pending ?? 0,
    inFlight: counts.byStatus.leased ?? 0,
    done: counts.byStatus.done ?? 0,
    failed: counts.byStatus.failed ?? 0,
    cancelled: counts.byStatus.cancelled ?? 0,
    pages: counts.pages
  })

const ratesOf = (row: JobRow, counts: JobCounts, now: number) => {
  const elapsedSeconds = Math.max((row.finished_at ?? now) - row.created_at, 1) / 1000
  const finished = counts.done + counts.failed
  const open = counts.pending + counts.inFlight
  const targetRate = finished / elapsedSeconds
  return new JobRates({
    pagesPerSecond: counts.pages / elapsedSeconds,
    etaSeconds: row.finished_at !== null || open === 0 ? null : targetRate > 0 ? open / targetRate : null
  })
}

const viewOf = (row: JobRow, counts: TargetCounts, now: number): JobView => {
  const jobCounts = countsOf(row, counts)
  return new JobView({
    id: row.id as JobId,
    status: decodeStatus(row.status),
    createdAt: toDateTime(row.created_at),
    finishedAt: row.finished_at === null ? null : toDateTime(row.finished_at),
    options: decodeOptions(row.options),
    counts: jobCounts,
    rates: ratesOf(row, jobCounts, now),
    failures: counts.failures
  })
}

const summaryOf = (row: JobSummaryRow): JobSummary =>
  new JobSummary({
    id: row.id as JobId,
    status: decodeStatus(row.status),
    createdAt: toDateTime(row.created_at),
    finishedAt: row.finished_at === null ? null : toDateTime(row.finished_at),
    total: row.total,
    done: row.done,
    failed: row.failed,
    pages: row.pages
  })

const parseJson = (text: string | null): unknown => {
  if (text === null) return null
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

export const recordOf = (row: PageRow): PageRecord =>
  new PageRecord({
    jobId: row.job_id as JobId,
    targetId: TargetId.make(row.target_id),
    url: row.url,
    page: row.page_no,
    status: row.status,
    headers: parseJson(row.headers) as Record<string, string>,
    body: parseJson(row.body),
    bytes: row.bytes,
    durationMillis: row.duration_ms,
    attempts: row.attempts,
    error: row.error,
    errorMessage: row.error_message,
    fetchedAt: toDateTime(row.fetched_at)
  })

/** A results cursor is the storage id of the last row seen; anything else starts from the beginning. */
const cursorAfter = (cursor: string | undefined) => {
  const parsed = cursor === undefined ? 0 : Number(cursor)
  return Number.isSafeInteger(parsed) && parsed > 0 ? parsed : 0
}

const RESULTS_CHUNK = 500

const make = Effect.gen(function*() {
  const repo = yield* JobRepo
  const engine = yield* Engine.Engine
  const sql = yield* SqlClient.SqlClient

  const findRow = (id: string) =>
    Effect.flatMap(
      repo.findJob(id),
      Option.match({ onNone: () => Effect.fail(JobNotFound.of(id)), onSome: Effect.succeed })
    )

  const view = (row: JobRow) =>
    Effect.zipWith(repo.counts(row.id), Clock.currentTimeMillis, (counts, now) => viewOf(row, counts, now))

  const get = Effect.fn("Jobs.get")(function*(id: JobId) {
    return yield* view(yield* findRow(id))
  })

  const create = Effect.fn("Jobs.create")(function*(spec: JobSpec) {
    yield* validate(spec)
    const now = yield* Clock.currentTimeMillis
    const id = newJobId(now)
    const deadline = spec.options.deadline === undefined
      ? Option.none()
      : Either.getRight(parseDuration(spec.options.deadline))
    const stored = new JobOptions({ ...spec.options, headers: redactHeaders(spec.options.headers) })
    const sealed = engine.sealHeaders(id, spec.options.headers)
    yield* repo.insertJob({
      id,
      options: encodeOptions(stored),
      createdAt: now,
      deadlineAt: Option.match(deadline, { onNone: () => null, onSome: (d) => now + Duration.toMillis(d) }),
      secrets: Option.getOrNull(sealed),
      targets: spec.targets.map((target) => ({ url: target.url, paginate: target.paginate ?? null }))
    })
    if (Object.keys(spec.options.headers).length > 0) yield* engine.rememberHeaders(id, spec.options.headers)
    const sensitive = Object.keys(spec.options.headers).filter(isSensitiveHeader)
    if (sensitive.length > 0 && !engine.sealsHeaders) {
      yield* Effect.logWarning(
        `job ${id}: its ${sensitive.join(", ")} header(s) are kept in this process only (no HARVESTER_SECRET_KEY): ` +
          "if it stops before the job ends, the job goes on without them"
      )
    }
    const row = yield* findRow(id).pipe(Effect.orDie)
    yield* engine.start(row)
    // Idle instances claim at once instead of at their next scan.
    yield* engine.signal({ _tag: "JobCreated", jobId: id })
    return yield* view(row)
  })

  const list = Effect.fn("Jobs.list")(function*(params: { readonly cursor?: string; readonly limit: number }) {
    const limit = Math.max(1, Math.min(params.limit, 1000))
    const rows = yield* repo.listJobs(params.cursor ?? null, limit + 1)
    const items = rows.slice(0, limit).map(summaryOf)
    const page: Page<JobSummary> = {
      items,
      nextCursor: rows.length > limit ? items[items.length - 1]!.id : null
    }
    return page
  })

  const results = Effect.fn("Jobs.results")(function*(
    id: JobId,
    params: { readonly cursor?: string; readonly limit: number } & ResultsFilter
  ) {
    yield* findRow(id)
    const limit = Math.max(1, Math.min(params.limit, 1000))
    const rows = yield* repo.results(id, {
      after: cursorAfter(params.cursor),
      limit: limit + 1,
      status: params.status,
      errorTag: params.errorTag
    })
    const items = rows.slice(0, limit)
    const page: Page<PageRecord> = {
      items: items.map(recordOf),
      nextCursor: rows.length > limit ? String(items[items.length - 1]!.id) : null
    }
    return page
  })

  /** Every stored page (and failure record) of the job, in storage order, read in chunks. */
  const resultsStream = (id: JobId, filter: ResultsFilter = {}): Stream.Stream<PageRecord, JobNotFound> =>
    Stream.unwrap(
      Effect.as(
        findRow(id),
        Stream.paginateChunkEffect(0, (after) =>
          Effect.map(
            repo.results(id, { after, limit: RESULTS_CHUNK, status: filter.status, errorTag: filter.errorTag }),
            (rows) =>
              [
                Chunk.fromIterable(rows.map(recordOf)),
                rows.length < RESULTS_CHUNK ? Option.none<number>() : Option.some(rows[rows.length - 1]!.id)
              ] as const
          ))
      )
    )

  const cancel = Effect.fn("Jobs.cancel")(function*(id: JobId) {
    const row = yield* findRow(id)
    const status = decodeStatus(row.status)
    if (isFinished(status)) return yield* JobAlreadyFinished.of(id, status)
    const now = yield* Clock.currentTimeMillis
    const ended = yield* repo.endJob(id, "cancelled", now)
    // Every instance interrupts its fibers of the job (this one too, at once, whatever the signal does).
    if (ended) yield* engine.signal({ _tag: "JobCancelled", jobId: id })
    yield* engine.stop(id)
    const after = yield* findRow(id)
    if (!ended) return yield* JobAlreadyFinished.of(id, decodeStatus(after.status))
    return yield* view(after)
  })

  /**
   * The job's view once it has finished. Polls only the job's status (one row by its key) every 200 ms: the view
   * counts the job's targets and pages, which at 20k targets cost the database ~10 ms a time.
   */
  const awaitJob = Effect.fn("Jobs.awaitJob")(function*(id: JobId) {
    yield* repo.jobStatus(id).pipe(
      Effect.flatMap(Option.match({ onNone: () => Effect.fail(JobNotFound.of(id)), onSome: Effect.succeed })),
      Effect.repeat(
        Schedule.recurUntil((status: JobStatus) => isFinished(status)).pipe(Schedule.addDelay(() => "200 millis"))
      )
    )
    return yield* get(id)
  })

  const eventOf = (v: JobView, at: number) =>
    new ProgressEvent({
      jobId: v.id,
      status: v.status,
      counts: v.counts,
      rates: v.rates,
      failures: v.failures,
      at: toDateTime(at)
    })

  /** Snapshots until the job ends (the last one is the final state): on each local progress change, else twice a second. */
  const events = (id: JobId): Stream.Stream<ProgressEvent, JobNotFound> =>
    Stream.unwrap(
      Effect.gen(function*() {
        yield* findRow(id)
        const local = Stream.unwrap(
          Effect.map(engine.progress(id), Option.match({ onNone: () => Stream.empty, onSome: (p) => p.changes }))
        )
        // Each event counts the job's rows in the database: at most 4 a second however fast the engine goes (the
        // 500 ms ticker still reports the final state when the last local change is dropped), and spaced so that a
        // watcher keeps the database counting a tenth of the time at most (a count grows with the job: ~10 ms at
        // 20k targets on PostgreSQL, busy with the harvest).
        /** When the next count may start: ten times as long after the last one started as it took. */
        let notBefore = 0
        const ticks = Stream.merge(
          Stream.map(local, () => undefined),
          Stream.repeatEffectWithSchedule(Effect.void, Schedule.spaced("500 millis"))
        ).pipe(Stream.throttle({ cost: () => 1, units: 1, duration: "250 millis", strategy: "enforce" }))
        return ticks.pipe(
          Stream.mapEffect(() =>
            Effect.gen(function*() {
              const wait = notBefore - (yield* Clock.currentTimeMillis)
              if (wait > 0) yield* Effect.sleep(Duration.millis(wait))
              const started = yield* Clock.currentTimeMillis
              const view = yield* get(id)
              const ended = yield* Clock.currentTimeMillis
              notBefore = started + (ended - started) * 10
              return eventOf(view, ended)
            })
          ),
          Stream.changesWith((a, b) => a.status === b.status && Schema.equivalence(JobCounts)(a.counts, b.counts)),
          Stream.takeUntil((event) => isFinished(event.status))
        )
      })
    )

  const ready = Db.ping.pipe(Effect.provideService(SqlClient.SqlClient, sql))

  return { create, list, get, results, resultsStream, cancel, events, awaitJob, ready } as const
})

export class Jobs extends Effect.Service<Jobs>()("spindle/Jobs", {
  effect: make,
  dependencies: [Engine.layer.pipe(Layer.provide(SsrfGuard.Default)), JobRepo.Default]
}) {
  /** Jobs whose SSRF guard is `guard` rather than the one configured by `HARVESTER_ALLOW_HOSTS`. */
  static layerWithGuard(guard: Layer.Layer<SsrfGuard>): Layer.Layer<Jobs, LimitStoreError, SqlClient.SqlClient> {
    return Jobs.DefaultWithoutDependencies.pipe(
      Layer.provide([Engine.layer.pipe(Layer.provide(guard)), JobRepo.Default])
    )
  }
}
