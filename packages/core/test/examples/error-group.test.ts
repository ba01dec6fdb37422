import { assert, describe, it } from "@effect/vitest"
import { Cause, Chunk, Duration, Effect, Exit, Fiber, Option, Ref, TestClock } from "effect"
import {
  catchEveryTag,
  InvalidValue,
  mightFail,
  mixed,
  onlyInvalid,
  ServiceUnavailable,
  taskGroup
} from "../../examples/error-group.js"

const failuresOf = <A, E>(exit: Exit.Exit<A, E>) =>
  Exit.isFailure(exit) ? Chunk.toReadonlyArray(Cause.failures(exit.cause)) : []

describe("error-group", () => {
  it.effect("the group fails at virtual 1 s with every task's failure, whatever its tag", () =>
    Effect.gen(function*() {
      const fiber = yield* Effect.fork(taskGroup([1, 2, 3, 4, 5].map(mightFail)))
      yield* TestClock.adjust(Duration.millis(999))
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
      yield* TestClock.adjust(Duration.millis(1))
      const exit = yield* Fiber.await(fiber)
      assert.deepStrictEqual(failuresOf(exit), [
        new InvalidValue({ task: 2 }),
        new ServiceUnavailable({ task: 3 }),
        new InvalidValue({ task: 4 })
      ])
      assert.isFalse(Exit.isFailure(exit) && Cause.isInterrupted(exit.cause), "no task was cancelled")
    }))

  it.effect("without failures the group returns every result in order", () =>
    Effect.gen(function*() {
      const fiber = yield* Effect.fork(taskGroup([1, 5, 7].map(mightFail)))
      yield* TestClock.adjust(Duration.seconds(1))
      assert.deepStrictEqual(yield* Fiber.join(fiber), ["Task 1 succeeded", "Task 5 succeeded", "Task 7 succeeded"])
    }))

  it.effect("except* InvalidValue handles both InvalidValue failures at once and ServiceUnavailable still fails", () =>
    Effect.gen(function*() {
      const caught = yield* Ref.make<ReadonlyArray<number>>([])
      const program = taskGroup([1, 2, 3, 4].map(mightFail)).pipe(
        catchEveryTag("InvalidValue", (errors) => Ref.set(caught, errors.map((error) => error.task)))
      )
      const fiber = yield* Effect.fork(program)
      yield* TestClock.adjust(Duration.seconds(1))
      const exit = yield* Fiber.await(fiber)
      assert.deepStrictEqual(yield* Ref.get(caught), [2, 4])
      assert.deepStrictEqual(failuresOf(exit), [new ServiceUnavailable({ task: 3 })])
    }))

  it.effect("when only InvalidValue occurred, except* InvalidValue handles the group fully", () =>
    Effect.gen(function*() {
      const program = taskGroup([1, 2, 4].map(mightFail)).pipe(
        catchEveryTag("InvalidValue", (errors) => Effect.succeed(errors.map((error) => error.message)))
      )
      const fiber = yield* Effect.fork(program)
      yield* TestClock.adjust(Duration.seconds(1))
      assert.deepStrictEqual(yield* Fiber.join(fiber), ["Task 2 failed!", "Task 4 failed!"])
    }))

  it.effect("a tag that did not occur leaves the group as it was", () =>
    Effect.gen(function*() {
      const program = taskGroup([3, 9].map(mightFail)).pipe(
        catchEveryTag("InvalidValue", () => Effect.succeed("handled"))
      )
      const fiber = yield* Effect.fork(program)
      yield* TestClock.adjust(Duration.seconds(1))
      const exit = yield* Fiber.await(fiber)
      assert.deepStrictEqual(failuresOf(exit), [
        new ServiceUnavailable({ task: 3 }),
        new ServiceUnavailable({ task: 9 })
      ])
    }))

  it.effect("a failing handler keeps the rest of the group beside its own failure", () =>
    Effect.gen(function*() {
      const program = taskGroup([2, 3].map(mightFail)).pipe(
        catchEveryTag("InvalidValue", (errors) => Effect.fail(`could not handle ${errors.length}`))
      )
      const fiber = yield* Effect.fork(program)
      yield* TestClock.adjust(Duration.seconds(1))
      const exit = yield* Fiber.await(fiber)
      assert.deepStrictEqual(failuresOf(exit), ["could not handle 1", new ServiceUnavailable({ task: 3 })])
    }))

  it.effect("why catchEveryTag exists: plain catchTag sees only the first failure and drops the others", () =>
    Effect.gen(function*() {
      const program = taskGroup([2, 3].map(mightFail)).pipe(
        Effect.catchTag("InvalidValue", (error) => Effect.succeed([error.message]))
      )
      const fiber = yield* Effect.fork(program)
      yield* TestClock.adjust(Duration.seconds(1))
      assert.deepStrictEqual(yield* Fiber.join(fiber), ["Task 2 failed!"], "ServiceUnavailable silently lost")
    }))

  it.effect("interrupting the group interrupts every task: none completes", () =>
    Effect.gen(function*() {
      const completed = yield* Ref.make(0)
      const tasks = [1, 2, 3].map((task) => Effect.zipLeft(mightFail(task), Ref.update(completed, (n) => n + 1)))
      const fiber = yield* Effect.fork(taskGroup(tasks))
      yield* TestClock.adjust(Duration.millis(500))
      assert.isTrue(Exit.isInterrupted(yield* Fiber.interrupt(fiber)))
      yield* TestClock.adjust(Duration.seconds(5))
      assert.strictEqual(yield* Ref.get(completed), 0)
    }))

  it.effect("the demo groups: after except* InvalidValue the error type is ServiceUnavailable; 1, 2, 4 succeed", () =>
    Effect.gen(function*() {
      const stillFailing: Effect.Effect<unknown, ServiceUnavailable> = mixed
      const fullyHandled = onlyInvalid
      const mute = <A, E>(effect: Effect.Effect<A, E>) =>
        Effect.flatMap(Effect.console, (console) => Effect.withConsole(effect, { ...console, log: () => Effect.void }))
      const fiber = yield* Effect.fork(Effect.all([Effect.exit(mute(stillFailing)), Effect.exit(mute(fullyHandled))], {
        concurrency: 2
      }))
      yield* TestClock.adjust(Duration.seconds(1))
      const [mixedExit, onlyInvalidExit] = yield* Fiber.join(fiber)
      assert.deepStrictEqual(failuresOf(mixedExit), [new ServiceUnavailable({ task: 3 })])
      assert.isTrue(Exit.isSuccess(onlyInvalidExit))
    }))
})
