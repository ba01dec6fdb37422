import { assert, describe, it } from "@effect/vitest"
import { Chunk, Effect, Either, Exit, Fiber, Option, Stream } from "effect"
import type { IncomingMessage, ServerResponse } from "node:http"
import { HttpFetcher } from "../src/HttpFetcher.js"
import type { FetchError, FetchResult, InvalidFetchOptions } from "../src/HttpFetcher.js"
import * as Paginate from "../src/Paginate.js"
import type { LoopbackServer } from "./support/LoopbackServer.js"
import * as Loopback from "./support/LoopbackServer.js"

const ITEMS = Array.from({ length: 23 }, (_, i) => `item-${i}`)

/** A paginated API in the four styles. */
const api = (request: IncomingMessage, response: ServerResponse, server: LoopbackServer) => {
  const url = new URL(request.url ?? "/", server.origin)
  const q = url.searchParams
  switch (url.pathname) {
    case "/pages": {
      const page = Number(q.get("page"))
      const items = page >= 1 && page <= 5 ? Array.from({ length: 10 }, (_, i) => `p${page}-${i}`) : []
      return Loopback.json(response, 200, { page, items })
    }
    case "/offset": {
      const offset = Number(q.get("offset"))
      const limit = Number(q.get("limit") ?? "10")
      return Loopback.json(response, 200, ITEMS.slice(offset, offset + limit))
    }
    case "/cursor": {
      const after = q.get("after")
      const index = after === null ? 0 : Number(after.slice(1))
      const next = index < 3 ? `c${index + 1}` : null
      return Loopback.json(response, 200, { data: [`after-${after}`], meta: { next_cursor: next } })
    }
    case "/cursor-loop": {
      return Loopback.json(response, 200, { data: [1], meta: { next_cursor: "same" } })
    }
    case "/link": {
      const p = Number(q.get("p") ?? "1")
      const links = [
        // GitHub style, relative targets, a quoted parameter with a comma and a semicolon, several links.
        p < 3 ? `</link?p=${p + 1}>; rel="next"; title="page ${p + 1}, of 3; ok"` : undefined,
        `<http://127.0.0.1:${server.port}/link?p=3>; rel=last`,
        `</link?p=1>; rel="first"`
      ].filter((link) => link !== undefined)
      return Loopback.json(response, 200, { p }, { link: links.join(", ") })
    }
    case "/link-multi-rel": {
      const p = Number(q.get("p") ?? "1")
      const link = p === 1 ? `<?p=2>; rel="next last"` : `<?p=1>; rel="first prev"`
      return Loopback.json(response, 200, { p }, { link })
    }
    case "/link-loop": {
      const p = Number(q.get("p") ?? "1")
      return Loopback.json(response, 200, { p }, { link: `</link-loop?p=${p === 1 ? 2 : 1}>; rel="next"` })
    }
    case "/link-bad": {
      return Loopback.json(response, 200, {}, { link: `</link-bad?p=2; rel="next"` })
    }
    case "/hang": {
      return
    }
  }
  Loopback.json(response, 404, {})
}

const collect = <A, E, R>(stream: Stream.Stream<A, E, R>) =>
  Effect.map(Stream.runCollect(stream), Chunk.toReadonlyArray)

const withApi = <A, E>(
  f: (
    server: LoopbackServer,
    fetchPage: (url: string) => Effect.Effect<FetchResult<unknown>, FetchError | InvalidFetchOptions>
  ) => Effect.Effect<A, E>
) =>
  Effect.gen(function*() {
    const server = yield* Loopback.make(api)
    const fetcher = yield* HttpFetcher
    return yield* f(server, (url) => fetcher.get(url, { retries: 0 }))
  }).pipe(Effect.provide(HttpFetcher.Default))

