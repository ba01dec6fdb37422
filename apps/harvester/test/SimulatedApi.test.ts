import type { Headers } from "@effect/platform"
import { HttpClient } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Either, Fiber, Schema } from "effect"
import * as SimulatedApi from "../src/Demo/SimulatedApi.js"

const Items = Schema.Struct({ items: Schema.Array(Schema.Struct({ id: Schema.Number, name: Schema.String })) })

const getJson = (url: string, headers: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const client = yield* HttpClient.HttpClient
    const response = yield* client.get(url, { headers })
    const text = yield* response.text
    return { status: response.status, headers: response.headers, text }
  })

const idsOf = (text: string) => Schema.decodeUnknownSync(Schema.parseJson(Items))(text).items.map((item) => item.id)

describe("SimulatedApi", () => {
  it.live("paginates by page number and records every request with its query", () =>
    Effect.gen(function*() {
      const api = yield* SimulatedApi.start({
        routes: { "/p": { collection: { items: 25, pageSize: 10, style: "page" } } }
      })
      const pages = yield* Effect.forEach([1, 2, 3, 4], (page) => getJson(`${api.baseUrl}/p?page=${page}`))
      assert.deepStrictEqual(pages.map((page) => idsOf(page.text).length), [10, 10, 5, 0])
      assert.deepStrictEqual(idsOf(pages[1].text)[0], 10)
      const requests = yield* api.requests
      assert.deepStrictEqual(requests.map((request) => request.query["page"]), ["1", "2", "3", "4"])
      assert.deepStrictEqual(requests.map((request) => request.path), ["/p", "/p", "/p", "/p"])
      assert.isTrue(requests.every((request, i) => i === 0 || request.at >= requests[i - 1].at))
      assert.isTrue(api.baseUrl.startsWith("http://127.0.0.1:"))
    }).pipe(Effect.scoped, Effect.provide(NodeHttpClient.layerUndici)))

  it.live("paginates by offset/limit, by a cursor field in the body and by the Link header", () =>
    Effect.gen(function*() {
      const api = yield* SimulatedApi.start({
        routes: {
          "/o": { collection: { items: 7, pageSize: 3, style: "offset" } },
          "/c": { collection: { items: 7, pageSize: 3, style: "cursor", cursorField: "next" } },
          "/l": { collection: { items: 7, pageSize: 3, style: "link" } }
        }
      })
      const offset = yield* getJson(`${api.baseUrl}/o?offset=5&limit=3`)
      assert.deepStrictEqual(idsOf(offset.text), [5, 6])

      const cursorIds: Array<number> = []
      let cursor: string | null = null
      let cursorPages = 0
      do {
        const url: string = cursor === null ? `${api.baseUrl}/c` : `${api.baseUrl}/c?cursor=${cursor}`
        const page = yield* getJson(url)
        const body = Schema.decodeUnknownSync(Schema.parseJson(Schema.Struct({ next: Schema.NullOr(Schema.String) })))(
          page.text
        )
        cursorIds.push(...idsOf(page.text))
        cursor = body.next
        cursorPages++
      } while (cursor !== null)
      assert.deepStrictEqual(cursorIds, [0, 1, 2, 3, 4, 5, 6])
      assert.strictEqual(cursorPages, 3)

      const linkIds: Array<number> = []
      let next: string | undefined = `${api.baseUrl}/l`
      let linkPages = 0
      while (next !== undefined) {
        const page: { readonly text: string; readonly headers: Headers.Headers } = yield* getJson(next)
        linkIds.push(...idsOf(page.text))
        next = /<([^>]+)>;\s*rel="next"/.exec(page.headers["link"] ?? "")?.[1]
        linkPages++
      }
      assert.deepStrictEqual(linkIds, [0, 1, 2, 3, 4, 5, 6])
      assert.strictEqual(linkPages, 3)
    }).pipe(Effect.scoped, Effect.provide(NodeHttpClient.layerUndici)))

  it.live("rate-limits per client with 429 and Retry-After in delta-seconds or HTTP-date form", () =>
    Effect.gen(function*() {
      const seconds = yield* SimulatedApi.start({
        routes: { "/x": { json: { ok: true } }, "/free": { json: { ok: true }, unlimited: true } },
        rateLimit: { limit: 2, perMillis: 60_000 }
      })
      const statuses = yield* Effect.forEach(
        ["a", "a", "a", "b", "a"],
        (client) => getJson(`${seconds.baseUrl}/x`, { "x-client-id": client })
      )
      assert.deepStrictEqual(statuses.map((answer) => answer.status), [200, 200, 429, 200, 429])
      const retryAfter = Number(statuses[2].headers["retry-after"])
      assert.isTrue(retryAfter >= 59 && retryAfter <= 60, `Retry-After ${retryAfter}`)
      assert.strictEqual((yield* getJson(`${seconds.baseUrl}/free`, { "x-client-id": "a" })).status, 200)
      const outcomes = (yield* seconds.requests).map((request) => request.outcome)
      assert.deepStrictEqual(outcomes, ["ok", "ok", "rateLimited", "ok", "rateLimited", "ok"])

      const dated = yield* SimulatedApi.start({
        routes: { "/x": { json: { ok: true } } },
        rateLimit: { limit: 1, perMillis: 5_000, retryAfter: "date" }
      })
      yield* getJson(`${dated.baseUrl}/x`)
      const limited = yield* getJson(`${dated.baseUrl}/x`)
      assert.strictEqual(limited.status, 429)
      const until = Date.parse(limited.headers["retry-after"] ?? "")
      assert.isFalse(Number.isNaN(until), "an HTTP-date")
      assert.isTrue(until - Date.now() > 3_000 && until - Date.now() <= 6_000)
    }).pipe(Effect.scoped, Effect.provide(NodeHttpClient.layerUndici)))

  it.live("fails deterministically: every Nth request of a route, and the first N of each URL", () =>
    Effect.gen(function*() {
      const api = yield* SimulatedApi.start({
        routes: {
          "/every": { json: { ok: true }, failEvery: 3 },
          "/first": { json: { ok: true }, failFirst: 2, failStatus: 503, failRetryAfterSeconds: 1 }
        }
      })
      const every = yield* Effect.forEach([1, 2, 3, 4, 5, 6], (n) => getJson(`${api.baseUrl}/every?n=${n}`))
      assert.deepStrictEqual(every.map((answer) => answer.status), [200, 200, 500, 200, 200, 500])
      const first = yield* Effect.forEach(["a", "a", "a", "b"], (q) => getJson(`${api.baseUrl}/first?q=${q}`))
      assert.deepStrictEqual(first.map((answer) => answer.status), [503, 503, 200, 503])
      assert.strictEqual(first[0].headers["retry-after"], "1")
    }).pipe(Effect.scoped, Effect.provide(NodeHttpClient.layerUndici)))

  it.live("resets connections, sends malformed JSON and redirects", () =>
    Effect.gen(function*() {
      const api = yield* SimulatedApi.start({
        routes: {
          "/reset": { json: { ok: true }, resetFirst: 1 },
          "/reset-mid": { json: { ok: true }, resetEvery: 1, resetMode: "midBody" },
          "/bad": { malformed: true },
          "/moved": { redirect: { location: "/target", status: 301 } },
          "/target": { json: { arrived: true } }
        }
      })
      const reset = yield* Effect.either(getJson(`${api.baseUrl}/reset`))
      assert.isTrue(Either.isLeft(reset), "the first request is reset")
      assert.strictEqual((yield* getJson(`${api.baseUrl}/reset`)).status, 200)
      assert.isTrue(Either.isLeft(yield* Effect.either(getJson(`${api.baseUrl}/reset-mid`))), "reset mid-body")

      const bad = yield* getJson(`${api.baseUrl}/bad`)
      assert.strictEqual(bad.headers["content-type"], "application/json")
      assert.throws(() => JSON.parse(bad.text))

      const client = yield* HttpClient.HttpClient
      const moved = yield* client.get(`${api.baseUrl}/moved`)
      assert.strictEqual(moved.status, 301)
      assert.strictEqual(moved.headers["location"], "/target")
      const followed = yield* client.pipe(HttpClient.followRedirects(3)).get(`${api.baseUrl}/moved`)
      assert.deepStrictEqual(yield* followed.json, { arrived: true })

      const requests = yield* api.requests
      assert.deepStrictEqual(requests.map((request) => [request.path, request.status, request.outcome]), [
        ["/reset", null, "reset"],
        ["/reset", 200, "ok"],
        ["/reset-mid", null, "reset"],
        ["/bad", 200, "malformed"],
        ["/moved", 301, "redirect"],
        ["/moved", 301, "redirect"],
        ["/target", 200, "ok"]
      ])
    }).pipe(Effect.scoped, Effect.provide(NodeHttpClient.layerUndici)))

  it.live("records concurrency at arrival; slow bodies arrive whole; reset clears the record", () =>
    Effect.gen(function*() {
      const api = yield* SimulatedApi.start({
        routes: {
          "/slow": { collection: { items: 30, pageSize: 30, style: "none" }, delayMillis: 100 },
          "/trickle": {
            collection: { items: 20, pageSize: 20, style: "none" },
            slowBody: { chunks: 4, intervalMillis: 20 }
          }
        }
      })
      yield* Effect.forEach([1, 2, 3, 4, 5], (n) => getJson(`${api.baseUrl}/slow?n=${n}`), { concurrency: 5 })
      assert.strictEqual(yield* api.maxConcurrent, 5)
      const concurrent = (yield* api.requests).map((request) => request.concurrent).sort()
      assert.deepStrictEqual(concurrent, [1, 2, 3, 4, 5])

      const trickle = yield* getJson(`${api.baseUrl}/trickle`)
      assert.strictEqual(idsOf(trickle.text).length, 20)
      const slowOnes = (yield* api.requests).filter((request) => request.path === "/slow")
      assert.isTrue(slowOnes.every((request) => request.completed && request.endedAt !== null))
      assert.isTrue(slowOnes.every((request) => request.endedAt! - request.at >= 99), "answered after the delay")

      yield* api.reset
      assert.strictEqual((yield* api.requests).length, 0)
      assert.strictEqual(yield* api.maxConcurrent, 0)
      assert.strictEqual(yield* api.openRequests, 0)
    }).pipe(Effect.scoped, Effect.provide(NodeHttpClient.layerUndici)))

  it.live("closing the scope closes the server, even with a slow answer pending", () =>
    Effect.gen(function*() {
      const { baseUrl, pending, requestsAfter } = yield* Effect.scoped(
        Effect.gen(function*() {
          const api = yield* SimulatedApi.start({ routes: { "/hang": { json: {}, delayMillis: 60_000 } } })
          const pending = yield* Effect.fork(getJson(`${api.baseUrl}/hang`))
          while ((yield* api.openRequests) === 0) yield* Effect.sleep("5 millis")
          return { baseUrl: api.baseUrl, pending, requestsAfter: api.requests }
        })
      )
      const after = yield* Effect.either(getJson(`${baseUrl}/hang`))
      assert.isTrue(Either.isLeft(after), "nothing listens any more")
      const hung = yield* Effect.either(Fiber.join(pending))
      assert.isTrue(Either.isLeft(hung), "the pending request was cut, not left hanging")
      const [record] = yield* requestsAfter
      assert.isFalse(record.completed, "cut short")
      assert.isNotNull(record.endedAt)
    }).pipe(Effect.provide(NodeHttpClient.layerUndici)))

  it.live("setRoute adds a route while running; unknown paths answer 404", () =>
    Effect.gen(function*() {
      const api = yield* SimulatedApi.start({ routes: {} })
      assert.strictEqual((yield* getJson(`${api.baseUrl}/new`)).status, 404)
      yield* api.setRoute("/new/*", { json: { fresh: true } })
      const answer = yield* getJson(`${api.baseUrl}/new/deep/path`)
      assert.strictEqual(answer.status, 200)
      assert.deepStrictEqual(JSON.parse(answer.text), { fresh: true })
    }).pipe(Effect.scoped, Effect.provide(NodeHttpClient.layerUndici)))
})
