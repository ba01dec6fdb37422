/**
 * 0005_binary_keys — PostgreSQL: the key columns (`jobs.id`, `targets.id`, `targets.job_id`, `pages.job_id`,
 * `pages.target_id`) compare bytewise (`COLLATE "C"`), not by the database's locale.
 *
 * Every index probe and insert on them compared text through the locale's `strcoll` (`varstr_cmp`): the ids are ASCII
 * we generate, where a locale's order adds nothing (the byte order of `job_<time><random>` ids is their creation
 * order, as before), and the comparisons were ~7 % of the database's CPU per harvested page on a `C.UTF-8` database
 * (more on `en_US.UTF-8`, the usual default). The claim-fetch-store cycle of 20k pages replayed against PostgreSQL 15
 * on one connection: 2.07–2.33 s of the database's CPU before, 1.72–2.05 s after (3 runs each).
 *
 * Changing a column's collation keeps its rows (no table rewrite) but rebuilds the indexes on it, under an exclusive
 * lock: on a large database the migration takes that long, and instances of the previous version wait meanwhile.
 * SQLite compares text bytewise already (BINARY): nothing to do.
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql.onDialectOrElse({
    pg: () =>
      Effect.all([
        sql`ALTER TABLE jobs ALTER COLUMN id TYPE TEXT COLLATE "C"`,
        sql`ALTER TABLE targets ALTER COLUMN id TYPE TEXT COLLATE "C", ALTER COLUMN job_id TYPE TEXT COLLATE "C"`,
        sql`ALTER TABLE pages ALTER COLUMN job_id TYPE TEXT COLLATE "C", ALTER COLUMN target_id TYPE TEXT COLLATE "C"`
      ], { discard: true }),
    orElse: () => Effect.void
  })
})
