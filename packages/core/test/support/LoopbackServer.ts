/**
 * A real node:http server on a loopback port for the HTTP tests: records every request (path, arrival time) and
 * every connection opened and closed, and lets a test wait for those events without sleeping.
 */
import { Effect } from "effect"
import type { Scope } from "effect"
import { EventEmitter } from "node:events"
import type { IncomingMessage, ServerResponse } from "node:http"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"

export interface RecordedRequest {
  readonly path: string
  readonly at: number
  readonly headers: IncomingMessage["headers"]
}

export interface LoopbackServer {
  readonly origin: string
  readonly port: number
  readonly url: (path: string) => string
  readonly requests: ReadonlyArray<RecordedRequest>
  readonly connectionsOpened: () => number
  readonly connectionsClosed: () => number
  /** Whether the connection that carried request number `index` (0-based) has closed. */
  readonly requestConnectionClosed: (index: number) => boolean
  /** Completes once `predicate` holds (checked now and after every request / connection event). */
  readonly waitUntil: (predicate: () => boolean) => Effect.Effect<void>
}

export type Handler = (request: IncomingMessage, response: ServerResponse, server: LoopbackServer) => void

export const json = (response: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
  const text = JSON.stringify(body)
  response.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    ...headers
  })
  response.end(text)
}

export const make = (handler: Handler, host = "127.0.0.1"): Effect.Effect<LoopbackServer, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<{ readonly server: ReturnType<typeof createServer>; readonly api: LoopbackServer }>((resume) => {
      const events = new EventEmitter()
      events.setMaxListeners(0)
      const requests: Array<RecordedRequest> = []
      const closedSockets = new WeakSet<object>()
      const sockets: Array<object> = []
      let opened = 0
      let closed = 0
      const holder: { api?: LoopbackServer } = {}
      const server = createServer((request, response) => {
        requests.push({ path: request.url ?? "", at: Date.now(), headers: request.headers })
        sockets.push(request.socket)
        events.emit("change")
        handler(request, response, holder.api!)
      })
      server.on("connection", (socket) => {
        opened++
        events.emit("change")
        socket.on("close", () => {
          closed++
          closedSockets.add(socket)
          events.emit("change")
        })
      })
      server.listen(0, host, () => {
        const port = (server.address() as AddressInfo).port
        const origin = `http://${host}:${port}`
        const api: LoopbackServer = {
          origin,
          port,
          url: (path) => `${origin}${path}`,
          requests,
          connectionsOpened: () => opened,
          connectionsClosed: () => closed,
          requestConnectionClosed: (index) => {
            const socket = sockets[index]
            return socket !== undefined && closedSockets.has(socket)
          },
          waitUntil: (predicate) =>
            Effect.async<void>((done) => {
              if (predicate()) return done(Effect.void)
              const check = () => {
                if (predicate()) {
                  events.off("change", check)
                  done(Effect.void)
                }
              }
              events.on("change", check)
              return Effect.sync(() => events.off("change", check))
            })
        }
        holder.api = api
        resume(Effect.succeed({ server, api }))
      })
    }),
    ({ server }) =>
      Effect.async<void>((resume) => {
        server.closeAllConnections()
        server.close(() => resume(Effect.void))
      })
  ).pipe(Effect.map(({ api }) => api))

/** A port on 127.0.0.1 with nothing listening (bound, then released). */
export const freePort: Effect.Effect<number> = Effect.async<number>((resume) => {
  const server = createServer()
  server.listen(0, "127.0.0.1", () => {
    const port = (server.address() as AddressInfo).port
    server.close(() => resume(Effect.succeed(port)))
  })
})
