/**
 * Domain — the harvester's vocabulary: branded ids, the job specification with its defaults, the views the API and
 * the CLI return, progress events, and the errors that cross the wire (each with its HTTP status).
 *
 * Shared by the engine (src/Jobs, src/Db) and the interface (src/Http, src/Cli). Add to it; never rename.
 */
import { HttpApiSchema } from "@effect/platform"
import { Duration, Either, Option, Schema } from "effect"

// ---------------------------------------------------------------------------------------------------------------
// Ids
// ---------------------------------------------------------------------------------------------------------------

export const JobId = Schema.String.pipe(Schema.brand("JobId"))
export type JobId = typeof JobId.Type

export const TargetId = Schema.String.pipe(Schema.brand("TargetId"))
export type TargetId = typeof TargetId.Type

// ---------------------------------------------------------------------------------------------------------------
// Option syntax shared by the API and the CLI: durations ("10s", "500ms", "10 seconds") and rates ("5/1s")
// ---------------------------------------------------------------------------------------------------------------

const DURATION_SYNTAX = /^(\d+(?:\.\d+)?)\s*(ms|millis?|milliseconds?|s|secs?|seconds?|m|mins?|minutes?|h|hours?)$/

const unitMillis = (unit: string): number => {
  if (unit === "ms" || unit.startsWith("milli")) return 1
  if (unit === "s" || unit.startsWith("sec")) return 1_000
  if (unit === "m" || unit.startsWith("min")) return 60_000
  return 3_600_000
}

/** Parses "10s", "500ms", "2m", "1h", "10 seconds"; `Left(reason)` otherwise. Zero is refused. */
export const parseDuration = (input: string): Either.Either<Duration.Duration, string> => {
  const match = DURATION_SYNTAX.exec(input.trim())
  if (match === null) {
    return Either.left(`expected a duration such as "10s", "500ms" or "10 seconds", got "${input}"`)
  }
  const millis = Number(match[1]) * unitMillis(match[2])
  return millis > 0 ? Either.right(Duration.millis(millis)) : Either.left("must be greater than zero")
}

/** A parsed per-host rate: at most `limit` request starts per `per`. */
export interface Rate {
  readonly limit: number
  readonly per: Duration.Duration
}

/** Parses "5/1s", "5/s", "100/1m", "5/1 second"; `Left(reason)` otherwise. */
export const parseRate = (input: string): Either.Either<Rate, string> => {
  const slash = input.indexOf("/")
  if (slash <= 0) return Either.left(`expected "<limit>/<interval>" such as "5/1s", got "${input}"`)
  const limitText = input.slice(0, slash).trim()
  const perText = input.slice(slash + 1).trim()
  const limit = Number(limitText)
  if (!/^\d+$/.test(limitText) || !Number.isSafeInteger(limit) || limit <= 0) {
    return Either.left(`limit must be a positive integer, got "${limitText}"`)
  }
  const per = parseDuration(/^\d/.test(perText) ? perText : `1${perText}`)
  return Either.map(per, (per) => ({ limit, per }))
}

/** A duration in the CLI's syntax ("10s", "10 seconds", "500ms"). */
export const DurationString = Schema.String.pipe(
  Schema.filter((s) => Either.match(parseDuration(s), { onLeft: (reason) => reason, onRight: () => true })),
  Schema.annotations({ identifier: "DurationString", examples: ["10s", "500ms", "10 seconds"] })
)

/** A per-host rate in the CLI's syntax: "<limit>/<interval>". */
export const RateString = Schema.String.pipe(
  Schema.filter((s) => Either.match(parseRate(s), { onLeft: (reason) => reason, onRight: () => true })),
  Schema.annotations({ identifier: "RateString", examples: ["5/1s", "100/1m"] })
)

/** An absolute http(s) URL. */
export const HttpUrl = Schema.String.pipe(
  Schema.filter((s) => {
    if (!URL.canParse(s)) return "must be an absolute URL"
    const protocol = new URL(s).protocol
    return protocol === "http:" || protocol === "https:" || `unsupported scheme "${protocol}" (http or https only)`
  }),
  Schema.annotations({ identifier: "HttpUrl" })
)

// ---------------------------------------------------------------------------------------------------------------
// Job specification
// ---------------------------------------------------------------------------------------------------------------

export const PositiveInt = Schema.Int.pipe(Schema.positive())
export const NonNegativeInt = Schema.Int.pipe(Schema.nonNegative())

