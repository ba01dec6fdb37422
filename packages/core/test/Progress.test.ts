import { assert, describe, it } from "@effect/vitest"
import { Data, Duration, Effect, Exit, Fiber, Option, Queue, Schema, Stream, TestClock } from "effect"
import * as Progress from "../src/Progress.js"

class HttpStatusError extends Data.TaggedError("HttpStatusError")<{ readonly status: number }> {}

const repeat = (times: number, effect: Effect.Effect<void>) => Effect.replicateEffect(effect, times, { discard: true })

const snapshot = (fields: Partial<Progress.Snapshot>): Progress.Snapshot => ({
  total: 0,
  done: 0,
  failed: 0,
  inFlight: 0,
  failedByTag: {},
  ratePerSecond: 0,
  etaMillis: Option.none(),
  elapsedMillis: 0,
  ...fields
})

describe("Progress", () => {
  it.effect("rate over the recent window and ETA at known virtual instants", () =>
    Effect.gen(function*() {
      const progress = yield* Progress.make({ window: "10 seconds" })
      yield* progress.addTotal(100)
      yield* repeat(10, progress.start)
      yield* TestClock.adjust("1 second")
      yield* repeat(5, progress.succeed)
      yield* TestClock.adjust("1 second")
      // 5 finished in the 2 s since the first start: 2.5/s, 95 left: 38 s
      assert.deepStrictEqual(
        yield* progress.snapshot,
        snapshot({
          total: 100,
          done: 5,
          inFlight: 5,
          ratePerSecond: 2.5,
          etaMillis: Option.some(38_000),
          elapsedMillis: 2000
        })
      )
      yield* TestClock.adjust("8 seconds")
      const atTen = yield* progress.snapshot
      assert.strictEqual(atTen.ratePerSecond, 0.5, "5 over the full 10 s window")
      assert.deepStrictEqual(atTen.etaMillis, Option.some(190_000))
      yield* TestClock.adjust("1 second")
      const atEleven = yield* progress.snapshot
      assert.strictEqual(atEleven.ratePerSecond, 0, "the completions at 1 s have left the window (1 s, 11 s]")
      assert.deepStrictEqual(atEleven.etaMillis, Option.none())
      yield* repeat(5, progress.succeed)
      const after = yield* progress.snapshot
      assert.strictEqual(after.ratePerSecond, 0.5)
      assert.deepStrictEqual(after.etaMillis, Option.some(180_000))
      assert.strictEqual(after.inFlight, 0)
      assert.strictEqual(after.elapsedMillis, 11_000)
    }))

  it.effect("failures are counted by tag; the ETA is 0 once everything has finished", () =>
    Effect.gen(function*() {
      const progress = yield* Progress.make()
      yield* progress.addTotal(4)
      yield* repeat(4, progress.start)
      yield* TestClock.adjust("2 seconds")
      yield* progress.fail("HttpStatusError")
      yield* progress.fail("FetchTimeout")
      yield* progress.fail("HttpStatusError")
      yield* progress.succeed
      const result = yield* progress.snapshot
      assert.deepStrictEqual(result.failedByTag, { HttpStatusError: 2, FetchTimeout: 1 })
      assert.strictEqual(result.failed, 3)
      assert.strictEqual(result.done, 1)
      assert.strictEqual(result.inFlight, 0)
      assert.strictEqual(result.ratePerSecond, 2)
      assert.deepStrictEqual(result.etaMillis, Option.some(0))
    }))

  it.effect("track counts in flight, then done or failed by the error's tag", () =>
    Effect.gen(function*() {
      const progress = yield* Progress.make()
      const slow = progress.track(Effect.as(Effect.sleep("1 second"), "ok"))
      const fiber = yield* Effect.fork(Effect.all([slow, slow], { concurrency: "unbounded" }))
      yield* TestClock.adjust("500 millis")
      assert.strictEqual((yield* progress.snapshot).inFlight, 2)
      yield* TestClock.adjust("500 millis")
      assert.deepStrictEqual(yield* Fiber.join(fiber), ["ok", "ok"])
      const failure = yield* Effect.flip(progress.track(Effect.fail(new HttpStatusError({ status: 503 }))))
      assert.strictEqual(failure.status, 503)
      yield* Effect.exit(progress.track(Effect.fail("plain string")))
      yield* Effect.exit(progress.track(Effect.die("bug")))
      const result = yield* progress.snapshot
      assert.strictEqual(result.done, 2)
      assert.strictEqual(result.inFlight, 0)
      assert.deepStrictEqual(result.failedByTag, { HttpStatusError: 1, UnknownError: 1, Defect: 1 })
    }))

  it.effect("an interrupted tracked effect is neither done nor failed and leaves inFlight where it was", () =>
    Effect.gen(function*() {
      const progress = yield* Progress.make()
      yield* progress.start
      const fiber = yield* Effect.fork(progress.track(Effect.sleep("10 seconds")))
      yield* TestClock.adjust("1 second")
      assert.strictEqual((yield* progress.snapshot).inFlight, 2)
      const exit = yield* Fiber.interrupt(fiber)
      assert.isTrue(Exit.isInterrupted(exit))
      const result = yield* progress.snapshot
      assert.strictEqual(result.inFlight, 1, "back to the one started by hand")
      assert.strictEqual(result.done, 0)
      assert.strictEqual(result.failed, 0)
      assert.strictEqual(result.ratePerSecond, 0)
    }))

  it.effect("changes: the current snapshot at once, then the latest at most once per interval", () =>
    Effect.gen(function*() {
      const progress = yield* Progress.make({ interval: "100 millis" })
      const received = yield* Queue.unbounded<Progress.Snapshot>()
      const consumer = yield* Effect.fork(Stream.runForEach(progress.changes, (s) => Queue.offer(received, s)))
      assert.strictEqual((yield* Queue.take(received)).total, 0, "the initial snapshot")
      yield* progress.addTotal(10)
      yield* progress.start
      yield* progress.succeed
      yield* TestClock.adjust("99 millis")
      assert.isTrue(Option.isNone(yield* Queue.poll(received)), "throttled: nothing before the interval")
      yield* TestClock.adjust("1 millis")
      const latest = yield* Queue.take(received)
      assert.deepStrictEqual([latest.total, latest.done, latest.inFlight], [10, 1, 0], "three updates, one snapshot")
      yield* TestClock.adjust("1 second")
      assert.strictEqual(yield* Queue.size(received), 0, "no change, no emission")
      yield* progress.fail("FetchTimeout")
      const afterIdle = yield* Queue.take(received)
      assert.strictEqual(afterIdle.failed, 1, "after a quiet spell a change is emitted at once")
      yield* Fiber.interrupt(consumer)
      yield* progress.succeed
      yield* TestClock.adjust("1 second")
      assert.strictEqual(yield* Queue.size(received), 0, "an interrupted consumer receives nothing more")
    }))

  it.effect("unsafeStart and unsafeSucceed count like start and succeed, and wake a waiting consumer", () =>
    Effect.gen(function*() {
      const progress = yield* Progress.make({ interval: "100 millis" })
      const received = yield* Queue.unbounded<Progress.Snapshot>()
      const consumer = yield* Effect.fork(Stream.runForEach(progress.changes, (s) => Queue.offer(received, s)))
      yield* Queue.take(received)
      yield* progress.addTotal(2)
      yield* TestClock.adjust("1 second")
      yield* Queue.takeAll(received)
      progress.unsafeStart()
      progress.unsafeStart()
      progress.unsafeSucceed()
      const woken = yield* Queue.take(received)
      assert.deepStrictEqual([woken.done, woken.inFlight], [1, 1], "woken at once after a quiet spell")
      progress.unsafeSucceed()
      yield* TestClock.adjust("100 millis")
      const last = yield* Queue.take(received)
      assert.deepStrictEqual([last.total, last.done, last.inFlight, last.failed], [2, 2, 0, 0])
      yield* Fiber.interrupt(consumer)
    }))

  it.effect("each consumer of changes gets its own subscription", () =>
    Effect.gen(function*() {
      const progress = yield* Progress.make({ interval: "50 millis" })
      yield* progress.addTotal(2)
      const consume = Effect.gen(function*() {
        const received = yield* Queue.unbounded<Progress.Snapshot>()
        yield* Effect.fork(Stream.runForEach(progress.changes, (s) => Queue.offer(received, s)))
        assert.strictEqual((yield* Queue.take(received)).done, 0)
        return received
      })
      const [first, second] = [yield* consume, yield* consume]
      yield* progress.succeed
      yield* TestClock.adjust("50 millis")
      assert.strictEqual((yield* Queue.take(first)).done, 1)
      assert.strictEqual((yield* Queue.take(second)).done, 1)
    }))

  it.effect("bad options and counts are typed errors naming the field", () =>
    Effect.gen(function*() {
      const window = yield* Effect.flip(Progress.make({ window: 0 }))
      assert.strictEqual(window._tag, "InvalidProgressInput")
      assert.strictEqual(window.field, "window")
      const interval = yield* Effect.flip(Progress.make({ interval: Duration.infinity }))
      assert.strictEqual(interval.field, "interval")
      const progress = yield* Progress.make()
      const negative = yield* Effect.flip(progress.addTotal(-1))
      assert.strictEqual(negative.field, "n")
      const fraction = yield* Effect.flip(progress.addTotal(1.5))
      assert.strictEqual(fraction.field, "n")
      assert.strictEqual((yield* progress.snapshot).total, 0)
    }))

  it("the snapshot schema encodes an unknown ETA as null for the wire", () => {
    const encoded = Schema.encodeSync(Progress.Snapshot)(snapshot({ total: 3 }))
    assert.strictEqual(encoded.etaMillis, null)
    assert.deepStrictEqual(
      Schema.decodeSync(Progress.Snapshot)({ ...encoded, etaMillis: 1500 }).etaMillis,
      Option.some(1500)
    )
  })
})

