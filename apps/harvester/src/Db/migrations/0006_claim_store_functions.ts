/**
 * 0006_claim_store_functions — PostgreSQL: the two statements of the hot path, the claim of a job's next pending
 * targets and the store of a batch of pages, as PL/pgSQL functions (`harvester_claim`, `harvester_store_pages`),
 * called by `JobRepo` on PostgreSQL.
 *
 * Why functions: `@effect/sql-pg` sends every statement unprepared, so PostgreSQL parsed, analyzed and planned each
 * claim and each store again (~1 ms per statement: ~60 claims and ~250 stores per 20k pages). PL/pgSQL prepares the
 * statements of a function once per connection and keeps their plans. The claim-fetch-store cycle of 20k pages
 * replayed against PostgreSQL 15 on one connection: 1.84–2.27 s of the database's CPU inline, 1.71–1.94 s through
 * the functions (4 runs each).
 *
 * The statements are the ones `JobRepo` ran inline before (same fencing, same results): instances of the previous
 * version go on running theirs during a rolling upgrade. A cached plan may become generic (the same for every
 * parameter value) after five calls: both statements find their rows through indexes whatever the values and the
 * statistics (the targets by key: `id = ANY(...)`), which `Db.test.ts` checks on the plans of these bodies.
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

/** Epoch millis from the database's clock (leases are compared against it on every instance). */
const now = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql.onDialectOrElse({
    pg: () =>
      Effect.all([
        // Leases up to `p_limit` pending targets of the job, in order (`SKIP LOCKED`: concurrent claims take others).
        sql.unsafe(`CREATE FUNCTION harvester_claim(p_job TEXT, p_limit INTEGER, p_owner TEXT, p_ttl BIGINT)
          RETURNS TABLE (id TEXT, job_id TEXT, seq INTEGER, url TEXT, paginate TEXT, attempt INTEGER,
            next_page INTEGER)
          LANGUAGE plpgsql AS $body$
          #variable_conflict use_column
          BEGIN
            RETURN QUERY WITH picked AS (
              SELECT t.id FROM targets t WHERE t.job_id = p_job AND t.status = 'pending'
              ORDER BY t.seq LIMIT p_limit FOR UPDATE SKIP LOCKED
            )
            UPDATE targets
            SET status = 'leased', lease_owner = p_owner, lease_expires_at = ${now} + p_ttl,
              attempt = targets.attempt + 1, updated_at = ${now}
            WHERE targets.status = 'pending' AND targets.id IN (SELECT picked.id FROM picked)
            RETURNING targets.id, targets.job_id, targets.seq, targets.url, targets.paginate, targets.attempt,
              targets.next_page;
          END
          $body$`),
        // The targets still leased by (p_owner, attempt) advance (`done`: released) and their pages are inserted;
        // returns the ids of those targets (the others lost their lease and store nothing). The bodies travel beside
        // the JSON of the other columns, one text parameter each (`p_bodies[n]` is the body of the n-th row): inside
        // the JSON they were parsed twice (validated at bind, then read by `json_to_recordset`), escaped and
        // unescaped, ~15 % of the statement's CPU.
        sql.unsafe(`CREATE FUNCTION harvester_store_pages(p_rows JSON, p_owner TEXT, p_bodies TEXT[])
          RETURNS SETOF TEXT
          LANGUAGE plpgsql AS $body$
          BEGIN
            RETURN QUERY WITH w AS (
              SELECT r.*, p_bodies[r.n] AS body
              FROM ROWS FROM (json_to_recordset(p_rows) AS (
                target_id TEXT, attempt INTEGER, next_page INTEGER, done BOOLEAN, job_id TEXT, page_no INTEGER,
                url TEXT, status INTEGER, headers TEXT, bytes INTEGER, duration_ms DOUBLE PRECISION,
                attempts INTEGER, error TEXT, error_message TEXT, fetched_at BIGINT
              )) WITH ORDINALITY AS r(target_id, attempt, next_page, done, job_id, page_no, url, status, headers,
                bytes, duration_ms, attempts, error, error_message, fetched_at, n)
            ), owned AS (
              UPDATE targets SET
                next_page = w.next_page,
                status = CASE WHEN w.done THEN 'done' ELSE targets.status END,
                lease_owner = CASE WHEN w.done THEN NULL ELSE targets.lease_owner END,
                lease_expires_at = CASE WHEN w.done THEN NULL ELSE targets.lease_expires_at END,
                updated_at = ${now}
              FROM w
              WHERE targets.id = ANY(ARRAY(SELECT w.target_id FROM w)) AND targets.id = w.target_id
                AND targets.attempt = w.attempt AND targets.lease_owner = p_owner
              RETURNING targets.id AS id
            ), stored AS (
              INSERT INTO pages (job_id, target_id, page_no, url, status, headers, body, bytes, duration_ms, attempts,
                error, error_message, fetched_at)
              SELECT w.job_id, w.target_id, w.page_no, w.url, w.status, w.headers, w.body, w.bytes, w.duration_ms,
                w.attempts, w.error, w.error_message, w.fetched_at
              FROM w JOIN owned ON owned.id = w.target_id
              ON CONFLICT (target_id, page_no) DO NOTHING
            )
            SELECT owned.id FROM owned;
          END
          $body$`)
      ], { discard: true }),
    orElse: () => Effect.void
  })
})
