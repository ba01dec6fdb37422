/**
 * Server — the HTTP API served on Node: the contract's handlers, OpenAPI (Swagger UI at /docs, the document at
 * /docs/openapi.json), the token check for /docs, and a shutdown that drains.
 *
 * Beyond NodeHttpServer: without `HARVESTER_TOKEN` it binds 127.0.0.1 whatever HOST says, and says so; on shutdown
 * it ends open event streams first, lets in-flight requests finish for a short grace, then closes every connection
 * (Node's `server.close()` alone would wait for keep-alive and SSE clients forever).
 */
import { HttpApiBuilder, HttpApiSwagger, HttpServer, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import type { Duration } from "effect"
import { Deferred, Effect, Layer, Option } from "effect"
import { createServer } from "node:http"
import type { ServerSettings } from "../Config.js"
import { Api } from "./Api.js"
import {
  AuthenticationLive,
  authorizationProblem,
  DecodeErrorsLive,
  Draining,
  JobsLive,
  SystemLive
} from "./Handlers.js"

/** Listens on `host:port`; on release: end event streams, wait up to `grace` for open requests, then cut. */
export const listen = (options: { readonly port: number; readonly host: string; readonly grace: Duration.Duration }) =>
  Layer.scoped(
    HttpServer.HttpServer,
    Effect.gen(function*() {
      const draining = yield* Draining
      const server = createServer()
      const http = yield* NodeHttpServer.make(() => server, { port: options.port, host: options.host })
      yield* Effect.addFinalizer(() =>
        Effect.gen(function*() {
          yield* Deferred.succeed(draining, undefined)
          yield* Effect.async<void>((resume) => {
            server.close(() => resume(Effect.void))
            server.closeIdleConnections()
          }).pipe(Effect.timeout(options.grace), Effect.ignore)
          server.closeAllConnections()
          yield* Effect.logInfo("HTTP API closed")
        })
      )
      return http
    })
  ).pipe(Layer.merge(NodeHttpServer.layerContext))

/** /docs and /docs/openapi.json sit outside the API's groups: the same bearer check guards them. */
const DocsAuthLive = (settings: ServerSettings) =>
  HttpApiBuilder.middleware((app) =>
    Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) =>
      request.url.startsWith("/docs")
        ? Option.match(authorizationProblem(settings.token, request.headers["authorization"]), {
          onNone: () => app,
          onSome: (error) =>
            Effect.succeed(
              HttpServerResponse.unsafeJson({ _tag: error._tag, message: error.message }, { status: 401 })
            )
        })
        : app)
  )

/** The host actually bound: the configured one only when a token protects the API. */
export const bindHost = (settings: ServerSettings): string =>
  Option.isNone(settings.token) ? "127.0.0.1" : settings.host

/** The API with its handlers and docs, served by whatever `HttpServer` is provided. */
export const app = (settings: ServerSettings) =>
  HttpApiBuilder.serve().pipe(
    Layer.provide(HttpApiSwagger.layer({ path: "/docs" })),
    Layer.provide(HttpApiBuilder.middlewareOpenApi({ path: "/docs/openapi.json" })),
    Layer.provide([DocsAuthLive(settings), DecodeErrorsLive]),
    Layer.provide(
      HttpApiBuilder.api(Api).pipe(
        Layer.provide([JobsLive(settings), SystemLive]),
        Layer.provide(AuthenticationLive(settings.token))
      )
    )
  )

/** The whole HTTP side: the API served on the configured port (`HttpServer` exposed for its address). */
export const layer = (settings: ServerSettings) => {
  const host = bindHost(settings)
  const announce = Layer.effectDiscard(
    Effect.gen(function*() {
      const server = yield* HttpServer.HttpServer
      const address = server.address._tag === "TcpAddress"
        ? `http://${server.address.hostname}:${server.address.port}`
        : server.address.path
      yield* Effect.logInfo(`harvester API listening on ${address} (OpenAPI at ${address}/docs)`)
      if (Option.isNone(settings.token)) {
        yield* Effect.logWarning(
          `HARVESTER_TOKEN is not set: the API binds 127.0.0.1 only${
            settings.host === host ? "" : ` (HOST=${settings.host} ignored)`
          }; set a token to accept other hosts`
        )
      }
    })
  )
  return Layer.mergeAll(app(settings), announce).pipe(
    Layer.provideMerge(listen({ port: settings.port, host, grace: settings.shutdownGrace })),
    Layer.provide(Draining.layer)
  )
}
