import { assert, describe, it } from "@effect/vitest"
import { Array, Duration, Effect, Either, Exit, Fiber, Option, Ref, TestClock } from "effect"
import { gatherSettled, mightFail, TaskFailed } from "../../examples/gather-settled.js"

/** `mightFail(task, delay)` that records how it ended. */
const observed = (exits: Ref.Ref<ReadonlyArray<readonly [number, Exit.Exit<string, TaskFailed>]>>) =>
(
  task: number,
  delay: Duration.DurationInput = "1 second"
) => mightFail(task, delay).pipe(Effect.onExit((exit) => Ref.update(exits, Array.append([task, exit] as const))))

describe("gather-settled", () => {
  it.effect("returns [Right, Left(TaskFailed), Right] at virtual 1 s", () =>
    Effect.gen(function*() {
      const fiber = yield* Effect.fork(gatherSettled([mightFail(1), mightFail(2), mightFail(3)]))
      yield* TestClock.adjust(Duration.millis(999))
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
      yield* TestClock.adjust(Duration.millis(1))
      const [first, second, third] = yield* Fiber.join(fiber)
      assert.deepStrictEqual(first, Either.right("Task 1 succeeded"))
      assert.deepStrictEqual(third, Either.right("Task 3 succeeded"))
      assert.isTrue(Either.isLeft(second))
      const error = Either.getLeft(second).pipe(Option.getOrThrow)
      assert.strictEqual(error._tag, "TaskFailed")
      assert.strictEqual(error.task, 2)
      assert.strictEqual(error.message, "Task 2 failed!")
    }))

  it.effect("a failure at 0.5 s cancels nobody: the other two still complete at 1 s", () =>
    Effect.gen(function*() {
      const exits = yield* Ref.make<ReadonlyArray<readonly [number, Exit.Exit<string, TaskFailed>]>>([])
      const task = observed(exits)
      const fiber = yield* Effect.fork(gatherSettled([task(1), task(2, "500 millis"), task(3)]))
      yield* TestClock.adjust(Duration.millis(500))
      assert.deepStrictEqual((yield* Ref.get(exits)).map(([n]) => n), [2], "task 2 failed first")
      yield* TestClock.adjust(Duration.millis(500))
      const results = yield* Fiber.join(fiber)
      assert.deepStrictEqual(results.map(Either.isRight), [true, false, true])
      const ended = yield* Ref.get(exits)
      assert.deepStrictEqual(ended.map(([n]) => n).sort(), [1, 2, 3], "all three ran to their end")
      assert.isFalse(ended.some(([, exit]) => Exit.isInterrupted(exit)), "none was interrupted")
    }))

  it.effect("contrast: plain gather (no return_exceptions) interrupts the siblings when task 2 fails", () =>
    Effect.gen(function*() {
      const exits = yield* Ref.make<ReadonlyArray<readonly [number, Exit.Exit<string, TaskFailed>]>>([])
      const task = observed(exits)
      const fiber = yield* Effect.fork(Effect.all([task(1), task(2, "500 millis"), task(3)], { concurrency: 3 }))
      yield* TestClock.adjust(Duration.millis(500))
      const error = yield* Effect.flip(Fiber.join(fiber))
      assert.deepStrictEqual(error, new TaskFailed({ task: 2 }))
      const ended = yield* Ref.get(exits)
      assert.deepStrictEqual(
        ended.filter(([, exit]) => Exit.isInterrupted(exit)).map(([n]) => n).sort(),
        [1, 3],
        "tasks 1 and 3 were cancelled at 0.5 s"
      )
    }))

  it.effect("interrupting the settled gather interrupts all three tasks", () =>
    Effect.gen(function*() {
      const exits = yield* Ref.make<ReadonlyArray<readonly [number, Exit.Exit<string, TaskFailed>]>>([])
      const task = observed(exits)
      const fiber = yield* Effect.fork(gatherSettled([task(1), task(2), task(3)]))
      yield* TestClock.adjust(Duration.millis(500))
      assert.isTrue(Exit.isInterrupted(yield* Fiber.interrupt(fiber)))
      const ended = yield* Ref.get(exits)
      assert.deepStrictEqual(ended.map(([n]) => n).sort(), [1, 2, 3])
      assert.isTrue(ended.every(([, exit]) => Exit.isInterrupted(exit)), "each task was interrupted, none left running")
    }))
})
