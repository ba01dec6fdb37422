/**
 * JobRepo — every SQL statement of the harvester, typed with `SqlSchema`, identical on SQLite and PostgreSQL except
 * where `onDialectOrElse` says otherwise (the database clock; on PostgreSQL the claim and the page store call the
 * functions of migration 0006, whose plans are kept per connection).
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
import * as SqliteWorker from "../Db/SqliteWorker.js"
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

const integerOf = (value: unknown): number | undefined => {
  const n = typeof value === "number"
    ? value
    : typeof value === "string" || typeof value === "bigint"
    ? Number(value)
    : NaN
  return Number.isSafeInteger(n) ? n : undefined
}

/** `TargetRow` from a driver's row without a Schema (the claim's hot path); `undefined` when a column is off. */
const decodeTargetRow = (raw: Record<string, unknown>): TargetRow | undefined => {
  const { attempt, id, job_id, next_page, paginate, seq, url } = raw
  const seqN = integerOf(seq)
  const attemptN = integerOf(attempt)
  const nextPageN = integerOf(next_page)
  if (
    typeof id !== "string" || typeof job_id !== "string" || typeof url !== "string" ||
    (paginate !== null && typeof paginate !== "string") || seqN === undefined || attemptN === undefined ||
    nextPageN === undefined
  ) return undefined
  return { id, job_id, seq: seqN, url, paginate, attempt: attemptN, next_page: nextPageN }
}

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
  /** The job's sensitive headers sealed (`HeaderSeal`), or null. */
  readonly secrets: string | null
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

/**
 * Pages per pair of statements in `storePages`: up to 256 (a page binds ~17 parameters), in a multiple of 16 when
 * there are that many. A statement's text depends on its row count, and SQLite prepares each text once and caches it:
 * with counts in steps of 16 plus the remainders 1–15 there are 31 texts of each statement instead of 256.
 */
const STATEMENT_PAGES = 256
const SHAPE_STEP = 16
const statementSize = (left: number) => {
  const n = Math.min(left, STATEMENT_PAGES)
  return n < SHAPE_STEP ? n : n - (n % SHAPE_STEP)
}

/** Targets per INSERT ... SELECT FROM a JSON array (one parameter, whatever the count). */
const TARGETS_PER_STATEMENT = 50_000

/** SQLite's clock in epoch millis (`now` on SQLite; the page store's statements built as text use it as is). */
const SQLITE_NOW = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"

export const targetId = (jobId: string, seq: number): string => `${jobId}.${seq}`

