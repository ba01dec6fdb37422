import { assert, describe, it } from "@effect/vitest"
import { Array, Duration, Effect, Exit, Fiber, Option, Order, Supervisor, TestClock } from "effect"
import { InvalidPipelineOptions, makePipeline, tutorialOptions } from "../../examples/producer-consumer.js"

const allItems = Array.makeBy(10, (i) => `item-${i}`)
const byItemNumber = Order.mapInput(Order.number, (item: string) => Number(item.slice("item-".length)))

describe("producer-consumer", () => {
  it.effect("each of the 10 items is consumed exactly once, shared by both consumers, done at virtual 5.5 s", () =>
    Effect.gen(function*() {
      const pipeline = yield* makePipeline()
      const fiber = yield* Effect.fork(pipeline.run)

      yield* TestClock.adjust(Duration.millis(5499))
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)), "item-9 (put at 4.5 s) is still being processed")
      yield* TestClock.adjust(Duration.millis(1))
      const consumed = yield* Fiber.join(fiber)

      const items = consumed.map(({ item }) => item)
      assert.deepStrictEqual(Array.sort(items, byItemNumber), allItems)
      assert.strictEqual(new Set(items).size, 10, "no item consumed twice")
      assert.strictEqual(consumed.filter(({ consumer }) => consumer === "Consumer 1").length, 5)
      assert.strictEqual(consumed.filter(({ consumer }) => consumer === "Consumer 2").length, 5)
      assert.deepStrictEqual(yield* pipeline.mailbox.size, Option.none(), "the mailbox ended")
    }))

  it.effect("the producer is suspended while the mailbox holds 5 items, and resumes when a consumer takes one", () =>
    Effect.gen(function*() {
      const pipeline = yield* makePipeline({ ...tutorialOptions, processFor: "10 seconds" })
      const fiber = yield* Effect.fork(pipeline.run)

      // item-0 and item-1 go straight to the two consumers; items 2..6 fill the mailbox by 3 s; the offer of item-7
      // at 3.5 s must wait for room, far longer than the producer's 0.5 s pace.
      yield* TestClock.adjust(Duration.millis(3500))
      assert.strictEqual(yield* pipeline.produced, 7)
      assert.deepStrictEqual(yield* pipeline.mailbox.size, Option.some(5))
      yield* TestClock.adjust(Duration.millis(6499))
      assert.strictEqual(yield* pipeline.produced, 7, "still stuck on item-7 at 9.999 s")
      assert.deepStrictEqual(yield* pipeline.mailbox.size, Option.some(5))

      yield* TestClock.adjust(Duration.millis(1))
      assert.strictEqual(yield* pipeline.produced, 8, "a consumer freed a slot at 10 s and item-7 went in")
      assert.deepStrictEqual(yield* pipeline.mailbox.size, Option.some(5))

      // Five rounds of 10 s for two consumers; the second started 0.5 s later.
      yield* TestClock.adjust(Duration.millis(40499))
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
      yield* TestClock.adjust(Duration.millis(1))
      const consumed = yield* Fiber.join(fiber)
      assert.deepStrictEqual(Array.sort(consumed.map(({ item }) => item), byItemNumber), allItems)
    }))

  it.effect("interrupting the pipeline mid-flight stops the producer and both consumers: no fiber left running", () =>
    Effect.gen(function*() {
      const supervisor = yield* Supervisor.track
      const pipeline = yield* makePipeline()
      const fiber = yield* pipeline.run.pipe(Effect.supervised(supervisor), Effect.fork)
      yield* TestClock.adjust(Duration.millis(2250))

      const forked = yield* supervisor.value
      assert.isAtLeast(forked.length, 3, "the producer and the two consumers run in fibers of their own")
      assert.strictEqual(yield* pipeline.produced, 5)
      assert.strictEqual((yield* pipeline.consumed).length, 3)

      assert.isTrue(Exit.isInterrupted(yield* Fiber.interrupt(fiber)))
      assert.deepStrictEqual(yield* supervisor.value, [], "no fiber of the pipeline is left running")
      for (const child of forked) {
        assert.isTrue(Option.isSome(yield* Fiber.poll(child)), `fiber ${child.id().id} has ended`)
      }
      const ended = yield* Effect.exit(pipeline.mailbox.await)
      assert.isTrue(Exit.isInterrupted(ended), "the producer was interrupted and the mailbox ended with it")

      yield* TestClock.adjust(Duration.minutes(1))
      assert.strictEqual(yield* pipeline.produced, 5, "nothing produced after the interruption")
      assert.strictEqual((yield* pipeline.consumed).length, 3, "nothing consumed after the interruption")
    }))

  it.effect("bad options (no consumer, no room, half an item) fail with a typed error naming the field", () =>
    Effect.gen(function*() {
      const noConsumers = yield* Effect.flip(makePipeline({ ...tutorialOptions, consumers: 0 }))
      assert.deepStrictEqual(
        noConsumers,
        new InvalidPipelineOptions({ field: "consumers", reason: "must be a whole number, 1 or more" })
      )
      const noRoom = yield* Effect.flip(makePipeline({ ...tutorialOptions, capacity: 0 }))
      assert.strictEqual(noRoom.field, "capacity")
      const halfAnItem = yield* Effect.flip(makePipeline({ ...tutorialOptions, items: 2.5 }))
      assert.strictEqual(halfAnItem.field, "items")
    }))
})
