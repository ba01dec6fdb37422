import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Exit, Fiber, Option, TestClock } from "effect"
import { handled, OperationFailed, riskyOperation } from "../../examples/error-handling.js"

describe("error-handling", () => {
  it.effect("risky_operation fails with the typed OperationFailed at virtual 1 s, not before", () =>
    Effect.gen(function*() {
      const fiber = yield* Effect.fork(Effect.flip(riskyOperation))
      yield* TestClock.adjust(Duration.millis(999))
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
      yield* TestClock.adjust(Duration.millis(1))
      const error = yield* Fiber.join(fiber)
      assert.instanceOf(error, OperationFailed)
      assert.strictEqual(error._tag, "OperationFailed")
      assert.strictEqual(error.message, "Something went wrong!")
      assert.strictEqual(error.operation, "risky_operation")
    }))

  it.effect("catchTag handles it at virtual 1 s: the program succeeds with the printed line", () =>
    Effect.gen(function*() {
      const fiber = yield* Effect.fork(handled)
      yield* TestClock.adjust(Duration.millis(999))
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
      yield* TestClock.adjust(Duration.millis(1))
      assert.strictEqual(yield* Fiber.join(fiber), "Caught error: Something went wrong!")
    }))

  it.effect("catchTag handles only the failure: interrupting the operation at 0.5 s is not caught", () =>
    Effect.gen(function*() {
      const fiber = yield* Effect.fork(handled)
      yield* TestClock.adjust(Duration.millis(500))
      const exit = yield* Fiber.interrupt(fiber)
      assert.isTrue(Exit.isInterrupted(exit), "interrupted, not turned into a \"Caught error\" success")
    }))
})
