import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Option, TestClock } from "effect"
import { gather } from "../../examples/gather.js"

describe("gather", () => {
  it.effect("runs the 2 s, 1 s and 3 s fetches together: done at virtual 3 s, not 6 s", () =>
    Effect.gen(function*() {
      const fiber = yield* Effect.fork(gather)
      yield* TestClock.adjust(Duration.seconds(2.999))
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)), "still running just before 3 s")
      yield* TestClock.adjust(Duration.millis(1))
      const results = yield* Fiber.join(fiber)
      assert.deepStrictEqual(results.map((result) => result.name), ["API 1", "API 2", "API 3"])
      assert.strictEqual(results[0].data, "Data from API 1")
    }))
})
