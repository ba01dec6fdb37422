/**
 * 0003_pages_without_foreign_keys — PostgreSQL: `pages` loses its foreign keys to `jobs` and `targets`.
 *
 * Each was a trigger per inserted page (a `SELECT ... FOR KEY SHARE` of the job's and of the target's row): measured
 * ~20 % of the database's CPU time per harvested page (20k pages: 1.55–1.94 s with them, 1.09–1.35 s without, the
 * whole claim-fetch-store cycle replayed against PostgreSQL 15). They guarded nothing the code does not already: a page
 * is only ever inserted by the statement that advances its target (joined to the target's row, fenced on its lease,
 * `JobRepo.storePages`, `failTarget`, `endJob`), targets are inserted with their job in one transaction, and nothing
 * deletes jobs or targets. SQLite keeps them: its checks are index probes in-process, and it is at the plain
 * script's pace with them.
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql.onDialectOrElse({
    pg: () =>
      sql`ALTER TABLE pages
        DROP CONSTRAINT IF EXISTS pages_job_id_fkey,
        DROP CONSTRAINT IF EXISTS pages_target_id_fkey`,
    orElse: () => Effect.void
  })
})
