/**
 * PgRateLimiterStore — the core `RateLimiter`'s exact sliding window shared by every instance through the SQL
 * database: PostgreSQL when several processes run, SQLite (same tables, same store) for the single-instance default.
 *
 * What it adds beyond `@effect/sql`: the per-key atomic check-and-record of the sliding-window log
 * (`limit_rate_starts`: drop the key's starts at or before `now - window`, refuse while paused or while `limit`
 * starts remain, else insert up to `count` starts at `now`, one row for the block). A block of starts costs one round trip:
 * the limiter's head asks for its whole line, so a busy host costs a round trip per block, not per start. The steps
 * are the same on both databases; how they are made atomic differs (`onDialectOrElse`):
 * - PostgreSQL: one call of the `limit_rate_try_acquire` function (see schema.ts), which first takes
 *   `pg_advisory_xact_lock(hashtext(key))`, so two instances deciding for one key run one after the other (different
 *   keys never wait for each other, barring a hash collision, which only serialises them), then reads "now" from
 *   `clock_timestamp()` — one clock for all instances, whatever their own clocks say. One round trip, the lock held
 *   for microseconds, an asynchronous commit: measured 3× the throughput per key of the same steps as five
 *   statements in a transaction, whose lock spans four round trips and whose commit waits for the WAL flush.
 * - SQLite: one process holds the file, and `SqliteClient.withTransaction` holds its single connection for the
 *   whole transaction, so the statements are atomic without a lock; "now" is the caller's clock.
 * A key's expired starts go on each of its decisions; a sweep (every `sweepInterval`) deletes those of keys nobody
 * asks about any more, and past pauses.
 *
 * The limiter sleeps until `retryAt` against its own clock, so `retryAt` is translated into the caller's clock:
 * `callerNow + (dbRetryAt - dbNow)`; a pause is stored as `dbNow + (until - callerNow)`. Clock skew between
 * instances therefore costs nothing; only the round trip (sub-millisecond on a LAN) blurs a retry instant.
 */
import { SqlClient } from "@effect/sql"
import type { Scope } from "effect"
import { Duration, Effect, Schema } from "effect"
import type { SharedDecision, SharedRateLimiterStore } from "./LimitStore.js"
import { grantedDecision, LimitStoreError } from "./LimitStore.js"
import { DbInt, storeNow } from "./schema.js"

const DecisionRow = Schema.Struct({
  now: DbInt,
  paused_until: Schema.NullOr(DbInt),
  live: DbInt,
  oldest: Schema.NullOr(DbInt)
})
const decodeDecisionRow = Schema.decodeUnknown(DecisionRow)
const decodeFunctionRow = Schema.decodeUnknown(Schema.Struct({ now_ms: DbInt, granted: DbInt, retry_at: DbInt }))

export interface Options {
  /** How often expired rows of idle keys and past pauses are deleted (default 1 minute). */
  readonly sweepInterval?: Duration.DurationInput
}

