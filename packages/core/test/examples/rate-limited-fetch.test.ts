import { assert, describe, it } from "@effect/vitest"
import { Clock, Duration, Effect, Exit, Fiber, Option, TestClock } from "effect"
import { fetchAll, fetchAllWithRateLimiter, tutorialRateLimiter, urls } from "../../examples/rate-limited-fetch.js"
import * as RateLimiter from "../../src/RateLimiter.js"

/** The most starts any half-open second `[s, s + 1000)` holds, trying every start `s` as the origin. */
const busiestSecond = (starts: ReadonlyArray<number>) =>
  Math.max(...starts.map((origin) => starts.filter((at) => at >= origin && at < origin + 1000).length))

describe("rate-limited-fetch", () => {
  it.effect("our limiter: no second holds more than 5 starts, the last starts at 3 s, all done at 3.1 s", () =>
    Effect.gen(function*() {
      const fiber = yield* Effect.fork(fetchAllWithRateLimiter)
      yield* TestClock.adjust(Duration.millis(3099))
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)), "the last fetch, started at 3 s, is still running")
      yield* TestClock.adjust(Duration.millis(1))
      const results = yield* Fiber.join(fiber)
      const starts = results.map((result) => result.startedAt)
      assert.deepStrictEqual(results.map((result) => result.url), urls)
      assert.strictEqual(busiestSecond(starts), 5)
      assert.deepStrictEqual(starts, urls.map((_, i) => Math.floor(i / 5) * 1000), "5 at 0, 1, 2 and 3 s, in order")
    }))

  it.effect("the tutorial's limiter deadlocks at the 6th request: after a virtual minute only 5 have started", () =>
    Effect.gen(function*() {
      const limiter = yield* tutorialRateLimiter({ rate: 5, per: "1 second" })
      const starts: Array<number> = []
      const admitted = limiter.acquire.pipe(
        Effect.zipRight(Clock.currentTimeMillis),
        Effect.map((at) => {
          starts.push(at)
        })
      )
      const fiber = yield* Effect.fork(fetchAll(() => admitted))
      yield* TestClock.adjust(Duration.minutes(1))
      assert.deepStrictEqual(starts, [0, 0, 0, 0, 0], "five start, then nothing ever does")
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)), "the 20 fetches have not finished after a minute")
      assert.strictEqual((yield* Fiber.status(fiber))._tag, "Suspended", "and nothing is running: they wait forever")
      yield* Fiber.interrupt(fiber)
      assert.isTrue(Exit.isInterrupted(yield* Fiber.await(fiber)))
    }))

  it.effect("the same harness with our limiter instead completes", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({ limit: 5, per: "1 second" })
      const fiber = yield* Effect.fork(fetchAll((url) => limiter.acquire(new URL(url).host)))
      yield* TestClock.adjust(Duration.minutes(1))
      const results = yield* Fiber.join(fiber)
      assert.strictEqual(results.length, 20)
      assert.strictEqual(results[19].startedAt, 3000)
    }).pipe(Effect.scoped))
})
