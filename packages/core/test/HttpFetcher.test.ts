import { HttpClient, HttpClientResponse } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Clock, Duration, Effect, Either, Exit, Fiber, Layer, Option, Schema, TestClock } from "effect"
import type { Tracer } from "effect"
import type { IncomingMessage, ServerResponse } from "node:http"
import * as Deadline from "../src/Deadline.js"
import { HttpFetcher, RequestBlocked } from "../src/HttpFetcher.js"
import type { FetchError, Lane, LaneOutcome } from "../src/HttpFetcher.js"
import * as KeyedConcurrency from "../src/KeyedConcurrency.js"
import * as RateLimiter from "../src/RateLimiter.js"
import type { LoopbackServer } from "./support/LoopbackServer.js"
import * as Loopback from "./support/LoopbackServer.js"

const User = Schema.Struct({ login: Schema.String, id: Schema.Number })

/** Routes of the test API; `hits` counts requests per path (without the query) for stateful routes. */
const routes = () => {
  const hits = new Map<string, number>()
  return (request: IncomingMessage, response: ServerResponse, server: LoopbackServer) => {
    const url = new URL(request.url ?? "/", server.origin)
    const hit = (hits.get(url.pathname) ?? 0) + 1
    hits.set(url.pathname, hit)
    const path = url.pathname
    if (path.startsWith("/users/")) {
      return Loopback.json(response, 200, { login: path.slice("/users/".length), id: path.length })
    }
    if (path === "/missing") return Loopback.json(response, 404, { error: "not here" })
    if (path === "/malformed") {
      response.writeHead(200, { "content-type": "application/json" })
      return response.end("{\"login\": \"python\", ")
    }
    if (path === "/mismatch") return Loopback.json(response, 200, { login: "python", id: "seven" })
    if (path === "/flaky") {
      return hit <= 2
        ? Loopback.json(response, 503, { error: "busy" })
        : Loopback.json(response, 200, { login: "ok", id: 1 })
    }
    if (path === "/always-503") return Loopback.json(response, 503, { error: "down" })
    if (path === "/always-429") return Loopback.json(response, 429, { error: "slow down" })
    if (path === "/retry-after-seconds") {
      return hit === 1
        ? Loopback.json(response, 429, { error: "slow down" }, { "retry-after": "1" })
        : Loopback.json(response, 200, { login: "patient", id: 2 })
    }
    if (path === "/retry-after-date") {
      return hit === 1
        ? Loopback.json(response, 429, { error: "slow down" }, {
          "retry-after": new Date(Date.now() + 2000).toUTCString()
        })
        : Loopback.json(response, 200, { login: "patient", id: 3 })
    }
    if (path === "/big") {
      response.writeHead(200, { "content-type": "application/json" })
      const chunk = Buffer.alloc(16 * 1024, 32)
      const write = (left: number): void => {
        if (left === 0 || response.destroyed) return void response.end()
        response.write(chunk, () => write(left - 1))
      }
      return write(64)
    }
    if (path === "/big-declared") {
      response.writeHead(200, { "content-type": "application/json", "content-length": String(1024 * 1024) })
      return response.write(Buffer.alloc(1024, 32))
    }
    if (path.startsWith("/redirect/")) {
      const left = Number(path.slice("/redirect/".length))
      response.writeHead(302, { location: left === 0 ? "/users/landed" : `/redirect/${left - 1}` })
      return response.end()
    }
    if (path === "/elsewhere") {
      response.writeHead(301, { location: `http://127.0.0.2:${server.port}/users/elsewhere` })
      return response.end()
    }
    if (path === "/hang") return
    return Loopback.json(response, 404, { error: "no route" })
  }
}

const loopbackOnly = (url: URL) =>
  url.hostname === "127.0.0.1"
    ? Effect.void
    : Effect.fail(new RequestBlocked({ url: url.href, reason: `${url.hostname} is not 127.0.0.1` }))

const tagOf = <A>(result: Either.Either<A, FetchError>) => Either.isLeft(result) ? result.left._tag : "Success"

