/**
 * SimulatedApi — a local JSON API on 127.0.0.1 that misbehaves on purpose, for the tests, benchmarks and `demo`.
 *
 * It answers the tutorial's real-world section ("pull many pages from rate-limited JSON APIs") with a real upstream:
 * collections paginated in every style the core's Paginate follows (`?page=N`, offset/limit, a cursor field in the
 * body, `Link: <...>; rel="next"`), a per-client rate limit answering 429 with `Retry-After` (delta-seconds or
 * HTTP-date), deterministic 500s, slow headers and bodies, connection resets, malformed JSON and redirects. It records
 * every request (arrival time, concurrently open requests at arrival, the status it chose) so a test judges the
 * harvester's rate and concurrency from the upstream's own record.
 *
 * Plain `node:http` on purpose: it must stay far cheaper than the client it measures. The server is scoped: closing
 * the scope closes every socket and cancels every pending timer.
 *
 * Usage: `import * as SimulatedApi from "./Demo/SimulatedApi.js"` then `yield* SimulatedApi.start({ routes })`.
 */
import { Effect } from "effect"
import type { Scope } from "effect"
import type { IncomingMessage, ServerResponse } from "node:http"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { performance } from "node:perf_hooks"

/** How a paginated collection is walked. `none` returns every item in one body. */
export type PaginationStyle = "page" | "offset" | "cursor" | "link" | "none"

export interface Collection {
  /** Total number of items; item `n` (0-based) is `{ id: n, name: "item-<n>" }` plus optional padding. */
  readonly items: number
  /** Items per page (offset style: the default `limit`). Default 10. */
  readonly pageSize?: number
  readonly style: PaginationStyle
  /** `page` style: the query parameter and the number of the first page. Defaults `page`, 1. */
  readonly pageParam?: string
  readonly firstPage?: number
  /** `offset` style: the parameters. Defaults `offset`, `limit`. */
  readonly offsetParam?: string
  readonly limitParam?: string
  /** `cursor` style: the body field holding the next cursor (null on the last page) and the query parameter. */
  readonly cursorField?: string
  readonly cursorParam?: string
  /** Characters of filler added to every item (bodies of a chosen size for benchmarks). */
  readonly padding?: number
}

export interface Route {
  /** A paginated collection; its body is `{ items, page?, offset?, [cursorField]? }`. */
  readonly collection?: Collection
  /** A fixed JSON body (when no collection). */
  readonly json?: unknown
  /** A fixed text body, `text/plain`. */
  readonly text?: string
  /** The status of a normal answer. Default 200. */
  readonly status?: number
  readonly headers?: Readonly<Record<string, string>>
  /** Wait this long before sending the headers. */
  readonly delayMillis?: number
  /** Send the body in `chunks` pieces, `intervalMillis` apart (a slow body after prompt headers). */
  readonly slowBody?: { readonly chunks: number; readonly intervalMillis: number }
  /** Every `failEvery`-th request to this route (counting from 1) answers `failStatus` (default 500). */
  readonly failEvery?: number
  /** The first `failFirst` requests of each distinct URL (path + query) answer `failStatus`, then it recovers. */
  readonly failFirst?: number
  readonly failStatus?: number
  /** With a failure status of 429 or 503: the `Retry-After` seconds sent with it. */
  readonly failRetryAfterSeconds?: number
  /** Every `resetEvery`-th request to this route has its connection reset. */
  readonly resetEvery?: number
  /** The first `resetFirst` requests of each distinct URL have their connection reset. */
  readonly resetFirst?: number
  /** `immediate` (default): reset before any byte; `midBody`: send headers and half the body, then reset. */
  readonly resetMode?: "immediate" | "midBody"
  /** Answer `application/json` that does not parse. */
  readonly malformed?: boolean
  /** Redirect to `location` (a path on this server or an absolute URL). */
  readonly redirect?: { readonly location: string; readonly status?: number }
  /** Exempt from the server's per-client rate limit. */
  readonly unlimited?: boolean
}

export interface RateLimit {
  /** At most `limit` admitted requests per client in any window of `perMillis`. */
  readonly limit: number
  readonly perMillis: number
  /** `Retry-After` as delta-seconds (default) or as an HTTP-date. */
  readonly retryAfter?: "seconds" | "date"
}

export interface Options {
  /** Routes by exact path; a key ending in `/*` matches every path below it. */
  readonly routes: Readonly<Record<string, Route>>
  /** A per-client rate limit over every route (a client is its `x-client-id` header, else its address). */
  readonly rateLimit?: RateLimit
}

/** What the server decided to do with one request. */
export type Outcome = "ok" | "fail" | "rateLimited" | "reset" | "malformed" | "redirect" | "notFound"

