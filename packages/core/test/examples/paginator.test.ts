import { assert, describe, it } from "@effect/vitest"
import { Chunk, Duration, Effect, Fiber, Option, Stream, TestClock } from "effect"
import { fetchPage, paginator } from "../../examples/paginator.js"

/** The simulated API, counting its calls. */
const counting = () => {
  const calls: Array<string> = []
  const fetch = (url: string) => Effect.zipRight(Effect.sync(() => calls.push(url)), fetchPage(url))
  return { calls, fetch }
}

describe("paginator", () => {
  it.effect("taking 2 pages fetches exactly 2 (lazy), in 1 s of virtual time", () =>
    Effect.gen(function*() {
      const api = counting()
      const fiber = yield* Effect.fork(Stream.runCollect(paginator(api.fetch).pipe(Stream.take(2))))
      yield* TestClock.adjust(Duration.seconds(1))
      const pages = Chunk.toReadonlyArray(yield* Fiber.join(fiber))
      assert.deepStrictEqual(pages.map((page) => page.body.page), [1, 2])
      assert.strictEqual(api.calls.length, 2)
      yield* TestClock.adjust(Duration.seconds(10))
      assert.strictEqual(api.calls.length, 2, "nothing fetched after the consumer stopped")
    }))

  it.effect("yields 5 pages of 10 items and ends after the last: 2.5 s virtual, 5 fetches", () =>
    Effect.gen(function*() {
      const api = counting()
      const fiber = yield* Effect.fork(Stream.runCollect(paginator(api.fetch)))
      yield* TestClock.adjust(Duration.millis(2499))
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)), "still fetching page 5 just before 2.5 s")
      yield* TestClock.adjust(Duration.millis(1))
      const pages = Chunk.toReadonlyArray(yield* Fiber.join(fiber))
      assert.deepStrictEqual(pages.map((page) => page.body.page), [1, 2, 3, 4, 5])
      assert.isTrue(pages.every((page) => page.body.items.length === 10))
      assert.strictEqual(api.calls.length, 5)
      assert.strictEqual(api.calls[1], "https://api.example.com/items?page=2")
    }))

  it.effect("interrupting the consumer mid-page stops the fetching", () =>
    Effect.gen(function*() {
      const api = counting()
      const fiber = yield* Effect.fork(Stream.runCollect(paginator(api.fetch)))
      yield* TestClock.adjust(Duration.millis(700))
      yield* Fiber.interrupt(fiber)
      yield* TestClock.adjust(Duration.seconds(10))
      assert.strictEqual(api.calls.length, 2)
    }))
})
