/**
 * 0004_job_secrets — `jobs.secrets`: the job's sensitive request headers sealed under `HARVESTER_SECRET_KEY`
 * (`Jobs/HeaderSeal`), or NULL (no sensitive headers, or no key: they live in the memory of the creating instance).
 * Nullable, so instances of the previous version go on reading and writing jobs during a rolling upgrade (they
 * ignore the column, and their jobs have no sealed headers).
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`ALTER TABLE jobs ADD COLUMN secrets TEXT`
})
