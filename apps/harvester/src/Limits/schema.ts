/**
 * schema — the tables of the SQL limit stores, created idempotently (`IF NOT EXISTS`) by `ensureSchema`, which the
 * stores' layers run at start; the same DDL can become a forward-only migration of src/Db (it is safe to run both).
 *
 * - `limit_rate_starts`: the sliding-window log, one row per block of `n` starts admitted at one instant (`at`, epoch
 *   millis in the database's clock) that can be dropped at `expires_at`. (Tables of older versions, one row per
 *   start, gain `n` with the default 1: their rows keep counting right.)
 * - `limit_rate_pauses`: one row per paused key (Retry-After), until `until_ms`.
 * - `limit_host_slots`: leased concurrency slots, `slot_no` in `0 .. limit - 1` per host; the primary key is what
 *   makes two instances unable to hold the same slot.
 * - `limit_host_waiters`: instances that could not get the slots they wanted for a host, until `expires_at` (their
 *   next poll renews it): holders give a slot back after `maxHold` only while someone waits.
 *
 * On PostgreSQL several instances may start at once: the DDL runs in one transaction under an advisory lock, so
 * concurrent `CREATE TABLE IF NOT EXISTS` cannot race on the catalog.
 */
import { SqlClient } from "@effect/sql"
import type { SqlError, Statement } from "@effect/sql"
import { Effect, Schema } from "effect"

/** An integer column: PostgreSQL returns BIGINT as a string, SQLite as a number. */
export const DbInt = Schema.Union(Schema.Number, Schema.NumberFromString)

/**
 * "Now" in epoch millis as the store decides it: PostgreSQL's `clock_timestamp()` (one clock for every instance);
 * on SQLite the caller's `now`, because one process holds the file, so its clock is the store's (and virtual time in
 * tests stays virtual).
 */
export const storeNow = (sql: SqlClient.SqlClient, callerNow: number): Statement.Fragment =>
  sql.onDialectOrElse({
    pg: () => sql.literal("CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 1000) AS BIGINT)"),
    orElse: () => sql`CAST(${Math.floor(callerNow)} AS INTEGER)`
  })

/** Arbitrary constant naming the schema lock (`pg_advisory_xact_lock(bigint)`). */
const SCHEMA_LOCK = 7_351_902_114

/**
 * A WHERE condition (always true) that makes a PostgreSQL write commit asynchronously: `set_config(...,
 * is_local => true)` lasts until the statement's own transaction commits. Limit rows are short-lived, and waiting
 * for the WAL flush made each write cost several times more here; a PostgreSQL crash can lose the last fraction of a
 * second of writes, so limits may then be exceeded for at most one lease or window. Plain `1 = 1` on SQLite.
 */
export const asyncCommit = (sql: SqlClient.SqlClient): Statement.Fragment =>
  sql.onDialectOrElse({
    pg: () => sql.literal("set_config('synchronous_commit', 'off', true) IS NOT NULL"),
    orElse: () => sql.literal("1 = 1")
  })

/**
 * PostgreSQL's decision in one round trip (see PgRateLimiterStore): the same steps as the SQLite transaction, in a
 * function, so the key's advisory lock is held for microseconds instead of five round trips. A volatile PL/pgSQL
 * function takes a fresh snapshot per statement, so after the lock it sees the previous holder's commit. It grants up
 * to `p_count` starts at once, recorded as one row of `n` starts at `now + p_hold` (`RateLimiterStore.holds`; every
 * live start counts, those recorded ahead included); `retry_at` is then set when fewer were granted. One row per block
 * instead of one per start: 20k starts were 20k rows inserted and deleted again, now ~25 (a block each).
 *
 * Rolling upgrades: instances of older versions call the three- and four-argument overloads, which are redefined
 * here over this one, so every instance counts blocks once this version has started. An instance of an older version
 * started after that would redefine them to count rows (a block as one start) until this version starts again:
 * during an upgrade, start no instance of the older version once one of this version runs.
 */