/** The store over the ambient `SqlClient` (run `ensureSchema` first); its sweep lives in the scope. */
export const make = (
  options: Options = {}
): Effect.Effect<SharedRateLimiterStore, never, SqlClient.SqlClient | Scope.Scope> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const backend = sql.onDialectOrElse({ pg: () => "postgres" as const, orElse: () => "sqlite" as const })
    const fail = (operation: string) => (cause: unknown) => new LimitStoreError({ backend, operation, cause })

    const pgTryAcquire: SharedRateLimiterStore["tryAcquire"] = (
      { count = 1, holdMillis = 0, key, limit, now, windowMillis }
    ) => {
      const window = Math.ceil(windowMillis)
      const hold = Math.ceil(holdMillis)
      return (hold > 0
        ? sql`SELECT now_ms, granted, retry_at FROM limit_rate_try_acquire(${key}, ${limit}, ${window}, ${count}, ${hold})`
        : sql`SELECT now_ms, granted, retry_at FROM limit_rate_try_acquire(${key}, ${limit}, ${window}, ${count})`)
        .pipe(
          Effect.flatMap((rows) => decodeFunctionRow(rows[0])),
          Effect.map((row): SharedDecision => {
            const retryAt = now + (row.retry_at - row.now_ms)
            return row.granted > 0
              ? grantedDecision(row.now_ms, count, row.granted, retryAt)
              : { allowed: false, retryAt }
          }),
          Effect.mapError(fail("tryAcquire"))
        )
    }

    const sqliteTryAcquire: SharedRateLimiterStore["tryAcquire"] = (
      { count = 1, holdMillis = 0, key, limit, now, windowMillis }
    ) => {
      const window = Math.ceil(windowMillis)
      const hold = Math.ceil(holdMillis)
      return sql.withTransaction(Effect.gen(function*() {
        const rows = yield* sql`WITH clock AS (SELECT ${storeNow(sql, now)} AS now)
          SELECT clock.now AS now,
            (SELECT until_ms FROM limit_rate_pauses WHERE key = ${key}) AS paused_until,
            (SELECT COALESCE(SUM(n), 0) FROM limit_rate_starts WHERE key = ${key} AND at > clock.now - ${window}) AS live,
            (SELECT MIN(at) FROM limit_rate_starts WHERE key = ${key} AND at > clock.now - ${window}) AS oldest
          FROM clock`
        const row = yield* decodeDecisionRow(rows[0])
        const dbNow = row.now
        let retryAt = 0
        if (row.paused_until !== null && row.paused_until > dbNow) retryAt = row.paused_until
        if (row.live >= limit && row.oldest !== null) retryAt = Math.max(retryAt, row.oldest + window)
        yield* sql`DELETE FROM limit_rate_starts WHERE key = ${key} AND at <= ${dbNow - window}`
        if (retryAt > 0) return { allowed: false, retryAt: now + (retryAt - dbNow) } satisfies SharedDecision
        const granted = Math.min(Math.max(1, count), limit - row.live)
        yield* sql`INSERT INTO limit_rate_starts ${
          sql.insert({ key, at: dbNow + hold, expires_at: dbNow + hold + window, n: granted })
        }`
        return grantedDecision(dbNow, count, granted, now + ((row.oldest ?? dbNow) + window - dbNow))
      })).pipe(Effect.mapError(fail("tryAcquire")))
    }

    const tryAcquire = sql.onDialectOrElse({ pg: () => pgTryAcquire, orElse: () => sqliteTryAcquire })

    const greatest = sql.onDialectOrElse({ pg: () => sql.literal("GREATEST"), orElse: () => sql.literal("MAX") })
    const pauseUntil: SharedRateLimiterStore["pauseUntil"] = ({ key, now, until }) =>
      until <= now ? Effect.void : sql`INSERT INTO limit_rate_pauses (key, until_ms)
          VALUES (${key}, ${storeNow(sql, now)} + ${Math.ceil(until - now)})
          ON CONFLICT (key) DO UPDATE SET until_ms = ${greatest}(limit_rate_pauses.until_ms, excluded.until_ms)`.pipe(
        Effect.asVoid,
        Effect.mapError(fail("pauseUntil"))
      )

    const clock = yield* Effect.clock
    const sweep = Effect.suspend(() => {
      const now = storeNow(sql, clock.unsafeCurrentTimeMillis())
      return Effect.zipRight(
        sql`DELETE FROM limit_rate_starts WHERE expires_at <= ${now}`,
        sql`DELETE FROM limit_rate_pauses WHERE until_ms <= ${now}`
      )
    }).pipe(Effect.catchAll((error) => Effect.logWarning("rate limit sweep failed", error)))
    yield* sweep.pipe(
      Effect.delay(options.sweepInterval ?? Duration.minutes(1)),
      Effect.forever,
      Effect.forkScoped
    )

    return { backend, holds: true, tryAcquire, pauseUntil } satisfies SharedRateLimiterStore
  })