describe("HttpFetcher", () => {
  it.scopedLive("GETs JSON and decodes it with a Schema", () =>
    Effect.gen(function*() {
      const server = yield* Loopback.make(routes())
      const fetcher = yield* HttpFetcher
      const result = yield* fetcher.get(server.url("/users/python"), { schema: User })
      assert.deepStrictEqual(result.body, { login: "python", id: 13 })
      assert.strictEqual(result.status, 200)
      assert.strictEqual(result.attempts, 1)
      assert.strictEqual(result.finalUrl, server.url("/users/python"))
      assert.strictEqual(result.headers["content-type"], "application/json")
      assert.strictEqual(result.bytes, JSON.stringify({ login: "python", id: 13 }).length)
    }).pipe(Effect.provide(HttpFetcher.Default)))

  it.scopedLive("404 is an HttpStatusError with the body snippet, not retried", () =>
    Effect.gen(function*() {
      const server = yield* Loopback.make(routes())
      const fetcher = yield* HttpFetcher
      const error = yield* Effect.flip(fetcher.get(server.url("/missing"), { retryBaseDelay: "1 millis" }))
      assert.strictEqual(error._tag, "HttpStatusError")
      if (error._tag !== "HttpStatusError") return
      assert.strictEqual(error.status, 404)
      assert.include(error.body, "not here")
      assert.strictEqual(error.url, server.url("/missing"))
      assert.strictEqual(server.requests.length, 1)
    }).pipe(Effect.provide(HttpFetcher.Default)))

  it.scopedLive("a refused connection is a TransportError carrying the cause", () =>
    Effect.gen(function*() {
      const port = yield* Loopback.freePort
      const fetcher = yield* HttpFetcher
      const error = yield* Effect.flip(fetcher.get(`http://127.0.0.1:${port}/users/python`, { retries: 0 }))
      assert.strictEqual(error._tag, "TransportError")
      if (error._tag !== "TransportError") return
      assert.strictEqual(error.code, "ECONNREFUSED")
      assert.include(error.message, "ECONNREFUSED")
    }).pipe(Effect.provide(HttpFetcher.Default)))

  it.scopedLive("malformed JSON and a schema mismatch are DecodeErrors; the mismatch names the path", () =>
    Effect.gen(function*() {
      const server = yield* Loopback.make(routes())
      const fetcher = yield* HttpFetcher
      const malformed = yield* Effect.flip(fetcher.get(server.url("/malformed"), { schema: User }))
      assert.strictEqual(malformed._tag, "DecodeError")
      if (malformed._tag === "DecodeError") assert.include(malformed.message, "malformed JSON")
      const mismatch = yield* Effect.flip(fetcher.get(server.url("/mismatch"), { schema: User }))
      assert.strictEqual(mismatch._tag, "DecodeError")
      if (mismatch._tag === "DecodeError") assert.strictEqual(mismatch.path, "id")
    }).pipe(Effect.provide(HttpFetcher.Default)))

  it.scopedLive("503 is retried with backoff, then succeeds; attempts are counted", () =>
    Effect.gen(function*() {
      const server = yield* Loopback.make(routes())
      const fetcher = yield* HttpFetcher
      const result = yield* fetcher.get(server.url("/flaky"), { schema: User, retryBaseDelay: "5 millis" })
      assert.strictEqual(result.attempts, 3)
      assert.strictEqual(server.requests.length, 3)
      const exhausted = yield* Effect.flip(
        fetcher.get(server.url("/always-503"), { retries: 2, retryBaseDelay: "1 millis" })
      )
      assert.strictEqual(exhausted._tag, "HttpStatusError")
      assert.strictEqual(server.requests.filter((r) => r.path === "/always-503").length, 3)
    }).pipe(Effect.provide(HttpFetcher.Default)))

  it.scopedLive("429 after the retries is RateLimited", () =>
    Effect.gen(function*() {
      const server = yield* Loopback.make(routes())
      const fetcher = yield* HttpFetcher
      const error = yield* Effect.flip(
        fetcher.get(server.url("/always-429"), { retries: 1, retryBaseDelay: "1 millis" })
      )
      assert.strictEqual(error._tag, "RateLimited")
      if (error._tag === "RateLimited") assert.strictEqual(error.attempts, 2)
    }).pipe(Effect.provide(HttpFetcher.Default)))

  it.scopedLive("429 with Retry-After in seconds pauses the host in the RateLimiter, then succeeds", () =>
    Effect.gen(function*() {
      const server = yield* Loopback.make(routes())
      const fetcher = yield* HttpFetcher
      const rateLimiter = yield* RateLimiter.make({ limit: 100, per: "1 second" })
      const result = yield* fetcher.get(server.url("/retry-after-seconds"), {
        schema: User,
        rateLimiter,
        retryBaseDelay: "1 millis"
      })
      assert.strictEqual(result.attempts, 2)
      const [first, second] = server.requests
      const pause = second!.at - first!.at
      assert.isAtLeast(pause, 950, `paused ${pause} ms for Retry-After: 1`)
      assert.isBelow(pause, 1500)
    }).pipe(Effect.provide(HttpFetcher.Default)))

  it.scopedLive("429 with Retry-After as an HTTP-date waits until that date, then succeeds", () =>
    Effect.gen(function*() {
      const server = yield* Loopback.make(routes())
      const fetcher = yield* HttpFetcher
      const result = yield* fetcher.get(server.url("/retry-after-date"), { schema: User, retryBaseDelay: "1 millis" })
      assert.strictEqual(result.body.id, 3)
      assert.strictEqual(result.attempts, 2)
      const [first, second] = server.requests
      // The date has one-second resolution: "now + 2 s" truncated is 1–2 s away.
      const pause = second!.at - first!.at
      assert.isAtLeast(pause, 950, `paused ${pause} ms`)
      assert.isBelow(pause, 2600)
    }).pipe(Effect.provide(HttpFetcher.Default)))

  it.scopedLive("a streamed body past maxBytes is ResponseTooLarge and the connection is closed", () =>
    Effect.gen(function*() {
      const server = yield* Loopback.make(routes())
      const fetcher = yield* HttpFetcher
      const error = yield* Effect.flip(fetcher.get(server.url("/big"), { maxBytes: 64 * 1024, responseType: "text" }))
      assert.strictEqual(error._tag, "ResponseTooLarge")
      yield* server.waitUntil(() => server.requestConnectionClosed(0))
      const declared = yield* Effect.flip(fetcher.get(server.url("/big-declared"), { maxBytes: 64 * 1024 }))
      assert.strictEqual(declared._tag, "ResponseTooLarge")
      yield* server.waitUntil(() => server.requestConnectionClosed(1))
      assert.strictEqual(server.requests.length, 2)
    }).pipe(Effect.provide(HttpFetcher.Default)))

  it.scopedLive("redirects are followed up to maxRedirects, then RequestBlocked", () =>
    Effect.gen(function*() {
      const server = yield* Loopback.make(routes())
      const fetcher = yield* HttpFetcher
      const result = yield* fetcher.get(server.url("/redirect/2"), { schema: User, maxRedirects: 3 })
      assert.strictEqual(result.finalUrl, server.url("/users/landed"))
      assert.strictEqual(result.url, server.url("/redirect/2"))
      const error = yield* Effect.flip(fetcher.get(server.url("/redirect/5"), { maxRedirects: 3 }))
      assert.strictEqual(error._tag, "RequestBlocked")
      assert.strictEqual(server.requests.filter((r) => r.path.startsWith("/redirect/")).length, 3 + 4)
    }).pipe(Effect.provide(HttpFetcher.Default)))

  it.scopedLive("the guard refuses a redirect hop to 127.0.0.2 before any traffic goes there", () =>
    Effect.gen(function*() {
      const server = yield* Loopback.make(routes())
      const fetcher = yield* HttpFetcher
      const guarded: Array<string> = []
      const guard = (url: URL) => Effect.zipRight(Effect.sync(() => guarded.push(url.href)), loopbackOnly(url))
      const error = yield* Effect.flip(fetcher.get(server.url("/elsewhere"), { guard }))
      assert.strictEqual(error._tag, "RequestBlocked")
      if (error._tag === "RequestBlocked") {
        assert.strictEqual(error.url, `http://127.0.0.2:${server.port}/users/elsewhere`)
      }
      assert.deepStrictEqual(guarded, [server.url("/elsewhere"), `http://127.0.0.2:${server.port}/users/elsewhere`])
      assert.strictEqual(server.requests.length, 1)
    }).pipe(Effect.provide(HttpFetcher.Default)))

  it.scopedLive("the timeout is bounded by the enclosing Deadline", () =>
    Effect.gen(function*() {
      const server = yield* Loopback.make(routes())
      const fetcher = yield* HttpFetcher
      const started = Date.now()
      const error = yield* fetcher.get(server.url("/hang"), { timeout: "30 seconds" }).pipe(
        Deadline.within("page", "300 millis"),
        Effect.flip
      )
      const elapsed = Date.now() - started
      assert.isAtLeast(elapsed, 250)
      assert.isBelow(elapsed, 5000, "well under the 30 s option: the Deadline decided")
      // Whichever fires first at the deadline: the fetch's own FetchTimeout (its timeout was cut to the budget) or
      // the Deadline itself.
      assert.include(["FetchTimeout", "DeadlineExceeded"], error._tag)
      if (error._tag === "FetchTimeout") assert.isAtMost(error.timeoutMillis, 300)
      yield* server.waitUntil(() => server.requestConnectionClosed(0))
    }).pipe(Effect.provide(HttpFetcher.Default)))

  it.scopedLive("fetchAll keeps input order and isolates failures", () =>
    Effect.gen(function*() {
      const server = yield* Loopback.make(routes())
      const port = yield* Loopback.freePort
      const fetcher = yield* HttpFetcher
      const urls = [
        server.url("/users/a"),
        server.url("/missing"),
        `http://127.0.0.1:${port}/refused`,
        server.url("/malformed"),
        server.url("/users/bb")
      ]
      const results = yield* fetcher.fetchAll(urls, { schema: User, retries: 0, parallelism: 3 })
      assert.deepStrictEqual(results.map(tagOf), [
        "Success",
        "HttpStatusError",
        "TransportError",
        "DecodeError",
        "Success"
      ])
      assert.deepStrictEqual(results.map((r) => Either.isRight(r) ? r.right.body.login : r.left.url), [
        "a",
        server.url("/missing"),
        `http://127.0.0.1:${port}/refused`,
        server.url("/malformed"),
        "bb"
      ])
      const invalid = yield* Effect.flip(fetcher.fetchAll(urls, { parallelism: 0 }))
      assert.strictEqual(invalid.field, "parallelism")
    }).pipe(Effect.provide(HttpFetcher.Default)))

  it.scopedLive("per-host KeyedConcurrency bounds requests in flight", () =>
    Effect.gen(function*() {
      let inFlight = 0
      let peak = 0
      const server = yield* Loopback.make((_request, response) => {
        inFlight++
        peak = Math.max(peak, inFlight)
        setImmediate(() => {
          inFlight--
          Loopback.json(response, 200, { login: "x", id: 1 })
        })
      })
      const fetcher = yield* HttpFetcher
      const keyedConcurrency = yield* KeyedConcurrency.make({ perKey: 2, global: 10 })
      const urls = Array.from({ length: 12 }, (_, i) => server.url(`/users/${i}`))
      const results = yield* fetcher.fetchAll(urls, { concurrency: keyedConcurrency, parallelism: 12 })
      assert.isTrue(results.every(Either.isRight))
      assert.strictEqual(peak, 2)
    }).pipe(Effect.provide(HttpFetcher.Default)))

  it.scopedLive("interrupting an in-flight request closes its socket and leaves no fiber behind", () =>
    Effect.gen(function*() {
      const server = yield* Loopback.make(routes())
      const fetcher = yield* HttpFetcher
      const fiber = yield* Effect.fork(fetcher.get(server.url("/hang")))
      yield* server.waitUntil(() => server.requests.length === 1)
      yield* Fiber.interrupt(fiber)
      const exit = yield* Fiber.await(fiber)
      assert.isTrue(Exit.isInterrupted(exit))
      yield* server.waitUntil(() => server.requestConnectionClosed(0))
      assert.isTrue(Option.isSome(yield* Fiber.poll(fiber)))
      const children = yield* Fiber.children(fiber)
      assert.strictEqual(children.length, 0)
      const after = yield* fetcher.get(server.url("/users/again"), { schema: User })
      assert.strictEqual(after.body.login, "again")
    }).pipe(Effect.provide(HttpFetcher.Default)))

  it.scopedLive("interrupting fetchAll aborts every request in flight (each connection closes)", () =>
    Effect.gen(function*() {
      const server = yield* Loopback.make(routes())
      const fetcher = yield* HttpFetcher
      const fiber = yield* Effect.fork(
        fetcher.fetchAll([server.url("/hang"), server.url("/hang"), server.url("/hang")], { parallelism: 2 })
      )
      yield* server.waitUntil(() => server.requests.length === 2)
      yield* Fiber.interrupt(fiber)
      assert.isTrue(Exit.isInterrupted(yield* Fiber.await(fiber)))
      yield* server.waitUntil(() => server.requestConnectionClosed(0) && server.requestConnectionClosed(1))
      assert.strictEqual(server.requests.length, 2, "the third URL was never started")
    }).pipe(Effect.provide(HttpFetcher.Default)))

  it.scopedLive("works over any HttpClient (the stock NodeHttpClient.layerUndici): decode, status, byte cap", () =>
    Effect.gen(function*() {
      const server = yield* Loopback.make(routes())
      const fetcher = yield* HttpFetcher
      const user = yield* fetcher.get(server.url("/users/stock"), { schema: User })
      assert.strictEqual(user.body.login, "stock")
      const missing = yield* Effect.flip(fetcher.get(server.url("/missing")))
      assert.strictEqual(missing._tag, "HttpStatusError")
      const big = yield* Effect.flip(fetcher.get(server.url("/big"), { maxBytes: 64 * 1024 }))
      assert.strictEqual(big._tag, "ResponseTooLarge")
      const malformed = yield* Effect.flip(fetcher.get(server.url("/malformed")))
      assert.strictEqual(malformed._tag, "DecodeError")
    }).pipe(
      Effect.provide(HttpFetcher.DefaultWithoutDependencies.pipe(Layer.provide(NodeHttpClient.layerUndici)))
    ))

  describe("prepareLane: requests started from plain code", () => {
    /** Starts `url` in the lane; `undefined` when it could not start at once, else the outcome once it ends. */
    const startIn = <A>(lane: Lane<A>, url: string, deadlineAt?: number) =>
      Effect.async<LaneOutcome<A> | undefined>((resume) => {
        const request = lane.start(url, (outcome) => resume(Effect.succeed(outcome)), deadlineAt)
        if (request === undefined) return resume(Effect.succeed(undefined))
        return Effect.sync(() => request.cancel())
      })

    const outcomeTag = <A>(outcome: LaneOutcome<A> | undefined) => outcome?._tag ?? "NotStarted"

    it.scopedLive("a plain 2xx is Done from the callback, decoded; the permits and the rate slot were taken", () =>
      Effect.gen(function*() {
        const server = yield* Loopback.make(routes())
        const fetcher = yield* HttpFetcher
        const concurrency = yield* KeyedConcurrency.make({ perKey: 1, global: 1 })
        const rateLimiter = yield* RateLimiter.make({ limit: 2, per: "1 minute" })
        const lane = yield* fetcher.prepareLane({ schema: User, concurrency, rateLimiter, guard: loopbackOnly })
        assert.strictEqual(outcomeTag(yield* startIn(lane, server.url("/users/lane"))), "NotStarted", "no guardNow")
        const guarded = yield* fetcher.prepareLane({
          schema: User,
          concurrency,
          rateLimiter,
          guard: loopbackOnly,
          guardNow: (url) => url.hostname === "127.0.0.1"
        })
        const done = yield* startIn(guarded, server.url("/users/lane"))
        assert.strictEqual(done?._tag, "Done")
        if (done?._tag === "Done") {
          assert.deepStrictEqual([done.result.body.login, done.result.status, done.result.attempts], ["lane", 200, 1])
        }
        assert.strictEqual(yield* concurrency.globalInFlight, 0, "the permits went back")
        assert.strictEqual(outcomeTag(yield* startIn(guarded, server.url("/users/second"))), "Done")
        // The window (2 a minute) is spent: the lane cannot start, and takes no permit trying.
        assert.strictEqual(outcomeTag(yield* startIn(guarded, server.url("/users/third"))), "NotStarted")
        assert.strictEqual(yield* concurrency.globalInFlight, 0)
        assert.strictEqual(server.requests.length, 2)
      }).pipe(Effect.provide(HttpFetcher.Default)))

    it.scopedLive("anything but a plain 2xx is the rest of the GET as an effect: retried, or the final error", () =>
      Effect.gen(function*() {
        const server = yield* Loopback.make(routes())
        const fetcher = yield* HttpFetcher
        const lane = yield* fetcher.prepareLane({ schema: User, retryBaseDelay: "1 millis" })
        const flaky = yield* startIn(lane, server.url("/flaky"))
        assert.strictEqual(flaky?._tag, "Continue")
        if (flaky?._tag === "Continue") {
          const result = yield* flaky.effect
          assert.deepStrictEqual([result.body.login, result.attempts], ["ok", 3], "two 503s, then 200")
        }
        const tags: Array<string> = []
        for (const path of ["/missing", "/malformed", "/mismatch"]) {
          const outcome = yield* startIn(lane, server.url(path))
          if (outcome?._tag === "Continue") tags.push((yield* Effect.flip(outcome.effect))._tag)
        }
        assert.deepStrictEqual(tags, ["HttpStatusError", "DecodeError", "DecodeError"])
        const redirected = yield* startIn(lane, server.url("/redirect/1"))
        assert.strictEqual(redirected?._tag, "Continue")
        if (redirected?._tag === "Continue") assert.strictEqual((yield* redirected.effect).body.login, "landed")
      }).pipe(Effect.provide(HttpFetcher.Default)))

    it.scopedLive("cancel aborts the request (its connection closes) and gives the permits back; no callback", () =>
      Effect.gen(function*() {
        const server = yield* Loopback.make(routes())
        const fetcher = yield* HttpFetcher
        const concurrency = yield* KeyedConcurrency.make({ perKey: 1, global: 1 })
        const lane = yield* fetcher.prepareLane({ concurrency })
        let called = false
        const request = lane.start(server.url("/hang"), () => (called = true))
        assert.isDefined(request)
        yield* server.waitUntil(() => server.requests.length === 1)
        assert.strictEqual(yield* concurrency.globalInFlight, 1)
        request!.cancel()
        request!.cancel()
        assert.strictEqual(yield* concurrency.globalInFlight, 0, "given back once")
        yield* server.waitUntil(() => server.requestConnectionClosed(0))
        // Another exchange completes after the abort: the cancelled one never called back.
        assert.strictEqual(outcomeTag(yield* startIn(lane, server.url("/users/after"))), "Done")
        assert.isFalse(called)
        // Interrupting a fiber waiting on the lane (startIn's hook) aborts the same way.
        const fiber = yield* Effect.fork(startIn(lane, server.url("/hang")))
        yield* server.waitUntil(() => server.requests.length === 3)
        yield* Fiber.interrupt(fiber)
        yield* server.waitUntil(() => server.requestConnectionClosed(2))
        assert.strictEqual(yield* concurrency.globalInFlight, 0)
      }).pipe(Effect.provide(HttpFetcher.Default)))

    it.scopedLive("deadlineAt bounds the timeout: a FetchTimeout by the deadline, not retried", () =>
      Effect.gen(function*() {
        const server = yield* Loopback.make(routes())
        const fetcher = yield* HttpFetcher
        const lane = yield* fetcher.prepareLane({ timeout: "10 seconds" })
        const outcome = yield* startIn(lane, server.url("/hang"), Date.now() + 100)
        assert.strictEqual(outcome?._tag, "Continue")
        if (outcome?._tag === "Continue") {
          const error = yield* Effect.flip(outcome.effect)
          assert.strictEqual(error._tag, "FetchTimeout")
          if (error._tag === "FetchTimeout") assert.isTrue(error.byDeadline)
        }
        assert.strictEqual(server.requests.length, 1)
      }).pipe(Effect.provide(HttpFetcher.Default)))

    it.scopedLive("over another HttpClient the lane never starts; its get still works", () =>
      Effect.gen(function*() {
        const server = yield* Loopback.make(routes())
        const fetcher = yield* HttpFetcher
        const lane = yield* fetcher.prepareLane({ schema: User })
        assert.strictEqual(outcomeTag(yield* startIn(lane, server.url("/users/stock"))), "NotStarted")
        assert.strictEqual((yield* lane.get(server.url("/users/stock"))).body.login, "stock")
      }).pipe(
        Effect.provide(HttpFetcher.DefaultWithoutDependencies.pipe(Layer.provide(NodeHttpClient.layerUndici)))
      ))
  })

  it.effect("bad options are a typed InvalidFetchOptions naming the field", () =>
    Effect.gen(function*() {
      const fetcher = yield* HttpFetcher
      const error = yield* Effect.flip(fetcher.get("http://127.0.0.1:9/", { maxBytes: 0 }))
      assert.strictEqual(error._tag, "InvalidFetchOptions")
      if (error._tag === "InvalidFetchOptions") assert.strictEqual(error.field, "maxBytes")
    }).pipe(Effect.provide(HttpFetcher.Default)))

  describe("backoff in virtual time (a scripted HttpClient)", () => {
    /** An HttpClient answering with the scripted statuses in turn, recording the Clock time of each request. */
    const scripted = (replies: ReadonlyArray<{ status: number; headers?: Record<string, string> }>) => {
      const times: Array<number> = []
      const layer = Layer.succeed(
        HttpClient.HttpClient,
        HttpClient.make((request) =>
          Effect.map(Clock.currentTimeMillis, (now) => {
            const reply = replies[Math.min(times.length, replies.length - 1)]!
            times.push(now)
            const body = reply.status === 200 ? JSON.stringify({ login: "ok", id: 1 }) : "{}"
            return HttpClientResponse.fromWeb(request, new Response(body, reply))
          })
        )
      )
      return { times, layer: HttpFetcher.DefaultWithoutDependencies.pipe(Layer.provide(layer)) }
    }

    it.effect("503s back off exponentially with full jitter: delays within [0, 1 s] then [0, 2 s]", () => {
      const api = scripted([{ status: 503 }, { status: 503 }, { status: 200 }])
      return Effect.gen(function*() {
        const fetcher = yield* HttpFetcher
        const fiber = yield* Effect.fork(
          fetcher.get("http://127.0.0.1/flaky", { schema: User, retryBaseDelay: "1 second" })
        )
        yield* TestClock.adjust(Duration.seconds(3))
        const result = yield* Fiber.join(fiber)
        assert.strictEqual(result.attempts, 3)
        const [t0, t1, t2] = api.times
        assert.isAtMost(t1! - t0!, 1000)
        assert.isAtMost(t2! - t1!, 2000)
      }).pipe(Effect.provide(api.layer))
    })

    it.effect("429 with Retry-After: 30 waits 30 s of virtual time, then succeeds", () => {
      const api = scripted([{ status: 429, headers: { "retry-after": "30" } }, { status: 200 }])
      return Effect.gen(function*() {
        const fetcher = yield* HttpFetcher
        const fiber = yield* Effect.fork(
          fetcher.get("http://127.0.0.1/limited", { schema: User, retryBaseDelay: "1 millis" })
        )
        yield* TestClock.adjust(Duration.seconds(29))
        assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)), "still waiting before the 30 s")
        assert.strictEqual(api.times.length, 1)
        yield* TestClock.adjust(Duration.seconds(2))
        const result = yield* Fiber.join(fiber)
        assert.strictEqual(result.attempts, 2)
        assert.isAtLeast(api.times[1]! - api.times[0]!, 30_000)
      }).pipe(Effect.provide(api.layer))
    })

    it.scoped("the rate slot is taken inside the concurrency permit: no 500 ms window holds more than 2 starts", () => {
      // The first response takes 1 s, the others 10 ms. Slots taken before the permit (the old order) were recorded
      // at 0, 0, 500, 500 while the requests started at 0, 1000, 1010, 1020: three starts within 20 ms.
      const starts: Array<number> = []
      const client = HttpClient.make((request) =>
        Effect.gen(function*() {
          starts.push(yield* Clock.currentTimeMillis)
          yield* Effect.sleep(starts.length === 1 ? "1 second" : "10 millis")
          return HttpClientResponse.fromWeb(request, new Response(JSON.stringify({ login: "ok", id: 1 })))
        })
      )
      return Effect.gen(function*() {
        const fetcher = yield* HttpFetcher
        const rateLimiter = yield* RateLimiter.make({ limit: 2, per: "500 millis" })
        const concurrency = yield* KeyedConcurrency.make({ perKey: 1, global: 10 })
        const urls = Array.from({ length: 4 }, (_, i) => `http://127.0.0.1/users/${i}`)
        const fiber = yield* Effect.fork(
          Effect.forEach(urls, (url) => fetcher.get(url, { schema: User, rateLimiter, concurrency }), {
            concurrency: "unbounded"
          })
        )
        for (let step = 0; step < 200; step++) yield* TestClock.adjust("10 millis")
        const results = yield* Fiber.join(fiber)
        assert.deepStrictEqual(results.map((result) => result.body.login), ["ok", "ok", "ok", "ok"])
        assert.deepStrictEqual(starts, [0, 1000, 1010, 1500])
        for (let i = 2; i < starts.length; i++) assert.isAtLeast(starts[i]! - starts[i - 2]!, 500)
      }).pipe(
        Effect.provide(HttpFetcher.DefaultWithoutDependencies.pipe(
          Layer.provide(Layer.succeed(HttpClient.HttpClient, client))
        ))
      )
    })

    it.scoped("Retry-After with both hooks: no request to the host starts until the pause ends, then both go", () => {
      const api = scripted([{ status: 429, headers: { "retry-after": "30" } }, { status: 200 }])
      return Effect.gen(function*() {
        const fetcher = yield* HttpFetcher
        const rateLimiter = yield* RateLimiter.make({ limit: 100, per: "1 second" })
        const concurrency = yield* KeyedConcurrency.make({ perKey: 1, global: 10 })
        const options = { schema: User, rateLimiter, concurrency, retryBaseDelay: "1 millis" } as const
        const first = yield* Effect.fork(fetcher.get("http://127.0.0.1/limited", options))
        yield* Effect.yieldNow()
        const second = yield* Effect.fork(fetcher.get("http://127.0.0.1/other", options))
        yield* TestClock.adjust(Duration.seconds(29))
        assert.deepStrictEqual(api.times, [0], "nothing starts while the host is paused")
        yield* TestClock.adjust(Duration.seconds(2))
        const results = yield* Fiber.join(Fiber.zip(first, second))
        assert.deepStrictEqual(results.map((result) => result.attempts), [2, 1])
        // The second request starts when the pause ends; the first one's retry then, after its 1 ms backoff step.
        assert.deepStrictEqual(api.times.slice(0, 2), [0, 30_000])
        assert.isAtMost(api.times[2]! - 30_000, 1)
      }).pipe(Effect.provide(api.layer))
    })

    /** The names of the current span and its ancestors. */
    const spanNames = Effect.map(Effect.option(Effect.currentSpan), (current) => {
      const names: Array<string> = []
      let span: Option.Option<Tracer.AnySpan> = current
      while (Option.isSome(span) && span.value._tag === "Span") {
        names.push(span.value.name)
        span = span.value.parent
      }
      return names
    })

    it.effect("get is traced (an HttpFetcher.get span) unless tracing is off; prepare's get never is", () => {
      const spans: Array<ReadonlyArray<string>> = []
      const client = HttpClient.make((request) =>
        Effect.map(spanNames, (names) => {
          spans.push(names)
          return HttpClientResponse.fromWeb(request, new Response(JSON.stringify({ login: "ok", id: spans.length })))
        })
      )
      return Effect.gen(function*() {
        const fetcher = yield* HttpFetcher
        const options = { schema: User, retries: 1 }
        const traced = yield* fetcher.get("http://127.0.0.1/users/a", options)
        const untraced = yield* Effect.withTracerEnabled(fetcher.get("http://127.0.0.1/users/b", options), false)
        const get = yield* fetcher.prepare(options)
        const prepared = yield* get("http://127.0.0.1/users/c")
        assert.deepStrictEqual([traced.body.id, untraced.body.id, prepared.body.id], [1, 2, 3])
        assert.deepStrictEqual(spans.map((names) => names.includes("HttpFetcher.get")), [true, false, false])
      }).pipe(
        Effect.provide(HttpFetcher.DefaultWithoutDependencies.pipe(
          Layer.provide(Layer.succeed(HttpClient.HttpClient, client))
        ))
      )
    })

    it.effect("prepare validates options once: bad ones fail there, naming the field; get fails on every call", () => {
      const api = scripted([{ status: 200 }])
      return Effect.gen(function*() {
        const fetcher = yield* HttpFetcher
        const error = yield* Effect.flip(fetcher.prepare({ retries: -1 }))
        assert.strictEqual(error.field, "retries")
        const bad = { timeout: "0 millis" } as const
        for (let call = 0; call < 2; call++) {
          const failed = yield* Effect.flip(
            Effect.withTracerEnabled(fetcher.get("http://127.0.0.1/users/x", bad), false)
          )
          assert.strictEqual(failed._tag, "InvalidFetchOptions")
          if (failed._tag === "InvalidFetchOptions") assert.strictEqual(failed.field, "timeout")
        }
        assert.strictEqual(api.times.length, 0)
        const get = yield* fetcher.prepare({ schema: Schema.Struct({ login: Schema.Number }), retries: 0 })
        const mismatch = yield* Effect.flip(get("http://127.0.0.1/users/y"))
        assert.strictEqual(mismatch._tag, "DecodeError")
        if (mismatch._tag === "DecodeError") assert.strictEqual(mismatch.path, "login")
        assert.strictEqual(api.times.length, 1)
      }).pipe(Effect.provide(api.layer))
    })

    it.effect("a Retry-After beyond maxRetryAfter is not waited for: RateLimited at once", () => {
      const api = scripted([{ status: 429, headers: { "retry-after": "3600" } }, { status: 200 }])
      return Effect.gen(function*() {
        const fetcher = yield* HttpFetcher
        const error = yield* Effect.flip(fetcher.get("http://127.0.0.1/limited", { maxRetryAfter: "1 minute" }))
        assert.strictEqual(error._tag, "RateLimited")
        if (error._tag === "RateLimited") assert.strictEqual(error.attempts, 1)
        assert.strictEqual(api.times.length, 1)
      }).pipe(Effect.provide(api.layer))
    })
  })
})