export interface RecordedRequest {
  readonly method: string
  readonly path: string
  /** Path and query exactly as requested. */
  readonly url: string
  readonly query: Readonly<Record<string, string>>
  readonly client: string
  /** Arrival, epoch milliseconds with sub-millisecond precision. */
  readonly at: number
  /** Requests open at arrival, this one included. */
  readonly concurrent: number
  /** The status answered, or null when the connection was reset before any status. */
  readonly status: number | null
  readonly outcome: Outcome
  /** When the exchange ended (response sent, or connection closed); null while it is open. */
  readonly endedAt: number | null
  /** The whole response was sent (false while open, and when the client or the server cut it short). */
  readonly completed: boolean
}

export interface SimulatedApi {
  readonly baseUrl: string
  readonly port: number
  /** Every request so far, in arrival order. */
  readonly requests: Effect.Effect<ReadonlyArray<RecordedRequest>>
  /** The most requests that were ever open at once since start (or the last reset). */
  readonly maxConcurrent: Effect.Effect<number>
  /** Requests open right now. */
  readonly openRequests: Effect.Effect<number>
  /** Forget the record, the counters and the rate-limit windows. */
  readonly reset: Effect.Effect<void>
  /** Add or replace a route while running. */
  readonly setRoute: (path: string, route: Route) => Effect.Effect<void>
}

type Mutable<A> = { -readonly [K in keyof A]: A[K] }

const now = () => performance.timeOrigin + performance.now()

const jsonHeaders = { "content-type": "application/json" }

const itemsOf = (collection: Collection, from: number, count: number) => {
  const end = Math.min(collection.items, from + count)
  const padding = collection.padding !== undefined && collection.padding > 0 ? "x".repeat(collection.padding) : null
  const items: Array<{ id: number; name: string; padding?: string }> = []
  for (let id = from; id < end; id++) {
    items.push(padding === null ? { id, name: `item-${id}` } : { id, name: `item-${id}`, padding })
  }
  return items
}

const nonNegativeInt = (value: string | undefined, fallback: number) => {
  if (value === undefined) return fallback
  const parsed = Number(value)
  return Number.isInteger(parsed) && parsed >= 0 ? parsed : null
}

interface Answer {
  readonly status: number
  readonly headers: Record<string, string>
  readonly body: string
}

const collectionAnswer = (
  collection: Collection,
  query: Readonly<Record<string, string>>,
  selfUrl: URL
): Answer => {
  const pageSize = collection.pageSize ?? 10
  const badRequest = (field: string): Answer => ({
    status: 400,
    headers: jsonHeaders,
    body: JSON.stringify({ error: "BadRequest", field })
  })
  switch (collection.style) {
    case "none":
      return {
        status: 200,
        headers: jsonHeaders,
        body: JSON.stringify({ items: itemsOf(collection, 0, collection.items) })
      }
    case "page":
    case "link": {
      const param = collection.pageParam ?? "page"
      const first = collection.firstPage ?? 1
      const page = nonNegativeInt(query[param], first)
      if (page === null || page < first) return badRequest(param)
      const from = (page - first) * pageSize
      const items = itemsOf(collection, from, pageSize)
      const headers: Record<string, string> = { ...jsonHeaders }
      if (collection.style === "link" && from + pageSize < collection.items) {
        const next = new URL(selfUrl)
        next.searchParams.set(param, String(page + 1))
        headers["link"] = `<${next.href}>; rel="next"`
      }
      return { status: 200, headers, body: JSON.stringify({ page, items }) }
    }
    case "offset": {
      const offsetParam = collection.offsetParam ?? "offset"
      const limitParam = collection.limitParam ?? "limit"
      const offset = nonNegativeInt(query[offsetParam], 0)
      if (offset === null) return badRequest(offsetParam)
      const limit = nonNegativeInt(query[limitParam], pageSize)
      if (limit === null || limit === 0) return badRequest(limitParam)
      return {
        status: 200,
        headers: jsonHeaders,
        body: JSON.stringify({ offset, items: itemsOf(collection, offset, limit) })
      }
    }
    case "cursor": {
      const cursorParam = collection.cursorParam ?? "cursor"
      const cursorField = collection.cursorField ?? "next_cursor"
      const raw = query[cursorParam]
      const from = raw === undefined ? 0 : raw.startsWith("c") ? nonNegativeInt(raw.slice(1), 0) : null
      if (from === null) return badRequest(cursorParam)
      const items = itemsOf(collection, from, pageSize)
      const next = from + pageSize < collection.items ? `c${from + pageSize}` : null
      return { status: 200, headers: jsonHeaders, body: JSON.stringify({ items, [cursorField]: next }) }
    }
  }
}

