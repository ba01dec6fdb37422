/**
 * JobRepo — every SQL statement of the harvester, typed with `SqlSchema`, identical on SQLite and PostgreSQL except
 * where `onDialectOrElse` says otherwise (the database clock, `FOR UPDATE SKIP LOCKED`).
 *
 * The work protocol: a target is claimed in batches (`pending -> leased`, owner = the instance, expiry from the
 * database clock, `attempt + 1`); its owner renews the lease while it works (`heartbeat`); every page is stored in one
 * transaction fenced on (owner, attempt) together with the target's progress (`next_page`), so a page is stored at
 * most once (and `UNIQUE (target_id, page_no)` + `ON CONFLICT DO NOTHING` backs that up); `reap` hands expired leases
 * back (a crashed instance's work), `release` hands back the caller's own at shutdown.
 *
 * SQL failures are infrastructure failures: they become defects here (STYLE "Errors").
 */
import { SqlClient, SqlSchema } from "@effect/sql"
import type { Statement } from "@effect/sql"
import { Effect, Option, Schema } from "effect"
import type { JobStatus, ResultStatus, TargetStatus } from "../Domain.js"

/** INTEGER and BIGINT columns (node-postgres returns BIGINT and COUNT as strings). */
const DbInt = Schema.Union(Schema.Number, Schema.NumberFromString)

export const JobRow = Schema.Struct({
  id: Schema.String,
  status: Schema.String,
  options: Schema.String,
  total: DbInt,
  created_at: DbInt,
  deadline_at: Schema.NullOr(DbInt),
  finished_at: Schema.NullOr(DbInt)
})
export type JobRow = typeof JobRow.Type

export const JobSummaryRow = Schema.Struct({
  ...JobRow.fields,
  done: DbInt,
  failed: DbInt,
  pages: DbInt
})
export type JobSummaryRow = typeof JobSummaryRow.Type

export const TargetRow = Schema.Struct({
  id: Schema.String,
  job_id: Schema.String,
  seq: DbInt,
  url: Schema.String,
  paginate: Schema.NullOr(Schema.String),
  attempt: DbInt,
  next_page: DbInt
})
export type TargetRow = typeof TargetRow.Type

export const PageRow = Schema.Struct({
  id: DbInt,
  job_id: Schema.String,
  target_id: Schema.String,
  page_no: DbInt,
  url: Schema.String,
  status: Schema.NullOr(DbInt),
  headers: Schema.String,
  body: Schema.NullOr(Schema.String),
  bytes: DbInt,
  duration_ms: Schema.Number,
  attempts: DbInt,
  error: Schema.NullOr(Schema.String),
  error_message: Schema.NullOr(Schema.String),
  fetched_at: DbInt
})
export type PageRow = typeof PageRow.Type

/** A page (or a failure record) as written. `headers` and `body` are JSON text. */
export interface NewPage {
  readonly page_no: number
  readonly url: string
  readonly status: number | null
  readonly headers: string
  readonly body: string | null
  readonly bytes: number
  readonly duration_ms: number
  readonly attempts: number
  readonly error: string | null
  readonly error_message: string | null
  readonly fetched_at: number
}

/** Whose lease a write is fenced on. */
export interface Fence {
  readonly targetId: string
  readonly jobId: string
  readonly owner: string
  readonly attempt: number
}

export interface NewJob {
  readonly id: string
  readonly options: string
  readonly createdAt: number
  readonly deadlineAt: number | null
  readonly targets: ReadonlyArray<{ readonly url: string; readonly paginate: string | null }>
}

const CountRow = Schema.Struct({ status: Schema.String, n: DbInt })
const TagRow = Schema.Struct({ error: Schema.NullOr(Schema.String), n: DbInt })
const IdRow = Schema.Struct({ id: Schema.String })

export interface TargetCounts {
  readonly byStatus: Readonly<Partial<Record<TargetStatus, number>>>
  readonly pages: number
  readonly failures: Readonly<Record<string, number>>
}

/** Rows per multi-row INSERT: well under SQLite's and PostgreSQL's bound-parameter limits. */
const INSERT_CHUNK = 500

export const targetId = (jobId: string, seq: number): string => `${jobId}.${seq}`

