import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Exit, Fiber, Option, TestClock } from "effect"
import { eventDemo, setter, waiter } from "../../examples/event.js"

describe("event", () => {
  it.effect("both waiters resume at virtual 2 s, when the setter fires, and not at 1.999 s", () =>
    Effect.gen(function*() {
      const event = yield* Effect.makeLatch()
      const first = yield* Effect.fork(waiter(event, "Task 1"))
      const second = yield* Effect.fork(waiter(event, "Task 2"))
      yield* Effect.fork(setter(event))

      yield* TestClock.adjust(Duration.millis(1999))
      assert.isTrue(Option.isNone(yield* Fiber.poll(first)), "Task 1 still waits at 1.999 s")
      assert.isTrue(Option.isNone(yield* Fiber.poll(second)), "Task 2 still waits at 1.999 s")

      yield* TestClock.adjust(Duration.millis(1))
      assert.deepStrictEqual(yield* Fiber.poll(first), Option.some(Exit.succeed({ name: "Task 1", atMillis: 2000 })))
      assert.deepStrictEqual(yield* Fiber.poll(second), Option.some(Exit.succeed({ name: "Task 2", atMillis: 2000 })))
    }))

  it.effect("the tutorial's gather of two waiters and the setter finishes at virtual 2 s", () =>
    Effect.gen(function*() {
      const fiber = yield* Effect.fork(eventDemo)
      yield* TestClock.adjust(Duration.millis(1999))
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
      yield* TestClock.adjust(Duration.millis(1))
      assert.deepStrictEqual(yield* Fiber.join(fiber), [
        { name: "Task 1", atMillis: 2000 },
        { name: "Task 2", atMillis: 2000 }
      ])
    }))

  it.effect("an interrupted waiter neither blocks the event nor the other waiter", () =>
    Effect.gen(function*() {
      const event = yield* Effect.makeLatch()
      const quitter = yield* Effect.fork(waiter(event, "Task 1"))
      const stayer = yield* Effect.fork(waiter(event, "Task 2"))
      yield* Effect.fork(setter(event))
      yield* TestClock.adjust(Duration.seconds(1))

      const quitterExit = yield* Fiber.interrupt(quitter)
      assert.isTrue(Exit.isInterrupted(quitterExit))

      yield* TestClock.adjust(Duration.seconds(1))
      assert.deepStrictEqual(yield* Fiber.poll(stayer), Option.some(Exit.succeed({ name: "Task 2", atMillis: 2000 })))
      const latecomer = yield* Effect.fork(waiter(event, "Task 3"))
      yield* Effect.yieldNow()
      assert.deepStrictEqual(
        yield* Fiber.poll(latecomer),
        Option.some(Exit.succeed({ name: "Task 3", atMillis: 2000 })),
        "the event stays set: a later wait returns at once"
      )
    }))
})
