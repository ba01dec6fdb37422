/**
 * HttpFetcher — GETs with typed errors, retries, per-host limits and byte/redirect caps, on `@effect/platform`'s
 * `HttpClient`. Answers the tutorial's "HTTP Client with aiohttp" section (`fetch_url` / `fetch_all`).
 *
 * What it adds beyond Effect's `HttpClient`:
 * - one typed error union, `FetchError`, whose members are `Schema.TaggedError`s carrying the `url` (they cross the
 *   wire: the harvester stores the tag);
 * - retries with exponential backoff and full jitter (a `Schedule`) on transient failures only — transport errors,
 *   timeouts, 408, 429 and 5xx — honouring `Retry-After` (delta-seconds or HTTP-date) by pausing the host in the
 *   `RateLimiter` (`pauseUntil`) and sleeping until then, outside any permit;
 * - a per-attempt timeout bounded by the enclosing `Deadline` (`min(options.timeout, Deadline.remaining)`);
 * - a cap on response bytes enforced while streaming (the connection is closed past `maxBytes`) and a cap on
 *   redirects, followed by hand so that every hop passes the `guard` hook (the harvester's SSRF guard);
 * - per-host `RateLimiter` / `KeyedConcurrency` hooks (the rate slot taken inside the permit), and `fetchAll` with
 *   bounded concurrency, results in input order, and no failure cancelling another.
 *
 * Speed (PERF-NOTES: the stock `NodeHttpClient.layerUndici` pipeline costs 90–140 µs of CPU per request, 0.34× of
 * `undici.request`): `HttpFetcher.Default` runs on `layerUndici`, an `HttpClient` (`NodeHttpClient.makeUndici`) over
 * its own keep-alive undici `Agent`, destroyed with the layer. When the fetcher finds that client it bypasses the
 * generic pipeline: one `Effect.async` per attempt drives undici's `dispatch` with a small handler — status, headers,
 * the capped body and the timeout timer in one callback object; no `Readable`, no `AbortController`, no tracing span
 * or propagation per request. Interruption aborts the request and undici destroys the socket. `fetchAll` runs a pool
 * of `parallelism` worker fibers (not a fiber per URL), reads the Deadline once as an instant, keeps a plain 2xx out
 * of the failure channel, and aborts what is in flight from one interruption hook for the whole batch. Measured
 * (bench/parts/FetchAll.ts) at the CPU cost of `undici.request` + `p-limit` per request. `get` is traced
 * (`HttpFetcher.get` span) when tracing is on; `fetchAll` has one span for the batch; `prepare(options)` validates the
 * options once and returns an untraced `get(url)`, for loops over many URLs; `prepareLane(options)` adds `start(url,
 * onDone)`, which starts the first attempt from plain code when every hook answers at once (`guardNow`,
 * `tryAcquireNow`) and calls back with the result of a plain 2xx, or with the rest of the GET as an effect (for a
 * caller that keeps many requests in flight from callbacks: no fiber per request). Any other `HttpClient`
 * (`HttpFetcher.DefaultWithoutDependencies`) goes through the generic `execute` pipeline, tracer propagation off,
 * with the same semantics, minus the speed.
 */
import { HttpClient, HttpClientRequest } from "@effect/platform"
import type { HttpClientError } from "@effect/platform"
import { NodeHttpClient, Undici } from "@effect/platform-node"
import {
  Chunk,
  Clock,
  Data,
  Duration,
  Effect,
  Either,
  FiberRef,
  Layer,
  Option,
  ParseResult,
  Schedule,
  Schema,
  Stream
} from "effect"
import * as Deadline from "./Deadline.js"

// ---------------------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------------------

/**
 * The attempt (request and body) did not finish within the effective timeout; `byDeadline` when the enclosing
 * Deadline's remaining budget was the shorter bound (such a timeout is not retried: no budget is left).
 */
export class FetchTimeout extends Schema.TaggedError<FetchTimeout>()("FetchTimeout", {
  url: Schema.String,
  timeoutMillis: Schema.Number,
  byDeadline: Schema.Boolean
}) {}

/** Still 429 after the retries (or a `Retry-After` beyond `maxRetryAfter`). */
export class RateLimited extends Schema.TaggedError<RateLimited>()("RateLimited", {
  url: Schema.String,
  attempts: Schema.Number,
  retryAfterMillis: Schema.optional(Schema.Number)
}) {}

/** A non-2xx final status (after the retries when it was transient); `body` is a snippet of the response. */
export class HttpStatusError extends Schema.TaggedError<HttpStatusError>()("HttpStatusError", {
  url: Schema.String,
  status: Schema.Number,
  body: Schema.String
}) {}

/** Refused, reset, DNS, invalid URL...: `message` is the cause's message, `code` its errno code when it has one. */
export class TransportError extends Schema.TaggedError<TransportError>()("TransportError", {
  url: Schema.String,
  message: Schema.String,
  code: Schema.optional(Schema.String)
}) {}

/** Malformed JSON (`path` is "") or a schema mismatch (`path` names the offending field, e.g. "items.3.id"). */
export class DecodeError extends Schema.TaggedError<DecodeError>()("DecodeError", {
  url: Schema.String,
  path: Schema.String,
  message: Schema.String
}) {}

/** The body (or its declared Content-Length) exceeded `maxBytes`; reading stopped and the connection was closed. */
export class ResponseTooLarge extends Schema.TaggedError<ResponseTooLarge>()("ResponseTooLarge", {
  url: Schema.String,
  maxBytes: Schema.Number
}) {}

/** The `guard` refused the URL or a redirect hop, or the redirect cap was reached. */
export class RequestBlocked extends Schema.TaggedError<RequestBlocked>()("RequestBlocked", {
  url: Schema.String,
  reason: Schema.String
}) {}

