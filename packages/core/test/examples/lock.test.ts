import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Exit, Fiber, Option, TestClock } from "effect"
import { incrementTenTimes, makeSharedResource } from "../../examples/lock.js"

const lockIsFree = (resource: Effect.Effect.Success<typeof makeSharedResource>) =>
  resource.lock.withPermitsIfAvailable(1)(Effect.void).pipe(Effect.map(Option.isSome))

describe("lock", () => {
  it.effect("with the lock the ten increments run one after another: 10 at virtual 1 s", () =>
    Effect.gen(function*() {
      const fiber = yield* Effect.fork(incrementTenTimes({ locked: true }))
      yield* TestClock.adjust(Duration.millis(999))
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)), "still serialised just before 1 s")
      yield* TestClock.adjust(Duration.millis(1))
      assert.strictEqual(yield* Fiber.join(fiber), 10)
    }))

  it.effect("without the lock every increment reads 0: nine updates lost, done at virtual 100 ms", () =>
    Effect.gen(function*() {
      const fiber = yield* Effect.fork(incrementTenTimes({ locked: false }))
      yield* TestClock.adjust(Duration.millis(100))
      const result = yield* Fiber.poll(fiber)
      assert.deepStrictEqual(result, Option.some(Exit.succeed(1)))
    }))

  it.effect("an increment interrupted while holding the lock releases it to the next one", () =>
    Effect.gen(function*() {
      const resource = yield* makeSharedResource
      const holder = yield* Effect.fork(resource.increment)
      yield* Effect.yieldNow()
      const next = yield* Effect.fork(resource.increment)
      yield* TestClock.adjust(Duration.millis(50))
      assert.isFalse(yield* lockIsFree(resource), "the holder has the lock mid-update")

      yield* Fiber.interrupt(holder)
      yield* TestClock.adjust(Duration.millis(99))
      assert.isTrue(Option.isNone(yield* Fiber.poll(next)), "the next increment got the lock at 50 ms, not before")
      yield* TestClock.adjust(Duration.millis(1))
      assert.deepStrictEqual(yield* Fiber.poll(next), Option.some(Exit.void), "and finished its update at 150 ms")

      assert.strictEqual(yield* resource.data, 1, "the interrupted increment never wrote")
      assert.isTrue(yield* lockIsFree(resource), "the single permit is back")
    }))
})
