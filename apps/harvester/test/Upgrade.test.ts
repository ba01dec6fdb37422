/**
 * Upgrading a PostgreSQL database of the previous release (migrations 0001–0004) in place: 0005 (bytewise key
 * columns, their indexes rebuilt), 0006 (the claim and store functions) and 0007 (one index for the claim and the
 * counts) keep every row, and this version finishes the job the previous one left half done.
 */
import { Reactivity } from "@effect/experimental"
import { NodeContext } from "@effect/platform-node"
import { Migrator, SqlClient } from "@effect/sql"
import { PgClient, PgMigrator } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Redacted } from "effect"
import * as Db from "../src/Db/Db.js"
import init from "../src/Db/migrations/0001_init.js"
import failedPages from "../src/Db/migrations/0002_failed_pages.js"
import noForeignKeys from "../src/Db/migrations/0003_no_foreign_keys.js"
import jobSecrets from "../src/Db/migrations/0004_job_secrets.js"
import { JobRepo } from "../src/Jobs/JobRepo.js"
import { all, pgDatabaseScoped } from "./support/Databases.js"
import { pageRow } from "./support/Rows.js"

const pg = all.find((db) => db.name === "pg")!

/** The database as the previous release left it: its four migrations, and a job it was running. */
const previousRelease = (url: string) =>
  Effect.gen(function*() {
    yield* PgMigrator.run({
      loader: Migrator.fromRecord({
        "0001_init": init,
        "0002_failed_pages": failedPages,
        "0003_no_foreign_keys": noForeignKeys,
        "0004_job_secrets": jobSecrets
      })
    })
    const sql = yield* SqlClient.SqlClient
    yield* sql`INSERT INTO jobs (id, status, options, total, created_at, deadline_at, finished_at)
      VALUES ('job-old', 'running', '{}', 3, 1700000000000, NULL, NULL)`
    // One target done (its page stored), one leased by an instance that has since stopped (lease expired), one
    // pending.
    yield* sql`INSERT INTO targets (id, job_id, seq, url, paginate, status, lease_owner, lease_expires_at, attempt,
        next_page, updated_at)
      VALUES ('job-old.0', 'job-old', 0, 'http://127.0.0.1:1/t/0', NULL, 'done', NULL, NULL, 1, 2, 1700000000000),
        ('job-old.1', 'job-old', 1, 'http://127.0.0.1:1/t/1', NULL, 'leased', 'stopped', 1, 1, 1, 1700000000000),
        ('job-old.2', 'job-old', 2, 'http://127.0.0.1:1/t/2', NULL, 'pending', NULL, NULL, 0, 1, 1700000000000)`
    yield* sql`INSERT INTO pages (job_id, target_id, page_no, url, status, headers, body, bytes, duration_ms,
        attempts, error, error_message, fetched_at)
      VALUES ('job-old', 'job-old.0', 1, 'http://127.0.0.1:1/t/0', 200, '{}', '{"page":0}', 10, 1, 1, NULL, NULL,
        1700000000001)`
  }).pipe(
    Effect.provide(
      PgClient.layer({ url: Redacted.make(url), maxConnections: 1 }).pipe(
        Layer.provide(Reactivity.layer),
        Layer.merge(NodeContext.layer)
      )
    ),
    Effect.orDie
  )

describe.skipIf(pg.skip !== null)("Upgrading a PostgreSQL database of the previous release", () => {
  it.scoped(
    "0005 to 0007 keep every row; this version finishes the job the previous one left",
    () =>
      Effect.gen(function*() {
        const url = yield* pgDatabaseScoped
        yield* previousRelease(url)

        const upgraded = Layer.provideMerge(JobRepo.Default, Db.layerPg(Redacted.make(url)))
        yield* Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          const repo = yield* JobRepo
          const migrations = yield* sql<{ readonly name: string }>`
          SELECT name FROM effect_sql_migrations ORDER BY migration_id`
          assert.deepStrictEqual(migrations.map((m) => m.name).slice(-3), [
            "binary_keys",
            "claim_store_functions",
            "targets_status_seq"
          ])
          const stored = yield* repo.results("job-old", { after: 0, limit: 10 })
          assert.deepStrictEqual(stored.map((page) => [page.target_id, page.body]), [["job-old.0", "{\"page\":0}"]])

          // The stopped instance's lease is handed back, then both open targets are claimed and stored by this version.
          assert.strictEqual(yield* repo.reap, 1)
          const claimed = yield* repo.claim("job-old", "new-owner", 30_000, 10)
          assert.deepStrictEqual(claimed.map((target) => [target.id, target.attempt]), [["job-old.1", 2], [
            "job-old.2",
            1
          ]])
          const owned = yield* repo.storePages(claimed.map((target) => ({
            fence: { targetId: target.id, jobId: "job-old", owner: "new-owner", attempt: target.attempt },
            page: pageRow(1, { url: target.url }),
            done: true
          })))
          assert.strictEqual(owned.size, 2)
          assert.isTrue(yield* repo.finishIfDone("job-old", 1_700_000_000_999))
          const pages = yield* repo.results("job-old", { after: 0, limit: 10 })
          assert.deepStrictEqual(pages.map((page) => page.target_id), ["job-old.0", "job-old.1", "job-old.2"])
        }).pipe(Effect.provide(upgraded), Effect.orDie)
      }),
    { timeout: 30_000 }
  )
})
