/**
 * Handlers — the HTTP API's implementation: thin handlers over the `Jobs` service, the bearer-token check, the
 * request-body limit of `POST /jobs`, server-sent progress events and the jsonl export.
 *
 * Beyond HttpApiBuilder: `POST /jobs` reads its body itself (bounded, so an oversized body is a typed 413 and
 * malformed JSON a 400 instead of a defect), fills the server's configured default limits into the options the
 * request left out, then decodes the JobSpec with excess properties refused; every decode problem becomes
 * `InvalidJobSpec` naming the field path ("targets.0.url", "options.rate").
 */
import { Sse } from "@effect/experimental"
import type { HttpServerRequest } from "@effect/platform"
import { HttpApiBuilder, HttpApiError, HttpServerResponse } from "@effect/platform"
import {
  Cause,
  Chunk,
  Context,
  Deferred,
  Effect,
  Layer,
  Option,
  ParseResult,
  Predicate,
  Redacted,
  Schema,
  Stream
} from "effect"
import { createHash, timingSafeEqual } from "node:crypto"
import type { DefaultLimits } from "../Config.js"
import type { JobId, ResultsFilter, TargetSpec } from "../Domain.js"
import {
  InvalidJobSpec,
  JobSpec,
  JobView,
  PageRecord,
  PayloadTooLarge,
  ProgressEvent,
  Unauthorized
} from "../Domain.js"
import { Jobs } from "../Jobs/Jobs.js"
import { Api, Authentication, NotReady } from "./Api.js"

/** Completed when the server starts shutting down: open event streams end instead of holding the server open. */
export class Draining extends Context.Tag("spindle/Http/Draining")<Draining, Deferred.Deferred<void>>() {
  static readonly layer = Layer.effect(Draining, Deferred.make<void>())
}

export interface HandlerSettings {
  readonly token: Option.Option<Redacted.Redacted>
  readonly maxBodyBytes: number
  readonly defaultLimits: DefaultLimits
}

const DEFAULT_PAGE_SIZE = 50

const digest = (value: string) => createHash("sha256").update(value).digest()

/** Constant-time comparison of a presented token with the configured one (hashing equalises the lengths). */
export const tokenMatches = (expected: Redacted.Redacted, presented: string): boolean =>
  timingSafeEqual(digest(Redacted.value(expected)), digest(presented))

const unauthorized = (reason: string) => new Unauthorized({ message: `${reason}: send Authorization: Bearer <token>` })

/** What is wrong with a presented bearer token ("" or undefined: none), if anything (nothing without a token). */
const tokenProblem = (token: Option.Option<Redacted.Redacted>, presented: string | undefined) =>
  Option.isNone(token)
    ? Option.none()
    : presented === undefined || presented === ""
    ? Option.some(unauthorized("missing bearer token"))
    : tokenMatches(token.value, presented)
    ? Option.none()
    : Option.some(unauthorized("wrong bearer token"))

/** What is wrong with an `Authorization` header value, if anything (nothing when no token is configured). */
export const authorizationProblem = (
  token: Option.Option<Redacted.Redacted>,
  header: string | undefined
): Option.Option<Unauthorized> =>
  tokenProblem(token, header?.startsWith("Bearer ") === true ? header.slice("Bearer ".length) : undefined)

/** The `Authentication` middleware of the contract: the same check on what `HttpApiSecurity.bearer` decoded. */
export const AuthenticationLive = (token: Option.Option<Redacted.Redacted>) =>
  Layer.succeed(
    Authentication,
    Authentication.of({
      bearer: (presented) =>
        Option.match(tokenProblem(token, Redacted.value(presented)), { onNone: () => Effect.void, onSome: Effect.fail })
    })
  )

const fieldOf = (path: ReadonlyArray<PropertyKey>) => path.length === 0 ? "body" : path.map(String).join(".")

const isRecord = (value: unknown): value is Record<string, unknown> =>
  Predicate.isRecord(value) && !Array.isArray(value)

/**
 * Reads at most `limit` bytes of body. A larger body is drained (up to eight times the limit, so the client reads
 * the 413 instead of a reset connection) and refused; beyond that the connection is cut.
 */
