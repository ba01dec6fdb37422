import { assert, describe, it } from "@effect/vitest"
import { Clock, Data, Deferred, Duration, Effect, Exit, Fiber, FiberId, Option, TestClock } from "effect"
import * as KeyedConcurrency from "../src/KeyedConcurrency.js"

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i)

const isPending = <A, E>(fiber: Fiber.Fiber<A, E>) => Effect.map(Fiber.poll(fiber), Option.isNone)

/** Counts what is in flight per key and overall, remembering the maxima. */
const makeGauge = () => {
  const current = new Map<string, number>()
  const most = new Map<string, number>()
  let total = 0
  let mostTotal = 0
  const track = <A, E, R>(key: string, effect: Effect.Effect<A, E, R>) =>
    Effect.acquireUseRelease(
      Effect.sync(() => {
        const now = (current.get(key) ?? 0) + 1
        current.set(key, now)
        most.set(key, Math.max(most.get(key) ?? 0, now))
        total++
        mostTotal = Math.max(mostTotal, total)
      }),
      () => effect,
      () =>
        Effect.sync(() => {
          current.set(key, (current.get(key) ?? 0) - 1)
          total--
        })
    )
  return { track, most: (key: string) => most.get(key) ?? 0, mostTotal: () => mostTotal }
}

/** Every count a leak would show: the key's permits, the global permits, the keys held. */
const counts = (limiter: KeyedConcurrency.KeyedConcurrency, key: string) =>
  Effect.all({ inFlight: limiter.inFlight(key), global: limiter.globalInFlight, keys: limiter.keys })

const idle = { inFlight: 0, global: 0, keys: 0 }