export const FetchError = Schema.Union(
  FetchTimeout,
  RateLimited,
  HttpStatusError,
  TransportError,
  DecodeError,
  ResponseTooLarge,
  RequestBlocked
)
export type FetchError = typeof FetchError.Type

/** Bad options (not per URL): names the field and the reason. */
export class InvalidFetchOptions extends Data.TaggedError("InvalidFetchOptions")<{
  readonly field: string
  readonly reason: string
}> {}

// ---------------------------------------------------------------------------------------------------------------
// Options and result
// ---------------------------------------------------------------------------------------------------------------

/** What the fetcher needs from `@spindle/core/RateLimiter` (any value of that shape fits). */
export interface HostRateLimiter {
  readonly acquire: (key: string) => Effect.Effect<void>
  readonly pauseUntil: (key: string, epochMillis: number) => Effect.Effect<void>
  /** A start taken at once, or `false` (nothing taken): lets `prepareLane` start a request without a fiber. */
  readonly tryAcquireNow?: ((key: string) => boolean) | undefined
}

/** What the fetcher needs from `@spindle/core/KeyedConcurrency` (any value of that shape fits). */
export interface HostConcurrency {
  readonly withPermit: (key: string) => <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** The permits taken at once and their release, or `undefined` (nothing taken): for `prepareLane`. */
  readonly tryAcquireNow?: ((key: string) => (() => void) | undefined) | undefined
}

export type ResponseType = "json" | "text" | "bytes"

export interface FetchOptions {
  /** Retries after the first attempt, transient failures only. Default 3. */
  readonly retries?: number
  /** First backoff step (then doubling, full jitter: a uniform delay in [0, step]). Default 100 ms. */
  readonly retryBaseDelay?: Duration.DurationInput
  /** Cap of a backoff step. Default 10 s. */
  readonly retryMaxDelay?: Duration.DurationInput
  /** A `Retry-After` longer than this is not waited for: the attempt fails at once. Default 60 s. */
  readonly maxRetryAfter?: Duration.DurationInput
  /** Per attempt (request, redirects' own attempts and body), shortened by the enclosing Deadline. Default 30 s. */
  readonly timeout?: Duration.DurationInput
  /** Response body cap in bytes. Default 10 MiB. */
  readonly maxBytes?: number
  /** Redirect hops followed (0 = none: a 3xx is returned as an HttpStatusError). Default 5. */
  readonly maxRedirects?: number
  readonly headers?: Readonly<Record<string, string>>
  /** How to read the body when no schema is given. Default "json". */
  readonly responseType?: ResponseType
  /**
   * A `RateLimiter`: a slot per host (`url.host`) taken right before every attempt, inside the `concurrency` permit
   * (a start never lands outside the window it was counted in); paused by `Retry-After`.
   */
  readonly rateLimiter?: HostRateLimiter
  /** A `KeyedConcurrency`: per-host (and global) permits around every attempt (and its rate slot). */
  readonly concurrency?: HostConcurrency
  /** Called with the URL before the request and before every redirect hop (the SSRF guard plugs in here). */
  readonly guard?: (url: URL) => Effect.Effect<void, RequestBlocked>
  /**
   * The guard's answer at once when it has one: `true` when `guard` would let the URL through without waiting;
   * `false` when it cannot tell now or would refuse (then `guard` decides). Only `prepareLane` asks it.
   */
  readonly guardNow?: ((url: URL) => boolean) | undefined
}

export interface GetOptions<A, I> extends FetchOptions {
  /** Decode the JSON body with this schema (overrides `responseType`). */
  readonly schema?: Schema.Schema<A, I>
}

export interface FetchAllOptions<A, I> extends GetOptions<A, I> {
  /** Requests in flight at once. Default 50. */
  readonly parallelism?: number
}

export interface FetchResult<A> {
  readonly url: string
  readonly finalUrl: string
  readonly status: number
  readonly headers: Readonly<Record<string, string>>
  readonly body: A
  readonly bytes: number
  readonly durationMillis: number
  readonly attempts: number
}

interface Resolved {
  readonly retries: number
  readonly retryBaseDelay: Duration.Duration
  readonly retryMaxDelay: Duration.Duration
  readonly maxRetryAfterMillis: number
  readonly timeoutMillis: number
  /** `{ millis: timeoutMillis, byDeadline: false }`, allocated once. */
  readonly timeout: Timeout
  readonly maxBytes: number
  readonly maxRedirects: number
  readonly headers: Readonly<Record<string, string>> | undefined
  readonly responseType: ResponseType
  readonly rateLimiter: HostRateLimiter | undefined
  readonly concurrency: HostConcurrency | undefined
  readonly guard: ((url: URL) => Effect.Effect<void, RequestBlocked>) | undefined
  readonly guardNow: ((url: URL) => boolean) | undefined
  readonly decode: ((input: unknown) => Either.Either<unknown, ParseResult.ParseError>) | undefined
}

const invalid = (field: string, reason: string) => Either.left(new InvalidFetchOptions({ field, reason }))

const isCount = (n: number) => Number.isInteger(n) && n >= 0

