import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Exit, Fiber, Option, Ref, TestClock } from "effect"
import { hello } from "../../examples/hello.js"
import { recordingConsole } from "../support/RecordingConsole.js"

describe("hello", () => {
  it.effect("prints Hello at once and World only after the virtual second has passed", () =>
    Effect.gen(function*() {
      const { console, lines } = yield* recordingConsole
      const fiber = yield* Effect.fork(Effect.withConsole(hello, console))
      yield* TestClock.adjust(Duration.millis(999))
      assert.deepStrictEqual(yield* Ref.get(lines), [{ at: 0, text: "Hello" }], "World not printed before 1 s")
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
      yield* TestClock.adjust(Duration.millis(1))
      yield* Fiber.join(fiber)
      assert.deepStrictEqual(yield* Ref.get(lines), [{ at: 0, text: "Hello" }, { at: 1000, text: "World" }])
    }))

  it.effect("the sleep does not block: another fiber runs to completion while hello sleeps", () =>
    Effect.gen(function*() {
      const fiber = yield* Effect.fork(hello)
      const other = yield* Effect.fork(Effect.sleep(Duration.millis(500)).pipe(Effect.as("other finished")))
      yield* TestClock.adjust(Duration.millis(500))
      assert.strictEqual(yield* Fiber.join(other), "other finished")
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)), "hello still sleeping at 500 ms")
      yield* TestClock.adjust(Duration.millis(500))
      yield* Fiber.join(fiber)
    }))

  it.effect("interrupted during its sleep, it never prints World", () =>
    Effect.gen(function*() {
      const { console, lines } = yield* recordingConsole
      const fiber = yield* Effect.fork(Effect.withConsole(hello, console))
      yield* TestClock.adjust(Duration.millis(500))
      assert.isTrue(Exit.isInterrupted(yield* Fiber.interrupt(fiber)))
      yield* TestClock.adjust(Duration.seconds(5))
      assert.deepStrictEqual((yield* Ref.get(lines)).map((line) => line.text), ["Hello"])
    }))
})