describe("Paginate.stream", () => {
  it.scopedLive("page numbers: five pages, ends at the first empty page (not emitted)", () =>
    withApi((server, fetchPage) =>
      Effect.gen(function*() {
        const pages = yield* collect(
          Paginate.stream(fetchPage, Paginate.Page({ param: "page" }), { url: server.url("/pages") })
        )
        assert.deepStrictEqual(pages.map((page) => (page.body as { page: number }).page), [1, 2, 3, 4, 5])
        assert.deepStrictEqual(server.requests.map((r) => r.path), [1, 2, 3, 4, 5, 6].map((n) => `/pages?page=${n}`))
      })
    ))

  it.scopedLive("lazy: taking 2 pages fetches exactly 2", () =>
    withApi((server, fetchPage) =>
      Effect.gen(function*() {
        const pages = yield* collect(
          Paginate.stream(fetchPage, Paginate.Page({ param: "page" }), { url: server.url("/pages") }).pipe(
            Stream.take(2)
          )
        )
        assert.strictEqual(pages.length, 2)
        assert.strictEqual(server.requests.length, 2)
      })
    ))

  it.scopedLive("offset/limit: advances by the items received; a short page is the last", () =>
    withApi((server, fetchPage) =>
      Effect.gen(function*() {
        const limited = yield* collect(
          Paginate.stream(fetchPage, Paginate.Offset({ param: "offset", limitParam: "limit", limit: 10 }), {
            url: server.url("/offset")
          })
        )
        assert.deepStrictEqual(limited.flatMap((page) => page.body as Array<string>), ITEMS)
        assert.deepStrictEqual(server.requests.map((r) => r.path), [
          "/offset?offset=0&limit=10",
          "/offset?offset=10&limit=10",
          "/offset?offset=20&limit=10"
        ])
        // Without a limit parameter the page size is unknown: it stops at the first empty page.
        const strategy = yield* Paginate.parseStrategy("offset:offset")
        const open = yield* collect(Paginate.stream(fetchPage, strategy, { url: server.url("/offset") }))
        assert.strictEqual(open.length, 3)
        assert.strictEqual(server.requests.length, 3 + 4)
      })
    ))

  it.scopedLive("cursor in the JSON body (a dotted field): follows it until null", () =>
    withApi((server, fetchPage) =>
      Effect.gen(function*() {
        const strategy = yield* Paginate.parseStrategy("cursor:meta.next_cursor:after")
        const pages = yield* collect(Paginate.stream(fetchPage, strategy, { url: server.url("/cursor") }))
        assert.deepStrictEqual(pages.map((page) => (page.body as { data: Array<string> }).data[0]), [
          "after-null",
          "after-c1",
          "after-c2",
          "after-c3"
        ])
        assert.deepStrictEqual(server.requests.map((r) => r.path), [
          "/cursor",
          "/cursor?after=c1",
          "/cursor?after=c2",
          "/cursor?after=c3"
        ])
      })
    ))

  it.scopedLive("a cursor seen twice is a PaginationLoop", () =>
    withApi((server, fetchPage) =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(
          collect(
            Paginate.stream(fetchPage, Paginate.Cursor({ field: "meta.next_cursor", param: "after" }), {
              url: server.url("/cursor-loop")
            })
          )
        )
        assert.strictEqual(error._tag, "PaginationLoop")
        if (error._tag === "PaginationLoop") assert.strictEqual(error.repeated, "same")
        assert.strictEqual(server.requests.length, 2)
      })
    ))

  it.scopedLive("Link rel=next: relative targets resolved, quoted params, several links; ends without next", () =>
    withApi((server, fetchPage) =>
      Effect.gen(function*() {
        const pages = yield* collect(Paginate.stream(fetchPage, Paginate.Link(), { url: server.url("/link") }))
        assert.deepStrictEqual(pages.map((page) => (page.body as { p: number }).p), [1, 2, 3])
        assert.deepStrictEqual(server.requests.map((r) => r.path), ["/link", "/link?p=2", "/link?p=3"])
        const multi = yield* collect(
          Paginate.stream(fetchPage, Paginate.Link(), { url: server.url("/link-multi-rel?p=1") })
        )
        assert.deepStrictEqual(multi.map((page) => (page.body as { p: number }).p), [1, 2])
      })
    ))

  it.scopedLive("a next link seen twice is a PaginationLoop; a malformed Link header is MalformedLinkHeader", () =>
    withApi((server, fetchPage) =>
      Effect.gen(function*() {
        const loop = yield* Effect.flip(
          collect(Paginate.stream(fetchPage, Paginate.Link(), { url: server.url("/link-loop?p=1") }))
        )
        assert.strictEqual(loop._tag, "PaginationLoop")
        assert.strictEqual(server.requests.length, 2)
        const bad = yield* Effect.flip(
          collect(Paginate.stream(fetchPage, Paginate.Link(), { url: server.url("/link-bad") }))
        )
        assert.strictEqual(bad._tag, "MalformedLinkHeader")
      })
    ))

  it.scopedLive("maxPages: the page past the cap fails with MaxPagesExceeded and is never fetched", () =>
    withApi((server, fetchPage) =>
      Effect.gen(function*() {
        const seen: Array<unknown> = []
        const error = yield* Effect.flip(
          Paginate.stream(fetchPage, Paginate.Page({ param: "page" }), { url: server.url("/pages"), maxPages: 3 }).pipe(
            Stream.runForEach((page) => Effect.sync(() => seen.push(page.body)))
          )
        )
        assert.strictEqual(error._tag, "MaxPagesExceeded")
        assert.strictEqual(seen.length, 3)
        assert.strictEqual(server.requests.length, 3)
        const invalid = yield* Effect.flip(
          collect(Paginate.stream(fetchPage, Paginate.Link(), { url: server.url("/pages"), maxPages: 0 }))
        )
        assert.strictEqual(invalid._tag, "InvalidPaginateOptions")
      })
    ))

  it.scopedLive("interrupting the stream mid-page aborts the request (the server sees the connection close)", () =>
    withApi((server, fetchPage) =>
      Effect.gen(function*() {
        const fiber = yield* Effect.fork(
          collect(Paginate.stream(fetchPage, Paginate.Link(), { url: server.url("/hang") }))
        )
        yield* server.waitUntil(() => server.requests.length === 1)
        yield* Fiber.interrupt(fiber)
        assert.isTrue(Exit.isInterrupted(yield* Fiber.await(fiber)))
        yield* server.waitUntil(() => server.requestConnectionClosed(0))
        assert.strictEqual(server.requests.length, 1)
      })
    ))
})