const resolveOptions = <A, I>(options: GetOptions<A, I> | undefined): Either.Either<Resolved, InvalidFetchOptions> => {
  const o = options ?? {}
  const retries = o.retries ?? 3
  if (!isCount(retries)) return invalid("retries", `must be a non-negative integer, got ${retries}`)
  const maxBytes = o.maxBytes ?? 10 * 1024 * 1024
  if (!Number.isInteger(maxBytes) || maxBytes <= 0) {
    return invalid("maxBytes", `must be a positive integer, got ${maxBytes}`)
  }
  const maxRedirects = o.maxRedirects ?? 5
  if (!isCount(maxRedirects)) return invalid("maxRedirects", `must be a non-negative integer, got ${maxRedirects}`)
  const durations = {
    timeout: o.timeout ?? "30 seconds",
    retryBaseDelay: o.retryBaseDelay ?? "100 millis",
    retryMaxDelay: o.retryMaxDelay ?? "10 seconds",
    maxRetryAfter: o.maxRetryAfter ?? "60 seconds"
  }
  const decoded: Record<string, Duration.Duration> = {}
  for (const [field, input] of Object.entries(durations)) {
    const duration = Duration.decodeUnknown(input)
    if (Option.isNone(duration) || !Duration.isFinite(duration.value)) {
      return invalid(field, `must be a finite duration, got ${String(input)}`)
    }
    decoded[field] = duration.value
  }
  const timeoutMillis = Duration.toMillis(decoded.timeout!)
  if (timeoutMillis <= 0) return invalid("timeout", "must be positive")
  const schema = o.schema
  return Either.right({
    retries,
    retryBaseDelay: decoded.retryBaseDelay!,
    retryMaxDelay: decoded.retryMaxDelay!,
    maxRetryAfterMillis: Duration.toMillis(decoded.maxRetryAfter!),
    timeoutMillis,
    timeout: { millis: timeoutMillis, byDeadline: false },
    maxBytes,
    maxRedirects,
    headers: o.headers,
    responseType: o.responseType ?? "json",
    rateLimiter: o.rateLimiter,
    concurrency: o.concurrency,
    guard: o.guard,
    guardNow: o.guardNow,
    decode: schema === undefined ? undefined : Schema.decodeUnknownEither(schema, { errors: "first" })
  })
}

const noOptions = {}
const resolvedByOptions = new WeakMap<object, Resolved>()

/** `resolveOptions`, remembered per options object (a valid one: a bad one fails every time). */
const resolveCached = <A, I>(options: GetOptions<A, I> | undefined): Either.Either<Resolved, InvalidFetchOptions> => {
  const key = options ?? noOptions
  const known = resolvedByOptions.get(key)
  if (known !== undefined) return Either.right(known)
  const resolved = resolveOptions(options)
  if (Either.isRight(resolved)) resolvedByOptions.set(key, resolved.right)
  return resolved
}

// ---------------------------------------------------------------------------------------------------------------
// One attempt: the raw exchange
// ---------------------------------------------------------------------------------------------------------------

interface RawResponse {
  readonly status: number
  readonly headers: Record<string, string>
  readonly body: Buffer
}

/** A transient status: worth another attempt, maybe after `Retry-After`. */
class TransientStatus extends Data.TaggedError("TransientStatus")<{
  readonly url: string
  readonly status: number
  readonly body: string
  readonly retryAtMillis: number | undefined
}> {}

type AttemptError = TransientStatus | FetchError

const isTransient = (error: AttemptError): boolean =>
  error._tag === "TransientStatus" || error._tag === "TransportError" ||
  (error._tag === "FetchTimeout" && !error.byDeadline)

const isTransientStatus = (status: number) => status === 408 || status === 429 || status >= 500

const errorCode = (cause: unknown): string | undefined => {
  if (typeof cause === "object" && cause !== null && "code" in cause && typeof cause.code === "string") {
    return cause.code
  }
  return undefined
}

const errorMessage = (cause: unknown): string => {
  if (cause instanceof Error) {
    const inner = errorMessage(cause.cause)
    return cause.message.length > 0 ? cause.message : inner
  }
  return cause === undefined ? "unknown transport failure" : String(cause)
}

const transportError = (url: string, cause: unknown) => {
  const code = errorCode(cause) ?? errorCode(cause instanceof Error ? cause.cause : undefined)
  return new TransportError(
    code === undefined ? { url, message: errorMessage(cause) } : { url, message: errorMessage(cause), code }
  )
}

interface Timeout {
  readonly millis: number
  readonly byDeadline: boolean
}

type ExchangeError = FetchTimeout | TransportError | ResponseTooLarge

/** How one exchange ended: a response, or `error` set. Never a failed effect (the fast path avoids that cost). */
interface Outcome extends RawResponse {
  readonly error: ExchangeError | undefined
}

/** Starts one exchange; `inflight`, when given, replaces the per-request interruption hook (see `fetchAll`). */
type Exchange = (url: URL, o: Resolved, timeout: Timeout, inflight?: Set<Cancellable>) => Effect.Effect<Outcome>

/** Starts one exchange now, outside any fiber; `onOutcome` runs once when it ends, never after `cancel`. */
type StartExchange = (url: URL, o: Resolved, timeout: Timeout, onOutcome: (outcome: Outcome) => void) => Cancellable

/** A request in flight that can be aborted (its connection closed). */
export interface Cancellable {
  readonly cancel: () => void
}

const emptyBody = Buffer.alloc(0)

/**
 * A legacy-API undici dispatch handler collecting status, headers and a capped body, with the attempt's timer;
 * it is also the `Outcome`. It resumes the `Effect.async` exactly once; `cancel` (interruption) and the timer abort
 * the request, which makes undici destroy the socket.
 */
class ExchangeHandler implements Undici.Dispatcher.DispatchHandler, Outcome, Cancellable {
  status = 0
  headers: Record<string, string> = {}
  body: Buffer = emptyBody
  error: ExchangeError | undefined = undefined
  private abortRequest: ((error?: Error) => void) | undefined = undefined
  private done = false
  private chunks: Array<Buffer> | undefined = undefined
  private bytes = 0
  private timer: ReturnType<typeof setTimeout> | undefined

