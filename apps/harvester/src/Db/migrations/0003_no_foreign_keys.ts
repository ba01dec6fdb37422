/**
 * 0003_no_foreign_keys — PostgreSQL: `pages` loses its foreign keys to `jobs` and `targets`, `targets` its key to
 * `jobs`.
 *
 * Each was a trigger per inserted row (a `SELECT ... FOR KEY SHARE` of the referenced row): measured ~20 % of the
 * database's CPU time per harvested page (20k pages: 1.55–1.94 s with them, 1.09–1.35 s without, the whole
 * claim-fetch-store cycle replayed against PostgreSQL 15), and ~40 % of inserting a job's targets (a 20k-target job:
 * 210–360 ms with, 100–125 ms without). They guarded nothing the code does not already: a page is only ever inserted
 * by the statement that advances its target (joined to the target's row, fenced on its lease: `JobRepo.storePages`,
 * `failTarget`, `endJob`), a job's targets are inserted with it in one transaction, and nothing deletes jobs or
 * targets. SQLite keeps them: its checks are index probes in-process, and it is at the plain script's pace with them.
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql.onDialectOrElse({
    pg: () =>
      Effect.zipRight(
        sql`ALTER TABLE pages
          DROP CONSTRAINT IF EXISTS pages_job_id_fkey,
          DROP CONSTRAINT IF EXISTS pages_target_id_fkey`,
        sql`ALTER TABLE targets DROP CONSTRAINT IF EXISTS targets_job_id_fkey`
      ),
    orElse: () => Effect.void
  })
})