export const JobDefaults = {
  concurrency: 10,
  perHostConcurrency: 4,
  rate: "10/1s",
  timeout: "10s",
  retries: 3,
  maxPages: 1000,
  maxBytes: 10 * 1024 * 1024
} as const

/** Header names whose values are never stored nor shown in clear. */
export const isSensitiveHeader = (name: string): boolean =>
  /^(authorization|proxy-authorization|cookie|set-cookie)$|token|secret|key|password|auth/i.test(name)

export const REDACTED = "<redacted>"

export const redactHeaders = (headers: Readonly<Record<string, string>>): Record<string, string> =>
  Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, isSensitiveHeader(k) ? REDACTED : v]))

export class JobOptions extends Schema.Class<JobOptions>("JobOptions")({
  /** Requests in flight for the whole job. */
  concurrency: Schema.optionalWith(PositiveInt, { default: () => JobDefaults.concurrency }),
  /** Requests in flight per host. */
  perHostConcurrency: Schema.optionalWith(PositiveInt, { default: () => JobDefaults.perHostConcurrency }),
  /** Request starts per host per interval, "5/1s". */
  rate: Schema.optionalWith(RateString, { default: () => JobDefaults.rate }),
  /** Per-request timeout (each attempt). */
  timeout: Schema.optionalWith(DurationString, { default: () => JobDefaults.timeout }),
  /** Budget of the whole job; targets not finished by then are cancelled. */
  deadline: Schema.optional(DurationString),
  /** Retries of a transient failure (so `retries + 1` attempts at most). */
  retries: Schema.optionalWith(NonNegativeInt, { default: () => JobDefaults.retries }),
  /** Pages per paginated target at most. */
  maxPages: Schema.optionalWith(PositiveInt, { default: () => JobDefaults.maxPages }),
  /** Response body size limit in bytes. */
  maxBytes: Schema.optionalWith(PositiveInt, { default: () => JobDefaults.maxBytes }),
  /** Request headers; sensitive values are stored and shown redacted. */
  headers: Schema.optionalWith(Schema.Record({ key: Schema.String, value: Schema.String }), { default: () => ({}) })
}) {}

export const TargetSpec = Schema.Struct({
  url: HttpUrl,
  /** Pagination in the CLI's syntax: "link" | "page:<param>" | "offset:<param>" | "cursor:<json-field>:<param>". */
  paginate: Schema.optional(Schema.String)
}).annotations({ identifier: "TargetSpec" })
export type TargetSpec = typeof TargetSpec.Type

export class JobSpec extends Schema.Class<JobSpec>("JobSpec")({
  targets: Schema.NonEmptyArray(TargetSpec),
  options: Schema.optionalWith(JobOptions, { default: () => new JobOptions({}) })
}) {}

// ---------------------------------------------------------------------------------------------------------------
// Views
// ---------------------------------------------------------------------------------------------------------------

/** running: targets remain; completed: every target done or failed; cancelled; deadline_exceeded. */
export const JobStatus = Schema.Literal("running", "completed", "cancelled", "deadline_exceeded")
export type JobStatus = typeof JobStatus.Type

export const isFinished = (status: JobStatus): boolean => status !== "running"

export const TargetStatus = Schema.Literal("pending", "leased", "done", "failed", "cancelled")
export type TargetStatus = typeof TargetStatus.Type

export class JobCounts extends Schema.Class<JobCounts>("JobCounts")({
  /** Targets in the job. */
  total: NonNegativeInt,
  pending: NonNegativeInt,
  inFlight: NonNegativeInt,
  done: NonNegativeInt,
  failed: NonNegativeInt,
  cancelled: NonNegativeInt,
  /** Pages stored (a paginated target stores many). */
  pages: NonNegativeInt
}) {}

export class JobRates extends Schema.Class<JobRates>("JobRates")({
  /** Stored pages per second since the job started (until it finished). */
  pagesPerSecond: Schema.Number,
  /** Estimated seconds left, null when unknown or finished. */
  etaSeconds: Schema.NullOr(Schema.Number)
}) {}

/** Failures by error tag: `{ "HttpStatusError": 3, "FetchTimeout": 1 }`. */
export const FailuresByTag = Schema.Record({ key: Schema.String, value: NonNegativeInt })

export class JobView extends Schema.Class<JobView>("JobView")({
  id: JobId,
  status: JobStatus,
  createdAt: Schema.DateTimeUtc,
  finishedAt: Schema.NullOr(Schema.DateTimeUtc),
  options: JobOptions,
  counts: JobCounts,
  rates: JobRates,
  failures: FailuresByTag
}) {}

