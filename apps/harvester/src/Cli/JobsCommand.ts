/**
 * `harvester jobs list|show|cancel|results` — talks to a running server through the client derived from the API
 * contract (`HttpApiClient.make(Api)`), with `--server` and `--token` (default HARVESTER_TOKEN).
 */
import { Args, Command, Options } from "@effect/cli"
import { HttpApiClient, HttpClient, HttpClientRequest } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { Console, DateTime, Effect, Option, Redacted, Schema } from "effect"
import * as AppConfig from "../Config.js"
import { JobId, JobView, PageRecord, ResultStatus } from "../Domain.js"
import { Api } from "../Http/Api.js"
import { failure } from "./Exit.js"
import { summaryOf } from "./Harvest.js"
import { integerFlag } from "./Shared.js"

const connection = {
  server: Options.text("server").pipe(
    Options.withDescription("Base URL of the harvester API"),
    Options.withDefault("http://127.0.0.1:8080")
  ),
  token: Options.redacted("token").pipe(
    Options.withDescription("Bearer token (default HARVESTER_TOKEN)"),
    Options.optional
  )
}

/** The derived client for `server`, sending the token from the flag or the configuration. */
export const makeClient = (server: string, token: Option.Option<Redacted.Redacted>) =>
  Effect.gen(function*() {
    const bearer = Option.isSome(token) ? token : yield* AppConfig.token
    return yield* HttpApiClient.make(Api, {
      baseUrl: server,
      transformClient: Option.match(bearer, {
        onNone: () => (client: HttpClient.HttpClient) => client,
        onSome: (value) => HttpClient.mapRequest(HttpClientRequest.bearerToken(Redacted.value(value)))
      })
    })
  })

/** The server's typed errors as one line, exit 1; a server that cannot be reached says so. */
const explain = (server: string) => (error: { readonly _tag: string; readonly message?: string }) =>
  failure(
    error._tag === "RequestError"
      ? `harvester: cannot reach ${server}: ${error.message ?? "connection failed"}`
      : `harvester: ${error._tag}: ${error.message ?? ""}`
  )

const jobId = Args.text({ name: "job-id" }).pipe(Args.withSchema(JobId))

const list = Command.make("list", {
  ...connection,
  limit: integerFlag("limit", "Jobs per page", 1).pipe(Options.withDefault(20)),
  cursor: Options.text("cursor").pipe(Options.optional)
}, ({ cursor, limit, server, token }) =>
  Effect.gen(function*() {
    const client = yield* makeClient(server, token)
    const page = yield* client.jobs.list({
      urlParams: Option.isSome(cursor) ? { limit, cursor: cursor.value } : { limit }
    })
    for (const job of page.items) {
      yield* Console.log(
        [
          job.id,
          job.status.padEnd(17),
          `${job.done + job.failed}/${job.total}`.padEnd(11),
          `failed=${job.failed}`.padEnd(11),
          `pages=${job.pages}`.padEnd(12),
          DateTime.formatIso(job.createdAt)
        ].join("  ")
      )
    }
    if (page.nextCursor !== null) yield* Console.log(`more: --cursor ${page.nextCursor}`)
  }).pipe(Effect.mapError(explain(server)))).pipe(Command.withDescription("List jobs, newest first"))

const show = Command.make("show", { ...connection, id: jobId }, ({ id, server, token }) =>
  Effect.gen(function*() {
    const client = yield* makeClient(server, token)
    const view = yield* client.jobs.get({ path: { id } })
    yield* Console.log(JSON.stringify(yield* Schema.encode(JobView)(view), null, 2))
  }).pipe(Effect.mapError(explain(server)))).pipe(Command.withDescription("Show a job: status, counts, rates"))

const cancel = Command.make("cancel", { ...connection, id: jobId }, ({ id, server, token }) =>
  Effect.gen(function*() {
    const client = yield* makeClient(server, token)
    const view = yield* client.jobs.cancel({ path: { id } })
    yield* Console.log(summaryOf(view))
  }).pipe(Effect.mapError(explain(server)))).pipe(Command.withDescription("Cancel a running job"))

const results = Command.make("results", {
  ...connection,
  id: jobId,
  status: Options.choice("status", ResultStatus.literals).pipe(Options.optional),
  error: Options.text("error").pipe(Options.withDescription("Only failures with this error tag"), Options.optional)
}, ({ error, id, server, status, token }) =>
  Effect.gen(function*() {
    const client = yield* makeClient(server, token)
    const filters = {
      ...(Option.isSome(status) ? { status: status.value } : {}),
      ...(Option.isSome(error) ? { error: error.value } : {})
    }
    let cursor: string | null = null
    do {
      const page: { readonly items: ReadonlyArray<PageRecord>; readonly nextCursor: string | null } = yield* client.jobs
        .results({
          path: { id },
          urlParams: cursor === null ? { ...filters, limit: 500 } : { ...filters, limit: 500, cursor }
        })
      for (const record of page.items) {
        yield* Console.log(JSON.stringify(yield* Schema.encode(PageRecord)(record)))
      }
      cursor = page.nextCursor
    } while (cursor !== null)
  }).pipe(Effect.mapError(explain(server)))).pipe(
    Command.withDescription("Print a job's stored pages as jsonl (one JSON object per line)")
  )

export const jobs = Command.make("jobs").pipe(
  Command.withDescription("Inspect and control jobs on a running server"),
  Command.withSubcommands([list, show, cancel, results]),
  Command.provide(NodeHttpClient.layerUndici)
)