const TRY_ACQUIRE_FUNCTION = `CREATE OR REPLACE FUNCTION limit_rate_try_acquire(
  p_key TEXT, p_limit BIGINT, p_window BIGINT, p_count BIGINT, p_hold BIGINT
)
RETURNS TABLE (now_ms BIGINT, granted BIGINT, retry_at BIGINT) LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
  v_now BIGINT;
  v_paused BIGINT;
  v_live BIGINT;
  v_oldest BIGINT;
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  PERFORM pg_advisory_xact_lock(hashtext(p_key));
  v_now := CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 1000) AS BIGINT);
  DELETE FROM limit_rate_starts WHERE key = p_key AND at <= v_now - p_window;
  SELECT until_ms INTO v_paused FROM limit_rate_pauses WHERE key = p_key;
  SELECT COALESCE(SUM(n), 0), MIN(at) INTO v_live, v_oldest FROM limit_rate_starts WHERE key = p_key;
  granted := 0;
  retry_at := 0;
  IF v_paused IS NOT NULL AND v_paused > v_now THEN retry_at := v_paused; END IF;
  IF v_live >= p_limit THEN retry_at := GREATEST(retry_at, v_oldest + p_window); END IF;
  IF retry_at = 0 THEN
    granted := LEAST(GREATEST(p_count, 1), p_limit - v_live);
    INSERT INTO limit_rate_starts (key, at, expires_at, n) VALUES (p_key, v_now + p_hold, v_now + p_hold + p_window, granted);
    IF granted < p_count THEN retry_at := COALESCE(v_oldest, v_now) + p_window; END IF;
  END IF;
  now_ms := v_now;
  RETURN NEXT;
END
$fn$`

/** The four-argument overload (no hold), which instances of the previous version call: the same decision. */
const TRY_ACQUIRE_FUNCTION_NO_HOLD =
  `CREATE OR REPLACE FUNCTION limit_rate_try_acquire(p_key TEXT, p_limit BIGINT, p_window BIGINT, p_count BIGINT)
RETURNS TABLE (now_ms BIGINT, granted BIGINT, retry_at BIGINT) LANGUAGE sql VOLATILE AS
$fn$ SELECT * FROM limit_rate_try_acquire(p_key, p_limit, p_window, p_count, 0) $fn$`

/** The three-argument overload of the first version (one start per call; `retry_at = 0` when granted). */
const TRY_ACQUIRE_FUNCTION_ONE =
  `CREATE OR REPLACE FUNCTION limit_rate_try_acquire(p_key TEXT, p_limit BIGINT, p_window BIGINT)
RETURNS TABLE (now_ms BIGINT, retry_at BIGINT) LANGUAGE sql VOLATILE AS
$fn$ SELECT now_ms, retry_at FROM limit_rate_try_acquire(p_key, p_limit, p_window, 1, 0) $fn$`

export const ensureSchema: Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const lock = sql.onDialectOrElse({
    pg: () => sql`SELECT pg_advisory_xact_lock(${SCHEMA_LOCK})`,
    orElse: () => Effect.void
  })
  const upgrade = sql.onDialectOrElse({
    pg: () =>
      Effect.all([
        sql`ALTER TABLE limit_rate_starts ADD COLUMN IF NOT EXISTS n BIGINT NOT NULL DEFAULT 1`,
        sql.unsafe(TRY_ACQUIRE_FUNCTION),
        sql.unsafe(TRY_ACQUIRE_FUNCTION_NO_HOLD),
        sql.unsafe(TRY_ACQUIRE_FUNCTION_ONE)
      ], { discard: true }),
    orElse: () =>
      Effect.flatMap(
        sql`SELECT name FROM pragma_table_info('limit_rate_starts') WHERE name = 'n'`,
        (columns) =>
          columns.length > 0
            ? Effect.void
            : Effect.asVoid(sql`ALTER TABLE limit_rate_starts ADD COLUMN n INTEGER NOT NULL DEFAULT 1`)
      )
  })
  yield* sql.withTransaction(Effect.gen(function*() {
    yield* lock
    yield* sql`CREATE TABLE IF NOT EXISTS limit_rate_starts (
      key TEXT NOT NULL,
      at BIGINT NOT NULL,
      expires_at BIGINT NOT NULL,
      n BIGINT NOT NULL DEFAULT 1
    )`
    yield* sql`CREATE INDEX IF NOT EXISTS limit_rate_starts_key_at ON limit_rate_starts (key, at)`
    yield* sql`CREATE TABLE IF NOT EXISTS limit_rate_pauses (
      key TEXT PRIMARY KEY,
      until_ms BIGINT NOT NULL
    )`
    yield* sql`CREATE TABLE IF NOT EXISTS limit_host_slots (
      host TEXT NOT NULL,
      slot_no INTEGER NOT NULL,
      owner TEXT NOT NULL,
      token TEXT NOT NULL,
      expires_at BIGINT NOT NULL,
      PRIMARY KEY (host, slot_no)
    )`
    yield* sql`CREATE INDEX IF NOT EXISTS limit_host_slots_owner ON limit_host_slots (owner)`
    yield* sql`CREATE TABLE IF NOT EXISTS limit_host_waiters (
      host TEXT NOT NULL,
      owner TEXT NOT NULL,
      expires_at BIGINT NOT NULL,
      PRIMARY KEY (host, owner)
    )`
    yield* upgrade
  }))
})