const readBounded = (request: HttpServerRequest.HttpServerRequest, limit: number) =>
  Effect.gen(function*() {
    const tooLarge = new PayloadTooLarge({ limit, message: `request body larger than ${limit} bytes` })
    const drainCap = limit * 8
    const declared = Number(request.headers["content-length"])
    if (Number.isFinite(declared) && declared > drainCap) return yield* Effect.fail(tooLarge)
    let size = 0
    const chunks: Array<Uint8Array> = []
    yield* request.stream.pipe(
      Stream.takeWhile(() => size <= drainCap),
      Stream.runForEach((chunk) =>
        Effect.sync(() => {
          size += chunk.length
          if (size <= limit) chunks.push(chunk)
        })
      ),
      Effect.mapError(() => tooLarge)
    )
    if (size > limit) return yield* Effect.fail(tooLarge)
    const body = new Uint8Array(size)
    let offset = 0
    for (const chunk of chunks) {
      body.set(chunk, offset)
      offset += chunk.length
    }
    return new TextDecoder().decode(body)
  })

/** Reads, bounds, parses and decodes the body of `POST /jobs`, with the configured default limits filled in. */
export const readJobSpec = (request: HttpServerRequest.HttpServerRequest, settings: HandlerSettings) =>
  Effect.gen(function*() {
    const text = yield* readBounded(request, settings.maxBodyBytes)
    const json = yield* Effect.try({
      try: (): unknown => JSON.parse(text),
      catch: (error) => InvalidJobSpec.of("body", `not valid JSON (${error instanceof Error ? error.message : error})`)
    })
    return yield* decodeJobSpec(json, settings.defaultLimits)
  })

/**
 * A target that passes `TargetSpec` for certain, checked by hand: a plain object with no key but `url` and
 * `paginate`, a `url` starting `http://` or `https://` that parses (so its scheme is http or https, as `HttpUrl`
 * requires), a `paginate` absent, undefined or a string. Anything else (an uppercase scheme, leading spaces...) is
 * left to Schema, which decides and names the problem.
 */
const plainTarget = (input: unknown): TargetSpec | undefined => {
  if (!isRecord(input)) return undefined
  const url = input.url
  if (typeof url !== "string" || !(url.startsWith("http://") || url.startsWith("https://")) || !URL.canParse(url)) {
    return undefined
  }
  const keys = Object.keys(input)
  if (keys.length === 1) return keys[0] === "url" ? { url } : undefined
  if (keys.length !== 2 || !("paginate" in input)) return undefined
  const paginate = input.paginate
  return paginate === undefined || typeof paginate === "string" ? { url, paginate } : undefined
}

const decodeSpec = Schema.decodeUnknown(JobSpec)

/**
 * Decodes a job spec (its JSON form) with `defaults` filling the options it leaves out and unknown fields refused;
 * the first problem becomes `InvalidJobSpec` naming its field path ("targets.0.url", "options.rate").
 *
 * Targets that pass `plainTarget` (the usual case) are not decoded one by one by Schema: ~7 µs a target, 1.4 s for
 * 200k on the event loop before the job is created; Schema then decodes the spec with its first target only (for the
 * options and the spec's own fields). Any other target sends the whole spec through Schema.
 */
export const decodeJobSpec = (input: unknown, defaults: DefaultLimits): Effect.Effect<JobSpec, InvalidJobSpec> => {
  const withDefaults = isRecord(input) && (input.options === undefined || isRecord(input.options))
    ? { ...input, options: { ...defaults, ...input.options } }
    : input
  const invalid = (error: ParseResult.ParseError) => {
    const issue = ParseResult.ArrayFormatter.formatErrorSync(error)[0]
    return InvalidJobSpec.of(fieldOf(issue?.path ?? []), issue?.message ?? "invalid")
  }
  const given = isRecord(withDefaults) && Array.isArray(withDefaults.targets) ? withDefaults.targets : []
  const targets: Array<TargetSpec> = []
  for (const target of given) {
    const plain = plainTarget(target)
    if (plain === undefined) break
    targets.push(plain)
  }
  if (targets.length === 0 || targets.length < given.length) {
    return decodeSpec(withDefaults, { errors: "first", onExcessProperty: "error" }).pipe(Effect.mapError(invalid))
  }
  return decodeSpec({ ...(withDefaults as Record<string, unknown>), targets: [given[0]] }, {
    errors: "first",
    onExcessProperty: "error"
  }).pipe(
    Effect.mapError(invalid),
    Effect.map((spec) =>
      new JobSpec({ targets: targets as [TargetSpec, ...Array<TargetSpec>], options: spec.options }, true)
    )
  )
}

const encodeRecord = Schema.encode(PageRecord)
const encodeEvent = Schema.encode(ProgressEvent)
const encodeView = Schema.encode(JobView)

const filterOf = (params: { readonly status?: "done" | "failed" | undefined; readonly error?: string | undefined }) => {
  const filter: { status?: "done" | "failed"; errorTag?: string } = {}
  if (params.status !== undefined) filter.status = params.status
  if (params.error !== undefined) filter.errorTag = params.error
  return filter satisfies ResultsFilter
}