  constructor(
    private readonly url: string,
    private readonly maxBytes: number,
    private readonly timeout: Timeout,
    private readonly resume: (effect: Effect.Effect<Outcome>) => void,
    private readonly inflight: Set<Cancellable> | undefined
  ) {
    this.timer = setTimeout(this.onTimeout, timeout.millis)
    inflight?.add(this)
  }

  private readonly onTimeout = () =>
    this.fail(
      new FetchTimeout({ url: this.url, timeoutMillis: this.timeout.millis, byDeadline: this.timeout.byDeadline })
    )

  private finish(): boolean {
    if (this.done) return false
    this.done = true
    clearTimeout(this.timer)
    this.inflight?.delete(this)
    return true
  }

  /** Ends the attempt with `error` and aborts the request (closing its connection). */
  fail(error: ExchangeError) {
    if (!this.finish()) return
    this.abortRequest?.()
    this.error = error
    this.resume(Effect.succeed(this))
  }

  cancel() {
    if (this.finish()) this.abortRequest?.()
  }

  onConnect(abort: (error?: Error) => void) {
    if (this.done) return abort()
    this.abortRequest = abort
  }

  onHeaders(status: number, rawHeaders: Array<Buffer>): boolean {
    if (this.done || status < 200) return true
    this.status = status
    const headers = this.headers
    for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
      const name = Undici.util.headerNameToString(rawHeaders[i]!)
      const value = rawHeaders[i + 1]!.toString("latin1")
      const previous = headers[name]
      headers[name] = previous === undefined ? value : `${previous}, ${value}`
    }
    const declared = headers["content-length"]
    if (declared !== undefined && Number(declared) > this.maxBytes) {
      this.fail(new ResponseTooLarge({ url: this.url, maxBytes: this.maxBytes }))
    }
    return true
  }

  onData(chunk: Buffer): boolean {
    if (this.done) return true
    this.bytes += chunk.length
    if (this.bytes > this.maxBytes) {
      this.fail(new ResponseTooLarge({ url: this.url, maxBytes: this.maxBytes }))
    } else if (this.body === emptyBody) {
      this.body = chunk
    } else {
      ;(this.chunks ??= [this.body]).push(chunk)
    }
    return true
  }

  onComplete() {
    if (!this.finish()) return
    if (this.chunks !== undefined) this.body = Buffer.concat(this.chunks, this.bytes)
    this.resume(Effect.succeed(this))
  }

  onError(error: Error) {
    this.fail(transportError(this.url, error))
  }
}

/** Hands the GET to undici; a dispatch that throws fails the handler (a `TransportError`). */
const dispatch = (dispatcher: Undici.Dispatcher, url: URL, o: Resolved, handler: ExchangeHandler) => {
  try {
    dispatcher.dispatch(
      { origin: url.origin, path: url.pathname + url.search, method: "GET", headers: o.headers ?? null },
      handler
    )
  } catch (cause) {
    handler.fail(transportError(url.href, cause))
  }
}

const undiciExchange = (dispatcher: Undici.Dispatcher): Exchange => (url, o, timeout, inflight) =>
  Effect.async<Outcome>((resume) => {
    const handler = new ExchangeHandler(url.href, o.maxBytes, timeout, resume, inflight)
    dispatch(dispatcher, url, o, handler)
    return inflight === undefined ? Effect.sync(() => handler.cancel()) : undefined
  })

const undiciStart = (dispatcher: Undici.Dispatcher): StartExchange => (url, o, timeout, onOutcome) => {
  const handler: ExchangeHandler = new ExchangeHandler(
    url.href,
    o.maxBytes,
    timeout,
    () => onOutcome(handler),
    undefined
  )
  dispatch(dispatcher, url, o, handler)
  return handler
}

const fromClientError = (url: string, error: HttpClientError.HttpClientError) =>
  transportError(url, error.cause ?? error)

/** Any `HttpClient`: `execute`, then the body streamed with the byte cap, all under the attempt's timeout. */
const clientExchange = (client: HttpClient.HttpClient): Exchange => (url, o, timeout) =>
  Effect.scoped(
    Effect.gen(function*() {
      const response = yield* client.execute(HttpClientRequest.get(url, { headers: o.headers ?? {} })).pipe(
        Effect.mapError((error) => fromClientError(url.href, error))
      )
      const declared = response.headers["content-length"]
      if (declared !== undefined && Number(declared) > o.maxBytes) {
        return yield* new ResponseTooLarge({ url: url.href, maxBytes: o.maxBytes })
      }
      const chunks = yield* response.stream.pipe(
        Stream.mapError((error) => fromClientError(url.href, error)),
        Stream.runFoldEffect(
          { chunks: Chunk.empty<Uint8Array>(), bytes: 0 },
          (acc, chunk): Effect.Effect<{ chunks: Chunk.Chunk<Uint8Array>; bytes: number }, ResponseTooLarge> =>
            acc.bytes + chunk.length > o.maxBytes
              ? Effect.fail(new ResponseTooLarge({ url: url.href, maxBytes: o.maxBytes }))
              : Effect.succeed({ chunks: Chunk.append(acc.chunks, chunk), bytes: acc.bytes + chunk.length })
        )
      )
      return {
        status: response.status,
        headers: { ...response.headers },
        body: Buffer.concat(Chunk.toReadonlyArray(chunks.chunks), chunks.bytes)
      } satisfies RawResponse
    })
  ).pipe(
    Effect.timeoutFail({
      duration: Duration.millis(timeout.millis),
      onTimeout: () =>
        new FetchTimeout({ url: url.href, timeoutMillis: timeout.millis, byDeadline: timeout.byDeadline })
    }),
    Effect.match({
      onFailure: (error): Outcome => ({ status: 0, headers: {}, body: emptyBody, error }),
      onSuccess: (raw): Outcome => ({ ...raw, error: undefined })
    })
  )

