/**
 * Paginate — lazy `Stream`s over paginated HTTP APIs: page numbers (`?page=N`), offset/limit, a cursor field in the
 * JSON body, and RFC 8288 `Link: <...>; rel="next"` headers (GitHub style). Answers the tutorial's "Async Iterator"
 * section (`AsyncPaginator`): `async for page in paginator` is `Stream.runForEach(Paginate.stream(...), ...)`.
 *
 * What it adds beyond Effect: the stream is `Stream.unfoldEffect` (pull-driven, so taking 2 pages fetches exactly
 * 2) plus the pagination rules — the four strategies, the end of the data (an empty page, no `next` link, a null
 * cursor, a short offset page), a proper Link-header parser (several links, quoted parameters, `rel="next last"`,
 * relative references resolved against the page's URL), and guards with typed errors: a cursor or next URL seen
 * twice (`PaginationLoop`), a page-count cap (`MaxPagesExceeded` — an error rather than a silent stop, because a
 * truncated crawl must not look complete; use `Stream.take` to want fewer pages), malformed Link headers
 * (`MalformedLinkHeader`), and the CLI syntax parser `parseStrategy` (`InvalidPaginateSpec`).
 */
import { Data, Effect, Either, Option, Schema, Stream } from "effect"

// ---------------------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------------------

/** The same next URL or cursor came back twice: the API would make us loop forever. */
export class PaginationLoop extends Schema.TaggedError<PaginationLoop>()("PaginationLoop", {
  url: Schema.String,
  repeated: Schema.String
}) {}

/** A page beyond `maxPages` was about to be fetched (it was not). */
export class MaxPagesExceeded extends Schema.TaggedError<MaxPagesExceeded>()("MaxPagesExceeded", {
  url: Schema.String,
  maxPages: Schema.Number
}) {}

/** A `Link` header that is not RFC 8288 syntax; `position` is the offset where parsing failed. */
export class MalformedLinkHeader extends Schema.TaggedError<MalformedLinkHeader>()("MalformedLinkHeader", {
  header: Schema.String,
  position: Schema.Number,
  reason: Schema.String
}) {}

/** A `--paginate` spec that does not parse; `reason` names the problem. */
export class InvalidPaginateSpec extends Schema.TaggedError<InvalidPaginateSpec>()("InvalidPaginateSpec", {
  spec: Schema.String,
  reason: Schema.String
}) {}

/** Bad `stream` options (not a page problem): names the field and the reason. */
export class InvalidPaginateOptions extends Data.TaggedError("InvalidPaginateOptions")<{
  readonly field: string
  readonly reason: string
}> {}

export type PaginateError = PaginationLoop | MaxPagesExceeded | MalformedLinkHeader

// ---------------------------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------------------------

export type Strategy = Data.TaggedEnum<{
  /** Follow `Link: <...>; rel="next"`. */
  Link: Record<never, never>
  /** `?<param>=N`, N from `start` (default 1) up; ends at the first empty page. */
  Page: { readonly param: string; readonly start?: number }
  /**
   * `?<param>=<offset>` advancing by the items received; with `limitParam`, also `?<limitParam>=<limit>`, and a page
   * shorter than `limit` is the last one. Ends at the first empty page.
   */
  Offset: { readonly param: string; readonly limitParam?: string; readonly limit: number }
  /** Next request `?<param>=<body[field]>` (`field` may be a dotted path); ends when the cursor is null or "". */
  Cursor: { readonly field: string; readonly param: string }
}>

export const { Cursor, Link, Offset, Page, $match: matchStrategy } = Data.taggedEnum<Strategy>()

const paramName = /^[A-Za-z0-9_.\-[\]]+$/
const fieldPath = /^[\w$-]+(\.[\w$-]+)*$/

/**
 * Parses the CLI syntax: `link` | `page:<param>[:<start>]` | `offset:<param>[:<limitParam>:<limit>]` |
 * `cursor:<json-field>:<param>`.
 */
