import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Exit, Fiber, Option, Ref, TestClock } from "effect"
import { cancelAfter, longRunningTask, stubbornTask } from "../../examples/cancellation.js"
import type { Line } from "../support/RecordingConsole.js"
import { recordingConsole } from "../support/RecordingConsole.js"

const timesOf = (lines: ReadonlyArray<Line>, text: string) =>
  lines.filter((line) => line.text === text).map((line) => line.at)

describe("cancellation", () => {
  it.effect("works at 0, 1 and 2 s; interrupted at virtual 3 s: cleanup runs and the canceller sees Interrupted", () =>
    Effect.gen(function*() {
      const { console, lines } = yield* recordingConsole
      const fiber = yield* Effect.fork(Effect.withConsole(cancelAfter(longRunningTask, "3 seconds"), console))
      yield* TestClock.adjust(Duration.millis(2999))
      assert.deepStrictEqual(timesOf(yield* Ref.get(lines), "Working..."), [0, 1000, 2000])
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
      yield* TestClock.adjust(Duration.millis(1))
      const exit = yield* Fiber.join(fiber)
      assert.isTrue(Exit.isInterrupted(exit), "Fiber.await gave an interrupted Exit")
      const printed = yield* Ref.get(lines)
      // The loop's own tick is due at the very instant of the cancel, and the TestClock wakes the later-registered
      // sleeper first: that iteration starts at 3 s and is cut off in its sleep. (In real time the cancel's timer,
      // set earlier, fires first and only the three ticks above print.)
      assert.deepStrictEqual(timesOf(printed, "Working..."), [0, 1000, 2000, 3000])
      assert.deepStrictEqual(timesOf(printed, "Task was cancelled!"), [3000], "cleanup ran once, at the cancel")
      assert.deepStrictEqual(timesOf(printed, "Main: Task cancelled successfully"), [3000])
      assert.deepStrictEqual(printed.slice(-2).map((line) => line.text), [
        "Task was cancelled!",
        "Main: Task cancelled successfully"
      ], "the canceller resumed only after the cleanup")
      yield* TestClock.adjust(Duration.seconds(10))
      assert.strictEqual((yield* Ref.get(lines)).length, printed.length, "nothing runs after the cancel")
    }))

  it.effect("a task cannot swallow its cancellation: catchAllCause/catchAll never see it, the exit is Interrupted", () =>
    Effect.gen(function*() {
      const { console, lines } = yield* recordingConsole
      const fiber = yield* Effect.fork(Effect.withConsole(stubbornTask, console))
      yield* TestClock.adjust(Duration.millis(1500))
      const exit = yield* Fiber.interrupt(fiber)
      assert.isTrue(Exit.isInterrupted(exit))
      assert.isFalse(Exit.isSuccess(exit), "no \"swallowed\" success")
      const texts = (yield* Ref.get(lines)).map((line) => line.text)
      assert.deepStrictEqual(texts, ["Working...", "Working...", "Task was cancelled!"])
      assert.notInclude(texts, "Swallowed the cancellation")
    }))

  it.effect("cancelAfter reports the stubborn task as interrupted too", () =>
    Effect.gen(function*() {
      const { console } = yield* recordingConsole
      const fiber = yield* Effect.fork(Effect.withConsole(cancelAfter(stubbornTask, "1500 millis"), console))
      yield* TestClock.adjust(Duration.millis(1500))
      assert.isTrue(Exit.isInterrupted(yield* Fiber.join(fiber)))
    }))
})