// ---------------------------------------------------------------------------------------------------------------
// Status, redirects, decoding, retries
// ---------------------------------------------------------------------------------------------------------------

const snippet = (body: Buffer) => body.toString("utf8", 0, Math.min(body.length, 512))

/** `Retry-After` as an absolute time: delta-seconds or an HTTP-date (RFC 9110 §10.2.3). */
export const parseRetryAfter = (value: string | undefined, nowMillis: number): number | undefined => {
  if (value === undefined) return undefined
  const trimmed = value.trim()
  if (/^\d+$/.test(trimmed)) return nowMillis + Number(trimmed) * 1000
  const date = Date.parse(trimmed)
  return Number.isNaN(date) ? undefined : date
}

const isRedirect = (status: number) =>
  status === 301 || status === 302 || status === 303 || status === 307 || status === 308

const decodeBody = (url: string, raw: RawResponse, o: Resolved): Either.Either<unknown, DecodeError> => {
  if (o.decode === undefined && o.responseType === "bytes") return Either.right(raw.body)
  const text = raw.body.toString()
  if (o.decode === undefined && o.responseType === "text") return Either.right(text)
  let json: unknown
  try {
    json = text.length === 0 ? null : JSON.parse(text)
  } catch (cause) {
    return Either.left(new DecodeError({ url, path: "", message: `malformed JSON: ${errorMessage(cause)}` }))
  }
  if (o.decode === undefined) return Either.right(json)
  const result = o.decode(json)
  if (Either.isRight(result)) return Either.right(result.right)
  const issue = ParseResult.ArrayFormatter.formatErrorSync(result.left)[0]
  return Either.left(
    new DecodeError({
      url,
      path: issue === undefined ? "" : issue.path.map(String).join("."),
      message: issue?.message ?? result.left.message
    })
  )
}

const retryDelays = (o: Resolved) =>
  Schedule.exponential(o.retryBaseDelay, 2).pipe(
    Schedule.modifyDelay((_, delay) => Duration.min(delay, o.retryMaxDelay)),
    Schedule.jitteredWith({ min: 0, max: 1 }),
    Schedule.intersect(Schedule.recurs(o.retries))
  )

const finalError = (error: AttemptError, attempts: number): FetchError => {
  if (error._tag !== "TransientStatus") return error
  if (error.status === 429) {
    return new RateLimited(
      error.retryAtMillis === undefined
        ? { url: error.url, attempts }
        : { url: error.url, attempts, retryAfterMillis: Math.max(0, error.retryAtMillis - Date.now()) }
    )
  }
  return new HttpStatusError({ url: error.url, status: error.status, body: error.body })
}

/** The key every per-host limit of a request is held under: the URL's host with its port. */
export const hostOf = (url: URL): string => url.host

const parseUrl = (input: string): Either.Either<URL, TransportError> => {
  try {
    const url = new URL(input)
    return url.protocol === "http:" || url.protocol === "https:"
      ? Either.right(url)
      : Either.left(new TransportError({ url: input, message: `unsupported protocol ${url.protocol}` }))
  } catch {
    return Either.left(new TransportError({ url: input, message: `invalid URL: ${input}` }))
  }
}

const hasHooks = (o: Resolved) => o.guard !== undefined || o.rateLimiter !== undefined || o.concurrency !== undefined

/** The attempt's timeout: the option, or the Deadline's remaining budget when that is shorter. */
const timeoutWithin = (budgetMillis: number, o: Resolved): Timeout =>
  budgetMillis < o.timeoutMillis ? { millis: Math.max(1, budgetMillis), byDeadline: true } : o.timeout

const timeoutFor = (remaining: Option.Option<Duration.Duration>, o: Resolved): Timeout =>
  Option.isSome(remaining) ? timeoutWithin(Duration.toMillis(remaining.value), o) : o.timeout

const result = <A>(
  input: string,
  started: number,
  attempts: number,
  finalUrl: URL,
  raw: RawResponse,
  body: unknown
) => {
  const href = finalUrl.href
  return {
    url: input,
    finalUrl: href === input ? input : href,
    status: raw.status,
    headers: raw.headers,
    body: body as A,
    bytes: raw.body.length,
    durationMillis: Date.now() - started,
    attempts
  } satisfies FetchResult<A>
}

const complete = <A>(
  input: string,
  started: number,
  attempts: number,
  finalUrl: URL,
  raw: RawResponse,
  o: Resolved
): Effect.Effect<FetchResult<A>, FetchError> => {
  const body = decodeBody(finalUrl.href, raw, o)
  return Either.isLeft(body)
    ? Effect.fail(body.left)
    : Effect.succeed(result<A>(input, started, attempts, finalUrl, raw, body.right))
}

type Attempt = Effect.Effect<readonly [URL, RawResponse], AttemptError>

const outcomeToEffect = (outcome: Outcome): Effect.Effect<RawResponse, ExchangeError> =>
  outcome.error === undefined ? Effect.succeed(outcome) : Effect.fail(outcome.error)

/** How a lane's request ended: the result of a plain 2xx, or the rest of the GET (retries, redirects...) to run. */
export type LaneOutcome<A> =
  | { readonly _tag: "Done"; readonly result: FetchResult<A> }
  | { readonly _tag: "Continue"; readonly effect: Effect.Effect<FetchResult<A>, FetchError> }

