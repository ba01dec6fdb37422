/**
 * The scale-out benchmark's upstream: node:http on 127.0.0.1 (port 0) in its own process, answering every
 * `GET /items/<n>` with ~1 KB of JSON after `SPINDLE_BENCH_LATENCY_MS` (default 20) milliseconds. Prints `{"port": n}`
 * on its first stdout line; `GET /__stats` answers `{ served, distinct }` (pages served so far, distinct paths among
 * them); exits when its stdin closes.
 */
import { createServer } from "node:http"

const latency = Number(process.env["SPINDLE_BENCH_LATENCY_MS"] ?? "20")
const padding = "x".repeat(900)

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
  const timer = setTimeout(() => {
    served++
    seen.add(url)
    const body = Buffer.from(JSON.stringify({ id: Number(match[1]), payload: padding }))
    response.writeHead(200, { "content-type": "application/json", "content-length": body.length })
    response.end(body)
  }, latency)
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
