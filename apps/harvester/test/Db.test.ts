import { SqlClient, Statement } from "@effect/sql"
import { assert, describe, layer } from "@effect/vitest"
import { Effect, Layer, Option } from "effect"
import type { Fence } from "../src/Jobs/JobRepo.js"
import { JobRepo, targetId } from "../src/Jobs/JobRepo.js"
import * as Databases from "./support/Databases.js"
import { pageRow } from "./support/Rows.js"

const page = pageRow

const newJob = (id: string, targets: number) => ({
  id,
  options: "{}",
  createdAt: 1_700_000_000_000,
  deadlineAt: null,
  secrets: null,
  targets: Array.from({ length: targets }, (_, i) => ({ url: `http://127.0.0.1:1/t/${i}`, paginate: null }))
})

const countRows = (table: "pages" | "targets", jobId: string) =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) => sql<{ readonly n: number | string }>`SELECT COUNT(*) AS n FROM ${sql(table)} WHERE job_id = ${jobId}`
  ).pipe(
    Effect.map((rows) => Number(rows[0]!.n))
  )

for (const db of Databases.all) {
  describe.skipIf(db.skip !== null)(`Db and JobRepo on ${db.name}`, () => {
    layer(Layer.provideMerge(JobRepo.Default, db.layer), { timeout: "30 seconds" })((it) => {
      it.effect("migrations create the tables and the database answers", () =>
        Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          const migrations = yield* sql<{ readonly migration_id: number; readonly name: string }>`
            SELECT migration_id, name FROM effect_sql_migrations ORDER BY migration_id`
          assert.deepStrictEqual(migrations.map((m) => [Number(m.migration_id), m.name]), [
            [1, "init"],
            [2, "failed_pages"],
            [3, "no_foreign_keys"],
            [4, "job_secrets"],
            [5, "binary_keys"],
            [6, "claim_store_functions"],
            [7, "targets_status_seq"]
          ])
          // PostgreSQL: no foreign-key trigger per stored page or target (SQLite keeps its in-process checks).
          const foreignKeys = yield* sql.onDialectOrElse({
            pg: () =>
              sql<{ readonly n: string }>`SELECT COUNT(*) AS n FROM information_schema.table_constraints
                WHERE table_name IN ('pages', 'targets') AND constraint_type = 'FOREIGN KEY'`.pipe(
                Effect.map((rows) => Number(rows[0]?.n))
              ),
            orElse: () => Effect.succeed(0)
          })
          assert.strictEqual(foreignKeys, 0)
          // PostgreSQL: the key columns compare bytewise, whatever the database's locale (SQLite's text always does).
          if (db.name === "pg") {
            const keyCollations = yield* sql<{ readonly column: string; readonly collation: string | null }>`
              SELECT table_name || '.' || column_name AS column, collation_name AS collation
              FROM information_schema.columns
              WHERE (table_name, column_name) IN (('jobs', 'id'), ('targets', 'id'), ('targets', 'job_id'),
                ('pages', 'job_id'), ('pages', 'target_id'))
              ORDER BY 1`
            assert.deepStrictEqual(keyCollations.map((row) => `${row.column} ${row.collation}`), [
              "jobs.id C",
              "pages.job_id C",
              "pages.target_id C",
              "targets.id C",
              "targets.job_id C"
            ])
            // One index serves the claim (pending targets in seq order) and the counts (targets by status).
            const indexes = yield* sql<{ readonly indexname: string }>`
              SELECT indexname FROM pg_indexes WHERE tablename = 'targets' ORDER BY indexname`
            assert.deepStrictEqual(indexes.map((row) => row.indexname), [
              "targets_job_status_seq",
              "targets_leased",
              "targets_pkey"
            ])
          }
          for (const table of ["jobs", "targets", "pages"] as const) {
            const rows = yield* sql`SELECT COUNT(*) AS n FROM ${sql(table)}`
            assert.strictEqual(rows.length, 1)
          }
        }))

      it.effect("claims in batches, in order, each target once, with attempt + 1", () =>
        Effect.gen(function*() {
          const repo = yield* JobRepo
          yield* repo.insertJob(newJob("job-claim", 25))
          const first = yield* repo.claim("job-claim", "owner-a", 30_000, 10)
          const second = yield* repo.claim("job-claim", "owner-b", 30_000, 10)
          const third = yield* repo.claim("job-claim", "owner-a", 30_000, 10)
          const fourth = yield* repo.claim("job-claim", "owner-a", 30_000, 10)
          assert.deepStrictEqual(first.map((t) => t.seq), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
          assert.deepStrictEqual(second.map((t) => t.seq), [10, 11, 12, 13, 14, 15, 16, 17, 18, 19])
          assert.deepStrictEqual(third.map((t) => t.seq), [20, 21, 22, 23, 24])
          assert.strictEqual(fourth.length, 0)
          assert.isTrue([...first, ...second, ...third].every((t) => t.attempt === 1 && t.next_page === 1))
          assert.strictEqual(yield* repo.leasedBy("owner-a"), 15)
          assert.deepStrictEqual(yield* repo.openTargets("job-claim"), { pending: 0, leased: 25 })
        }))

      it.effect("a page is stored once: a second write of it is ignored, a stale lease cannot write", () =>
        Effect.gen(function*() {
          const repo = yield* JobRepo
          yield* repo.insertJob(newJob("job-once", 1))
          const [target] = yield* repo.claim("job-once", "owner-a", 30_000, 1)
          const fence: Fence = { targetId: target!.id, jobId: "job-once", owner: "owner-a", attempt: target!.attempt }
          assert.isTrue(yield* repo.storePage(fence, page(1), false))
          assert.isTrue(yield* repo.storePage(fence, page(1, { body: "\"again\"" }), false))
          assert.isFalse(yield* repo.storePage({ ...fence, owner: "intruder" }, page(2), false))
          assert.isFalse(yield* repo.storePage({ ...fence, attempt: fence.attempt + 1 }, page(2), false))
          assert.strictEqual(yield* countRows("pages", "job-once"), 1)
          const stored = yield* repo.storedPage(fence.targetId, 1)
          assert.strictEqual(Option.getOrThrow(stored).body, JSON.stringify({ page: 1 }))
          assert.isTrue(yield* repo.storePage(fence, page(2), true))
          assert.isFalse(yield* repo.storePage(fence, page(3), false), "a done target takes no more pages")
          assert.deepStrictEqual(yield* repo.targetsIn("job-once", "done"), [targetId("job-once", 0)])
          assert.isTrue(yield* repo.finishIfDone("job-once", 1))
          assert.deepStrictEqual(yield* repo.jobStatus("job-once"), Option.some("completed" as const))
        }))

      it.effect("a batch of pages comes back exactly as written: quotes, backslashes, unicode, newlines, nulls", () =>
        Effect.gen(function*() {
          const repo = yield* JobRepo
          yield* repo.insertJob(newJob("job-exact", 3))
          const targets = yield* repo.claim("job-exact", "owner-a", 30_000, 3)
          const pages = [
            page(1, {
              url: "http://127.0.0.1:1/q?a=\"b\"&c=\\d",
              headers: JSON.stringify({ "content-type": "application/json; charset=\"utf-8\"" }),
              body: JSON.stringify({ text: "line 1\nline 2\t\"quoted\" \\ back", emoji: "😀", nul: "a\u0001b" }),
              duration_ms: 0.125,
              fetched_at: 1_700_000_000_123
            }),
            page(1, { body: null, status: null, error: "TransportError", error_message: "reset by \"peer\"\n" }),
            page(1, { body: JSON.stringify("just a string"), bytes: 0 })
          ]
          const owned = yield* repo.storePages(targets.map((target, i) => ({
            fence: { targetId: target.id, jobId: "job-exact", owner: "owner-a", attempt: target.attempt },
            page: pages[i]!,
            done: true
          })))
          assert.strictEqual(owned.size, 3)
          const stored = yield* repo.results("job-exact", { after: 0, limit: 10 })
          assert.deepStrictEqual(
            stored.map((
              row
            ) => [
              row.url,
              row.status,
              row.headers,
              row.body,
              row.bytes,
              row.duration_ms,
              row.error,
              row.error_message,
              row.fetched_at
            ]),
            pages.map((
              p
            ) => [p.url, p.status, p.headers, p.body, p.bytes, p.duration_ms, p.error, p.error_message, p.fetched_at])
          )
        }))

      // PostgreSQL only: SQLite claims and stores through its own statements (VALUES lists joined on the primary key).
      if (db.name === "pg") {
        it.effect(
          "PostgreSQL: the claim and the page store are functions whose plans find targets by index, never by a scan",
          () =>
            Effect.gen(function*() {
              // The first job on a new database has no statistics: the planner then preferred a hash join over a scan
              // of every target of the table, once per stored batch (a 1M-target job: 1M rows read per batch). The
              // functions keep their plans per connection, generic ones after five calls: both kinds are checked.
              const sql = yield* SqlClient.SqlClient
              const repo = yield* JobRepo
              yield* repo.insertJob(newJob("job-plan", 5000))
              const sent: Array<string> = []
              const record: Statement.Statement.Transformer = (statement) =>
                Effect.sync(() => {
                  sent.push(statement.compile()[0])
                  return statement
                })
              const targets = yield* repo.claim("job-plan", "owner-p", 30_000, 50).pipe(
                Statement.withTransformer(record)
              )
              const owned = yield* repo.storePages(targets.map((target) => ({
                fence: { targetId: target.id, jobId: "job-plan", owner: "owner-p", attempt: target.attempt },
                page: page(1, { url: target.url }),
                done: true
              }))).pipe(Statement.withTransformer(record))
              assert.strictEqual(owned.size, 50)
              assert.strictEqual(yield* countRows("pages", "job-plan"), 50)
              assert.lengthOf(sent, 2)
              assert.include(sent[0], "harvester_claim(")
              assert.include(sent[1], "harvester_store_pages(")

              // Each function's statement as the database holds it, prepared with the function's parameters.
              const functions = [
                {
                  name: "harvester_claim",
                  params: ["p_job", "p_limit", "p_owner", "p_ttl"],
                  types: "TEXT, INTEGER, TEXT, BIGINT",
                  args: "'job-plan', 50, 'owner-q', 30000"
                },
                {
                  name: "harvester_store_pages",
                  params: ["p_rows", "p_owner", "p_bodies"],
                  types: "JSON, TEXT, TEXT[]",
                  args: `'${
                    JSON.stringify(targets.map((target) => ({ target_id: target.id, attempt: target.attempt })))
                  }', 'owner-p', ARRAY['{}']`
                }
              ]
              for (const fn of functions) {
                const [source] = yield* sql<
                  { readonly prosrc: string }
                >`SELECT prosrc FROM pg_proc WHERE proname = ${fn.name}`
                const body = /RETURN QUERY([\s\S]*);\s*END\s*$/.exec(source?.prosrc ?? "")?.[1]
                assert.isDefined(body, `the statement of ${fn.name}`)
                const text = fn.params.reduce(
                  (statement, param, i) => statement.replace(new RegExp(`\\b${param}\\b`, "g"), `$${i + 1}`),
                  body!
                )
                for (const mode of ["force_generic_plan", "force_custom_plan"]) {
                  const plan = yield* sql.withTransaction(Effect.gen(function*() {
                    yield* sql.unsafe(`SET LOCAL plan_cache_mode = ${mode}`)
                    yield* sql.unsafe(`PREPARE plan_check (${fn.types}) AS ${text}`)
                    const rows = yield* sql.unsafe<{ readonly "QUERY PLAN": unknown }>(
                      `EXPLAIN (FORMAT JSON) EXECUTE plan_check (${fn.args})`
                    )
                    yield* sql.unsafe("DEALLOCATE plan_check")
                    return JSON.stringify(rows[0]?.["QUERY PLAN"])
                  }))
                  const scans = [...plan.matchAll(/"Node Type":"([^"]+)"[^{}]*?"Relation Name":"targets"/g)].map((m) =>
                    m[1]
                  )
                  assert.isAbove(scans.length, 0, `${fn.name} (${mode}) reads targets`)
                  assert.notInclude(scans, "Seq Scan", `${fn.name} (${mode}), scans of targets: ${scans.join(", ")}`)
                }
              }
            })
        )
      }

      it.effect("expired leases are reaped and reclaimed with a new attempt; the old owner is fenced out", () =>
        Effect.gen(function*() {
          const repo = yield* JobRepo
          yield* repo.insertJob(newJob("job-reap", 3))
          const stale = yield* repo.claim("job-reap", "crashed", -1_000, 3)
          assert.strictEqual(yield* repo.reap, 3)
          const fresh = yield* repo.claim("job-reap", "survivor", 30_000, 3)
          assert.deepStrictEqual(fresh.map((t) => t.attempt), [2, 2, 2])
          const old: Fence = { targetId: stale[0]!.id, jobId: "job-reap", owner: "crashed", attempt: 1 }
          assert.isFalse(yield* repo.storePage(old, page(1), true))
          assert.strictEqual(yield* repo.heartbeat("survivor", 30_000), 3)
          assert.strictEqual(yield* repo.reap, 0, "renewed leases are not reaped")
          assert.strictEqual(yield* repo.release("survivor"), 3)
          assert.deepStrictEqual(yield* repo.openTargets("job-reap"), { pending: 3, leased: 0 })
        }))

      it.effect("failures are recorded with their tag; cancel and deadline end only running jobs", () =>
        Effect.gen(function*() {
          const repo = yield* JobRepo
          yield* repo.insertJob(newJob("job-end", 5))
          const [stored] = yield* repo.claim("job-end", "owner", 30_000, 1)
          const storedFence: Fence = { targetId: stored!.id, jobId: "job-end", owner: "owner", attempt: 1 }
          assert.isTrue(yield* repo.storePage(storedFence, page(1), true))
          const [a] = yield* repo.claim("job-end", "owner", 30_000, 1)
          const fence: Fence = { targetId: a!.id, jobId: "job-end", owner: "owner", attempt: a!.attempt }
          assert.isTrue(
            yield* repo.failTarget(
              fence,
              page(1, { status: 404, body: null, error: "HttpStatusError", error_message: "404" })
            )
          )
          yield* repo.claim("job-end", "owner", 30_000, 1)
          assert.isTrue(yield* repo.endJob("job-end", "deadline_exceeded", 2))
          assert.isFalse(yield* repo.endJob("job-end", "cancelled", 3))
          const counts = yield* repo.counts("job-end")
          assert.deepStrictEqual(counts.byStatus, { done: 1, failed: 4 })
          assert.deepStrictEqual(counts.failures, { DeadlineExceeded: 3, HttpStatusError: 1 })
          // Stored pages count without the failure rows (all rows minus those of the pages_failed index).
          assert.strictEqual(counts.pages, 1)
          assert.strictEqual(yield* countRows("pages", "job-end"), 5)
          const listed = (yield* repo.listJobs(null, 100)).find((j) => j.id === "job-end")
          assert.deepStrictEqual([listed?.done, listed?.failed, listed?.pages], [1, 4, 1])
          const failed = yield* repo.results("job-end", { after: 0, limit: 10, status: "failed" })
          assert.strictEqual(failed.length, 4)
          const tagged = yield* repo.results("job-end", { after: 0, limit: 10, errorTag: "HttpStatusError" })
          assert.deepStrictEqual(tagged.map((p) => [p.status, p.error]), [[404, "HttpStatusError"]])
          assert.strictEqual(yield* repo.leasedBy("owner"), 0, "ending a job leaves no lease behind")

          yield* repo.insertJob(newJob("job-cancel", 2))
          yield* repo.claim("job-cancel", "owner", 30_000, 1)
          assert.isTrue(yield* repo.endJob("job-cancel", "cancelled", 5))
          assert.deepStrictEqual((yield* repo.counts("job-cancel")).byStatus, { cancelled: 2 })
          assert.strictEqual(yield* countRows("targets", "job-cancel"), 2)
        }))

      it.effect("lists jobs newest first with a cursor", () =>
        Effect.gen(function*() {
          const repo = yield* JobRepo
          for (const id of ["list-a", "list-b", "list-c"]) yield* repo.insertJob(newJob(id, 1))
          const all = (yield* repo.listJobs(null, 100)).filter((j) => j.id.startsWith("list-"))
          assert.deepStrictEqual(all.map((j) => j.id), ["list-c", "list-b", "list-a"])
          const after = yield* repo.listJobs("list-b", 100)
          assert.deepStrictEqual(after.filter((j) => j.id.startsWith("list-")).map((j) => j.id), ["list-a"])
          assert.isTrue(all.every((j) => j.total === 1 && j.done === 0 && j.pages === 0))
        }))
    })
  })
}