/** See `HttpFetcher.prepareLane`. */
export interface Lane<A> {
  /** The GET as an effect: the same as `prepare`'s function. */
  readonly get: (url: string) => Effect.Effect<FetchResult<A>, FetchError>
  /**
   * Starts the GET's first attempt now, from plain code, when every hook answers at once: the guard (`guardNow`),
   * the concurrency permits and the rate slot (`tryAcquireNow`), taken in that order as `get` takes them. `onDone`
   * then runs once, from a callback: `Done` for a plain 2xx; `Continue` with the rest of the GET as an effect
   * (retries with their backoff, redirects, the final error), which the caller runs. Returns the request (`cancel`
   * aborts it, gives its permits back, and `onDone` never runs), or `undefined` when it could not start at once,
   * having taken nothing: the caller runs `get(url)`. `deadlineAt` (epoch ms) bounds the timeout like a `Deadline`.
   */
  readonly start: (
    url: string,
    onDone: (outcome: LaneOutcome<A>) => void,
    deadlineAt?: number
  ) => Cancellable | undefined
}

const makeGet = (exchange: Exchange, startExchange: StartExchange | undefined) => {
  /** One hop of an attempt: guard, per-host limits, the exchange, then the response classified. */
  const hop = (current: URL, hops: number, o: Resolved, timeout: Timeout): Attempt => {
    const host = hostOf(current)
    let request: Effect.Effect<RawResponse, ExchangeError | RequestBlocked> = Effect.flatMap(
      exchange(current, o, timeout),
      outcomeToEffect
    )
    // The rate slot is taken inside the concurrency permit, right before the request: taken before, a start that
    // then waited for a permit could land in a later window, next to that window's own starts, and exceed the rate.
    if (o.rateLimiter !== undefined) request = Effect.zipRight(o.rateLimiter.acquire(host), request)
    if (o.concurrency !== undefined) request = o.concurrency.withPermit(host)(request)
    if (o.guard !== undefined) request = Effect.zipRight(o.guard(current), request)
    return Effect.flatMap(request, (raw) => classify(current, raw, hops, o, timeout))
  }

  /** A response: success, a redirect to follow (its hop guarded too), or an `AttemptError`. */
  const classify = (current: URL, raw: RawResponse, hops: number, o: Resolved, timeout: Timeout): Attempt => {
    const status = raw.status
    if (status >= 200 && status < 300) return Effect.succeed([current, raw])
    const location = raw.headers["location"]
    if (isRedirect(status) && location !== undefined && o.maxRedirects > 0) {
      if (hops >= o.maxRedirects) {
        return Effect.fail(new RequestBlocked({ url: current.href, reason: `more than ${o.maxRedirects} redirects` }))
      }
      const next = Either.try(() => new URL(location, current))
      if (Either.isLeft(next) || (next.right.protocol !== "http:" && next.right.protocol !== "https:")) {
        return Effect.fail(new RequestBlocked({ url: current.href, reason: `invalid redirect location ${location}` }))
      }
      return hop(next.right, hops + 1, o, timeout)
    }
    if (isTransientStatus(status)) {
      return Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.fail(
          new TransientStatus({
            url: current.href,
            status,
            body: snippet(raw.body),
            retryAtMillis: parseRetryAfter(raw.headers["retry-after"], now)
          })
        ))
    }
    return Effect.fail(new HttpStatusError({ url: current.href, status, body: snippet(raw.body) }))
  }

  /**
   * Waits out a `Retry-After`: pauses the host in the limiter (every request to it waits), then sleeps here too, so
   * that the retry does not wait for the pause inside a concurrency permit that other requests could use.
   */
  const waitRetryAfter = (url: URL, error: AttemptError, o: Resolved): Effect.Effect<boolean> => {
    if (error._tag !== "TransientStatus" || error.retryAtMillis === undefined) return Effect.succeed(true)
    const retryAt = error.retryAtMillis
    return Effect.flatMap(Clock.currentTimeMillis, (now) => {
      const wait = retryAt - now
      if (wait > o.maxRetryAfterMillis) return Effect.succeed(false)
      if (wait <= 0) return Effect.succeed(true)
      const sleep = Effect.as(Effect.sleep(Duration.millis(wait)), true)
      return o.rateLimiter !== undefined
        ? Effect.zipRight(o.rateLimiter.pauseUntil(hostOf(url), retryAt), sleep)
        : sleep
    })
  }

  /** The retry loop, driven by the `Schedule` (entered only after a first transient failure). */
  const retryAfterFailure = (url: URL, again: Attempt, first: AttemptError, o: Resolved): Attempt =>
    Effect.flatMap(Schedule.driver(retryDelays(o)), (driver) => {
      const loop = (error: AttemptError): Attempt =>
        Effect.flatMap(waitRetryAfter(url, error, o), (proceed) =>
          proceed
            ? Effect.matchEffect(driver.next(error), {
              onFailure: () => Effect.fail(error),
              onSuccess: () => Effect.catchAll(again, (next) => isTransient(next) ? loop(next) : Effect.fail(next))
            })
            : Effect.fail(error))
      return loop(first)
    })

  /** After a first attempt that was not a plain 2xx: retries, then the result or the final error. */
  const settle = <A>(input: string, started: number, url: URL, o: Resolved, first: Attempt) => {
    let attempts = 1
    const again: Attempt = Effect.suspend(() => {
      attempts++
      return Effect.flatMap(Deadline.remaining, (remaining) => hop(url, 0, o, timeoutFor(remaining, o)))
    })
    const withRetries = o.retries === 0
      ? first
      : Effect.catchAll(
        first,
        (error) => isTransient(error) ? retryAfterFailure(url, again, error, o) : Effect.fail(error)
      )
    return Effect.flatMap(
      Effect.mapError(withRetries, (error) => finalError(error, attempts)),
      (done) => complete<A>(input, started, attempts, done[0], done[1], o)
    )
  }

  /**
   * One GET with its retries. The common case — no hooks, a 2xx at once — is one `Effect.async` and one `flatMap`
   * (no closures named per call, no retry driver); everything else goes through `settle`.
   */
  const run = <A>(input: string, o: Resolved, timeout: Timeout): Effect.Effect<FetchResult<A>, FetchError> => {
    const parsed = parseUrl(input)
    if (Either.isLeft(parsed)) return Effect.fail(parsed.left)
    const url = parsed.right
    const started = Date.now()
    if (hasHooks(o)) {
      return Effect.matchEffect(hop(url, 0, o, timeout), {
        onFailure: (error) => settle<A>(input, started, url, o, Effect.fail(error)),
        onSuccess: (done) => complete<A>(input, started, 1, done[0], done[1], o)
      })
    }
    return Effect.flatMap(exchange(url, o, timeout), (outcome) =>
      outcome.error !== undefined
        ? settle<A>(input, started, url, o, Effect.fail(outcome.error))
        : outcome.status >= 200 && outcome.status < 300
        ? complete<A>(input, started, 1, url, outcome, o)
        : settle<A>(input, started, url, o, classify(url, outcome, 0, o, timeout)))
  }

  /**
   * `run` as an `Either`, for `fetchAll`: the same steps, but the plain 2xx case never goes through the failure
   * channel, and interruption is handled by the caller's `inflight` registry instead of a hook per request.
   */
  const runEither = <A>(
    input: string,
    o: Resolved,
    timeout: Timeout,
    inflight: Set<Cancellable>
  ): Effect.Effect<Either.Either<FetchResult<A>, FetchError>> => {
    if (hasHooks(o)) return Effect.either(run<A>(input, o, timeout))
    const parsed = parseUrl(input)
    if (Either.isLeft(parsed)) return Effect.succeed(Either.left(parsed.left))
    const url = parsed.right
    const started = Date.now()
    return Effect.flatMap(exchange(url, o, timeout, inflight), (outcome): Effect.Effect<
      Either.Either<FetchResult<A>, FetchError>
    > => {
      if (outcome.error === undefined && outcome.status >= 200 && outcome.status < 300) {
        const body = decodeBody(url.href, outcome, o)
        return Effect.succeed(
          Either.isLeft(body)
            ? Either.left(body.left)
            : Either.right(result<A>(input, started, 1, url, outcome, body.right))
        )
      }
      return Effect.either(
        settle<A>(
          input,
          started,
          url,
          o,
          outcome.error !== undefined ? Effect.fail(outcome.error) : classify(url, outcome, 0, o, timeout)
        )
      )
    })
  }

  /** One GET, its timeout bounded by the Deadline in force now. */
  const fetchOne = <A>(input: string, o: Resolved): Effect.Effect<FetchResult<A>, FetchError> =>
    Effect.flatMap(Deadline.remaining, (remaining) => run<A>(input, o, timeoutFor(remaining, o)))

  /** `Lane.start` over resolved options. */
  const start = <A>(
    input: string,
    o: Resolved,
    onDone: (outcome: LaneOutcome<A>) => void,
    deadlineAt: number | undefined
  ): Cancellable | undefined => {
    if (startExchange === undefined) return undefined
    const parsed = parseUrl(input)
    if (Either.isLeft(parsed)) return undefined
    const url = parsed.right
    if (o.guard !== undefined && (o.guardNow === undefined || !o.guardNow(url))) return undefined
    const host = hostOf(url)
    let release: (() => void) | undefined
    if (o.concurrency !== undefined) {
      release = o.concurrency.tryAcquireNow?.(host)
      if (release === undefined) return undefined
    }
    if (o.rateLimiter !== undefined && o.rateLimiter.tryAcquireNow?.(host) !== true) {
      release?.()
      return undefined
    }
    const giveBack = () => {
      const permits = release
      release = undefined
      permits?.()
    }
    const started = Date.now()
    const timeout = deadlineAt === undefined ? o.timeout : timeoutWithin(deadlineAt - started, o)
    const request = startExchange(url, o, timeout, (outcome) => {
      giveBack()
      if (outcome.error === undefined && outcome.status >= 200 && outcome.status < 300) {
        const body = decodeBody(url.href, outcome, o)
        return onDone(
          Either.isLeft(body)
            ? { _tag: "Continue", effect: Effect.fail(body.left) }
            : { _tag: "Done", result: result<A>(input, started, 1, url, outcome, body.right) }
        )
      }
      const first: Attempt = outcome.error !== undefined
        ? Effect.fail(outcome.error)
        : classify(url, outcome, 0, o, timeout)
      onDone({ _tag: "Continue", effect: settle<A>(input, started, url, o, first) })
    })
    return {
      cancel: () => {
        request.cancel()
        giveBack()
      }
    }
  }

  return { fetchOne, runEither, start } as const
}

