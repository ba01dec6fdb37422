/**
 * rate-limited-fetch — 20 requests at 5 per second through a sliding window: starts at 0, 1, 2 and 3 s, done at 3.1 s.
 *
 * The tutorial's "Rate-Limited API Client" never gets past the 6th request. Its `acquire` holds `self.lock` (an
 * `asyncio.Lock`, which is not reentrant) while it sleeps for the window to free up, then calls `self.acquire()`
 * again inside `async with self.lock`: the recursive call waits for the lock its own caller holds, forever, and so
 * does every other request queued on that lock. `tutorialRateLimiter` ports it line for line (a one-permit semaphore
 * re-entered from inside `withPermits`) so the test can show the deadlock; `RateLimiter.make` from @spindle/core never
 * holds anything while it waits, and also keeps the window exact per host.
 */
import { Clock, Console, Duration, Effect, Ref } from "effect"
import * as RateLimiter from "../src/RateLimiter.js"

export const urls = Array.from({ length: 20 }, (_, i) => `https://api.example.com/item/${i}`)

export interface Fetched {
  readonly url: string
  /** Virtual or real epoch millis at which the request started. */
  readonly startedAt: number
}

/** Any limiter: wait until a request to `url` may start. */
export type Acquire = (url: string) => Effect.Effect<void>

/** Waits for the limiter, then "fetches" (prints, sleeps 100 ms: no network). */
export const rateLimitedFetch = (acquire: Acquire, url: string) =>
  Effect.gen(function*() {
    yield* acquire(url)
    const startedAt = yield* Clock.currentTimeMillis
    yield* Console.log(`Fetching ${url}`)
    yield* Effect.sleep("100 millis")
    return { url, startedAt } satisfies Fetched
  })

/** `asyncio.gather` of the 20 fetches through one limiter. */
export const fetchAll = (acquire: Acquire) =>
  Effect.forEach(urls, (url) => rateLimitedFetch(acquire, url), { concurrency: "unbounded" })

/** Ours: 5 starts per second per host. */
export const fetchAllWithRateLimiter = Effect.gen(function*() {
  const limiter = yield* RateLimiter.make({ limit: 5, per: "1 second" })
  return yield* fetchAll((url) => limiter.acquire(new URL(url).host))
}).pipe(Effect.scoped)

/** The tutorial's limiter, ported faithfully, deadlock included: do not use. */
export const tutorialRateLimiter = (options: { readonly rate: number; readonly per: Duration.DurationInput }) =>
  Effect.gen(function*() {
    const perMillis = Duration.toMillis(options.per)
    const timestamps = yield* Ref.make<ReadonlyArray<number>>([])
    const lock = yield* Effect.makeSemaphore(1)
    // `async with self.lock:` around the whole body, including the recursive call below.
    const acquire: Effect.Effect<void> = lock.withPermits(1)(Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const recent = yield* Ref.updateAndGet(timestamps, (all) => all.filter((at) => now - at <= perMillis))
      if (recent.length >= options.rate) {
        yield* Effect.sleep(perMillis - (now - recent[0]))
        // `return await self.acquire()`: asks for the one permit this very call still holds, so it waits forever.
        return yield* acquire
      }
      yield* Ref.set(timestamps, [...recent, now])
    }))
    return { acquire }
  })

export const main = Effect.gen(function*() {
  const started = yield* Clock.currentTimeMillis
  const results = yield* fetchAllWithRateLimiter
  const offsets = results.map((result) => ((result.startedAt - started) / 1000).toFixed(1))
  yield* Console.log(`20 requests started at ${offsets.join(", ")} s`)
})
