/**
 * The benchmarks' upstream: a node:http server on 127.0.0.1 (port 0), in its own process so it never shares the
 * client's event loop, answering every `GET /items/<n>` with 1 KB of JSON: at once (the harvester bench), or after
 * `SPINDLE_BENCH_LATENCY_MS` milliseconds (the scale-out bench: 20). Prints `{"port": n}` on its first stdout line;
 * `GET /__stats` answers `{ served, distinct }` (pages served so far, distinct paths among them: the drivers check
 * each run's requests); exits when its stdin closes (the driver ends).
 */
import { createServer } from "node:http"

const PAGE_BYTES = 1024
const latency = Number(process.env["SPINDLE_BENCH_LATENCY_MS"] ?? "0")

const pageOf = (id: number): Buffer => {
  const head = JSON.stringify({ id, name: `item ${id}`, tags: ["bench", "harvester"], payload: "" })
  const padding = "x".repeat(Math.max(0, PAGE_BYTES - head.length))
  return Buffer.from(JSON.stringify({ id, name: `item ${id}`, tags: ["bench", "harvester"], payload: padding }))
}

let served = 0
const seen = new Set<string>()

const server = createServer((request, response) => {
  const url = request.url ?? "/"
  if (url === "/__stats") {
    const body = JSON.stringify({ served, distinct: seen.size })
    response.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) })
    response.end(body)
    return
  }
  const match = /^\/items\/(\d+)$/.exec(url)
  if (request.method !== "GET" || match === null) {
    response.writeHead(404, { "content-length": 0 })
    response.end()
    return
  }
  const answer = () => {
    served++
    seen.add(url)
    const body = pageOf(Number(match[1]))
    response.writeHead(200, { "content-type": "application/json", "content-length": body.length })
    response.end(body)
  }
  if (latency <= 0) return answer()
  const timer = setTimeout(answer, latency)
  response.on("close", () => clearTimeout(timer))
})
server.keepAliveTimeout = 120_000
server.headersTimeout = 121_000

server.listen(0, "127.0.0.1", () => {
  const address = server.address()
  const port = typeof address === "object" && address !== null ? address.port : 0
  process.stdout.write(`${JSON.stringify({ port })}\n`)
})

process.stdin.on("end", () => server.close(() => process.exit(0)))
process.stdin.resume()
