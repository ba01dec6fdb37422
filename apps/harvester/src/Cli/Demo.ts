/**
 * `harvester demo` — everything working offline in a few seconds: the SimulatedApi on a loopback port (paginated in
 * every style, rate-limited with 429 + Retry-After, failing now and then, slow, malformed), harvested end to end
 * with the progress bar, then what the upstream saw. Exit 0 when the harvest ran to its end; the two targets that
 * are built to fail (a 404 and malformed JSON) are expected.
 */
import { Command, Options } from "@effect/cli"
import { Console, Duration, Effect, Option } from "effect"
import * as SimulatedApi from "../Demo/SimulatedApi.js"
import { runSpec } from "./Run.js"
import { failWith, progressMode } from "./Shared.js"

/** The demo's targets on the simulated API at `baseUrl`: one per pagination style plus the troublemakers. */
export const demoTargets = (baseUrl: string) => [
  { url: `${baseUrl}/pages`, paginate: "page:page" },
  { url: `${baseUrl}/offsets`, paginate: "offset:offset:limit:20" },
  { url: `${baseUrl}/cursors`, paginate: "cursor:next_cursor:cursor" },
  { url: `${baseUrl}/links`, paginate: "link" },
  { url: `${baseUrl}/throttled` },
  { url: `${baseUrl}/flaky` },
  { url: `${baseUrl}/gone` },
  { url: `${baseUrl}/broken` }
]

/** Well below the upstream's 40/s, so its rate limit never answers; `/throttled` shows a 429 with Retry-After anyway. */
export const demoOptions = {
  concurrency: 8,
  perHostConcurrency: 6,
  rate: "15/1s",
  timeout: "5s",
  retries: 3,
  maxPages: 100
}

const count = (requests: ReadonlyArray<SimulatedApi.RecordedRequest>, outcome: SimulatedApi.Outcome) =>
  requests.filter((request) => request.outcome === outcome).length

export const demo = Command.make("demo", {
  db: Options.text("db").pipe(
    Options.withDescription("SQLite file to keep the results in (default: in memory)"),
    Options.optional
  ),
  out: Options.text("out").pipe(Options.withDescription("Write every stored page here as jsonl"), Options.optional)
}, ({ db, out }) =>
  Effect.gen(function*() {
    const api = yield* SimulatedApi.start({ routes: SimulatedApi.demoRoutes, rateLimit: SimulatedApi.demoRateLimit })
    yield* Console.log(
      `simulated API on ${api.baseUrl}: 4 paginated collections, a throttled, a flaky, a missing and a broken URL`
    )
    const view = yield* runSpec({ targets: demoTargets(api.baseUrl), options: demoOptions }, {
      db: Option.orElse(db, () => Option.some(":memory:")),
      out,
      progress: progressMode(Duration.seconds(1)),
      allowHosts: ["127.0.0.1"]
    })
    const requests = yield* api.requests
    const status = (code: number) => requests.filter((request) => request.status === code).length
    yield* Console.log(
      `upstream saw ${requests.length} requests (at most ${yield* api.maxConcurrent} at once): ` +
        `${status(429)} answered 429 with Retry-After (${count(requests, "rateLimited")} for going too fast), ` +
        `${status(500)} answered 500, ${status(404)} answered 404, ${count(requests, "malformed")} malformed JSON`
    )
    if (view.status !== "completed") return yield* failWith(1)
  }).pipe(Effect.scoped)).pipe(Command.withDescription("Harvest a local simulated API end to end, offline"))
