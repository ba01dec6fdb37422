import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { blockingSleep, measure, yieldingSleep } from "../../examples/blocking-vs-yielding.js"

// Real time is the point here (a busy-wait cannot be virtualised), so these are `it.live` with 200 ms windows and
// margins wide enough for a loaded 2-core machine.
describe("blocking-vs-yielding", () => {
  it.live("a blocking busy-wait stalls the ticker: zero ticks inside the 200 ms block", () =>
    Effect.gen(function*() {
      const blocking = yield* measure("blocking", blockingSleep(200))
      assert.isAtLeast(blocking.waitedMillis, 200)
      assert.isAtLeast(blocking.expectedTicks, 20)
      assert.strictEqual(blocking.ticksDuring, 0)
    }))

  it.live("a yielding sleep lets the ticker run: at least half the expected ticks inside the 200 ms sleep", () =>
    Effect.gen(function*() {
      const yielding = yield* measure("yielding", yieldingSleep(200))
      assert.isAtLeast(yielding.waitedMillis, 199)
      assert.isAtLeast(yielding.ticksDuring, Math.floor(yielding.expectedTicks / 2))
      assert.isAtLeast(yielding.ticksDuring, 5)
    }))
})