// ---------------------------------------------------------------------------------------------------------------
// Layers and the service
// ---------------------------------------------------------------------------------------------------------------

/** Clients whose dispatcher the fetcher may drive directly (the fast path). */
const fastClients = new WeakMap<HttpClient.HttpClient, Undici.Dispatcher>()

/**
 * An `HttpClient` over a keep-alive undici `Agent` that lives as long as the layer (destroyed on release). The
 * fetcher recognises it and drives its dispatcher directly.
 */
export const layerUndiciWith = (options?: Undici.Agent.Options): Layer.Layer<HttpClient.HttpClient> =>
  Layer.scoped(
    HttpClient.HttpClient,
    Effect.map(
      Effect.acquireRelease(
        Effect.sync(() => new Undici.Agent({ keepAliveTimeout: 10_000, ...options })),
        (agent) => Effect.promise(() => agent.destroy())
      ),
      (agent) => {
        const client = NodeHttpClient.makeUndici(agent)
        fastClients.set(client, agent)
        return client
      }
    )
  )

export const layerUndici: Layer.Layer<HttpClient.HttpClient> = layerUndiciWith()

export class HttpFetcher extends Effect.Service<HttpFetcher>()("spindle/HttpFetcher", {
  effect: Effect.gen(function*() {
    const client = yield* HttpClient.HttpClient
    const dispatcher = fastClients.get(client)
    const { fetchOne, runEither, start } = makeGet(
      dispatcher === undefined
        ? clientExchange(client.pipe(HttpClient.withTracerPropagation(false)))
        : undiciExchange(dispatcher),
      dispatcher === undefined ? undefined : undiciStart(dispatcher)
    )

    const tracedGet = Effect.fn("HttpFetcher.get")(function*<A = unknown, I = unknown>(
      url: string,
      options?: GetOptions<A, I>
    ) {
      const o = yield* resolveCached(options)
      return yield* fetchOne<A>(url, o)
    })

    /**
     * One GET: the body decoded by `options.schema`, else per `options.responseType` (JSON by default). The options
     * are validated once per options object (they are read-only): a caller passing the same object every time pays
     * for the validation once. Traced (`HttpFetcher.get`) unless tracing is off (`Effect.withTracerEnabled(false)`):
     * then no span, nor the call-site capture that comes with it (about 25 µs of CPU per call).
     */
    const get = <A = unknown, I = unknown>(
      url: string,
      options?: GetOptions<A, I>
    ): Effect.Effect<FetchResult<A>, FetchError | InvalidFetchOptions> =>
      Effect.withFiberRuntime((fiber) => {
        if (fiber.getFiberRef(FiberRef.currentTracerEnabled)) return tracedGet<A, I>(url, options)
        const o = resolveCached(options)
        return Either.isLeft(o) ? Effect.fail(o.left) : fetchOne<A>(url, o.right)
      })

    /**
     * `get` with its options validated once, for a loop fetching many URLs with the same options: the function it
     * returns has no per-call validation and no span of its own (like `fetchAll`: the caller's span covers it).
     */
    const prepare = Effect.fn("HttpFetcher.prepare")(function*<A = unknown, I = unknown>(options?: GetOptions<A, I>) {
      const o = yield* resolveCached(options)
      return (url: string): Effect.Effect<FetchResult<A>, FetchError> => fetchOne<A>(url, o)
    })

    /**
     * `prepare`, plus a callback lane (`Lane.start`) for a loop that keeps many requests in flight from plain code:
     * a request that needs no waiting and gets a plain 2xx costs no fiber, no effect and no permit round trip (the
     * fiber machinery of a GET, ~30 µs of CPU, is more than the request's own; bench/results/harvester.md). Anything
     * else goes on as an effect, with the same semantics as `get`. Only the undici client of `layerUndici` has the
     * lane; with another client `start` always answers `undefined`.
     */
    const prepareLane = Effect.fn("HttpFetcher.prepareLane")(function*<A = unknown, I = unknown>(
      options?: GetOptions<A, I>
    ) {
      const o = yield* resolveCached(options)
      const lane: Lane<A> = {
        get: (url) => fetchOne<A>(url, o),
        start: (url, onDone, deadlineAt) => start<A>(url, o, onDone, deadlineAt)
      }
      return lane
    })

    /**
     * GETs every URL with at most `parallelism` (default 50) in flight; one `Either` per URL in input order. A
     * failure cancels nothing; only bad options fail the whole call. No tracing span per request.
     */
    const fetchAll = Effect.fn("HttpFetcher.fetchAll")(function*<A = unknown, I = unknown>(
      urls: Iterable<string>,
      options?: FetchAllOptions<A, I>
    ) {
      const o = yield* resolveOptions(options)
      const parallelism = options?.parallelism ?? 50
      if (!Number.isInteger(parallelism) || parallelism <= 0) {
        return yield* new InvalidFetchOptions({
          field: "parallelism",
          reason: `must be a positive integer, got ${parallelism}`
        })
      }
      // The Deadline in force does not change while this runs: read it once, as an instant.
      const clock = yield* Effect.clock
      const remaining = yield* Deadline.remaining
      const deadlineAt = Option.isSome(remaining)
        ? clock.unsafeCurrentTimeMillis() + Duration.toMillis(remaining.value)
        : undefined
      // A pool of `parallelism` worker fibers pulling indices, rather than `Effect.forEach` (a fiber per URL).
      const inputs = Array.from(urls)
      const results = new Array<Either.Either<FetchResult<A>, FetchError>>(inputs.length)
      const inflight = new Set<Cancellable>()
      let nextIndex = 0
      const worker = Effect.suspend(() => {
        let index = 0
        return Effect.whileLoop({
          while: () => nextIndex < inputs.length,
          body: () => {
            index = nextIndex++
            const timeout = deadlineAt === undefined
              ? o.timeout
              : timeoutWithin(deadlineAt - clock.unsafeCurrentTimeMillis(), o)
            return runEither<A>(inputs[index]!, o, timeout, inflight)
          },
          step: (result) => {
            results[index] = result
          }
        })
      })
      // Interrupted (by the caller, a Deadline...): abort every request still in flight, closing its connection.
      yield* Effect.all(Array.from({ length: Math.min(parallelism, inputs.length) }, () => worker), {
        concurrency: "unbounded",
        discard: true
      }).pipe(Effect.onInterrupt(() => Effect.sync(() => inflight.forEach((request) => request.cancel()))))
      return results
    })

    return { get, prepare, prepareLane, fetchAll } as const
  }),
  dependencies: [layerUndici]
}) {}