const retryAfterValue = (waitMillis: number, form: "seconds" | "date") =>
  form === "seconds"
    ? String(Math.max(1, Math.ceil(waitMillis / 1000)))
    : new Date(Math.ceil((Date.now() + waitMillis) / 1000) * 1000).toUTCString()

/**
 * Starts the server on 127.0.0.1, port 0 (the OS picks). Closing the scope closes it: open sockets are destroyed
 * and pending timers cancelled.
 */
export const start = (options: Options): Effect.Effect<SimulatedApi, never, Scope.Scope> =>
  Effect.gen(function*() {
    const routes = new Map<string, Route>(Object.entries(options.routes))
    let record: Array<Mutable<RecordedRequest>> = []
    let open = 0
    let maxOpen = 0
    let routeCounters = new Map<string, number>()
    let urlCounters = new Map<string, number>()
    let windows = new Map<string, Array<number>>()
    const timers = new Set<NodeJS.Timeout>()
    let baseUrl = ""

    const later = (millis: number, run: () => void) => {
      const timer = setTimeout(() => {
        timers.delete(timer)
        run()
      }, millis)
      timers.add(timer)
    }

    const findRoute = (path: string): readonly [string, Route] | undefined => {
      const exact = routes.get(path)
      if (exact !== undefined) return [path, exact]
      for (const [key, route] of routes) {
        if (key.endsWith("/*") && path.startsWith(key.slice(0, -1))) return [key, route]
      }
      return undefined
    }

    const admit = (client: string, limit: RateLimit, at: number): number => {
      const window = (windows.get(client) ?? []).filter((time) => time > at - limit.perMillis)
      if (window.length >= limit.limit) {
        windows.set(client, window)
        return window[0] + limit.perMillis - at
      }
      window.push(at)
      windows.set(client, window)
      return 0
    }

    const send = (response: ServerResponse, answer: Answer, route: Route | undefined) => {
      const write = () => {
        if (response.destroyed) return
        response.writeHead(answer.status, { ...answer.headers, ...route?.headers })
        const slow = route?.slowBody
        if (slow === undefined || slow.chunks <= 1 || answer.body.length === 0) {
          response.end(answer.body)
          return
        }
        const size = Math.ceil(answer.body.length / slow.chunks)
        const writeChunk = (index: number) => {
          if (response.destroyed) return
          const chunk = answer.body.slice(index * size, (index + 1) * size)
          if ((index + 1) * size >= answer.body.length) {
            response.end(chunk)
          } else {
            response.write(chunk)
            later(slow.intervalMillis, () => writeChunk(index + 1))
          }
        }
        writeChunk(0)
      }
      const delay = route?.delayMillis ?? 0
      if (delay > 0) later(delay, write)
      else write()
    }

    const handle = (request: IncomingMessage, response: ServerResponse) => {
      const at = now()
      open++
      if (open > maxOpen) maxOpen = open
      let entry: Mutable<RecordedRequest> | undefined
      let finished = false
      response.on("finish", () => {
        finished = true
      })
      response.on("close", () => {
        open--
        if (entry !== undefined) {
          entry.endedAt = now()
          entry.completed = finished
        }
      })
      request.resume()

      const selfUrl = new URL(request.url ?? "/", baseUrl)
      const path = selfUrl.pathname
      const url = `${selfUrl.pathname}${selfUrl.search}`
      const query: Record<string, string> = {}
      for (const [key, value] of selfUrl.searchParams) query[key] = value
      const clientHeader = request.headers["x-client-id"]
      const client = typeof clientHeader === "string" ? clientHeader : request.socket.remoteAddress ?? "unknown"
      const found = findRoute(path)
      const remember = (status: number | null, outcome: Outcome) => {
        entry = {
          method: request.method ?? "GET",
          path,
          url,
          query,
          client,
          at,
          concurrent: open,
          status,
          outcome,
          endedAt: null,
          completed: false
        }
        record.push(entry)
      }

      if (found === undefined) {
        remember(404, "notFound")
        send(
          response,
          { status: 404, headers: jsonHeaders, body: JSON.stringify({ error: "NotFound", path }) },
          undefined
        )
        return
      }
      const [routeKey, route] = found

      if (options.rateLimit !== undefined && route.unlimited !== true) {
        const wait = admit(client, options.rateLimit, at)
        if (wait > 0) {
          remember(429, "rateLimited")
          const retryAfter = retryAfterValue(wait, options.rateLimit.retryAfter ?? "seconds")
          response.writeHead(429, { ...jsonHeaders, "retry-after": retryAfter })
          response.end(JSON.stringify({ error: "TooManyRequests", retryAfter }))
          return
        }
      }

      const routeCount = (routeCounters.get(routeKey) ?? 0) + 1
      routeCounters.set(routeKey, routeCount)
      const urlCount = (urlCounters.get(url) ?? 0) + 1
      urlCounters.set(url, urlCount)

      const resets = (route.resetEvery !== undefined && routeCount % route.resetEvery === 0) ||
        (route.resetFirst !== undefined && urlCount <= route.resetFirst)
      if (resets) {
        remember(null, "reset")
        if (route.resetMode === "midBody") {
          response.writeHead(200, { ...jsonHeaders, "content-length": "1000" })
          response.write("{\"items\": [")
          later(5, () => request.socket.resetAndDestroy())
        } else {
          request.socket.resetAndDestroy()
        }
        return
      }

      const fails = (route.failEvery !== undefined && routeCount % route.failEvery === 0) ||
        (route.failFirst !== undefined && urlCount <= route.failFirst)
      if (fails) {
        const status = route.failStatus ?? 500
        remember(status, "fail")
        const headers: Record<string, string> = { ...jsonHeaders }
        if ((status === 429 || status === 503) && route.failRetryAfterSeconds !== undefined) {
          headers["retry-after"] = String(route.failRetryAfterSeconds)
        }
        response.writeHead(status, headers)
        response.end(JSON.stringify({ error: "Simulated failure", status }))
        return
      }

      if (route.redirect !== undefined) {
        const status = route.redirect.status ?? 302
        remember(status, "redirect")
        response.writeHead(status, { location: route.redirect.location })
        response.end()
        return
      }

      if (route.malformed === true) {
        remember(route.status ?? 200, "malformed")
        send(response, { status: route.status ?? 200, headers: jsonHeaders, body: "{\"items\": [1, 2," }, route)
        return
      }

      const answer: Answer = route.collection !== undefined
        ? collectionAnswer(route.collection, query, selfUrl)
        : route.text !== undefined
        ? { status: route.status ?? 200, headers: { "content-type": "text/plain" }, body: route.text }
        : { status: route.status ?? 200, headers: jsonHeaders, body: JSON.stringify(route.json ?? { ok: true }) }
      remember(answer.status, "ok")
      send(response, answer, route)
    }

    const server = yield* Effect.acquireRelease(
      Effect.async<ReturnType<typeof createServer>>((resume) => {
        const server = createServer({ keepAlive: true }, handle)
        server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
      }),
      (server) =>
        Effect.async<void>((resume) => {
          for (const timer of timers) clearTimeout(timer)
          timers.clear()
          // Responses emit "close" a tick after their sockets: wait for them so the record is final.
          const settled = (turns: number) => {
            if (open === 0 || turns === 0) resume(Effect.void)
            else setImmediate(() => settled(turns - 1))
          }
          server.close(() => settled(100))
          server.closeAllConnections()
        })
    )
    const port = (server.address() as AddressInfo).port
    baseUrl = `http://127.0.0.1:${port}`

    return {
      baseUrl,
      port,
      requests: Effect.sync(() => record.map((entry) => ({ ...entry }))),
      maxConcurrent: Effect.sync(() => maxOpen),
      openRequests: Effect.sync(() => open),
      reset: Effect.sync(() => {
        record = []
        maxOpen = open
        routeCounters = new Map()
        urlCounters = new Map()
        windows = new Map()
      }),
      setRoute: (path, route) => Effect.sync(() => void routes.set(path, route))
    } satisfies SimulatedApi
  })

/** The routes `harvester demo` harvests: one collection per pagination style, with some trouble on the way. */
export const demoRoutes: Readonly<Record<string, Route>> = {
  "/pages": { collection: { items: 300, pageSize: 10, style: "page" }, failEvery: 9 },
  "/offsets": { collection: { items: 200, pageSize: 20, style: "offset" } },
  "/cursors": { collection: { items: 150, pageSize: 15, style: "cursor" }, delayMillis: 30 },
  "/links": { collection: { items: 200, pageSize: 10, style: "link" }, slowBody: { chunks: 3, intervalMillis: 15 } },
  "/throttled": { json: { ok: true }, failFirst: 1, failStatus: 429, failRetryAfterSeconds: 1 },
  "/flaky": { json: { ok: true }, failFirst: 2 },
  "/gone": { json: { error: "gone" }, status: 404 },
  "/broken": { malformed: true }
}

/** Per-client rate limit of the demo upstream: a harvester that keeps to its rate never meets it. */
export const demoRateLimit: RateLimit = { limit: 40, perMillis: 1000, retryAfter: "seconds" }