describe("Progress.render", () => {
  const midway = snapshot({
    total: 100,
    done: 47,
    failed: 3,
    inFlight: 4,
    failedByTag: { FetchTimeout: 1, HttpStatusError: 2 },
    ratePerSecond: 12.34,
    etaMillis: Option.some(3_600),
    elapsedMillis: 4_000
  })

  it("draws a bar that fills the width the text leaves", () => {
    const line = Progress.render(midway, 80)
    assert.strictEqual(line, "[#####......] 50/100 12.3/s ETA 4s failed: 3 (HttpStatusError 2, FetchTimeout 1)")
    assert.strictEqual(line.length, 80)
    assert.strictEqual(
      Progress.render(snapshot({ total: 4, done: 4, ratePerSecond: 2, etaMillis: Option.some(0) }), 30),
      "[###########] 4/4 2.0/s ETA 0s"
    )
  })

  it("drops the per-tag breakdown, then the bar, as the width shrinks", () => {
    assert.strictEqual(Progress.render(midway, 60), "[#############..............] 50/100 12.3/s ETA 4s failed: 3")
    assert.strictEqual(Progress.render(midway, 40), "[###....] 50/100 12.3/s ETA 4s failed: 3")
    assert.strictEqual(Progress.render(midway, 30), "50/100 12.3/s ETA 4s failed: 3")
    assert.strictEqual(Progress.render(midway, 10), "50/100 12.")
    assert.strictEqual(Progress.render(snapshot({}), 24), "[.....] 0/0 0.0/s ETA --")
  })

  it("formats the ETA in seconds, minutes or hours", () => {
    assert.strictEqual(Progress.formatEta(Option.some(59_001)), "1m00s")
    assert.strictEqual(Progress.formatEta(Option.some(65_000)), "1m05s")
    assert.strictEqual(Progress.formatEta(Option.some(7_380_000)), "2h03m")
    assert.strictEqual(Progress.formatEta(Option.none()), "--")
  })

  it("renders a plain line for logs", () => {
    assert.strictEqual(
      Progress.renderPlain(midway),
      "progress 50/100 done=47 failed=3 inFlight=4 rate=12.3/s eta=4s failedByTag=HttpStatusError:2,FetchTimeout:1"
    )
  })
})
