import { assert, describe, it } from "@effect/vitest"
import { Clock, Duration, Effect, Exit, Fiber, Option, Ref, TestClock } from "effect"
import type { Request } from "../../examples/task-group.js"
import { fetchAll, FetchFailed, printFailures, taskGroup } from "../../examples/task-group.js"
import { recordingConsole } from "../support/RecordingConsole.js"

const tutorial: ReadonlyArray<Request> = [
  { name: "API 1", delay: "2 seconds" },
  { name: "API 2", delay: "1 second" },
  { name: "API 3", delay: "3 seconds" }
]

describe("task-group", () => {
  it.effect("all three tasks are done when the block exits at virtual 3 s; each handle gives its result", () =>
    Effect.gen(function*() {
      const { console } = yield* recordingConsole
      const fiber = yield* Effect.fork(Effect.withConsole(fetchAll(tutorial), console))
      yield* Effect.yieldNow()
      yield* TestClock.adjust(Duration.millis(2999))
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)), "the block waits for API 3 (3 s)")
      yield* TestClock.adjust(Duration.millis(1))
      const [task1, task2, task3] = yield* Fiber.join(fiber)
      assert.strictEqual(yield* Clock.currentTimeMillis, 3000, "concurrent: 3 s, not 2 + 1 + 3 = 6 s")
      for (const task of [task1, task2, task3]) {
        assert.isTrue(Option.isSome(yield* task.poll), "finished before the block exited")
      }
      assert.deepStrictEqual(yield* task1.join, { name: "API 1", data: "Data from API 1" })
      assert.deepStrictEqual(yield* task2.join, { name: "API 2", data: "Data from API 2" })
      assert.deepStrictEqual(yield* task3.join, { name: "API 3", data: "Data from API 3" })
    }))

  it.effect("the tutorial's program returns the three results in task order", () =>
    Effect.gen(function*() {
      const { console, lines } = yield* recordingConsole
      const fiber = yield* Effect.fork(Effect.withConsole(taskGroup, console))
      yield* Effect.yieldNow()
      yield* TestClock.adjust(Duration.seconds(3))
      const results = yield* Fiber.join(fiber)
      assert.deepStrictEqual(results.map((result) => result.name), ["API 1", "API 2", "API 3"])
      assert.deepStrictEqual(yield* Ref.get(lines), [
        { at: 0, text: "Fetching API 1..." },
        { at: 0, text: "Fetching API 2..." },
        { at: 0, text: "Fetching API 3..." }
      ])
    }))

  it.effect("one failing task cancels its siblings; the group fails at 1 s with the typed failure", () =>
    Effect.gen(function*() {
      const { console, lines } = yield* recordingConsole
      const requests: ReadonlyArray<Request> = [tutorial[0], { ...tutorial[1], failure: "503" }, tutorial[2]]
      const fiber = yield* Effect.fork(Effect.withConsole(Effect.flip(fetchAll(requests)), console))
      yield* Effect.yieldNow()
      yield* TestClock.adjust(Duration.seconds(1))
      const error = yield* Fiber.join(fiber)
      assert.deepStrictEqual(error.errors, [new FetchFailed({ name: "API 2", reason: "503" })])
      const cancelled = (yield* Ref.get(lines)).filter((line) => line.text.startsWith("Cancelled"))
      assert.deepStrictEqual(cancelled, [{ at: 1000, text: "Cancelled API 1" }, { at: 1000, text: "Cancelled API 3" }])
    }))

  it.effect("failures at the same moment are all collected; except* prints each", () =>
    Effect.gen(function*() {
      const { console, lines } = yield* recordingConsole
      const requests: ReadonlyArray<Request> = [
        tutorial[0],
        { name: "API 2", delay: 0, failure: "bad URL" },
        { name: "API 3", delay: 0, failure: "bad URL" }
      ]
      const fiber = yield* Effect.fork(Effect.withConsole(printFailures(fetchAll(requests)), console))
      yield* Effect.yieldNow()
      yield* TestClock.adjust(Duration.millis(1))
      yield* Fiber.join(fiber)
      assert.deepStrictEqual((yield* Ref.get(lines)).map((line) => line.text), [
        "Fetching API 1...",
        "Cancelled API 1",
        "Caught: API 2 failed: bad URL",
        "Caught: API 3 failed: bad URL"
      ])
    }))

  it.effect("interrupting the caller cancels every task: none left running", () =>
    Effect.gen(function*() {
      const { console, lines } = yield* recordingConsole
      const fiber = yield* Effect.fork(Effect.withConsole(fetchAll(tutorial), console))
      yield* Effect.yieldNow()
      yield* TestClock.adjust(Duration.millis(1500))
      const exit = yield* Fiber.interrupt(fiber)
      assert.isTrue(Exit.isInterrupted(exit))
      const cancelled = (yield* Ref.get(lines)).filter((line) => line.text.startsWith("Cancelled"))
      assert.deepStrictEqual(cancelled.map((line) => line.text), ["Cancelled API 1", "Cancelled API 3"])
      assert.isTrue(cancelled.every((line) => line.at === 1500))
    }))
})
