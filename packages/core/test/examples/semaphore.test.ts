import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Option, TestClock } from "effect"
import { limitedTasks, makeConcurrencyGauge } from "../../examples/semaphore.js"

describe("semaphore", () => {
  it.effect("ten 1 s tasks with 3 permits: exactly 3 at once, done at virtual 4 s and not before", () =>
    Effect.gen(function*() {
      const semaphore = yield* Effect.makeSemaphore(3)
      const gauge = yield* makeConcurrencyGauge
      const fiber = yield* Effect.fork(limitedTasks(semaphore, gauge, 10))

      yield* TestClock.adjust(Duration.millis(500))
      assert.strictEqual(yield* gauge.running, 3, "the first three run, seven wait")
      yield* TestClock.adjust(Duration.millis(3499))
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)), "the tenth task is still running just before 4 s")
      assert.strictEqual(yield* gauge.running, 1, "only the tenth task is left in the last second")
      yield* TestClock.adjust(Duration.millis(1))
      yield* Fiber.join(fiber)

      assert.strictEqual(yield* gauge.peak, 3)
      assert.strictEqual(yield* gauge.running, 0)
    }))

  it.effect("interrupting the batch mid-flight leaves all 3 permits free and nothing running", () =>
    Effect.gen(function*() {
      const semaphore = yield* Effect.makeSemaphore(3)
      const gauge = yield* makeConcurrencyGauge
      const fiber = yield* Effect.fork(limitedTasks(semaphore, gauge, 10))
      yield* TestClock.adjust(Duration.millis(1500))
      assert.strictEqual(yield* gauge.running, 3)
      assert.isTrue(
        Option.isNone(yield* semaphore.withPermitsIfAvailable(1)(Effect.void)),
        "all permits are held mid-flight"
      )

      yield* Fiber.interrupt(fiber)

      assert.strictEqual(yield* gauge.running, 0)
      assert.deepStrictEqual(yield* semaphore.withPermitsIfAvailable(3)(Effect.succeed("free")), Option.some("free"))
    }))
})
