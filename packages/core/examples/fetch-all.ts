/**
 * fetch-all — aiohttp's `fetch_all`: three users fetched concurrently, JSON decoded by a Schema, `<url>: <status>`.
 *
 * `HttpFetcher.fetchAll` is `asyncio.gather(*[fetch_url(session, url) ...])` over one shared keep-alive client (the
 * `ClientSession`), with what the tutorial leaves out: a typed error per URL instead of an exception that sinks the
 * whole gather, retries with backoff on transient failures, timeouts, bounded concurrency, and a byte cap. The network
 * here is loopback-only, so the program serves the three users itself from a small Effect `HttpRouter` app on a
 * loopback port before fetching them.
 */
import { HttpRouter, HttpServer, HttpServerResponse } from "@effect/platform"
import type { HttpServerError } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import type { Scope } from "effect"
import { Console, Effect, Either, Layer, Schema } from "effect"
import { createServer } from "node:http"
import { HttpFetcher } from "../src/HttpFetcher.js"

export class User extends Schema.Class<User>("User")({
  login: Schema.String,
  id: Schema.Number,
  public_repos: Schema.Number
}) {}

const USERS: Record<string, User> = {
  python: new User({ login: "python", id: 1525981, public_repos: 86 }),
  microsoft: new User({ login: "microsoft", id: 6154722, public_repos: 6900 }),
  google: new User({ login: "google", id: 1342004, public_repos: 2700 })
}

const router = HttpRouter.empty.pipe(
  HttpRouter.get(
    "/users/:name",
    Effect.gen(function*() {
      const { name } = yield* HttpRouter.params
      const user = name === undefined ? undefined : USERS[name]
      return user === undefined
        ? yield* HttpServerResponse.json({ message: "Not Found" }, { status: 404 })
        : yield* HttpServerResponse.json(user)
    })
  )
)

/** Serves `/users/<name>` on a loopback port for the life of the scope; returns the base URL. */
export const serveUsers: Effect.Effect<string, HttpServerError.ServeError, Scope.Scope> = Effect.gen(function*() {
  const context = yield* Layer.build(NodeHttpServer.layer(createServer, { port: 0, host: "127.0.0.1" }))
  return yield* Effect.gen(function*() {
    yield* HttpServer.serveEffect(router)
    const { address } = yield* HttpServer.HttpServer
    return address._tag === "TcpAddress" ? `http://127.0.0.1:${address.port}` : "http://127.0.0.1"
  }).pipe(Effect.provide(context))
})

/** The tutorial's `fetch_all`: every URL at once (bounded), one typed result per URL, in input order. */
export const fetchAll = (urls: ReadonlyArray<string>) =>
  Effect.flatMap(HttpFetcher, (fetcher) => fetcher.fetchAll(urls, { schema: User, timeout: "5 seconds" }))

export const main = Effect.scoped(
  Effect.gen(function*() {
    const base = yield* serveUsers
    const urls = ["python", "microsoft", "google"].map((name) => `${base}/users/${name}`)
    const results = yield* fetchAll(urls)
    for (const [index, result] of results.entries()) {
      yield* Either.match(result, {
        onRight: (response) => Console.log(`${response.url}: ${response.status}`),
        onLeft: (error) => Console.log(`${urls[index]}: ${error._tag}`)
      })
    }
  })
).pipe(Effect.provide(HttpFetcher.Default))
