/**
 * FetchAll — 20k GETs of 1 KB JSON at concurrency 50 against a local node:http server (its own child process, 0 ms
 * delay): `HttpFetcher.fetchAll` vs `undici.request` + `p-limit` (the floor) vs global `fetch` + `p-limit` vs the
 * stock `NodeHttpClient.layerUndici` HttpClient. Each client runs in its own child process (this file, with
 * arguments), rounds interleaved; throughput and peak RSS are medians, reported as ratios against the floor.
 */
import { HttpClient } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { Data, Effect, Either } from "effect"
import { spawn } from "node:child_process"
import { fileURLToPath, pathToFileURL } from "node:url"
import pLimit from "p-limit"
import { request as undiciRequest } from "undici"
import { HttpFetcher } from "../../src/HttpFetcher.js"

const REQUESTS = 20_000
const WARMUP = 2_000
/** The two slow reference clients (4–10× slower) measure fewer requests, to keep the part near 2 minutes. */
const REFERENCE_REQUESTS = 5_000
const REFERENCE_WARMUP = 1_000
const CONCURRENCY = 50
const ROUNDS = 6

const clients = [
  "spindle fetchAll",
  "undici.request + p-limit",
  "fetch + p-limit",
  "NodeHttpClient.layerUndici"
] as const
type ClientName = typeof clients[number]
const FLOOR: ClientName = "undici.request + p-limit"

interface Sample {
  readonly client: ClientName
  readonly reqPerSec: number
  /** Client CPU (user + system) per request: steadier than req/s on a shared machine. */
  readonly cpuMicrosPerReq: number
  readonly peakRssMiB: number
  readonly failures: number
}

class BenchFailed extends Data.TaggedError("BenchFailed")<{ readonly reason: string }> {}

// ---------------------------------------------------------------------------------------------------------------
// The server (a child process running this inline script)
// ---------------------------------------------------------------------------------------------------------------

const serverScript = `
const http = require("node:http")
const item = { id: 0, name: "item", tags: [], payload: "x".repeat(900) }
const body = Buffer.from(JSON.stringify(item).slice(0, 1024))
const server = http.createServer((req, res) => {
  res.writeHead(200, { "content-type": "application/json", "content-length": body.length })
  res.end(body)
})
server.keepAliveTimeout = 60000
server.listen(0, "127.0.0.1", () => process.stdout.write(String(server.address().port) + "\\n"))
process.stdin.on("end", () => process.exit(0))
process.stdin.resume()
`

const startServer = Effect.acquireRelease(
  Effect.async<{ readonly port: number; readonly kill: () => void }, BenchFailed>((resume) => {
    const child = spawn(process.execPath, ["-e", serverScript], { stdio: ["pipe", "pipe", "inherit"] })
    let out = ""
    child.stdout.on("data", (chunk: Buffer) => {
      out += chunk.toString()
      if (out.includes("\n")) resume(Effect.succeed({ port: Number(out.trim()), kill: () => child.kill() }))
    })
    child.on("error", (cause) => resume(Effect.fail(new BenchFailed({ reason: String(cause) }))))
  }),
  (server) => Effect.sync(() => server.kill())
)

// ---------------------------------------------------------------------------------------------------------------
// The clients (run in a child process: `node --import tsx FetchAll.ts <client> <port>`)
// ---------------------------------------------------------------------------------------------------------------

const urlsFor = (port: number, n: number) => Array.from({ length: n }, (_, i) => `http://127.0.0.1:${port}/item/${i}`)

// The Effect clients build their layer once per process (one agent, warm connections), like the promise clients'
// global dispatcher: `measure` runs the warm-up and the measured batch inside it.
type Measure = <E>(run: (urls: ReadonlyArray<string>) => Effect.Effect<number, E>) => Effect.Effect<Sample, E>

const runSpindle = (measure: Measure) =>
  Effect.gen(function*() {
    const fetcher = yield* HttpFetcher
    return yield* measure((urls) =>
      Effect.map(
        fetcher.fetchAll(urls, { parallelism: CONCURRENCY }),
        (results) => results.filter(Either.isLeft).length
      )
    )
  }).pipe(Effect.provide(HttpFetcher.Default))

const runStock = (measure: Measure) =>
  Effect.gen(function*() {
    const client = yield* HttpClient.HttpClient
    return yield* measure((urls) =>
      Effect.map(
        Effect.forEach(
          urls,
          (url) => client.get(url).pipe(Effect.flatMap((response) => response.json), Effect.either),
          { concurrency: CONCURRENCY }
        ),
        (results) => results.filter(Either.isLeft).length
      )
    )
  }).pipe(Effect.provide(NodeHttpClient.layerUndici))

const runPromises = async (urls: ReadonlyArray<string>, get: (url: string) => Promise<unknown>) => {
  const limit = pLimit(CONCURRENCY)
  const settled = await Promise.allSettled(urls.map((url) => limit(() => get(url))))
  return settled.filter((result) => result.status === "rejected").length
}

const undiciGet = async (url: string) => {
  const { body } = await undiciRequest(url)
  return body.json()
}

const fetchGet = async (url: string) => {
  const response = await fetch(url)
  return response.json()
}

const isReference = (client: ClientName) => client === "fetch + p-limit" || client === "NodeHttpClient.layerUndici"

const measureWith = (client: ClientName, port: number): Measure => (run) =>
  Effect.gen(function*() {
    const requests = isReference(client) ? REFERENCE_REQUESTS : REQUESTS
    yield* run(urlsFor(port, isReference(client) ? REFERENCE_WARMUP : WARMUP))
    const urls = urlsFor(port, requests)
    const started = performance.now()
    const cpu = process.cpuUsage()
    const failures = yield* run(urls)
    const seconds = (performance.now() - started) / 1000
    const used = process.cpuUsage(cpu)
    return {
      client,
      reqPerSec: requests / seconds,
      cpuMicrosPerReq: (used.user + used.system) / requests,
      peakRssMiB: process.resourceUsage().maxRSS / 1024,
      failures
    } satisfies Sample
  })