export class JobRepo extends Effect.Service<JobRepo>()("spindle/JobRepo", {
  effect: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient

    /** Epoch millis from the database's clock (leases are compared against it on every instance). */
    const now = sql.onDialectOrElse({
      pg: () => sql.literal("CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"),
      orElse: () => sql.literal("CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)")
    })
    const skipLocked = sql.onDialectOrElse({
      pg: () => sql.literal("FOR UPDATE SKIP LOCKED"),
      orElse: () => sql.literal("")
    })

    const insertJob = Effect.fn("JobRepo.insertJob")(
      function*(job: NewJob) {
        yield* sql`INSERT INTO jobs ${
          sql.insert({
            id: job.id,
            status: "running",
            options: job.options,
            total: job.targets.length,
            created_at: job.createdAt,
            deadline_at: job.deadlineAt,
            finished_at: null
          })
        }`
        for (let start = 0; start < job.targets.length; start += INSERT_CHUNK) {
          const rows = job.targets.slice(start, start + INSERT_CHUNK).map((target, i) => ({
            id: targetId(job.id, start + i),
            job_id: job.id,
            seq: start + i,
            url: target.url,
            paginate: target.paginate,
            status: "pending",
            updated_at: job.createdAt
          }))
          yield* sql`INSERT INTO targets ${sql.insert(rows)}`
        }
      },
      (effect) => sql.withTransaction(effect),
      Effect.orDie
    )

    const findJobQuery = SqlSchema.findOne({
      Request: Schema.String,
      Result: JobRow,
      execute: (id) => sql`SELECT * FROM jobs WHERE id = ${id}`
    })
    const findJob = (id: string) => Effect.orDie(findJobQuery(id))

    const summaryColumns = sql`j.*,
      (SELECT COUNT(*) FROM targets t WHERE t.job_id = j.id AND t.status = 'done') AS done,
      (SELECT COUNT(*) FROM targets t WHERE t.job_id = j.id AND t.status = 'failed') AS failed,
      (SELECT COUNT(*) FROM pages p WHERE p.job_id = j.id AND p.error IS NULL) AS pages`

    const listJobsQuery = SqlSchema.findAll({
      Request: Schema.Struct({ cursor: Schema.NullOr(Schema.String), limit: Schema.Number }),
      Result: JobSummaryRow,
      execute: ({ cursor, limit }) =>
        cursor === null
          ? sql`SELECT ${summaryColumns} FROM jobs j ORDER BY j.id DESC LIMIT ${limit}`
          : sql`SELECT ${summaryColumns} FROM jobs j WHERE j.id < ${cursor} ORDER BY j.id DESC LIMIT ${limit}`
    })
    const listJobs = (cursor: string | null, limit: number) => Effect.orDie(listJobsQuery({ cursor, limit }))

    const runningJobsQuery = SqlSchema.findAll({
      Request: Schema.Void,
      Result: JobRow,
      execute: () => sql`SELECT * FROM jobs WHERE status = 'running' ORDER BY id`
    })
    const runningJobs = Effect.orDie(runningJobsQuery(undefined))

    const jobStatusQuery = SqlSchema.findOne({
      Request: Schema.String,
      Result: Schema.Struct({ status: Schema.String }),
      execute: (id) => sql`SELECT status FROM jobs WHERE id = ${id}`
    })
    const jobStatus = (id: string) =>
      Effect.orDie(jobStatusQuery(id)).pipe(Effect.map(Option.map((row) => row.status as JobStatus)))

    const countsByStatus = SqlSchema.findAll({
      Request: Schema.String,
      Result: CountRow,
      execute: (id) => sql`SELECT status, COUNT(*) AS n FROM targets WHERE job_id = ${id} GROUP BY status`
    })
    const pagesStored = SqlSchema.findAll({
      Request: Schema.String,
      Result: Schema.Struct({ n: DbInt }),
      execute: (id) => sql`SELECT COUNT(*) AS n FROM pages WHERE job_id = ${id} AND error IS NULL`
    })
    const failuresByTag = SqlSchema.findAll({
      Request: Schema.String,
      Result: TagRow,
      execute: (id) =>
        sql`SELECT error, COUNT(*) AS n FROM targets WHERE job_id = ${id} AND status = 'failed' GROUP BY error`
    })
    const counts = Effect.fn("JobRepo.counts")(function*(id: string) {
      const [byStatus, pages, tags] = yield* Effect.all([countsByStatus(id), pagesStored(id), failuresByTag(id)])
      return {
        byStatus: Object.fromEntries(byStatus.map((row) => [row.status, row.n])),
        pages: pages[0]?.n ?? 0,
        failures: Object.fromEntries(tags.map((row) => [row.error ?? "Unknown", row.n]))
      } satisfies TargetCounts
    }, Effect.orDie)

    const claimQuery = SqlSchema.findAll({
      Request: Schema.Struct({ jobId: Schema.String, owner: Schema.String, ttl: Schema.Number, limit: Schema.Number }),
      Result: TargetRow,
      execute: ({ jobId, limit, owner, ttl }) =>
        sql`WITH picked AS (
            SELECT id FROM targets WHERE job_id = ${jobId} AND status = 'pending'
            ORDER BY seq LIMIT ${limit} ${skipLocked}
          )
          UPDATE targets
          SET status = 'leased', lease_owner = ${owner}, lease_expires_at = ${now} + ${ttl},
              attempt = attempt + 1, updated_at = ${now}
          WHERE status = 'pending' AND id IN (SELECT id FROM picked)
          RETURNING id, job_id, seq, url, paginate, attempt, next_page`
    })
    /** Leases up to `limit` pending targets of the job, in order. */
    const claim = (jobId: string, owner: string, ttlMillis: number, limit: number) =>
      claimQuery({ jobId, owner, ttl: Math.round(ttlMillis), limit }).pipe(
        Effect.map((rows) => [...rows].sort((a, b) => a.seq - b.seq)),
        Effect.orDie
      )

    /** Extends every lease the owner holds; returns how many. */
    const heartbeat = (owner: string, ttlMillis: number) =>
      sql`UPDATE targets SET lease_expires_at = ${now} + ${Math.round(ttlMillis)}
        WHERE status = 'leased' AND lease_owner = ${owner} RETURNING id`.pipe(
        Effect.map((rows) => rows.length),
        Effect.orDie,
        Effect.withSpan("JobRepo.heartbeat")
      )

    /** Hands expired leases back (their owner crashed or stalled); returns how many. */
    const reap = sql`UPDATE targets SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL,
        updated_at = ${now}
      WHERE status = 'leased' AND lease_expires_at < ${now} RETURNING id`.pipe(
      Effect.map((rows) => rows.length),
      Effect.orDie,
      Effect.withSpan("JobRepo.reap")
    )

    /** Hands the owner's leases back (graceful shutdown; of one job when its runner ends); returns how many. */
    const release = (owner: string, jobId?: string) =>
      sql`UPDATE targets SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, updated_at = ${now}
        WHERE status = 'leased' AND lease_owner = ${owner} ${jobId === undefined ? sql`` : sql`AND job_id = ${jobId}`}
        RETURNING id`.pipe(
        Effect.map((rows) => rows.length),
        Effect.orDie,
        Effect.withSpan("JobRepo.release")
      )

    const leasedBy = (owner: string) =>
      sql<{ readonly n: number | string }>`SELECT COUNT(*) AS n FROM targets
        WHERE status = 'leased' AND lease_owner = ${owner}`.pipe(
        Effect.map((rows) => Number(rows[0]?.n ?? 0)),
        Effect.orDie
      )

    const fenced = (fence: Fence, set: Statement.Fragment) =>
      sql`UPDATE targets SET ${set}, updated_at = ${now}
        WHERE id = ${fence.targetId} AND status = 'leased' AND lease_owner = ${fence.owner}
          AND attempt = ${fence.attempt}
        RETURNING id`

    const insertPage = (fence: Fence, page: NewPage) =>
      sql`INSERT INTO pages ${sql.insert({ job_id: fence.jobId, target_id: fence.targetId, ...page })}
        ON CONFLICT (target_id, page_no) DO NOTHING`

    /**
     * Stores a page and advances the target past it (`done` when it was the last), in one transaction, only while
     * the caller still holds the lease. `false`: the lease was lost (expired and reclaimed, or the job cancelled).
     */
    const storePage = (fence: Fence, page: NewPage, done: boolean) =>
      Effect.map(storePages([{ fence, page, done }]), (owned) => owned.has(fence.targetId))

    /**
     * `storePage` for many pages in one transaction of two statements, whatever the count: the targets still leased
     * by (owner, attempt) advance, and their pages are inserted. Returns the ids of those targets; the others lost
     * their lease and store nothing. At most one page per target per call.
     */
    const storePages = (
      writes: ReadonlyArray<{ readonly fence: Fence; readonly page: NewPage; readonly done: boolean }>
    ): Effect.Effect<ReadonlySet<string>> =>
      writes.length === 0 ? Effect.succeed(new Set()) : sql.withTransaction(storeAll(writes)).pipe(Effect.orDie)

    const storeAll = (
      writes: ReadonlyArray<{ readonly fence: Fence; readonly page: NewPage; readonly done: boolean }>
    ) =>
      Effect.gen(function*() {
        const owner = writes[0]!.fence.owner
        const nextPage = sql.join(" ", false)(
          writes.map((w) => sql`WHEN ${w.fence.targetId} THEN CAST(${w.page.page_no + 1} AS INTEGER)`)
        )
        const doneIds = writes.filter((w) => w.done).map((w) => w.fence.targetId)
        const isDone = doneIds.length === 0 ? sql.literal("1 = 0") : sql.in("id", doneIds)
        const fences = sql.csv(
          writes.map((w) => sql`(CAST(${w.fence.targetId} AS TEXT), CAST(${w.fence.attempt} AS INTEGER))`)
        )
        const owned = yield* sql<{ readonly id: string }>`UPDATE targets SET
            next_page = CASE id ${nextPage} ELSE next_page END,
            status = CASE WHEN ${isDone} THEN 'done' ELSE status END,
            lease_owner = CASE WHEN ${isDone} THEN NULL ELSE lease_owner END,
            lease_expires_at = CASE WHEN ${isDone} THEN NULL ELSE lease_expires_at END,
            updated_at = ${now}
          WHERE status = 'leased' AND lease_owner = ${owner} AND (id, attempt) IN (VALUES ${fences})
          RETURNING id`
        const ids = new Set(owned.map((row) => row.id))
        const rows = writes.filter((w) => ids.has(w.fence.targetId)).map((w) => ({
          job_id: w.fence.jobId,
          target_id: w.fence.targetId,
          ...w.page
        }))
        for (let start = 0; start < rows.length; start += INSERT_CHUNK) {
          yield* sql`INSERT INTO pages ${sql.insert(rows.slice(start, start + INSERT_CHUNK))}
            ON CONFLICT (target_id, page_no) DO NOTHING`
        }
        return ids as ReadonlySet<string>
      })

    /** Marks a target done (a paginated target after its last page), fenced. */
    const completeTarget = (fence: Fence) =>
      fenced(fence, sql`status = 'done', lease_owner = NULL, lease_expires_at = NULL`).pipe(
        Effect.map((rows) => rows.length > 0),
        Effect.orDie,
        Effect.withSpan("JobRepo.completeTarget")
      )

    /** Records a permanent failure (as a page row carrying the error tag) and fails the target, fenced. */
    const failTarget = (fence: Fence, page: NewPage) =>
      sql.withTransaction(
        Effect.gen(function*() {
          const owned = yield* fenced(
            fence,
            sql`status = 'failed', error = ${page.error}, error_message = ${page.error_message},
              lease_owner = NULL, lease_expires_at = NULL`
          )
          if (owned.length === 0) return false
          yield* insertPage(fence, page)
          return true
        })
      ).pipe(Effect.orDie, Effect.withSpan("JobRepo.failTarget"))

    const storedPageQuery = SqlSchema.findOne({
      Request: Schema.Struct({ targetId: Schema.String, pageNo: Schema.Number }),
      Result: PageRow,
      execute: ({ pageNo, targetId }) =>
        sql`SELECT * FROM pages WHERE target_id = ${targetId} AND page_no = ${pageNo} AND error IS NULL`
    })
    /** A page stored earlier (resuming a paginated target replays its stored pages instead of fetching them). */
    const storedPage = (targetId: string, pageNo: number) => Effect.orDie(storedPageQuery({ targetId, pageNo }))

    /** Marks the job completed when none of its targets is pending or leased; `true` if this call did it. */
    const finishIfDone = (jobId: string, finishedAt: number) =>
      sql`UPDATE jobs SET status = 'completed', finished_at = ${finishedAt}
        WHERE id = ${jobId} AND status = 'running' AND NOT EXISTS (
          SELECT 1 FROM targets WHERE job_id = ${jobId} AND status IN ('pending', 'leased')
        ) RETURNING id`.pipe(Effect.map((rows) => rows.length > 0), Effect.orDie)

    /** Whether the job still has targets to claim (pending) or in someone's hands (leased). */
    const openTargets = (jobId: string) =>
      SqlSchema.findAll({
        Request: Schema.String,
        Result: CountRow,
        execute: (id) =>
          sql`SELECT status, COUNT(*) AS n FROM targets
            WHERE job_id = ${id} AND status IN ('pending', 'leased') GROUP BY status`
      })(jobId).pipe(
        Effect.map((rows) => ({
          pending: rows.find((row) => row.status === "pending")?.n ?? 0,
          leased: rows.find((row) => row.status === "leased")?.n ?? 0
        })),
        Effect.orDie
      )

    /**
     * Ends a running job: `cancelled` marks its open targets cancelled; `deadline_exceeded` fails them with the tag
     * `DeadlineExceeded` (a failure row each). `false` when the job was not running.
     */
    const endJob = (jobId: string, status: "cancelled" | "deadline_exceeded", finishedAt: number) =>
      sql.withTransaction(
        Effect.gen(function*() {
          const ended = yield* sql`UPDATE jobs SET status = ${status}, finished_at = ${finishedAt}
            WHERE id = ${jobId} AND status = 'running' RETURNING id`
          if (ended.length === 0) return false
          if (status === "cancelled") {
            yield* sql`UPDATE targets SET status = 'cancelled', lease_owner = NULL, lease_expires_at = NULL,
                updated_at = ${finishedAt}
              WHERE job_id = ${jobId} AND status IN ('pending', 'leased')`
          } else {
            yield* sql`INSERT INTO pages (job_id, target_id, page_no, url, status, headers, body, bytes, duration_ms,
                attempts, error, error_message, fetched_at)
              SELECT job_id, id, next_page, url, NULL, '{}', NULL, 0, 0, 0, 'DeadlineExceeded',
                'the job deadline passed before the target finished', ${finishedAt}
              FROM targets WHERE job_id = ${jobId} AND status IN ('pending', 'leased')
              ON CONFLICT (target_id, page_no) DO NOTHING`
            yield* sql`UPDATE targets SET status = 'failed', error = 'DeadlineExceeded',
                error_message = 'the job deadline passed before the target finished',
                lease_owner = NULL, lease_expires_at = NULL, updated_at = ${finishedAt}
              WHERE job_id = ${jobId} AND status IN ('pending', 'leased')`
          }
          return true
        })
      ).pipe(Effect.orDie, Effect.withSpan("JobRepo.endJob"))

    const resultsQuery = SqlSchema.findAll({
      Request: Schema.Struct({
        jobId: Schema.String,
        after: Schema.Number,
        limit: Schema.Number,
        status: Schema.NullOr(Schema.Literal("done", "failed")),
        errorTag: Schema.NullOr(Schema.String)
      }),
      Result: PageRow,
      execute: ({ after, errorTag, jobId, limit, status }) => {
        const filters = [sql`job_id = ${jobId}`, sql`id > ${after}`]
        if (status === "done") filters.push(sql`error IS NULL`)
        if (status === "failed") filters.push(sql`error IS NOT NULL`)
        if (errorTag !== null) filters.push(sql`error = ${errorTag}`)
        return sql`SELECT * FROM pages WHERE ${sql.and(filters)} ORDER BY id LIMIT ${limit}`
      }
    })
    /** Stored pages (and failure records) of a job in storage order, after the row id `after`. */
    const results = (
      jobId: string,
      params: {
        readonly after: number
        readonly limit: number
        readonly status?: ResultStatus | undefined
        readonly errorTag?: string | undefined
      }
    ) =>
      resultsQuery({
        jobId,
        after: params.after,
        limit: params.limit,
        status: params.status ?? null,
        errorTag: params.errorTag ?? null
      }).pipe(Effect.orDie, Effect.withSpan("JobRepo.results"))

    /** The ids of the targets of a job in a status (tests, diagnostics). */
    const targetsIn = (jobId: string, status: TargetStatus) =>
      SqlSchema.findAll({
        Request: Schema.Struct({ jobId: Schema.String, status: Schema.String }),
        Result: IdRow,
        execute: (r) => sql`SELECT id FROM targets WHERE job_id = ${r.jobId} AND status = ${r.status} ORDER BY seq`
      })({ jobId, status }).pipe(Effect.map((rows) => rows.map((row) => row.id)), Effect.orDie)

    return {
      insertJob,
      findJob,
      listJobs,
      runningJobs,
      jobStatus,
      counts,
      claim,
      heartbeat,
      reap,
      release,
      leasedBy,
      storePage,
      storePages,
      completeTarget,
      failTarget,
      storedPage,
      finishIfDone,
      openTargets,
      endJob,
      results,
      targetsIn
    } as const
  })
}) {}
