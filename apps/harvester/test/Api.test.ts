import { Sse } from "@effect/experimental"
import { HttpApiClient, HttpClient, HttpClientRequest, HttpServer } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import type { SqlClient } from "@effect/sql"
import { assert, describe, it, layer } from "@effect/vitest"
import { Context, Duration, Effect, Either, Layer, Option, Redacted, Schedule, Schema, Stream } from "effect"
import type { ServerSettings } from "../src/Config.js"
import type { DatabaseUnavailable } from "../src/Db/Db.js"
import * as SimulatedApi from "../src/Demo/SimulatedApi.js"
import type { JobId } from "../src/Domain.js"
import { InvalidJobSpec, JobDefaults, JobSpec, ProgressEvent } from "../src/Domain.js"
import { SsrfGuard } from "../src/Fetch/SsrfGuard.js"
import { Api } from "../src/Http/Api.js"
import * as Server from "../src/Http/Server.js"
import { Jobs } from "../src/Jobs/Jobs.js"
import * as Databases from "./support/Databases.js"

const TOKEN = "s3cret-token"
const MAX_BODY = 2048

const settings = (overrides: Partial<ServerSettings> = {}): ServerSettings => ({
  port: 0,
  host: "127.0.0.1",
  token: Option.some(Redacted.make(TOKEN)),
  maxBodyBytes: MAX_BODY,
  defaultLimits: { ...JobDefaults, rate: "50/1s", timeout: "5s", retries: 2 },
  shutdownGrace: Duration.seconds(1),
  ...overrides
})

class Upstream extends Context.Tag("test/Upstream")<Upstream, SimulatedApi.SimulatedApi>() {}

const UpstreamLive = Layer.scoped(
  Upstream,
  SimulatedApi.start({
    routes: {
      "/items": { collection: { items: 25, pageSize: 10, style: "page" } },
      "/missing": { json: { error: "nope" }, status: 404 },
      "/flaky": { json: { ok: true }, failFirst: 1 },
      "/slow": { json: { ok: true }, delayMillis: 30_000 }
    }
  })
)

const environment = (db: Layer.Layer<SqlClient.SqlClient, DatabaseUnavailable>) =>
  Server.layer(settings()).pipe(
    Layer.provide(Jobs.layerWithGuard(SsrfGuard.layer(["127.0.0.1"]))),
    Layer.provide(db),
    Layer.provideMerge(UpstreamLive),
    Layer.provideMerge(NodeHttpClient.layerUndici)
  )

const baseUrl = Effect.map(
  HttpServer.HttpServer,
  (server) => server.address._tag === "TcpAddress" ? `http://127.0.0.1:${server.address.port}` : ""
)

/** The client derived from the contract, sending `token` (none: no Authorization header). */
const clientWith = (token: string | null) =>
  Effect.flatMap(baseUrl, (url) =>
    HttpApiClient.make(Api, {
      baseUrl: url,
      transformClient: token === null
        ? (client) => client
        : HttpClient.mapRequest(HttpClientRequest.bearerToken(token))
    }))

const client = clientWith(TOKEN)

/** A raw request to the server (for what the derived client refuses to send). */
const raw = (request: HttpClientRequest.HttpClientRequest) =>
  Effect.gen(function*() {
    const url = yield* baseUrl
    const http = yield* HttpClient.HttpClient
    return yield* http.execute(
      request.pipe(HttpClientRequest.prependUrl(url), HttpClientRequest.bearerToken(TOKEN))
    )
  })

const rawJson = (request: HttpClientRequest.HttpClientRequest) =>
  Effect.flatMap(raw(request), (response) => Effect.map(response.json, (body) => ({ status: response.status, body })))

const decodeInvalid = Schema.decodeUnknownSync(InvalidJobSpec)

const spec = (targets: ReadonlyArray<{ readonly url: string; readonly paginate?: string }>) =>
  Schema.decodeUnknownSync(JobSpec)({ targets, options: { rate: "50/1s", retries: 2, timeout: "5s" } })

const awaitFinished = (id: JobId) =>
  Effect.gen(function*() {
    const api = yield* client
    return yield* api.jobs.get({ path: { id } }).pipe(
      Effect.repeat({ schedule: Schedule.spaced("20 millis"), until: (view) => view.status !== "running" }),
      Effect.timeout("20 seconds")
    )
  })