const runClient = (client: ClientName, port: number): Effect.Effect<Sample, unknown> => {
  const measure = measureWith(client, port)
  switch (client) {
    case "spindle fetchAll":
      return runSpindle(measure)
    case "NodeHttpClient.layerUndici":
      return runStock(measure)
    case "undici.request + p-limit":
      return measure((urls) => Effect.promise(() => runPromises(urls, undiciGet)))
    case "fetch + p-limit":
      return measure((urls) => Effect.promise(() => runPromises(urls, fetchGet)))
  }
}

const childMain = (client: ClientName, port: number) =>
  Effect.flatMap(
    runClient(client, port),
    (sample) => Effect.sync(() => process.stdout.write(JSON.stringify(sample) + "\n"))
  )

const thisFile = fileURLToPath(import.meta.url)

const runChild = (client: ClientName, port: number) =>
  Effect.async<Sample, BenchFailed>((resume) => {
    const child = spawn(process.execPath, ["--expose-gc", "--import", "tsx", thisFile, client, String(port)], {
      stdio: ["ignore", "pipe", "inherit"]
    })
    let out = ""
    child.stdout.on("data", (chunk: Buffer) => {
      out += chunk.toString()
    })
    child.on("close", (code) => {
      const line = out.trim().split("\n").pop() ?? ""
      try {
        resume(Effect.succeed(JSON.parse(line) as Sample))
      } catch {
        resume(Effect.fail(new BenchFailed({ reason: `${client} exited ${code} with output ${out}` })))
      }
    })
    return Effect.sync(() => child.kill())
  })

// ---------------------------------------------------------------------------------------------------------------
// The part
// ---------------------------------------------------------------------------------------------------------------

const median = (values: ReadonlyArray<number>) => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

export const run = Effect.scoped(
  Effect.gen(function*() {
    const server = yield* startServer
    const samples: Array<Sample & { readonly round: number }> = []
    for (let round = 0; round < ROUNDS; round++) {
      // Rotate the order each round so no client always runs first (or last) on a drifting machine.
      for (let i = 0; i < clients.length; i++) {
        samples.push({ ...(yield* runChild(clients[(i + round) % clients.length]!, server.port)), round })
      }
    }
    // On a shared machine the speed drifts between rounds; a client and the floor measured in the same round (a few
    // seconds apart) are comparable, so the median of per-round ratios is the steadier figure.
    const roundRatio = (client: ClientName) =>
      median(
        Array.from({ length: ROUNDS }, (_, round) => {
          const mine = samples.find((sample) => sample.round === round && sample.client === client)!
          const floor = samples.find((sample) => sample.round === round && sample.client === FLOOR)!
          return mine.reqPerSec / floor.reqPerSec
        })
      )
    const summary = clients.map((client) => {
      const mine = samples.filter((sample) => sample.client === client)
      return {
        client,
        reqPerSec: median(mine.map((sample) => sample.reqPerSec)),
        cpuMicrosPerReq: median(mine.map((sample) => sample.cpuMicrosPerReq)),
        peakRssMiB: median(mine.map((sample) => sample.peakRssMiB)),
        perRoundRatio: roundRatio(client),
        failures: mine.reduce((sum, sample) => sum + sample.failures, 0)
      }
    })
    const floor = summary.find((row) => row.client === FLOOR)!
    const rows = summary.map((row) =>
      `| ${row.client} | ${Math.round(row.reqPerSec)} | ${(row.reqPerSec / floor.reqPerSec).toFixed(2)}× | ${
        row.perRoundRatio.toFixed(2)
      }× | ${row.cpuMicrosPerReq.toFixed(1)} | ${(floor.cpuMicrosPerReq / row.cpuMicrosPerReq).toFixed(2)}× | ${
        row.peakRssMiB.toFixed(0)
      } | ${(row.peakRssMiB / floor.peakRssMiB).toFixed(2)}× | ${row.failures} |`
    )
    const markdown = [
      `${REQUESTS} GETs of 1 KB JSON (${REFERENCE_REQUESTS} for the two slow references), concurrency ${CONCURRENCY},`,
      `server in a separate process, 0 ms delay; each client in its own child process (same imports), after a`,
      `warm-up batch; medians of ${ROUNDS} interleaved rounds (order rotated each round). Client CPU is user + system`,
      "time of the client process per request (its inverse ratio is the throughput ratio a CPU-bound client would",
      "reach; steadier than req/s when other work shares the cores). \"Per-round ratio\" is the median over rounds of",
      "req/s against the floor's req/s in the same round.",
      "Peak RSS is the child's maxRSS (each child loads the same modules: Node, tsx, effect, @effect/platform, undici).",
      "",
      "| client | req/s | vs floor | per-round ratio | client CPU µs/req | vs floor (speed) | peak RSS MiB | vs floor " +
      "| failures |",
      "|---|---|---|---|---|---|---|---|---|",
      ...rows
    ].join("\n")
    return { title: "HttpFetcher.fetchAll vs undici + p-limit", markdown, data: { summary, samples } }
  })
)

const isChild = process.argv[1] !== undefined && pathToFileURL(process.argv[1]).href === import.meta.url
if (isChild) {
  const client = clients.find((name) => name === process.argv[2])
  const port = Number(process.argv[3])
  if (client !== undefined && Number.isInteger(port)) {
    Effect.runFork(childMain(client, port))
  }
}
