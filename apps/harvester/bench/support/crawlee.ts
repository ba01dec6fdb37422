/**
 * Crawlee's HttpCrawler (got-scraping, its request queue persisted to `CRAWLEE_STORAGE_DIR`, purged at start) over
 * every URL, each JSON body stored 100 rows per transaction in the same kind of table as the plain script.
 *
 * Fairness: min and max concurrency are both 50 (the autoscaled pool starts at 50 and never scales down however
 * busy its system-status snapshots say the shared CPU is), no per-minute request cap, default retries, sessions and
 * header generation left at their defaults (that is what a user gets).
 *
 * Usage: `CRAWLEE_STORAGE_DIR=<tmp> node --import tsx crawlee.ts <baseUrl> <pages> <sqlite:path | postgres://...>`
 * (`CRAWLEE_PERSIST_STORAGE=false` keeps the queue in memory: Crawlee's environment overrides its options).
 */
import { Configuration, HttpCrawler, log, LogLevel } from "@crawlee/http"
import { report } from "./Report.js"
import { batcher, openStore, parseDatabase, selectHeaders } from "./Store.js"

const [baseUrl = "", pagesText = "0", dbSpec = ""] = process.argv.slice(2)
const pages = Number(pagesText)
const CONCURRENCY = 50
const BATCH = 100

log.setLevel(LogLevel.WARNING)

const store = await openStore(parseDatabase(dbSpec))
const rows = batcher(store, BATCH)
let fetched = 0
let failures = 0

const crawler = new HttpCrawler({
  minConcurrency: CONCURRENCY,
  maxConcurrency: CONCURRENCY,
  autoscaledPoolOptions: { desiredConcurrency: CONCURRENCY },
  additionalMimeTypes: ["application/json"],
  requestHandler: async ({ body, json, request, response }) => {
    rows.add({
      url: request.url,
      status: response.statusCode ?? 0,
      headers: selectHeaders(response.headers),
      body: JSON.stringify(json),
      bytes: typeof body === "string" ? Buffer.byteLength(body) : body.length,
      durationMillis: 0,
      fetchedAt: Date.now()
    })
    fetched++
  },
  failedRequestHandler: async () => {
    failures++
  }
}, new Configuration({ persistStorage: true, purgeOnStart: true }))

const started = performance.now()
await crawler.run(Array.from({ length: pages }, (_, i) => `${baseUrl}/items/${i}`))
await rows.flush()
const elapsedMillis = performance.now() - started
await store.close()
report({ pages: fetched, failures, elapsedMillis })
process.exit(0)