/** Reads the SSE stream of a job to its end: every event, parsed. */
const readEvents = (id: JobId) =>
  Effect.gen(function*() {
    const response = yield* raw(HttpClientRequest.get(`/jobs/${id}/events`))
    const events: Array<Sse.Event> = []
    const parser = Sse.makeParser((event) => {
      if (event._tag === "Event") events.push(event)
    })
    yield* response.stream.pipe(
      Stream.decodeText(),
      Stream.runForEach((chunk) => Effect.sync(() => parser.feed(chunk)))
    )
    return { contentType: response.headers["content-type"], events }
  })

const tagOf = (result: Either.Either<unknown, { readonly _tag: string }>) =>
  Either.match(result, { onLeft: (error) => error._tag, onRight: () => "success" })

for (const db of Databases.all) {
  describe.skipIf(db.skip !== null)(`HTTP API on ${db.name}`, () => {
    layer(environment(db.layer), { timeout: "60 seconds", excludeTestServices: true })((it) => {
      it.effect("GET /healthz answers without a token; /readyz is ready, with the token only", () =>
        Effect.gen(function*() {
          const anonymous = yield* clientWith(null)
          assert.deepStrictEqual(yield* anonymous.system.healthz(), { status: "ok" })
          assert.strictEqual(tagOf(yield* Effect.either(anonymous.system.readyz())), "Unauthorized")
          const api = yield* client
          assert.deepStrictEqual(yield* api.system.readyz(), { status: "ready" })
        }))

      it.effect("401 Unauthorized without a token or with a wrong one, on every endpoint but /healthz", () =>
        Effect.gen(function*() {
          const id = "job_x" as JobId
          for (const token of [null, "wrong-token"]) {
            const api = yield* clientWith(token)
            const outcomes = yield* Effect.all([
              Effect.either(api.jobs.list({ urlParams: {} })),
              Effect.either(api.jobs.get({ path: { id } })),
              Effect.either(api.jobs.results({ path: { id }, urlParams: {} })),
              Effect.either(api.jobs.events({ path: { id } })),
              Effect.either(api.jobs.cancel({ path: { id } })),
              Effect.either(api.jobs.create({ payload: spec([{ url: "http://127.0.0.1:1/" }]) })),
              Effect.either(api.system.readyz())
            ])
            assert.deepStrictEqual(outcomes.map(tagOf), Array(7).fill("Unauthorized"), `token ${token}`)
          }
          const url = yield* baseUrl
          const http = yield* HttpClient.HttpClient
          const docs = yield* http.get(`${url}/docs`)
          assert.strictEqual(docs.status, 401)
          const body = yield* http.get(`${url}/jobs`, { headers: { authorization: "Bearer wrong" } })
          const error = (yield* body.json) as { _tag: string; message: string }
          assert.strictEqual(body.status, 401)
          assert.strictEqual(error._tag, "Unauthorized")
          assert.include(error.message, "wrong bearer token")
        }))

      it.effect("OpenAPI: Swagger UI at /docs, the document at /docs/openapi.json with every path", () =>
        Effect.gen(function*() {
          const docs = yield* raw(HttpClientRequest.get("/docs"))
          assert.strictEqual(docs.status, 200)
          assert.include(docs.headers["content-type"], "text/html")
          const openapi = (yield* (yield* raw(HttpClientRequest.get("/docs/openapi.json"))).json) as {
            paths: Record<string, unknown>
            components: { securitySchemes: Record<string, unknown> }
          }
          assert.includeMembers(Object.keys(openapi.paths), [
            "/jobs",
            "/jobs/{id}",
            "/jobs/{id}/results",
            "/jobs/{id}/events",
            "/jobs/{id}/cancel",
            "/healthz",
            "/readyz"
          ])
          assert.property(openapi.components.securitySchemes, "bearer")
        }))

      it.effect("POST /jobs: 201 with the job; options it leaves out come from the configured defaults", () =>
        Effect.gen(function*() {
          const upstream = yield* Upstream
          const created = yield* rawJson(
            HttpClientRequest.post("/jobs").pipe(
              HttpClientRequest.bodyUnsafeJson({
                targets: [{ url: `${upstream.baseUrl}/missing` }],
                options: { concurrency: 3, headers: { "x-api-key": "k" } }
              })
            )
          )
          assert.strictEqual(created.status, 201)
          const view = created.body as { id: string; options: Record<string, unknown> }
          assert.strictEqual(view.options["concurrency"], 3)
          assert.strictEqual(view.options["rate"], "50/1s", "from the server's configured defaults")
          assert.strictEqual(view.options["retries"], 2)
          assert.deepStrictEqual(view.options["headers"], { "x-api-key": "<redacted>" })
          yield* awaitFinished(view.id as JobId)
        }))

      it.effect("400 names the field path: bad URL, bad rate, unknown option, no targets, malformed JSON, paginate", () =>
        Effect.gen(function*() {
          const post = (body: unknown) =>
            rawJson(HttpClientRequest.post("/jobs").pipe(HttpClientRequest.bodyUnsafeJson(body)))
          const cases: ReadonlyArray<readonly [unknown, string]> = [
            [{ targets: [{ url: "http://127.0.0.1:1/" }, { url: "ftp://x" }] }, "targets.1.url"],
            [{ targets: [{ url: "http://127.0.0.1:1/" }], options: { rate: "fast" } }, "options.rate"],
            [{ targets: [{ url: "http://127.0.0.1:1/" }], options: { concurency: 5 } }, "options.concurency"],
            [{ targets: [{ url: "http://127.0.0.1:1/" }], options: { retries: -1 } }, "options.retries"],
            [{ targets: [] }, "targets.0"],
            [{ options: {} }, "targets"],
            [[1, 2], "body"]
          ]
          for (const [body, field] of cases) {
            const answer = yield* post(body)
            assert.strictEqual(answer.status, 400, JSON.stringify(body))
            const error = decodeInvalid(answer.body)
            assert.strictEqual(error.field, field, JSON.stringify(body))
            assert.include(error.message, field)
          }
          const malformed = yield* rawJson(
            HttpClientRequest.post("/jobs").pipe(HttpClientRequest.bodyText("{\"targets\": [", "application/json"))
          )
          assert.strictEqual(malformed.status, 400)
          assert.strictEqual(decodeInvalid(malformed.body).field, "body")

          const api = yield* client
          const paginate = yield* Effect.flip(
            api.jobs.create({ payload: spec([{ url: "http://127.0.0.1:1/", paginate: "sideways" }]) })
          )
          assert.strictEqual(paginate._tag, "InvalidJobSpec")
          if (paginate._tag === "InvalidJobSpec") assert.strictEqual(paginate.field, "targets.0.paginate")

          const badLimit = yield* rawJson(HttpClientRequest.get("/jobs?limit=5000"))
          assert.strictEqual(badLimit.status, 400)
          const decode = badLimit.body as { _tag: string; message: string; issues: Array<{ path: Array<string> }> }
          assert.strictEqual(decode._tag, "HttpApiDecodeError")
          assert.strictEqual(decode.message, "limit: must be an integer from 1 to 1000")
          assert.deepStrictEqual(decode.issues[0].path, ["limit"])
        }))

      it.effect("413 PayloadTooLarge for a body over the limit, declared or streamed", () =>
        Effect.gen(function*() {
          const api = yield* client
          const many = spec(Array.from({ length: 60 }, (_, i) => ({ url: `http://127.0.0.1:1/target/${i}` })))
          const error = yield* Effect.flip(api.jobs.create({ payload: many }))
          assert.strictEqual(error._tag, "PayloadTooLarge")
          if (error._tag === "PayloadTooLarge") assert.strictEqual(error.limit, MAX_BODY)

          const chunk = new TextEncoder().encode(" ".repeat(1024))
          const streamed = yield* raw(
            HttpClientRequest.post("/jobs").pipe(
              HttpClientRequest.bodyStream(Stream.make(chunk, chunk, chunk), { contentType: "application/json" })
            )
          )
          assert.strictEqual(streamed.status, 413)
          assert.strictEqual(((yield* streamed.json) as { _tag: string })._tag, "PayloadTooLarge")
        }))

      it.effect("404 JobNotFound for an unknown job on get, results, events and cancel", () =>
        Effect.gen(function*() {
          const api = yield* client
          const id = "job_unknown" as JobId
          const outcomes = yield* Effect.all([
            Effect.either(api.jobs.get({ path: { id } })),
            Effect.either(api.jobs.results({ path: { id }, urlParams: {} })),
            Effect.either(api.jobs.events({ path: { id } })),
            Effect.either(api.jobs.cancel({ path: { id } }))
          ])
          assert.deepStrictEqual(outcomes.map(tagOf), Array(4).fill("JobNotFound"))
          const jsonl = yield* raw(HttpClientRequest.get(`/jobs/${id}/results?format=jsonl`))
          assert.strictEqual(jsonl.status, 404)
        }))

      it.effect(
        "a job end to end: SSE progress, counts, results by cursor and filter, jsonl, 409 once finished",
        () =>
          Effect.gen(function*() {
            const api = yield* client
            const upstream = yield* Upstream
            const created = yield* api.jobs.create({
              payload: spec([
                { url: `${upstream.baseUrl}/items`, paginate: "page:page" },
                { url: `${upstream.baseUrl}/missing` },
                { url: `${upstream.baseUrl}/flaky` }
              ])
            })
            assert.strictEqual(created.counts.total, 3)

            const { contentType, events } = yield* readEvents(created.id)
            assert.include(contentType, "text/event-stream")
            const progress = events.filter((event) => event.event === "progress")
            assert.isAtLeast(progress.length, 1)
            const decoded = progress.map((event) => Schema.decodeUnknownSync(ProgressEvent)(JSON.parse(event.data)))
            assert.isTrue(decoded.every((event) => event.jobId === created.id && event.counts.total === 3))
            const end = events[events.length - 1]
            assert.strictEqual(end.event, "end")
            assert.strictEqual((JSON.parse(end.data) as { status: string }).status, "completed")

            const view = yield* api.jobs.get({ path: { id: created.id } })
            assert.strictEqual(view.status, "completed")
            assert.deepStrictEqual(
              [view.counts.done, view.counts.failed, view.counts.pending, view.counts.inFlight],
              [2, 1, 0, 0]
            )
            assert.deepStrictEqual(view.failures, { HttpStatusError: 1 })

            const seen: Array<string> = []
            let cursor: string | undefined = undefined
            let pages = 0
            do {
              const page: { items: ReadonlyArray<{ url: string }>; nextCursor: string | null } = yield* api.jobs
                .results({
                  path: { id: created.id },
                  urlParams: cursor === undefined ? { limit: 2 } : { limit: 2, cursor }
                })
              assert.isAtMost(page.items.length, 2)
              seen.push(...page.items.map((item) => item.url))
              cursor = page.nextCursor ?? undefined
              pages++
            } while (cursor !== undefined)
            assert.strictEqual(new Set(seen).size, seen.length, "no record twice across pages")
            assert.strictEqual(seen.length, view.counts.pages + view.counts.failed)
            assert.isAtLeast(pages, 3)
            assert.includeMembers(seen, [`${upstream.baseUrl}/items?page=2`, `${upstream.baseUrl}/flaky`])

            const failed = yield* api.jobs.results({ path: { id: created.id }, urlParams: { status: "failed" } })
            assert.deepStrictEqual(failed.items.map((item) => [item.url, item.error, item.status]), [
              [`${upstream.baseUrl}/missing`, "HttpStatusError", 404]
            ])
            const byTag = yield* api.jobs.results({ path: { id: created.id }, urlParams: { error: "HttpStatusError" } })
            assert.deepStrictEqual(byTag.items.map((item) => item.url), [`${upstream.baseUrl}/missing`])
            const done = yield* api.jobs.results({
              path: { id: created.id },
              urlParams: { status: "done", limit: 100 }
            })
            const flaky = done.items.find((item) => item.url === `${upstream.baseUrl}/flaky`)
            assert.strictEqual(flaky?.attempts, 2, "retried once, stored once with its attempts")
            assert.deepStrictEqual(flaky?.body, { ok: true })

            const jsonl = yield* raw(HttpClientRequest.get(`/jobs/${created.id}/results?format=jsonl`))
            assert.include(jsonl.headers["content-type"], "application/x-ndjson")
            const lines = (yield* jsonl.text).split("\n").filter((line) => line.length > 0)
            assert.strictEqual(lines.length, seen.length)
            for (const line of lines) {
              const record = JSON.parse(line) as Record<string, unknown>
              for (const key of ["url", "status", "attempts", "error", "body"]) assert.property(record, key, line)
            }
            const jsonlFailed = yield* raw(
              HttpClientRequest.get(`/jobs/${created.id}/results?format=jsonl&status=failed`)
            )
            assert.strictEqual((yield* jsonlFailed.text).trim().split("\n").length, 1)

            const conflict = yield* Effect.flip(api.jobs.cancel({ path: { id: created.id } }))
            assert.strictEqual(conflict._tag, "JobAlreadyFinished")
            if (conflict._tag === "JobAlreadyFinished") assert.strictEqual(conflict.status, "completed")
            const conflictStatus = yield* raw(HttpClientRequest.post(`/jobs/${created.id}/cancel`))
            assert.strictEqual(conflictStatus.status, 409)
          }),
        60_000
      )

      it.effect("POST /jobs/:id/cancel stops a running job's requests within a second", () =>
        Effect.gen(function*() {
          const api = yield* client
          const upstream = yield* Upstream
          const created = yield* api.jobs.create({ payload: spec([{ url: `${upstream.baseUrl}/slow` }]) })
          yield* Effect.gen(function*() {
            const requests = yield* upstream.requests
            if (!requests.some((request) => request.path === "/slow")) return yield* Effect.fail("not yet")
            // Polled every 10 ms for up to 5 s (the request's start is not what this test times; the cancel is).
          }).pipe(Effect.retry({ schedule: Schedule.spaced("10 millis"), times: 500 }))
          const cancelled = yield* api.jobs.cancel({ path: { id: created.id } })
          assert.strictEqual(cancelled.status, "cancelled")
          const open = yield* upstream.openRequests.pipe(
            Effect.repeat({ schedule: Schedule.spaced("5 millis"), until: (n) => n === 0 }),
            Effect.timeout("1 second"),
            Effect.either
          )
          assert.isTrue(Either.isRight(open), "the upstream saw the request closed within a second")
        }), 30_000)

      it.effect("GET /jobs pages by cursor, newest first", () =>
        Effect.gen(function*() {
          const api = yield* client
          const upstream = yield* Upstream
          const ids: Array<string> = []
          for (let i = 0; i < 3; i++) {
            ids.push((yield* api.jobs.create({ payload: spec([{ url: `${upstream.baseUrl}/missing?n=${i}` }]) })).id)
          }
          const listed: Array<string> = []
          let cursor: string | undefined = undefined
          do {
            const page: { items: ReadonlyArray<{ id: string }>; nextCursor: string | null } = yield* api.jobs.list({
              urlParams: cursor === undefined ? { limit: 1 } : { limit: 1, cursor }
            })
            assert.isAtMost(page.items.length, 1)
            listed.push(...page.items.map((item) => item.id))
            cursor = page.nextCursor ?? undefined
          } while (cursor !== undefined)
          assert.strictEqual(new Set(listed).size, listed.length)
          assert.deepStrictEqual(listed.slice(0, 3), [...ids].reverse())
          yield* Effect.forEach(ids, (id) => awaitFinished(id as JobId))
        }), 30_000)
    })
  })
}

