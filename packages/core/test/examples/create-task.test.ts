import { assert, describe, it } from "@effect/vitest"
import { Clock, Duration, Effect, Exit, Fiber, Option, Ref, Supervisor, TestClock } from "effect"
import { createTasks } from "../../examples/create-task.js"
import { recordingConsole } from "../support/RecordingConsole.js"

describe("create-task", () => {
  it.effect("the main fiber works while the tasks run; joining returns each result, all done at virtual 2 s", () =>
    Effect.gen(function*() {
      const { console, lines } = yield* recordingConsole
      const fiber = yield* Effect.fork(Effect.withConsole(createTasks, console))
      yield* TestClock.adjust(Duration.millis(1))
      assert.deepStrictEqual(yield* Ref.get(lines), [
        { at: 0, text: "Tasks are running..." },
        { at: 0, text: "Fetching API 1..." },
        { at: 0, text: "Fetching API 2..." }
      ], "the main fiber printed before the tasks even started")
      yield* TestClock.adjust(Duration.millis(1998))
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)), "API 1 (2 s) still running at 1.999 s")
      yield* TestClock.adjust(Duration.millis(1))
      const [result1, result2] = yield* Fiber.join(fiber)
      assert.deepStrictEqual(result1, { name: "API 1", data: "Data from API 1" })
      assert.deepStrictEqual(result2, { name: "API 2", data: "Data from API 2" })
      assert.strictEqual(yield* Clock.currentTimeMillis, 2000, "concurrent: 2 s, not 1 + 2 = 3 s")
    }))

  it.effect("interrupting the main fiber interrupts the unjoined tasks: none left running", () =>
    Effect.gen(function*() {
      const { console } = yield* recordingConsole
      const supervisor = yield* Supervisor.track
      const fiber = yield* Effect.fork(Effect.withConsole(Effect.supervised(createTasks, supervisor), console))
      yield* TestClock.adjust(Duration.millis(500))
      const tasks = yield* supervisor.value
      assert.strictEqual(tasks.length, 2, "two forked tasks in flight")
      const exit = yield* Fiber.interrupt(fiber)
      assert.isTrue(Exit.isInterrupted(exit))
      for (const task of tasks) {
        assert.isTrue(Exit.isInterrupted(yield* Fiber.await(task)), "each task was interrupted, not left running")
      }
      assert.strictEqual((yield* supervisor.value).length, 0)
    }))
})