describe("Paginate.parseStrategy", () => {
  it.effect("parses the four CLI forms", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* Paginate.parseStrategy("link"), Paginate.Link())
      assert.deepStrictEqual(yield* Paginate.parseStrategy("page:page"), Paginate.Page({ param: "page" }))
      assert.deepStrictEqual(yield* Paginate.parseStrategy("page:p:0"), Paginate.Page({ param: "p", start: 0 }))
      assert.deepStrictEqual(yield* Paginate.parseStrategy("offset:skip"), Paginate.Offset({ param: "skip", limit: 0 }))
      assert.deepStrictEqual(
        yield* Paginate.parseStrategy("offset:offset:limit:50"),
        Paginate.Offset({ param: "offset", limitParam: "limit", limit: 50 })
      )
      assert.deepStrictEqual(
        yield* Paginate.parseStrategy("cursor:meta.next:after"),
        Paginate.Cursor({ field: "meta.next", param: "after" })
      )
    }))

  it.effect("rejects bad specs with InvalidPaginateSpec naming the problem", () =>
    Effect.gen(function*() {
      const reason = (spec: string) => Effect.map(Effect.flip(Paginate.parseStrategy(spec)), (error) => error.reason)
      assert.include(yield* reason(""), "empty spec")
      assert.include(yield* reason("pages:page"), "unknown strategy \"pages\"")
      assert.include(yield* reason("page"), "expected page:<param>")
      assert.include(yield* reason("page:"), "missing page parameter")
      assert.include(yield* reason("page:p:x"), "start page \"x\"")
      assert.include(yield* reason("offset:o:limit:0"), "limit \"0\"")
      assert.include(yield* reason("cursor:next"), "expected cursor:<json-field>:<param>")
      assert.include(yield* reason("cursor:a..b:after"), "not a dotted field path")
      assert.include(yield* reason("cursor:next:af ter"), "cursor parameter \"af ter\"")
      assert.include(yield* reason("link:x"), "takes no arguments")
      const error = yield* Effect.flip(Paginate.parseStrategy("nope"))
      assert.strictEqual(error._tag, "InvalidPaginateSpec")
      assert.strictEqual(error.spec, "nope")
    }))
})

describe("Paginate.parseLinkHeader", () => {
  it("parses GitHub's header: several links, rel lists, quoted values with commas and escapes", () => {
    const parsed = Paginate.parseLinkHeader(
      `<https://api.example.test/repos?page=2>; rel="next", <https://api.example.test/repos?page=9>; rel="last", ` +
        `<./x>; rel="prev first"; title="a, \\"b\\"; c"`
    )
    assert.isTrue(Either.isRight(parsed))
    if (Either.isLeft(parsed)) return
    assert.deepStrictEqual(parsed.right.map((link) => link.rel), [["next"], ["last"], ["prev", "first"]])
    assert.strictEqual(parsed.right[2]!.params["title"], "a, \"b\"; c")
    assert.strictEqual(parsed.right[2]!.target, "./x")
  })

  it("resolves the next target against the page URL", () => {
    const next = Paginate.nextLink(`<?page=3>; rel="NEXT"`, "http://127.0.0.1:8080/items?page=2")
    assert.deepStrictEqual(next, Either.right(Option.some("http://127.0.0.1:8080/items?page=3")))
    assert.deepStrictEqual(Paginate.nextLink(`<x>; rel="last"`, "http://127.0.0.1/"), Either.right(Option.none()))
  })

  it("rejects malformed headers with the position and reason", () => {
    for (
      const header of [
        `https://no-brackets; rel="next"`,
        `<unterminated; rel="next"`,
        `<a>; rel="unterminated`,
        `<a> rel="next"`,
        `<a>; ="x"`
      ]
    ) {
      const parsed = Paginate.parseLinkHeader(header)
      assert.isTrue(Either.isLeft(parsed), header)
      if (Either.isLeft(parsed)) assert.strictEqual(parsed.left._tag, "MalformedLinkHeader")
    }
  })
})
