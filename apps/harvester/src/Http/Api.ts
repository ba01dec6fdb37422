/**
 * Api — the harvester's HTTP contract: endpoints, payloads, query parameters, successes and typed errors in one
 * place. The server (Handlers.ts), the OpenAPI document at /docs and the clients (the CLI's `jobs` commands, the
 * tests) all derive from it.
 *
 * Schemas and most wire errors come from Domain.ts; the two declared here belong to the HTTP surface alone
 * (`NotReady` for /readyz, `Authentication` the bearer-token middleware).
 */
import {
  HttpApi,
  HttpApiEndpoint,
  HttpApiGroup,
  HttpApiMiddleware,
  HttpApiSchema,
  HttpApiSecurity,
  OpenApi
} from "@effect/platform"
import { Schema } from "effect"
import {
  InvalidJobSpec,
  JobAlreadyFinished,
  JobId,
  JobNotFound,
  JobSpec,
  JobSummary,
  JobView,
  Page,
  PageRecord,
  PayloadTooLarge,
  ResultStatus,
  Unauthorized
} from "../Domain.js"

/** /readyz while migrations have not run or the database does not answer. */
export class NotReady extends Schema.TaggedError<NotReady>()(
  "NotReady",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 503 })
) {}

/** `Authorization: Bearer <HARVESTER_TOKEN>` on every endpoint but /healthz (a no-op when no token is set). */
export class Authentication extends HttpApiMiddleware.Tag<Authentication>()("spindle/Authentication", {
  failure: Unauthorized,
  security: { bearer: HttpApiSecurity.bearer }
}) {}

const id = HttpApiSchema.param("id", JobId)

/** Items per page, 1 to 1000 (default 50). */
const Limit = Schema.NumberFromString.pipe(
  Schema.int({ message: () => "must be an integer from 1 to 1000" }),
  Schema.between(1, 1000, { message: () => "must be an integer from 1 to 1000" })
)

const exact = { exact: true } as const

export const ListParams = Schema.Struct({
  cursor: Schema.optionalWith(Schema.String, exact),
  limit: Schema.optionalWith(Limit, exact)
})

export const ResultsParams = Schema.Struct({
  cursor: Schema.optionalWith(Schema.String, exact),
  limit: Schema.optionalWith(Limit, exact),
  status: Schema.optionalWith(ResultStatus, exact),
  /** Only failures with this error tag (FetchTimeout, HttpStatusError, ...). */
  error: Schema.optionalWith(Schema.String, exact),
  /** `jsonl`: every matching page, one JSON object per line, streamed (no paging). */
  format: Schema.optionalWith(Schema.Literal("json", "jsonl"), exact)
})

/** Server-sent events: `event: progress` with a ProgressEvent as data, `event: end` when the job finished. */
export const EventStream = Schema.String.pipe(
  HttpApiSchema.withEncoding({ kind: "Text", contentType: "text/event-stream" })
)

export class JobsGroup extends HttpApiGroup.make("jobs")
  .add(
    HttpApiEndpoint.post("create", "/jobs")
      .setPayload(JobSpec)
      .addSuccess(JobView, { status: 201 })
      .addError(InvalidJobSpec)
      .addError(PayloadTooLarge)
      .annotate(OpenApi.Description, "Create a job: its targets are stored and the engine starts fetching them.")
  )
  .add(
    HttpApiEndpoint.get("list", "/jobs")
      .setUrlParams(ListParams)
      .addSuccess(Page(JobSummary))
      .annotate(OpenApi.Description, "Jobs, newest first, cursor-paged: pass `nextCursor` back as `cursor`.")
  )
  .add(
    HttpApiEndpoint.get("get")`/jobs/${id}`
      .addSuccess(JobView)
      .addError(JobNotFound)
      .annotate(OpenApi.Description, "Status, counts, rates and failures by error tag.")
  )
  .add(
    HttpApiEndpoint.get("results")`/jobs/${id}/results`
      .setUrlParams(ResultsParams)
      .addSuccess(Page(PageRecord))
      .addError(JobNotFound)
      .annotate(
        OpenApi.Description,
        "Stored pages, cursor-paged, filtered by status or error tag. With `format=jsonl` every matching page is " +
          "streamed as `application/x-ndjson`, one JSON object per line."
      )
  )
  .add(
    HttpApiEndpoint.get("events")`/jobs/${id}/events`
      .addSuccess(EventStream)
      .addError(JobNotFound)
      .annotate(OpenApi.Description, "Server-sent progress events until the job finishes.")
  )
  .add(
    HttpApiEndpoint.post("cancel")`/jobs/${id}/cancel`
      .addSuccess(JobView)
      .addError(JobNotFound)
      .addError(JobAlreadyFinished)
      .annotate(OpenApi.Description, "Stop the job's requests within a second; the rest of its targets are cancelled.")
  )
  .middleware(Authentication)
{}

export class SystemGroup extends HttpApiGroup.make("system")
  .add(
    HttpApiEndpoint.get("healthz", "/healthz")
      .addSuccess(Schema.Struct({ status: Schema.Literal("ok") }))
      .annotate(OpenApi.Description, "The process is up (no authentication).")
  )
  .add(
    HttpApiEndpoint.get("readyz", "/readyz")
      .addSuccess(Schema.Struct({ status: Schema.Literal("ready") }))
      .addError(NotReady)
      .middleware(Authentication)
      .annotate(OpenApi.Description, "Migrations have run and the database answers.")
  )
{}

export class Api extends HttpApi.make("harvester")
  .add(JobsGroup)
  .add(SystemGroup)
  .annotate(OpenApi.Title, "Spindle harvester")
  .annotate(
    OpenApi.Description,
    "A rate-limited, resumable API harvester: jobs of URLs, fetched politely, stored in SQL."
  )
{}
