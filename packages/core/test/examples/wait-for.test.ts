import { assert, describe, it } from "@effect/vitest"
import { Cause, Duration, Effect, Exit, Fiber, Option, Ref, TestClock } from "effect"
import { operation, waitFor, WaitForTimeout } from "../../examples/wait-for.js"

describe("wait-for", () => {
  it.effect("a 10 s operation with a 2 s limit fails with WaitForTimeout at exactly virtual 2 s, interrupted", () =>
    Effect.gen(function*() {
      const interrupted = yield* Ref.make(false)
      const fiber = yield* Effect.fork(Effect.flip(waitFor(operation("10 seconds", interrupted), "2 seconds")))
      yield* TestClock.adjust(Duration.millis(1999))
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)), "not timed out at 1.999 s")
      assert.isFalse(yield* Ref.get(interrupted))
      yield* TestClock.adjust(Duration.millis(1))
      const error = yield* Fiber.join(fiber)
      assert.instanceOf(error, WaitForTimeout)
      assert.strictEqual(error._tag, "WaitForTimeout")
      assert.isTrue(Duration.equals(error.timeout, Duration.seconds(2)))
      assert.isTrue(yield* Ref.get(interrupted), "the late operation was interrupted before the timeout was reported")
    }))

  it.effect("an operation faster than the limit returns its value at its own finish time, not interrupted", () =>
    Effect.gen(function*() {
      const interrupted = yield* Ref.make(false)
      const fiber = yield* Effect.fork(waitFor(operation("1 second", interrupted), "2 seconds"))
      yield* TestClock.adjust(Duration.millis(999))
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
      yield* TestClock.adjust(Duration.millis(1))
      assert.strictEqual(yield* Fiber.join(fiber), "Done")
      assert.isFalse(yield* Ref.get(interrupted))
    }))

  it.effect("the operation's own TimeoutException stays its own error, not mistaken for the deadline", () =>
    Effect.gen(function*() {
      const inner = Effect.sleep("1 second").pipe(Effect.zipRight(Effect.fail(new Cause.TimeoutException("inner"))))
      const fiber = yield* Effect.fork(Effect.flip(waitFor(inner, "2 seconds")))
      yield* TestClock.adjust(Duration.seconds(1))
      const error = yield* Fiber.join(fiber)
      assert.strictEqual(error._tag, "TimeoutException")
      assert.strictEqual(error.message, "inner")
    }))

  it.effect("interrupting the caller interrupts the operation", () =>
    Effect.gen(function*() {
      const interrupted = yield* Ref.make(false)
      const fiber = yield* Effect.fork(waitFor(operation("10 seconds", interrupted), "2 seconds"))
      yield* TestClock.adjust(Duration.millis(500))
      assert.isTrue(Exit.isInterrupted(yield* Fiber.interrupt(fiber)))
      assert.isTrue(yield* Ref.get(interrupted))
    }))
})