describe("HTTP API without a token", () => {
  const stubJobs = (ready: boolean) =>
    Layer.succeed(
      Jobs,
      Jobs.make({
        create: () => Effect.die("unused"),
        list: () => Effect.succeed({ items: [], nextCursor: null }),
        get: () => Effect.die("unused"),
        results: () => Effect.die("unused"),
        resultsStream: () => Stream.die("unused"),
        cancel: () => Effect.die("unused"),
        events: () => Stream.die("unused"),
        awaitJob: () => Effect.die("unused"),
        ready: Effect.succeed(ready)
      } as unknown as Jobs)
    )

  const open = Server.layer(settings({ token: Option.none(), host: "0.0.0.0" })).pipe(
    Layer.provide(stubJobs(false)),
    Layer.provideMerge(NodeHttpClient.layerUndici)
  )

  layer(open, { excludeTestServices: true })((it) => {
    it.effect("binds 127.0.0.1 whatever HOST says, needs no token, and /readyz is 503 NotReady while the DB is down", () =>
      Effect.gen(function*() {
        const server = yield* HttpServer.HttpServer
        assert.strictEqual(server.address._tag === "TcpAddress" ? server.address.hostname : "", "127.0.0.1")
        const api = yield* clientWith(null)
        assert.deepStrictEqual(yield* api.jobs.list({ urlParams: {} }), { items: [], nextCursor: null })
        const notReady = yield* Effect.flip(api.system.readyz())
        assert.strictEqual(notReady._tag, "NotReady")
        const status = yield* Effect.flatMap(
          baseUrl,
          (url) => Effect.flatMap(HttpClient.HttpClient, (http) => http.get(`${url}/readyz`))
        )
        assert.strictEqual(status.status, 503)
      }))
  })

  it("bindHost keeps HOST only when a token protects the API", () => {
    assert.strictEqual(Server.bindHost(settings({ token: Option.none(), host: "0.0.0.0" })), "127.0.0.1")
    assert.strictEqual(Server.bindHost(settings({ host: "0.0.0.0" })), "0.0.0.0")
  })
})