export class JobSummary extends Schema.Class<JobSummary>("JobSummary")({
  id: JobId,
  status: JobStatus,
  createdAt: Schema.DateTimeUtc,
  finishedAt: Schema.NullOr(Schema.DateTimeUtc),
  total: NonNegativeInt,
  done: NonNegativeInt,
  failed: NonNegativeInt,
  pages: NonNegativeInt
}) {}

export class PageRecord extends Schema.Class<PageRecord>("PageRecord")({
  jobId: JobId,
  targetId: TargetId,
  url: Schema.String,
  /** Page number within its target, from 1. */
  page: PositiveInt,
  /** HTTP status, null when no response arrived. */
  status: Schema.NullOr(Schema.Int),
  /** Selected response headers (content-type, etag, last-modified, link, ...). */
  headers: Schema.Record({ key: Schema.String, value: Schema.String }),
  /** Parsed JSON, or text; null for a failure without a body. */
  body: Schema.Unknown,
  bytes: NonNegativeInt,
  durationMillis: Schema.NonNegative,
  attempts: NonNegativeInt,
  /** The error tag of a permanent failure (FetchTimeout, HttpStatusError, ...), null on success. */
  error: Schema.NullOr(Schema.String),
  errorMessage: Schema.NullOr(Schema.String),
  fetchedAt: Schema.DateTimeUtc
}) {}

export const ResultStatus = Schema.Literal("done", "failed")
export type ResultStatus = typeof ResultStatus.Type

/** Filters of `Jobs.results` / `Jobs.resultsStream`. */
export interface ResultsFilter {
  readonly status?: ResultStatus | undefined
  readonly errorTag?: string | undefined
}

/** One cursor-paged slice: `nextCursor` is null on the last page. */
export const Page = <A, I, R>(item: Schema.Schema<A, I, R>) =>
  Schema.Struct({ items: Schema.Array(item), nextCursor: Schema.NullOr(Schema.String) })

export interface Page<A> {
  readonly items: ReadonlyArray<A>
  readonly nextCursor: string | null
}

export class ProgressEvent extends Schema.Class<ProgressEvent>("ProgressEvent")({
  jobId: JobId,
  status: JobStatus,
  counts: JobCounts,
  rates: JobRates,
  failures: FailuresByTag,
  at: Schema.DateTimeUtc
}) {}

// ---------------------------------------------------------------------------------------------------------------
// Wire errors
// ---------------------------------------------------------------------------------------------------------------

export class JobNotFound extends Schema.TaggedError<JobNotFound>()(
  "JobNotFound",
  { id: Schema.String, message: Schema.String },
  HttpApiSchema.annotations({ status: 404 })
) {
  static of(id: string): JobNotFound {
    return new JobNotFound({ id, message: `job ${id} not found` })
  }
}

export class JobAlreadyFinished extends Schema.TaggedError<JobAlreadyFinished>()(
  "JobAlreadyFinished",
  { id: JobId, status: JobStatus, message: Schema.String },
  HttpApiSchema.annotations({ status: 409 })
) {
  static of(id: JobId, status: JobStatus): JobAlreadyFinished {
    return new JobAlreadyFinished({ id, status, message: `job ${id} already finished (${status})` })
  }
}

export class InvalidJobSpec extends Schema.TaggedError<InvalidJobSpec>()(
  "InvalidJobSpec",
  {
    /** Path of the offending field, e.g. "targets.2.paginate" or "options.rate". */
    field: Schema.String,
    reason: Schema.String,
    message: Schema.String
  },
  HttpApiSchema.annotations({ status: 400 })
) {
  static of(field: string, reason: string): InvalidJobSpec {
    return new InvalidJobSpec({ field, reason, message: `${field}: ${reason}` })
  }
}

export class Unauthorized extends Schema.TaggedError<Unauthorized>()(
  "Unauthorized",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 401 })
) {}

export class PayloadTooLarge extends Schema.TaggedError<PayloadTooLarge>()(
  "PayloadTooLarge",
  { limit: NonNegativeInt, message: Schema.String },
  HttpApiSchema.annotations({ status: 413 })
) {}

/** `Option` of the parsed deadline of a job's options. */
export const deadlineOf = (options: JobOptions): Option.Option<Duration.Duration> =>
  options.deadline === undefined ? Option.none() : Option.getRight(parseDuration(options.deadline))