export class JobRepo extends Effect.Service<JobRepo>()("spindle/JobRepo", {
  effect: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    /** The SQLite thread's one-message transactions, when the client is `SqliteWorker`'s. */
    const batch = SqliteWorker.batchOf(sql)

    /** Epoch millis from the database's clock (leases are compared against it on every instance). */
    const now = sql.onDialectOrElse({
      pg: () => sql.literal("CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"),
      orElse: () => sql.literal(SQLITE_NOW)
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
            finished_at: null,
            secrets: job.secrets
          })
        }`
        // The targets travel as one JSON array of [url, paginate] and the database expands it (`json_each` /
        // `json_array_elements`): a multi-row INSERT of 20k targets built and bound 500 rows at a time cost 66 ms,
        // two thirds of it in building the statements; ids and seq numbers follow the array order.
        for (let start = 0; start < job.targets.length; start += TARGETS_PER_STATEMENT) {
          const targets = JSON.stringify(
            job.targets.slice(start, start + TARGETS_PER_STATEMENT).map((target) => [target.url, target.paginate])
          )
          yield* sql.onDialectOrElse({
            pg: () =>
              sql`INSERT INTO targets (id, job_id, seq, url, paginate, status, updated_at)
                SELECT ${job.id} || '.' || (t.n - 1 + ${start}), ${job.id}, t.n - 1 + ${start},
                  t.value ->> 0, t.value ->> 1, 'pending', ${job.createdAt}
                FROM json_array_elements(CAST(${targets} AS JSON)) WITH ORDINALITY AS t(value, n)`,
            orElse: () =>
              sql`INSERT INTO targets (id, job_id, seq, url, paginate, status, updated_at)
                SELECT ${job.id} || '.' || CAST(key + ${start} AS INTEGER), ${job.id}, CAST(key + ${start} AS INTEGER),
                  value ->> 0, value ->> 1, 'pending', ${job.createdAt}
                FROM json_each(${targets}) ORDER BY key`
          })
        }
      },
      (effect) => sql.withTransaction(effect),
      Effect.orDie
    )

    const jobSecretsQuery = SqlSchema.findOne({
      Request: Schema.String,
      Result: Schema.Struct({ secrets: Schema.NullOr(Schema.String) }),
      execute: (id) => sql`SELECT secrets FROM jobs WHERE id = ${id}`
    })
    /** The job's sealed sensitive headers (`HeaderSeal`), None when it has none (or no such job). */
    const jobSecrets = (id: string) =>
      Effect.orDie(jobSecretsQuery(id)).pipe(
        Effect.map((row) => Option.flatMap(row, (r) => Option.fromNullable(r.secrets)))
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
      (SELECT COUNT(*) FROM pages p WHERE p.job_id = j.id)
        - (SELECT COUNT(*) FROM pages p WHERE p.job_id = j.id AND p.error IS NOT NULL) AS pages`

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
      // All rows (index-only on pages_job) minus the failure rows (the partial index pages_failed): no row is read.
      execute: (id) =>
        sql`SELECT (SELECT COUNT(*) FROM pages WHERE job_id = ${id})
          - (SELECT COUNT(*) FROM pages WHERE job_id = ${id} AND error IS NOT NULL) AS n`
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

    const claimQuery = ({ jobId, limit, owner, ttl }: {
      readonly jobId: string
      readonly owner: string
      readonly ttl: number
      readonly limit: number
    }) =>
      sql.onDialectOrElse({
        // The same statement in a function (migration 0006), whose plan PostgreSQL keeps per connection.
        pg: () => sql<Record<string, unknown>>`SELECT * FROM harvester_claim(${jobId}, ${limit}, ${owner}, ${ttl})`,
        orElse: () =>
          sql<Record<string, unknown>>`WITH picked AS (
            SELECT id FROM targets WHERE job_id = ${jobId} AND status = 'pending'
            ORDER BY seq LIMIT ${limit}
          )
          UPDATE targets
          SET status = 'leased', lease_owner = ${owner}, lease_expires_at = ${now} + ${ttl},
              attempt = attempt + 1, updated_at = ${now}
          WHERE status = 'pending' AND id IN (SELECT id FROM picked)
          RETURNING id, job_id, seq, url, paginate, attempt, next_page`
      })
    /**
     * Leases up to `limit` pending targets of the job, in order. The rows are checked by hand (`decodeTargetRow`):
     * on the hot path a Schema decode of every claimed row cost more than the claim's SQL.
     */
    const claim = (jobId: string, owner: string, ttlMillis: number, limit: number) =>
      claimQuery({ jobId, owner, ttl: Math.round(ttlMillis), limit }).pipe(
        Effect.orDie,
        Effect.flatMap((rows) => {
          const decoded: Array<TargetRow> = []
          for (const raw of rows) {
            const row = decodeTargetRow(raw)
            if (row === undefined) return Effect.dieMessage(`claim: unexpected row ${JSON.stringify(raw)}`)
            decoded.push(row)
          }
          return Effect.succeed(decoded.sort((a, b) => a.seq - b.seq))
        })
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
     * `storePage` for many pages in one transaction (two statements per 256 pages): the targets still leased
     * by (owner, attempt) advance, and their pages are inserted. Returns the ids of those targets; the others lost
     * their lease and store nothing. At most one page per target per call.
     */
    const storePages = (
      writes: ReadonlyArray<{ readonly fence: Fence; readonly page: NewPage; readonly done: boolean }>
    ): Effect.Effect<ReadonlySet<string>> =>
      writes.length === 0
        ? Effect.succeed(new Set())
        : sql.onDialectOrElse({ pg: () => storePg(writes), orElse: () => storeInTransaction(writes) })

    /** `$3, $4, ...`: the placeholders of a store's bodies (a few µs per statement, not per page). */
    const bodyParams = (count: number) => Array.from({ length: count }, (_, i) => `$${i + 3}`).join(", ")

    /**
     * PostgreSQL: one statement (atomic by itself) whatever the count: the writes travel as one JSON parameter, their
     * bodies beside it as a text parameter each, to `harvester_store_pages` (migration 0006: `json_to_recordset`, the
     * fenced UPDATE's RETURNING feeds the INSERT in the same statement, its plan kept per connection). Two statements
     * per 256 pages in a transaction cost ~8 round trips per 1024 pages, each waiting for a busy event loop (76 ms per
     * transaction at 20k pages), and binding 12 parameters per page cost more CPU than the JSON text.
     *
     * The targets are looked up by key (`id = ANY(...)`, an index scan whatever the statistics): joined on
     * `id = w.target_id` alone, a new database's first job (no statistics yet; the recordset estimated at 100 rows)
     * got a hash join over a scan of every target in the table, once per batch: half the batches of a 20k-page job,
     * ~0.2 s of the database's CPU, and linear in the table's size.
     */
    const storePg = (
      writes: ReadonlyArray<{ readonly fence: Fence; readonly page: NewPage; readonly done: boolean }>
    ): Effect.Effect<ReadonlySet<string>> => {
      const owner = writes[0]!.fence.owner
      const bodies: Array<string | null> = []
      const rows = JSON.stringify(writes.map(({ done, fence, page }) => {
        bodies.push(page.body)
        return {
          target_id: fence.targetId,
          attempt: fence.attempt,
          next_page: page.page_no + 1,
          done,
          job_id: fence.jobId,
          page_no: page.page_no,
          url: page.url,
          status: page.status,
          headers: page.headers,
          bytes: page.bytes,
          duration_ms: page.duration_ms,
          attempts: page.attempts,
          error: page.error,
          error_message: page.error_message,
          fetched_at: page.fetched_at
        }
      }))
      return sql.unsafe<{ readonly id: string }>(
        `SELECT id FROM harvester_store_pages(CAST($1 AS JSON), $2, ARRAY[${
          bodyParams(bodies.length)
        }]::TEXT[]) AS s(id)`,
        [rows, owner, ...bodies]
      ).pipe(
        Effect.map((owned) => new Set(owned.map((row) => row.id)) as ReadonlySet<string>),
        Effect.orDie
      )
    }

    /**
     * SQLite: two statements per 256 pages (VALUES lists) in one transaction: the pages of the targets still leased
     * by (owner, attempt), then those targets advanced. On the `SqliteWorker` client the whole transaction is one
     * message to the database's thread (`batchOf`), which is why the insert comes first, fenced by itself: it needs
     * nothing from the update's answer.
     */
    const storeInTransaction = (
      writes: ReadonlyArray<{ readonly fence: Fence; readonly page: NewPage; readonly done: boolean }>
    ): Effect.Effect<ReadonlySet<string>> => {
      const chunks: Array<typeof writes> = []
      for (let start = 0; start < writes.length;) {
        const size = statementSize(writes.length - start)
        chunks.push(writes.slice(start, start + size))
        start += size
      }
      const owned = (rows: ReadonlyArray<ReadonlyArray<Record<string, unknown>>>): ReadonlySet<string> =>
        new Set(rows.flatMap((advanced) => advanced.map((row) => String(row.id))))
      return Option.match(batch, {
        onSome: (run) =>
          Effect.map(
            run(chunks.flatMap((chunk) => [insertFenced(chunk), advance(chunk)])),
            (results) => owned(results.filter((_, index) => index % 2 === 1))
          ),
        onNone: () =>
          sql.withTransaction(
            Effect.map(
              Effect.forEach(chunks, (chunk) => Effect.zipRight(insertFenced(chunk), advance(chunk))),
              owned
            )
          )
      }).pipe(Effect.orDie)
    }

    /**
     * The SQLite statements of `storeInTransaction`, as text and parameters: built with a `sql` fragment per row
     * (`sql.csv`), a 256-page batch cost ~8 µs a page on the event loop's thread (fragments, then their compilation);
     * the text depends only on the row count, so it is built once per count (31 counts: `statementSize`).
     */
    const rowsText = (placeholders: string) => {
      const cache = new Map<number, string>()
      return (count: number) => {
        let text = cache.get(count)
        if (text === undefined) {
          text = Array.from({ length: count }, () => placeholders).join(", ")
          cache.set(count, text)
        }
        return text
      }
    }
    const advancedRows = rowsText("(CAST(? AS TEXT), CAST(? AS INTEGER), CAST(? AS INTEGER), CAST(? AS INTEGER))")
    const pageRows = rowsText("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")

    /**
     * The written targets still leased by (owner, attempt) advance (`done`: released); returns their ids. Driven by
     * the written targets (a join on the primary key), never by the owner's leased rows: with the fetches ahead of the
     * writes thousands of targets are leased at once (no `status = 'leased'` here: only a leased target has a
     * `lease_owner`; claim sets it, done, failed, cancelled, release and reap clear it).
     */
    const advance = (
      writes: ReadonlyArray<{ readonly fence: Fence; readonly page: NewPage; readonly done: boolean }>
    ) => {
      const params: Array<string | number | null> = []
      for (const w of writes) params.push(w.fence.targetId, w.fence.attempt, w.page.page_no + 1, w.done ? 1 : 0)
      params.push(writes[0]!.fence.owner)
      return sql.unsafe<{ readonly id: string }>(
        `UPDATE targets SET
          next_page = w.column3,
          status = CASE WHEN w.column4 = 1 THEN 'done' ELSE targets.status END,
          lease_owner = CASE WHEN w.column4 = 1 THEN NULL ELSE targets.lease_owner END,
          lease_expires_at = CASE WHEN w.column4 = 1 THEN NULL ELSE targets.lease_expires_at END,
          updated_at = ${SQLITE_NOW}
        FROM (VALUES ${advancedRows(writes.length)}) AS w
        WHERE targets.id = w.column1 AND targets.attempt = w.column2 AND targets.lease_owner = ?
        RETURNING targets.id AS id`,
        params
      )
    }

    /** The pages of the written targets still leased by (owner, attempt): before `advance`, which ends a lease. */
    const insertFenced = (
      writes: ReadonlyArray<{ readonly fence: Fence; readonly page: NewPage; readonly done: boolean }>
    ) => {
      const params: Array<string | number | null> = []
      for (const { fence, page } of writes) {
        params.push(
          fence.jobId,
          fence.targetId,
          page.page_no,
          page.url,
          page.status,
          page.headers,
          page.body,
          page.bytes,
          page.duration_ms,
          page.attempts,
          page.error,
          page.error_message,
          page.fetched_at,
          fence.attempt
        )
      }
      params.push(writes[0]!.fence.owner)
      return sql.unsafe(
        `INSERT INTO pages (job_id, target_id, page_no, url, status, headers, body, bytes, duration_ms,
          attempts, error, error_message, fetched_at)
        SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7, v.column8, v.column9,
          v.column10, v.column11, v.column12, v.column13
        FROM (VALUES ${pageRows(writes.length)}) AS v
        JOIN targets ON targets.id = v.column2 AND targets.attempt = v.column14 AND targets.lease_owner = ?
        WHERE true
        ON CONFLICT (target_id, page_no) DO NOTHING`,
        params
      )
    }

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
      jobSecrets,
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
