/**
 * 0007_targets_status_seq — PostgreSQL: one index on `targets (job_id, status, seq)` instead of two,
 * `targets_pending (job_id, seq) WHERE status = 'pending'` (the claim's) and `targets_job_status (job_id, status)`
 * (the counts'). It serves both: the claim reads the job's pending targets in `seq` order from it, the counts read the
 * job's targets by status. Every target inserted or updated wrote an entry in each of the two; inserting a job's
 * targets (before its first page can be fetched) wrote three index entries a target, now two: a 20k-target job's
 * insert 220 → 160 ms of the database's CPU, replayed (median of 5 runs each); claims and stores unchanged.
 *
 * The new index is built under a lock that holds writes to `targets` back meanwhile (on a large database the first
 * start of this version takes that long). Instances of the previous version use it the same way. SQLite keeps its
 * indexes.
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql.onDialectOrElse({
    pg: () =>
      Effect.all([
        sql`CREATE INDEX targets_job_status_seq ON targets (job_id, status, seq)`,
        sql`DROP INDEX targets_pending`,
        sql`DROP INDEX targets_job_status`
      ], { discard: true }),
    orElse: () => Effect.void
  })
})
