/**
 * The plain script, as an engineer would write it without a framework: `undici.request` + `p-limit(50)` over every
 * URL, each body parsed as JSON, rows stored 100 per transaction in the same kind of table.
 *
 * Usage: `node --import tsx plain.ts <baseUrl> <pages> <sqlite:path | postgres://...>`.
 */
import pLimit from "p-limit"
import { request } from "undici"
import { report } from "./Report.js"
import { batcher, openStore, parseDatabase, selectHeaders } from "./Store.js"

const [baseUrl = "", pagesText = "0", dbSpec = ""] = process.argv.slice(2)
const pages = Number(pagesText)
const CONCURRENCY = 50
const BATCH = 100

const store = await openStore(parseDatabase(dbSpec))
const rows = batcher(store, BATCH)
const limit = pLimit(CONCURRENCY)
let fetched = 0
let failures = 0

const fetchOne = async (url: string) => {
  const started = performance.now()
  try {
    const response = await request(url)
    const text = await response.body.text()
    if (response.statusCode !== 200) {
      failures++
      return
    }
    const body: unknown = JSON.parse(text)
    rows.add({
      url,
      status: response.statusCode,
      headers: selectHeaders(response.headers),
      body: JSON.stringify(body),
      bytes: Buffer.byteLength(text),
      durationMillis: performance.now() - started,
      fetchedAt: Date.now()
    })
    fetched++
  } catch {
    failures++
  }
}

const started = performance.now()
await Promise.all(Array.from({ length: pages }, (_, i) => limit(() => fetchOne(`${baseUrl}/items/${i}`))))
await rows.flush()
const elapsedMillis = performance.now() - started
await store.close()
report({ pages: fetched, failures, elapsedMillis })
process.exit(0)
