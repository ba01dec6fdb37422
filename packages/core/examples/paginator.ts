/**
 * paginator — the tutorial's `AsyncPaginator`: 5 pages of 10 items, 0.5 s each, as a lazy Stream (2.5 s in all).
 *
 * `async for page in paginator` is `Stream.runForEach(paginator(), ...)`: `Paginate.stream` (a `Stream.unfoldEffect`)
 * fetches a page only when the consumer pulls it, so `Stream.take(2)` costs two fetches, and the stream ends after the
 * page whose cursor is null — no `has_more` flag, no `StopAsyncIteration`. The API is simulated as in the tutorial
 * (its URL is never contacted): each page says which one comes next, in a `next` field, like a cursor API.
 */
import type { Duration } from "effect"
import { Console, Effect, Stream } from "effect"
import * as Paginate from "../src/Paginate.js"

export interface Page {
  readonly page: number
  readonly items: ReadonlyArray<string>
  readonly next: number | null
}

export const PAGES = 5
export const PAGE_SIZE = 10
export const PAGE_DELAY: Duration.DurationInput = "500 millis"
export const ITEMS_URL = "https://api.example.com/items"

/** The simulated API call: 0.5 s, then the page named by `?page=` (the first page without one). */
export const fetchPage = (url: string): Effect.Effect<Paginate.PageResponse<Page>> =>
  Effect.gen(function*() {
    yield* Effect.sleep(PAGE_DELAY)
    const page = Number(new URL(url).searchParams.get("page") ?? "1")
    return {
      url,
      headers: {},
      body: {
        page,
        items: Array.from({ length: PAGE_SIZE }, (_, i) => `item-${i}`),
        next: page < PAGES ? page + 1 : null
      }
    }
  })

/** The pages as a lazy stream; `fetch` defaults to the simulated API (tests pass a counting one). */
export const paginator = <E>(fetch: (url: string) => Effect.Effect<Paginate.PageResponse<Page>, E> = fetchPage) =>
  Paginate.stream(fetch, Paginate.Cursor({ field: "next", param: "page" }), { url: ITEMS_URL })

export const main = paginator().pipe(
  Stream.runForEach((response) => Console.log(`Page ${response.body.page}: ${response.body.items.length} items`))
)
