/**
 * 0001_init — jobs, their targets (the unit of work, claimed with a lease) and the pages they store.
 *
 * Times are epoch milliseconds (BIGINT). Claiming reads two partial indexes, one for pending and one for leased rows,
 * so neither "what can I claim" nor "which leases expired" scans finished work.
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const pageId = sql.onDialectOrElse({
    pg: () => sql.literal("BIGSERIAL PRIMARY KEY"),
    orElse: () => sql.literal("INTEGER PRIMARY KEY AUTOINCREMENT")
  })

  yield* sql`CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    options TEXT NOT NULL,
    total INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    deadline_at BIGINT,
    finished_at BIGINT
  )`
  yield* sql`CREATE INDEX jobs_running ON jobs (id) WHERE status = 'running'`

  yield* sql`CREATE TABLE targets (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs (id),
    seq INTEGER NOT NULL,
    url TEXT NOT NULL,
    paginate TEXT,
    status TEXT NOT NULL,
    lease_owner TEXT,
    lease_expires_at BIGINT,
    attempt INTEGER NOT NULL DEFAULT 0,
    next_page INTEGER NOT NULL DEFAULT 1,
    error TEXT,
    error_message TEXT,
    updated_at BIGINT NOT NULL
  )`
  yield* sql`CREATE INDEX targets_pending ON targets (job_id, seq) WHERE status = 'pending'`
  yield* sql`CREATE INDEX targets_leased ON targets (lease_expires_at) WHERE status = 'leased'`
  yield* sql`CREATE INDEX targets_job_status ON targets (job_id, status)`

  yield* sql`CREATE TABLE pages (
    id ${pageId},
    job_id TEXT NOT NULL REFERENCES jobs (id),
    target_id TEXT NOT NULL REFERENCES targets (id),
    page_no INTEGER NOT NULL,
    url TEXT NOT NULL,
    status INTEGER,
    headers TEXT NOT NULL,
    body TEXT,
    bytes INTEGER NOT NULL,
    duration_ms DOUBLE PRECISION NOT NULL,
    attempts INTEGER NOT NULL,
    error TEXT,
    error_message TEXT,
    fetched_at BIGINT NOT NULL,
    UNIQUE (target_id, page_no)
  )`
  yield* sql`CREATE INDEX pages_job ON pages (job_id, id)`
})
