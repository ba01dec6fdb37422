import { assert, describe, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import { fetchAll, serveUsers, User } from "../../examples/fetch-all.js"
import { HttpFetcher } from "../../src/HttpFetcher.js"
import * as Loopback from "../support/LoopbackServer.js"

describe("fetch-all", () => {
  it.scopedLive("fetches the three users from the loopback server, decoded by the Schema, in input order", () =>
    Effect.gen(function*() {
      const base = yield* serveUsers
      const urls = ["python", "microsoft", "google"].map((name) => `${base}/users/${name}`)
      const results = yield* fetchAll(urls)
      assert.strictEqual(results.length, 3)
      const users = results.map((result) => Either.getOrThrow(result))
      assert.deepStrictEqual(users.map((response) => response.url), urls)
      assert.deepStrictEqual(users.map((response) => response.status), [200, 200, 200])
      assert.isTrue(users.every((response) => response.body instanceof User))
      assert.deepStrictEqual(users.map((response) => response.body.login), ["python", "microsoft", "google"])
    }).pipe(Effect.provide(HttpFetcher.Default)))

  it.scopedLive("the GETs really are concurrent: the server holds every reply until all three have arrived", () =>
    Effect.gen(function*() {
      const waiting: Array<() => void> = []
      const server = yield* Loopback.make((request, response) => {
        const login = (request.url ?? "").split("/").pop() ?? ""
        waiting.push(() => Loopback.json(response, 200, { login, id: waiting.length, public_repos: 0 }))
        if (waiting.length === 3) waiting.forEach((reply) => reply())
      })
      const results = yield* fetchAll(["a", "b", "c"].map((name) => server.url(`/users/${name}`)))
      assert.deepStrictEqual(results.map((result) => Either.getOrThrow(result).body.login), ["a", "b", "c"])
      assert.strictEqual(server.connectionsOpened(), 3)
    }).pipe(Effect.provide(HttpFetcher.Default)))

  it.scopedLive("non-2xx, a refused connection and malformed JSON each give their own typed error", () =>
    Effect.gen(function*() {
      const base = yield* serveUsers
      const port = yield* Loopback.freePort
      const broken = yield* Loopback.make((_request, response) => {
        response.writeHead(200, { "content-type": "application/json" })
        response.end("{\"login\": ")
      })
      const results = yield* fetchAll([
        `${base}/users/python`,
        `${base}/users/nobody`,
        `http://127.0.0.1:${port}/users/google`,
        broken.url("/users/microsoft")
      ])
      assert.deepStrictEqual(
        results.map((result) => Either.isRight(result) ? "ok" : result.left._tag),
        ["ok", "HttpStatusError", "TransportError", "DecodeError"]
      )
      const notFound = results[1]!
      if (Either.isLeft(notFound) && notFound.left._tag === "HttpStatusError") {
        assert.strictEqual(notFound.left.status, 404)
      } else {
        assert.fail("expected a 404 HttpStatusError")
      }
    }).pipe(Effect.provide(HttpFetcher.Default)))
})
