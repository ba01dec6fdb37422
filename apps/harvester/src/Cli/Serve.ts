/**
 * `harvester serve [--port] [--host]` — the HTTP API until SIGINT/SIGTERM; then the layers' finalizers drain it
 * (stop claiming, let in-flight requests finish within HARVESTER_SHUTDOWN_GRACE, release leases, close the DB).
 */
import { Command, Options } from "@effect/cli"
import { Effect, Layer, Option } from "effect"
import { configuration, serveLayer } from "../main.js"
import { integerFlag, withConfigOverrides } from "./Shared.js"

const flags = {
  port: integerFlag("port", "Port to listen on (PORT, default 8080)", 0).pipe(Options.optional),
  host: Options.text("host").pipe(
    Options.withDescription("Address to bind (HOST); 127.0.0.1 whatever it says unless HARVESTER_TOKEN is set"),
    Options.optional
  )
}

export const serve = Command.make("serve", flags, (flags) => {
  const overrides: Record<string, string> = {}
  if (Option.isSome(flags.port)) overrides["PORT"] = String(flags.port.value)
  if (Option.isSome(flags.host)) overrides["HOST"] = flags.host.value
  return Effect.gen(function*() {
    const configured = yield* configuration
    return yield* Layer.launch(serveLayer(configured.app.server))
  }).pipe(withConfigOverrides([], overrides))
}).pipe(Command.withDescription("Serve the HTTP API (OpenAPI at /docs)"))
