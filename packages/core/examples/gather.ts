/**
 * gather — `asyncio.gather()`: three fetches run concurrently and finish together at ~3 s, not 6 s.
 *
 * `Effect.all` with a concurrency option is `gather`: results come back in argument order whatever the finishing
 * order, and a failure interrupts the others (see gather-settled for `return_exceptions=True`).
 */
import type { Duration } from "effect"
import { Console, Effect } from "effect"

export interface FetchedData {
  readonly name: string
  readonly data: string
}

export const fetchData = (name: string, delay: Duration.DurationInput) =>
  Effect.gen(function*() {
    yield* Console.log(`Fetching ${name}...`)
    yield* Effect.sleep(delay)
    return { name, data: `Data from ${name}` } satisfies FetchedData
  })

export const gather = Effect.all(
  [fetchData("API 1", "2 seconds"), fetchData("API 2", "1 second"), fetchData("API 3", "3 seconds")],
  { concurrency: "unbounded" }
)

export const main = Effect.gen(function*() {
  const results = yield* gather
  for (const result of results) {
    yield* Console.log(result)
  }
})
