import { assert, describe, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { compare, CountPrimes, countPrimes, InvalidLimit, makeOffload, maxLimit } from "../../examples/to-thread.js"

// Real time is the point here (a ticker's lateness while a thread computes): `it.scopedLive`. The bounds hold on a
// quiet or a loaded 2-core machine: the inline count of primes to 5,000,000 takes about 0.5-3 s there (to 2,000,000 it
// took only 135 ms on a quiet run, too close to the 150 ms floor).
const timeout = 60_000

describe("to-thread", () => {
  it("countPrimes counts the primes up to a limit", () => {
    assert.deepStrictEqual([0, 1, 2, 3, 10, 100, 1000].map(countPrimes), [0, 0, 1, 2, 4, 25, 168])
  })

  it.scopedLive(
    "offloaded, the ticker stays on time; inline, it stalls for the whole computation",
    () =>
      Effect.gen(function*() {
        const offload = yield* makeOffload
        const { inline, offloaded } = yield* compare(offload, 5_000_000)
        assert.strictEqual(inline.result, 348_513)
        assert.strictEqual(offloaded.result, 348_513, "the same typed result from the worker thread")
        assert.isAtLeast(inline.maxLagMillis, 150, "inline: the ticker waited for the computation")
        assert.isAtLeast(inline.maxLagMillis, inline.workMillis * 0.6, "inline: lag is about the work's duration")
        assert.isBelow(offloaded.maxLagMillis, inline.maxLagMillis / 2, "offloaded: the ticker kept ticking")
        assert.isAbove(offloaded.ticks, inline.ticks, "offloaded: more ticks while the work ran")
      }),
    timeout
  )

  it.scopedLive("an error raised in the worker arrives as the request's typed error", () =>
    Effect.gen(function*() {
      const offload = yield* makeOffload
      const error = yield* Effect.flip(offload.run(new CountPrimes({ limit: -1 })))
      assert.instanceOf(error, InvalidLimit)
      assert.deepStrictEqual([error.limit, error.reason], [-1, `must be an integer from 0 to ${maxLimit}`])
      assert.strictEqual(yield* offload.run(new CountPrimes({ limit: 100 })), 25, "the worker is still serving")
    }), timeout)

  it.scopedLive(
    "unlike a Python thread, a timed-out computation is stopped: its thread is terminated",
    () =>
      Effect.gen(function*() {
        const offload = yield* makeOffload
        const result = yield* offload.run(new CountPrimes({ limit: maxLimit })).pipe(Effect.timeoutOption("200 millis"))
        assert.isTrue(Option.isNone(result))
        const stats = yield* offload.stats
        assert.deepStrictEqual([stats.cancelled, stats.busy, stats.queued], [1, 0, 0])
        assert.strictEqual(stats.threads, stats.started - stats.cancelled, "the terminated thread has already exited")
        assert.strictEqual(yield* offload.run(new CountPrimes({ limit: 1000 })), 168)
      }),
    timeout
  )
})
