import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Exit, Fiber, Option, Ref, TestClock } from "effect"
import { OperationTimedOut, slowOperation, timeout } from "../../examples/timeout.js"

describe("timeout", () => {
  it.effect("fails with OperationTimedOut at exactly virtual 2 s and the slow operation was interrupted", () =>
    Effect.gen(function*() {
      const interrupted = yield* Ref.make(false)
      const fiber = yield* Effect.fork(Effect.flip(timeout("2 seconds")(slowOperation(interrupted))))
      yield* TestClock.adjust(Duration.millis(1999))
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)), "not timed out at 1.999 s")
      assert.isFalse(yield* Ref.get(interrupted), "operation still running at 1.999 s")
      yield* TestClock.adjust(Duration.millis(1))
      const error = yield* Fiber.join(fiber)
      assert.instanceOf(error, OperationTimedOut)
      assert.strictEqual(error._tag, "OperationTimedOut")
      assert.isTrue(Duration.equals(error.after, Duration.seconds(2)))
      assert.strictEqual(error.message, "Operation timed out after 2s")
      assert.isTrue(yield* Ref.get(interrupted), "the operation's finalizer ran before the timeout was reported")
    }))

  it.effect("an operation that finishes in time returns its value and is not interrupted", () =>
    Effect.gen(function*() {
      const interrupted = yield* Ref.make(false)
      const fiber = yield* Effect.fork(timeout("11 seconds")(slowOperation(interrupted)))
      yield* TestClock.adjust(Duration.seconds(10))
      assert.strictEqual(yield* Fiber.join(fiber), "Done")
      assert.isFalse(yield* Ref.get(interrupted))
    }))

  it.effect("interrupting the caller before the deadline interrupts the operation as well", () =>
    Effect.gen(function*() {
      const interrupted = yield* Ref.make(false)
      const fiber = yield* Effect.fork(timeout("2 seconds")(slowOperation(interrupted)))
      yield* TestClock.adjust(Duration.seconds(1))
      assert.isTrue(Exit.isInterrupted(yield* Fiber.interrupt(fiber)))
      assert.isTrue(yield* Ref.get(interrupted))
    }))
})
