import { SqlClient } from "@effect/sql"
import { assert, describe, layer } from "@effect/vitest"
import { Chunk, Deferred, Effect, Either, Exit, Logger, Option, Redacted, Schema, Stream } from "effect"
import type { IncomingHttpHeaders } from "node:http"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import * as SimulatedApi from "../src/Demo/SimulatedApi.js"
import { JobId, JobOptions, JobSpec, REDACTED } from "../src/Domain.js"
import * as HeaderSeal from "../src/Jobs/HeaderSeal.js"
import { JobRepo } from "../src/Jobs/JobRepo.js"
import * as Databases from "./support/Databases.js"
import { harvest, targetsAt, withJobs } from "./support/Harness.js"

/** A loopback server that records the headers of every request. */
const SECRET = "test secret of at least thirty-two characters"

const headerRecorder = Effect.acquireRelease(
  Effect.async<{ readonly url: string; readonly seen: Array<IncomingHttpHeaders>; readonly close: () => void }>(
    (resume) => {
      const seen: Array<IncomingHttpHeaders> = []
      const server = createServer((request, response) => {
        seen.push(request.headers)
        response.writeHead(200, { "content-type": "application/json" }).end("{}")
      })
      server.listen(0, "127.0.0.1", () =>
        resume(Effect.succeed({
          url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/h`,
          seen,
          close: () => {
            server.closeAllConnections()
            server.close()
          }
        })))
    }
  ),
  (recorder) => Effect.sync(recorder.close)
)

for (const db of Databases.all) {
  describe.skipIf(db.skip !== null)(`Jobs on ${db.name}`, () => {
    layer(db.layer, { timeout: "30 seconds", excludeTestServices: true })((it) => {
      it.effect(
        "refuses a bad spec naming the field; unknown ids are JobNotFound",
        () =>
          withJobs((jobs) =>
            Effect.gen(function*() {
              const bad = yield* Effect.flip(
                jobs.create(
                  new JobSpec({
                    targets: [{ url: "http://127.0.0.1:1/a" }, { url: "http://127.0.0.1:1/b", paginate: "sideways" }]
                  })
                )
              )
              assert.strictEqual(bad._tag, "InvalidJobSpec")
              assert.strictEqual(bad._tag === "InvalidJobSpec" ? bad.field : "", "targets.1.paginate")
              const missing = yield* Effect.flip(jobs.get(JobId.make("job_nope")))
              assert.deepStrictEqual([missing._tag, missing.id], ["JobNotFound", "job_nope"])
              assert.strictEqual((yield* Effect.flip(jobs.cancel(JobId.make("job_nope"))))._tag, "JobNotFound")
              assert.strictEqual(
                (yield* Effect.flip(jobs.results(JobId.make("job_nope"), { limit: 5 })))._tag,
                "JobNotFound"
              )
              assert.isTrue(yield* jobs.ready)
            })
          ),
        30_000
      )

      it.scoped(
        "pages through jobs and results with cursors and filters; streams every result",
        () =>
          Effect.gen(function*() {
            const api = yield* SimulatedApi.start({
              routes: {
                "/items": { collection: { items: 23, pageSize: 5, style: "page" } },
                "/gone": { json: {}, status: 404 }
              }
            })
            yield* withJobs((jobs) =>
              Effect.gen(function*() {
                const first = yield* harvest(jobs, new JobSpec({ targets: [{ url: `${api.baseUrl}/gone` }] }))
                const second = yield* harvest(
                  jobs,
                  new JobSpec({
                    targets: [{ url: `${api.baseUrl}/items`, paginate: "page:page" }, { url: `${api.baseUrl}/gone` }]
                  })
                )
                assert.deepStrictEqual([second.counts.done, second.counts.failed, second.counts.pages], [1, 1, 5])
                assert.deepStrictEqual(second.failures, { HttpStatusError: 1 })
                assert.isNotNull(second.finishedAt)
                assert.isAbove(second.rates.pagesPerSecond, 0)

                const listed = yield* jobs.list({ limit: 1 })
                assert.deepStrictEqual(listed.items.map((j) => j.id), [second.id])
                const rest = yield* jobs.list({ limit: 100, cursor: listed.nextCursor! })
                assert.strictEqual(rest.items[0]!.id, first.id)

                const page1 = yield* jobs.results(second.id, { limit: 4 })
                const page2 = yield* jobs.results(second.id, { limit: 4, cursor: page1.nextCursor! })
                assert.strictEqual(page1.items.length, 4)
                assert.strictEqual(page2.items.length, 2)
                assert.isNull(page2.nextCursor)
                const done = yield* jobs.results(second.id, { limit: 100, status: "done" })
                assert.deepStrictEqual(done.items.map((r) => r.page).sort(), [1, 2, 3, 4, 5])
                assert.deepStrictEqual(
                  (done.items[4]!.body as { readonly items: ReadonlyArray<unknown> }).items.length,
                  3,
                  "23 items: the last page holds 3"
                )
                const failed = yield* jobs.results(second.id, { limit: 100, errorTag: "HttpStatusError" })
                assert.deepStrictEqual(failed.items.map((r) => [r.status, r.error, r.attempts]), [[
                  404,
                  "HttpStatusError",
                  1
                ]])

                const streamed = yield* Stream.runCollect(jobs.resultsStream(second.id))
                assert.strictEqual(Chunk.size(streamed), 6)
                const failedOnly = yield* Stream.runCollect(jobs.resultsStream(second.id, { status: "failed" }))
                assert.deepStrictEqual(Chunk.toReadonlyArray(failedOnly).map((r) => r.error), ["HttpStatusError"])
              })
            )
          }),
        30_000
      )

      it.scoped(
        "progress events run until the job ends and finish with the final counts",
        () =>
          Effect.gen(function*() {
            const api = yield* SimulatedApi.start({ routes: { "/slow/*": { json: {}, delayMillis: 60 } } })
            yield* withJobs((jobs) =>
              Effect.gen(function*() {
                const created = yield* jobs.create(
                  new JobSpec({
                    targets: targetsAt(`${api.baseUrl}/slow`, 10),
                    options: new JobOptions({ concurrency: 2 })
                  })
                )
                const events = Chunk.toReadonlyArray(yield* Stream.runCollect(jobs.events(created.id)))
                const last = events[events.length - 1]!
                assert.strictEqual(last.status, "completed")
                assert.strictEqual(last.counts.done, 10)
                assert.isAtLeast(events.length, 2, "intermediate snapshots before the end")
                const finished = events.map((e) => e.counts.done + e.counts.failed)
                assert.deepStrictEqual(finished, [...finished].sort((a, b) => a - b), "counts never go back")
              })
            )
          }),
        30_000
      )

      it.scoped("sends request headers but stores sensitive ones redacted", () =>
        Effect.gen(function*() {
          const recorder = yield* headerRecorder
          const view = yield* withJobs((jobs) =>
            harvest(
              jobs,
              new JobSpec({
                targets: [{ url: recorder.url }],
                options: new JobOptions({ headers: { authorization: "Bearer s3cret", "x-trace": "visible" } })
              })
            )
          )
          assert.strictEqual(recorder.seen[0]!["authorization"], "Bearer s3cret")
          assert.deepStrictEqual(view.options.headers, { authorization: REDACTED, "x-trace": "visible" })
          const sql = yield* SqlClient.SqlClient
          const rows = yield* sql<{ readonly options: string; readonly secrets: string | null }>`
            SELECT options, secrets FROM jobs WHERE id = ${view.id}`
          assert.notInclude(rows[0]!.options, "s3cret")
          // No HARVESTER_SECRET_KEY: nothing sealed, the values lived in this instance only.
          assert.isNull(rows[0]!.secrets)
        }), 30_000)

      it.scoped(
        "with HARVESTER_SECRET_KEY, sensitive headers are sealed at rest and sent by an instance that resumes the job; " +
          "an instance without the key, or with another, leaves the job alone",
        () =>
          Effect.gen(function*() {
            const recorder = yield* headerRecorder
            const sql = yield* SqlClient.SqlClient
            const headers = { authorization: "Bearer s3cret", "x-trace": "visible" }
            // Created through the service: stored redacted, and sealed.
            const created = yield* withJobs(
              (jobs) =>
                harvest(jobs, new JobSpec({ targets: [{ url: recorder.url }], options: new JobOptions({ headers }) })),
              { secretKey: SECRET }
            )
            const [row] = yield* sql<{ readonly options: string; readonly secrets: string | null }>`
              SELECT options, secrets FROM jobs WHERE id = ${created.id}`
            assert.notInclude(`${row!.options}${row!.secrets}`, "s3cret")
            assert.deepStrictEqual(
              HeaderSeal.open(HeaderSeal.keyOf(Redacted.make(SECRET)), created.id, row!.secrets ?? ""),
              Either.right({ authorization: "Bearer s3cret" })
            )
            assert.strictEqual(recorder.seen.length, 1)

            // A job that no running instance created (its creator stopped): its headers exist only sealed.
            const repo = yield* Effect.provide(JobRepo, JobRepo.Default)
            const id = "job_resumed_elsewhere"
            yield* repo.insertJob({
              id,
              options: Schema.encodeSync(Schema.parseJson(JobOptions))(
                new JobOptions({ headers: { authorization: REDACTED, "x-trace": "visible" } })
              ),
              createdAt: Date.now(),
              deadlineAt: null,
              secrets: Option.getOrNull(HeaderSeal.seal(HeaderSeal.keyOf(Redacted.make(SECRET)), id, headers)),
              targets: [{ url: `${recorder.url}?resumed`, paginate: null }]
            })
            for (const secretKey of [undefined, "a different key, also 32 characters or more"]) {
              const warned = yield* Deferred.make<void>()
              const logger = Logger.make(({ message }) => {
                if (String(message).includes(`job ${id}: its sealed authorization header(s) do not open here`)) {
                  Deferred.unsafeDone(warned, Exit.void)
                }
              })
              yield* withJobs(() => Deferred.await(warned), secretKey === undefined ? {} : { secretKey }).pipe(
                Effect.provide(Logger.add(logger))
              )
              assert.strictEqual(recorder.seen.length, 1, "no request without the credentials")
              const [target] = yield* sql<{ readonly status: string }>`SELECT status FROM targets WHERE job_id = ${id}`
              assert.strictEqual(target!.status, "pending")
            }
            const resumed = yield* withJobs((jobs) => jobs.awaitJob(JobId.make(id)), { secretKey: SECRET })
            assert.strictEqual(resumed.status, "completed")
            assert.strictEqual(recorder.seen.length, 2)
            assert.strictEqual(recorder.seen[1]!["authorization"], "Bearer s3cret")
            assert.strictEqual(recorder.seen[1]!["x-trace"], "visible")
          }),
        30_000
      )
    })
  })
}