export const parseStrategy = (spec: string): Effect.Effect<Strategy, InvalidPaginateSpec> => {
  const fail = (reason: string) => Effect.fail(new InvalidPaginateSpec({ spec, reason }))
  const parts = spec.trim().split(":")
  const kind = parts[0]!.toLowerCase()
  const checkParam = (name: string | undefined, what: string) =>
    name === undefined || name.length === 0
      ? `missing ${what}`
      : paramName.test(name)
      ? undefined
      : `${what} "${name}" has characters outside [A-Za-z0-9_.-[]]`
  switch (kind) {
    case "link": {
      return parts.length === 1 ? Effect.succeed(Link()) : fail("\"link\" takes no arguments")
    }
    case "page": {
      if (parts.length < 2 || parts.length > 3) return fail("expected page:<param>[:<start>]")
      const problem = checkParam(parts[1], "page parameter")
      if (problem !== undefined) return fail(problem)
      if (parts.length === 2) return Effect.succeed(Page({ param: parts[1]! }))
      const start = Number(parts[2])
      if (!/^\d+$/.test(parts[2]!) || !Number.isSafeInteger(start)) {
        return fail(`start page "${parts[2]}" is not a non-negative integer`)
      }
      return Effect.succeed(Page({ param: parts[1]!, start }))
    }
    case "offset": {
      if (parts.length !== 2 && parts.length !== 4) return fail("expected offset:<param>[:<limitParam>:<limit>]")
      const problem = checkParam(parts[1], "offset parameter")
      if (problem !== undefined) return fail(problem)
      if (parts.length === 2) return Effect.succeed(Offset({ param: parts[1]!, limit: 0 }))
      const limitProblem = checkParam(parts[2], "limit parameter")
      if (limitProblem !== undefined) return fail(limitProblem)
      const limit = Number(parts[3])
      if (!/^\d+$/.test(parts[3]!) || !Number.isSafeInteger(limit) || limit <= 0) {
        return fail(`limit "${parts[3]}" is not a positive integer`)
      }
      return Effect.succeed(Offset({ param: parts[1]!, limitParam: parts[2]!, limit }))
    }
    case "cursor": {
      if (parts.length !== 3) return fail("expected cursor:<json-field>:<param>")
      const field = parts[1]!
      if (field.length === 0) return fail("missing cursor JSON field")
      if (!fieldPath.test(field)) return fail(`cursor JSON field "${field}" is not a dotted field path`)
      const problem = checkParam(parts[2], "cursor parameter")
      if (problem !== undefined) return fail(problem)
      return Effect.succeed(Cursor({ field, param: parts[2]! }))
    }
    default: {
      return fail(
        kind.length === 0
          ? "empty spec; expected link | page:<param> | offset:<param> | cursor:<json-field>:<param>"
          : `unknown strategy "${parts[0]}"; expected link | page | offset | cursor`
      )
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Link header (RFC 8288 §3)
// ---------------------------------------------------------------------------------------------------------------

export interface LinkValue {
  /** The target as written (a URI reference, maybe relative). */
  readonly target: string
  /** Relation types, lower-cased (`rel="next last"` gives both). */
  readonly rel: ReadonlyArray<string>
  /** All parameters, names lower-cased; the first occurrence wins (RFC 8288 §3.3 for rel). */
  readonly params: Readonly<Record<string, string>>
}

const isTokenChar = (c: string) => /[!#$%&'*+\-.^_`|~0-9A-Za-z]/.test(c)

/** Parses a `Link` header value: `<uri>; name=value; name="quoted, value", <uri2>; rel="next last"`. */
export const parseLinkHeader = (header: string): Either.Either<ReadonlyArray<LinkValue>, MalformedLinkHeader> => {
  const links: Array<LinkValue> = []
  let i = 0
  const n = header.length
  const fail = (reason: string) => Either.left(new MalformedLinkHeader({ header, position: i, reason }))
  const skipWs = () => {
    while (i < n && (header[i] === " " || header[i] === "\t")) i++
  }
  const token = () => {
    const start = i
    while (i < n && isTokenChar(header[i]!)) i++
    return header.slice(start, i)
  }
  skipWs()
  if (i === n) return Either.right(links)
  while (i < n) {
    skipWs()
    if (header[i] === ",") {
      i++
      continue
    }
    if (header[i] !== "<") return fail("expected '<' opening a link target")
    const close = header.indexOf(">", i + 1)
    if (close < 0) return fail("unterminated link target: no '>'")
    const target = header.slice(i + 1, close).trim()
    i = close + 1
    const params: Record<string, string> = {}
    for (;;) {
      skipWs()
      if (i >= n || header[i] === ",") break
      if (header[i] !== ";") return fail("expected ';' or ',' after a link")
      i++
      skipWs()
      const name = token().toLowerCase()
      if (name.length === 0) return fail("expected a parameter name")
      skipWs()
      let value = ""
      if (header[i] === "=") {
        i++
        skipWs()
        if (header[i] === "\"") {
          i++
          let closed = false
          while (i < n) {
            const c = header[i]!
            if (c === "\\" && i + 1 < n) {
              value += header[i + 1]
              i += 2
            } else if (c === "\"") {
              i++
              closed = true
              break
            } else {
              value += c
              i++
            }
          }
          if (!closed) return fail(`unterminated quoted value of parameter "${name}"`)
        } else {
          value = token()
          if (value.length === 0) return fail(`expected a value for parameter "${name}"`)
        }
      }
      if (!(name in params)) params[name] = value
    }
    const rel = (params["rel"] ?? "").toLowerCase().split(/\s+/).filter((r) => r.length > 0)
    links.push({ target, rel, params })
  }
  return Either.right(links)
}

/** The `rel="next"` target of a Link header resolved against `base`, if any. */
export const nextLink = (
  header: string | undefined,
  base: string
): Either.Either<Option.Option<string>, MalformedLinkHeader> => {
  if (header === undefined) return Either.right(Option.none())
  return Either.flatMap(parseLinkHeader(header), (links) => {
    const next = links.find((link) => link.rel.includes("next"))
    if (next === undefined) return Either.right(Option.none())
    try {
      return Either.right(Option.some(new URL(next.target, base).href))
    } catch {
      return Either.left(
        new MalformedLinkHeader({ header, position: 0, reason: `next target "${next.target}" is not a URI reference` })
      )
    }
  })
}

// ---------------------------------------------------------------------------------------------------------------
// The stream
// ---------------------------------------------------------------------------------------------------------------

/** What a page fetch returns (an `HttpFetcher` `FetchResult` fits). */
export interface PageResponse<A = unknown> {
  readonly url: string
  /** The URL after redirects, used to resolve relative Link targets (defaults to `url`). */
  readonly finalUrl?: string
  readonly headers: Readonly<Record<string, string>>
  readonly body: A
}

export interface StreamOptions<A> {
  /** The first page's URL (its own query parameters are kept). */
  readonly url: string
  /** More pages than this fail with `MaxPagesExceeded` before the extra page is fetched. Default 1000. */
  readonly maxPages?: number
  /**
   * The items of a page, for the empty-page / short-page ends of Page and Offset. Default: the body if it is an
   * array, else its first array-valued property (`items`, `data`, `results`...), else none.
   */
  readonly items?: (body: A) => ReadonlyArray<unknown> | undefined
}

const defaultItems = (body: unknown): ReadonlyArray<unknown> | undefined => {
  if (Array.isArray(body)) return body
  if (typeof body === "object" && body !== null) {
    for (const value of Object.values(body)) {
      if (Array.isArray(value)) return value
    }
  }
  return undefined
}

const fieldAt = (body: unknown, path: string): unknown => {
  let current = body
  for (const key of path.split(".")) {
    if (typeof current !== "object" || current === null) return undefined
    current = (current as Record<string, unknown>)[key]
  }
  return current
}

const withParams = (base: string, params: ReadonlyArray<readonly [string, string]>) => {
  const url = new URL(base)
  for (const [name, value] of params) url.searchParams.set(name, value)
  return url.href
}

/** Where the stream stands: the next page's URL, its number (1-based) and, for Offset, its offset. */
interface PageState {
  readonly url: string
  readonly pageNo: number
  readonly position: number
}

/**
 * The pages of a paginated API as a lazy stream: a page is fetched only when pulled. Ends after the last page
 * (that empty page, if one marked the end, is not emitted).
 */
export const stream = <A, E, R>(
  fetchPage: (url: string) => Effect.Effect<PageResponse<A>, E, R>,
  strategy: Strategy,
  options: StreamOptions<A>
): Stream.Stream<PageResponse<A>, E | PaginateError | InvalidPaginateOptions, R> => {
  const maxPages = options.maxPages ?? 1000
  if (!Number.isInteger(maxPages) || maxPages <= 0) {
    return Stream.fail(
      new InvalidPaginateOptions({ field: "maxPages", reason: `must be a positive integer, got ${maxPages}` })
    )
  }
  const startUrl = Either.try(() => new URL(options.url).href)
  if (Either.isLeft(startUrl)) {
    return Stream.fail(new InvalidPaginateOptions({ field: "url", reason: `"${options.url}" is not an absolute URL` }))
  }
  const itemsOf = options.items ?? defaultItems
  const first = matchStrategy(strategy, {
    Link: () => startUrl.right,
    Page: ({ param, start }) => withParams(startUrl.right, [[param, String(start ?? 1)]]),
    Offset: ({ limit, limitParam, param }) =>
      withParams(
        startUrl.right,
        limitParam === undefined ? [[param, "0"]] : [[param, "0"], [limitParam, String(limit)]]
      ),
    Cursor: () => startUrl.right
  })

  type Step = Effect.Effect<Option.Option<readonly [PageResponse<A>, Option.Option<PageState>]>, E | PaginateError, R>

  const step = (seen: Set<string>) => (state: Option.Option<PageState>): Step => {
    if (Option.isNone(state)) return Effect.succeedNone
    const { pageNo, position, url } = state.value
    if (pageNo > maxPages) return Effect.fail(new MaxPagesExceeded({ url, maxPages }))
    return Effect.flatMap(fetchPage(url), (page): Step => {
      const items = () => itemsOf(page.body) ?? []
      const emit = (next: Option.Option<PageState>) => Effect.succeedSome([page, next] as const)
      return matchStrategy(strategy, {
        Link: () => {
          const next = nextLink(page.headers["link"], page.finalUrl ?? page.url)
          if (Either.isLeft(next)) return Effect.fail(next.left)
          if (Option.isNone(next.right)) return emit(Option.none())
          const nextUrl = next.right.value
          if (seen.has(nextUrl) || nextUrl === url) {
            return Effect.fail(new PaginationLoop({ url, repeated: nextUrl }))
          }
          seen.add(url)
          return emit(Option.some({ url: nextUrl, pageNo: pageNo + 1, position: 0 }))
        },
        Page: ({ param, start }) => {
          if (items().length === 0) return Effect.succeedNone
          const nextNo = (start ?? 1) + pageNo
          return emit(Option.some({ url: withParams(url, [[param, String(nextNo)]]), pageNo: pageNo + 1, position: 0 }))
        },
        Offset: ({ limit, limitParam, param }) => {
          const count = items().length
          if (count === 0) return Effect.succeedNone
          if (limitParam !== undefined && count < limit) return emit(Option.none())
          const offset = position + count
          return emit(
            Option.some({ url: withParams(url, [[param, String(offset)]]), pageNo: pageNo + 1, position: offset })
          )
        },
        Cursor: ({ field, param }) => {
          const cursor = fieldAt(page.body, field)
          if (cursor === null || cursor === undefined || cursor === "") return emit(Option.none())
          const value = typeof cursor === "string" ? cursor : JSON.stringify(cursor)
          if (seen.has(value)) return Effect.fail(new PaginationLoop({ url, repeated: value }))
          seen.add(value)
          return emit(
            Option.some({ url: withParams(startUrl.right, [[param, value]]), pageNo: pageNo + 1, position: 0 })
          )
        }
      })
    })
  }

  return Stream.suspend(() =>
    Stream.unfoldEffect(Option.some<PageState>({ url: first, pageNo: 1, position: 0 }), step(new Set()))
  )
}