const pageParams = (params: { readonly cursor?: string | undefined; readonly limit?: number | undefined }) =>
  params.cursor === undefined
    ? { limit: params.limit ?? DEFAULT_PAGE_SIZE }
    : { cursor: params.cursor, limit: params.limit ?? DEFAULT_PAGE_SIZE }

/** `GET /jobs/:id/results?format=jsonl`: every matching page, one JSON object per line. */
const jsonlResponse = (jobs: Jobs, id: JobId, filter: ResultsFilter) =>
  jobs.resultsStream(id, filter).pipe(
    Stream.mapEffect(encodeRecord),
    Stream.mapChunks((records) => Chunk.of(Array.from(records, (record) => `${JSON.stringify(record)}\n`).join(""))),
    Stream.catchTag("JobNotFound", () => Stream.empty),
    Stream.orDie,
    Stream.encodeText,
    (body) =>
      HttpServerResponse.stream(body, {
        contentType: "application/x-ndjson",
        headers: { "cache-control": "no-store" }
      })
  )

const sse = (event: string, data: unknown) =>
  Sse.encoder.write({ _tag: "Event", event, id: undefined, data: JSON.stringify(data) })

/** `GET /jobs/:id/events`: `progress` events until the job finishes, then `end` with the final view. */
const eventsResponse = (jobs: Jobs, id: JobId, draining: Deferred.Deferred<void>) =>
  jobs.events(id).pipe(
    Stream.mapEffect(encodeEvent),
    Stream.map((event) => sse("progress", event)),
    Stream.concat(
      Stream.fromEffect(Effect.flatMap(jobs.get(id), encodeView)).pipe(Stream.map((view) => sse("end", view)))
    ),
    Stream.catchTag("JobNotFound", () => Stream.empty),
    Stream.orDie,
    Stream.merge(Stream.tick("15 seconds").pipe(Stream.drop(1), Stream.as(": keep-alive\n\n")), {
      haltStrategy: "left"
    }),
    Stream.interruptWhen(Deferred.await(draining)),
    Stream.encodeText,
    (body) =>
      HttpServerResponse.stream(body, {
        contentType: "text/event-stream",
        headers: { "cache-control": "no-cache", "x-accel-buffering": "no" }
      })
  )

export const JobsLive = (settings: HandlerSettings) =>
  HttpApiBuilder.group(Api, "jobs", (handlers) =>
    Effect.gen(function*() {
      const jobs = yield* Jobs
      const draining = yield* Draining
      return handlers
        .handleRaw("create", ({ request }) => Effect.flatMap(readJobSpec(request, settings), jobs.create))
        .handle("list", ({ urlParams }) => jobs.list(pageParams(urlParams)))
        .handle("get", ({ path }) => jobs.get(path.id))
        .handle("results", ({ path, urlParams }) =>
          urlParams.format === "jsonl"
            ? Effect.as(jobs.get(path.id), jsonlResponse(jobs, path.id, filterOf(urlParams)))
            : jobs.results(path.id, { ...pageParams(urlParams), ...filterOf(urlParams) }))
        .handle("events", ({ path }) => Effect.as(jobs.get(path.id), eventsResponse(jobs, path.id, draining)))
        .handle("cancel", ({ path }) => jobs.cancel(path.id))
    }))

export const SystemLive = HttpApiBuilder.group(Api, "system", (handlers) =>
  Effect.gen(function*() {
    const jobs = yield* Jobs
    return handlers
      .handle("healthz", () => Effect.succeed({ status: "ok" as const }))
      .handle("readyz", () =>
        Effect.flatMap(
          jobs.ready,
          (ready) =>
            ready
              ? Effect.succeed({ status: "ready" as const })
              : Effect.fail(new NotReady({ message: "the database is not migrated or does not answer" }))
        ))
  }))

/**
 * Rewrites HttpApi's decode errors of query and path parameters so their message names the field in one line
 * (`limit: must be an integer from 1 to 1000`); the issues with their paths stay.
 */
export const DecodeErrorsLive = HttpApiBuilder.middleware(Api, (app) =>
  Effect.catchAllCause(app, (cause) => {
    const error = Cause.squash(cause)
    if (!(error instanceof HttpApiError.HttpApiDecodeError)) return Effect.failCause(cause)
    const message = error.issues.map((issue) => `${fieldOf(issue.path)}: ${issue.message}`).join("; ")
    return Effect.fail(new HttpApiError.HttpApiDecodeError({ issues: error.issues, message }))
  }))