describe("KeyedConcurrency", () => {
  it.scoped("caps in-flight effects per key and overall, and reaches both caps", () =>
    Effect.gen(function*() {
      const limiter = yield* KeyedConcurrency.make({ perKey: 2, global: 3 })
      const gauge = makeGauge()
      const tasks = ["a", "b", "c"].flatMap((key) =>
        range(0, 4).map(() => limiter.withPermit(key)(gauge.track(key, Effect.sleep("100 millis"))))
      )
      const fiber = yield* Effect.fork(Effect.all(tasks, { concurrency: "unbounded", discard: true }))
      yield* TestClock.adjust(Duration.millis(399))
      assert.isTrue(yield* isPending(fiber), "12 tasks, 3 at a time: 4 rounds of 100 ms")
      yield* TestClock.adjust(Duration.millis(1))
      yield* Fiber.join(fiber)
      assert.deepStrictEqual(["a", "b", "c"].map(gauge.most), [2, 2, 2])
      assert.strictEqual(gauge.mostTotal(), 3)
      assert.deepStrictEqual(yield* counts(limiter, "a"), idle)
    }))

  it.scoped("waiters of a key start in arrival order", () =>
    Effect.gen(function*() {
      const limiter = yield* KeyedConcurrency.make({ perKey: 1, global: 10 })
      const order: Array<number> = []
      const fibers: Array<Fiber.RuntimeFiber<void>> = []
      for (const id of range(0, 6)) {
        fibers.push(
          yield* Effect.fork(
            limiter.withPermit("k")(
              Effect.zipRight(
                Effect.sync(() => order.push(id)),
                Effect.sleep("10 millis")
              )
            )
          )
        )
        yield* Effect.yieldNow()
      }
      yield* TestClock.adjust(Duration.millis(60))
      yield* Fiber.joinAll(fibers)
      assert.deepStrictEqual(order, range(0, 6))
    }))

  it.scoped("a waiter interrupted in line takes no permit: the next one starts as soon as the holder is done", () =>
    Effect.gen(function*() {
      const limiter = yield* KeyedConcurrency.make({ perKey: 1, global: 10 })
      const holder = yield* Effect.fork(limiter.withPermit("k")(Effect.sleep("1 second")))
      yield* Effect.yieldNow()
      const interrupted = yield* Effect.fork(limiter.withPermit("k")(Clock.currentTimeMillis))
      yield* Effect.yieldNow()
      const next = yield* Effect.fork(limiter.withPermit("k")(Clock.currentTimeMillis))
      yield* Effect.yieldNow()
      yield* TestClock.adjust(Duration.millis(500))
      yield* Fiber.interrupt(interrupted)
      assert.deepStrictEqual(yield* counts(limiter, "k"), { inFlight: 1, global: 1, keys: 1 })
      yield* TestClock.adjust(Duration.millis(500))
      yield* Fiber.join(holder)
      assert.strictEqual(yield* Fiber.join(next), 1000)
      assert.deepStrictEqual(yield* counts(limiter, "k"), idle)
    }))

  it.scoped("an interrupted holder returns its key and global permits; the key's next waiter gets them", () =>
    Effect.gen(function*() {
      const limiter = yield* KeyedConcurrency.make({ perKey: 1, global: 1 })
      const holder = yield* Effect.fork(limiter.withPermit("k")(Effect.never))
      yield* Effect.yieldNow()
      const next = yield* Effect.fork(limiter.withPermit("k")(Clock.currentTimeMillis))
      const other = yield* Effect.fork(limiter.withPermit("other")(Clock.currentTimeMillis))
      yield* Effect.yieldNow()
      assert.deepStrictEqual(yield* counts(limiter, "k"), { inFlight: 1, global: 1, keys: 2 })
      yield* TestClock.adjust(Duration.millis(250))
      yield* Fiber.interrupt(holder)
      assert.strictEqual(yield* Fiber.join(next), 250)
      assert.strictEqual(yield* Fiber.join(other), 250)
      assert.deepStrictEqual(yield* counts(limiter, "k"), idle)
      assert.strictEqual(yield* limiter.inFlight("other"), 0)
    }))

  it.scoped("a caller interrupted while waiting for a global permit gives back its key permit", () =>
    Effect.gen(function*() {
      const limiter = yield* KeyedConcurrency.make({ perKey: 1, global: 1 })
      const holder = yield* Effect.fork(limiter.withPermit("a")(Effect.never))
      yield* Effect.yieldNow()
      const waiter = yield* Effect.fork(limiter.withPermit("b")(Effect.void))
      yield* Effect.yieldNow()
      assert.deepStrictEqual(yield* counts(limiter, "b"), { inFlight: 1, global: 1, keys: 2 }, "b holds its key")
      yield* Fiber.interrupt(waiter)
      assert.deepStrictEqual(yield* counts(limiter, "b"), { inFlight: 0, global: 1, keys: 1 })
      yield* Fiber.interrupt(holder)
      assert.deepStrictEqual(yield* counts(limiter, "a"), idle)
    }))

  it.scoped("a permit handed to a waiter at the moment it is interrupted is passed on, at both levels", () =>
    Effect.gen(function*() {
      for (const [perKey, global, waiterKey] of [[1, 10, "k"], [10, 1, "other"]] as const) {
        const limiter = yield* KeyedConcurrency.make({ perKey, global })
        const go = yield* Deferred.make<Fiber.RuntimeFiber<void>>()
        // The holder interrupts the waiter, then (in the same run, before the waiter can react) releases to it.
        const holder = yield* Effect.fork(
          limiter.withPermit("k")(
            Deferred.await(go).pipe(
              Effect.flatMap((waiter) => Effect.sync(() => waiter.unsafeInterruptAsFork(FiberId.none)))
            )
          )
        )
        yield* Effect.yieldNow()
        const waiter = yield* Effect.fork(limiter.withPermit(waiterKey)(Effect.void))
        yield* Effect.yieldNow()
        const next = yield* Effect.fork(limiter.withPermit(waiterKey)(Effect.succeed("next ran")))
        yield* Effect.yieldNow()
        yield* Deferred.succeed(go, waiter)
        yield* Fiber.join(holder)
        assert.isTrue(Exit.isInterrupted(yield* Fiber.await(waiter)))
        assert.strictEqual(yield* Fiber.join(next), "next ran")
        assert.deepStrictEqual(yield* counts(limiter, waiterKey), idle)
      }
    }))

  it.scoped("limiters of one pool count a key together, each admitting while fewer than its own limit are in flight", () =>
    Effect.gen(function*() {
      const pool = KeyedConcurrency.makePool()
      const low = yield* KeyedConcurrency.make({ perKey: 2, global: 10, pool })
      const high = yield* KeyedConcurrency.make({ perKey: 3, global: 10, pool })
      const releases = [low.tryAcquireNow("k"), low.tryAcquireNow("k")]
      assert.isUndefined(low.tryAcquireNow("k"), "low's limit: 2 in flight")
      releases.push(high.tryAcquireNow("k"))
      assert.isUndefined(high.tryAcquireNow("k"), "high's limit: 3 in flight, low's included")
      assert.isTrue(releases.every((release) => release !== undefined))
      assert.deepStrictEqual(
        [yield* low.inFlight("k"), yield* high.inFlight("k"), yield* low.globalInFlight, yield* high.globalInFlight],
        [3, 3, 2, 1]
      )
      // One line per key, nobody overtaken: low waits (3 in flight), high waits behind it.
      const order: Array<string> = []
      const lowWaiter = yield* Effect.fork(low.withPermit("k")(Effect.sync(() => order.push("low"))))
      yield* Effect.yieldNow()
      const highWaiter = yield* Effect.fork(high.withPermit("k")(Effect.sync(() => order.push("high"))))
      yield* Effect.yieldNow()
      releases[0]!()
      yield* Effect.yieldNow()
      assert.deepStrictEqual(order, [], "2 in flight: low's limit holds it, and high stays behind it")
      releases[1]!()
      yield* Fiber.join(lowWaiter)
      yield* Fiber.join(highWaiter)
      assert.deepStrictEqual(order, ["low", "high"])
      releases[2]!()
      assert.deepStrictEqual(yield* counts(low, "k"), idle)
      assert.deepStrictEqual(yield* counts(high, "k"), idle)
    }))

  it.scoped("a pool's waiter interrupted at the head of the line lets the one behind it go when its limit allows", () =>
    Effect.gen(function*() {
      const pool = KeyedConcurrency.makePool()
      const low = yield* KeyedConcurrency.make({ perKey: 1, global: 10, pool })
      const high = yield* KeyedConcurrency.make({ perKey: 2, global: 10, pool })
      const held = low.tryAcquireNow("k")
      const stuck = yield* Effect.fork(low.withPermit("k")(Effect.void))
      yield* Effect.yieldNow()
      const behind = yield* Effect.fork(high.withPermit("k")(Effect.never))
      yield* Effect.yieldNow()
      assert.isTrue(yield* isPending(behind), "behind low's waiter, though 1 < 2")
      yield* Fiber.interrupt(stuck)
      yield* Effect.yieldNow()
      assert.strictEqual(yield* high.inFlight("k"), 2, "high's waiter runs once the head leaves")
      yield* Fiber.interrupt(behind)
      held!()
      assert.deepStrictEqual(yield* counts(high, "k"), idle)
    }))

  it.scoped("a failing effect returns its permits and keeps its error", () =>
    Effect.gen(function*() {
      class Boom extends Data.TaggedError("Boom")<{ readonly key: string }> {}
      const limiter = yield* KeyedConcurrency.make({ perKey: 1, global: 1 })
      const error = yield* Effect.flip(limiter.withPermit("k")(Effect.fail(new Boom({ key: "k" }))))
      assert.deepStrictEqual(error, new Boom({ key: "k" }))
      assert.deepStrictEqual(yield* counts(limiter, "k"), idle)
    }))

  it.scoped("thousands of callers over a thousand keys: caps hold, nothing is left behind", () =>
    Effect.gen(function*() {
      const limiter = yield* KeyedConcurrency.make({ perKey: 2, global: 50 })
      const gauge = makeGauge()
      const perHost = makeGauge()
      const work = Effect.yieldNow().pipe(Effect.repeatN(3))
      yield* Effect.forEach(
        range(0, 6000),
        (i) =>
          limiter.withPermit(`host-${Math.floor(i / 6)}`)(
            gauge.track("all", perHost.track(`host-${Math.floor(i / 6)}`, work))
          ),
        { concurrency: 300, discard: true }
      )
      assert.strictEqual(gauge.mostTotal(), 50)
      assert.strictEqual(Math.max(...range(0, 1000).map((i) => perHost.most(`host-${i}`))), 2)
      assert.deepStrictEqual(yield* counts(limiter, "host-1"), idle)
    }))

  it.scoped("bad options fail with InvalidConcurrency naming the field and the reason", () =>
    Effect.gen(function*() {
      const cases: ReadonlyArray<readonly [KeyedConcurrency.Options, string]> = [
        [{ perKey: 0, global: 10 }, "perKey"],
        [{ perKey: 1.5, global: 10 }, "perKey"],
        [{ perKey: 2, global: -1 }, "global"],
        [{ perKey: 2, global: Number.NaN }, "global"],
        [{ perKey: 2, global: Number.POSITIVE_INFINITY }, "global"]
      ]
      for (const [options, field] of cases) {
        const error = yield* Effect.flip(KeyedConcurrency.make(options))
        assert.strictEqual(error._tag, "InvalidConcurrency")
        assert.strictEqual(error.field, field)
        assert.strictEqual(error.reason, "must be a positive integer")
      }
    }))

  it.scoped("tryAcquireNow takes a key and a global permit when both are free and nobody waits; else nothing", () =>
    Effect.gen(function*() {
      const limiter = yield* KeyedConcurrency.make({ perKey: 2, global: 3 })
      const a1 = limiter.tryAcquireNow("a")
      const a2 = limiter.tryAcquireNow("a")
      assert.isDefined(a1)
      assert.isDefined(a2)
      assert.isUndefined(limiter.tryAcquireNow("a"), "key a is full")
      const b1 = limiter.tryAcquireNow("b")
      assert.isDefined(b1)
      assert.isUndefined(limiter.tryAcquireNow("c"), "the global permits are all taken")
      assert.strictEqual(yield* limiter.inFlight("c"), 0, "a refusal takes no key permit")
      // A waiter for a global permit is not overtaken once one comes back.
      const waiting = yield* Effect.fork(limiter.withPermit("c")(Effect.never))
      yield* Effect.yieldNow()
      a1!()
      yield* Effect.yieldNow()
      assert.strictEqual(yield* limiter.inFlight("c"), 1, "the released permit went to the waiter")
      assert.isUndefined(limiter.tryAcquireNow("d"))
      yield* Fiber.interrupt(waiting)
      a2!()
      b1!()
      assert.deepStrictEqual(yield* counts(limiter, "a"), idle)
      assert.strictEqual(yield* limiter.keys, 0, "nothing is left behind")
    }))
})
