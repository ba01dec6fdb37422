import { assert, describe, it } from "@effect/vitest"
import { Clock, Data, Deferred, Duration, Effect, Exit, Fiber, FiberId, Scope, TestClock } from "effect"
import * as RateLimiter from "../src/RateLimiter.js"

interface Start {
  readonly id: number
  readonly at: number
}

/** The most starts any half-open interval `[s, s + per)` holds, trying every start `s` as the origin. */
const busiestWindow = (starts: ReadonlyArray<Start>, perMillis: number) =>
  starts.reduce(
    (most, origin) =>
      Math.max(most, starts.filter((start) => start.at >= origin.at && start.at < origin.at + perMillis).length),
    0
  )

/** Forks one acquire per id (in id order), each recording its start instant once admitted. */
/**
 * Forks `head`, a caller of `key` that, once admitted, interrupts `doomed` (the caller queued right behind it) before
 * `doomed` can run; `arm` tells the head which fiber that is.
 */
const headInterruptingNext = <E>(limiter: RateLimiter.RateLimiter<E>, key: string) =>
  Effect.gen(function*() {
    const handedOver = yield* Deferred.make<Fiber.RuntimeFiber<void, E>>()
    const head = yield* Effect.fork(
      limiter.acquire(key).pipe(
        Effect.zipRight(Deferred.await(handedOver)),
        Effect.flatMap((doomed) => Effect.sync(() => doomed.unsafeInterruptAsFork(FiberId.none)))
      )
    )
    yield* Effect.yieldNow()
    const doomed = yield* Effect.fork(limiter.acquire(key))
    yield* Effect.yieldNow()
    return { head, doomed, arm: Deferred.succeed(handedOver, doomed) }
  })

const forkStarts = (limiter: RateLimiter.RateLimiter, key: string, ids: ReadonlyArray<number>) =>
  Effect.gen(function*() {
    const starts: Array<Start> = []
    const fibers: Array<Fiber.RuntimeFiber<void>> = []
    for (const id of ids) {
      fibers.push(
        yield* limiter.acquire(key).pipe(
          Effect.zipRight(Clock.currentTimeMillis),
          Effect.map((at) => {
            starts.push({ id, at })
          }),
          Effect.fork
        )
      )
      yield* Effect.yieldNow()
    }
    return { starts, fibers }
  })

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i)

describe("RateLimiter", () => {
  it.scoped("20 acquires at 5 per second: no 1 s window holds more than 5, in arrival order, last start at 3 s", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({ limit: 5, per: "1 second" })
      const { fibers, starts } = yield* forkStarts(limiter, "api.example.com", range(0, 20))
      assert.strictEqual(starts.length, 5, "five start at once")
      yield* TestClock.adjust(Duration.seconds(3))
      yield* Fiber.joinAll(fibers)

      assert.strictEqual(busiestWindow(starts, 1000), 5)
      assert.deepStrictEqual(starts.map((start) => start.id), range(0, 20), "first come, first served")
      assert.deepStrictEqual(starts.map((start) => start.at), range(0, 20).map((i) => Math.floor(i / 5) * 1000))
      assert.strictEqual(starts[19].at, 3000)
      assert.strictEqual(yield* limiter.waitingKeys, 0, "the key's queue is gone once served")
    }))

  it.scoped("a waiter is admitted exactly when the oldest start leaves the window, not a millisecond before", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({ limit: 2, per: "1 second" })
      yield* limiter.acquire("k")
      yield* TestClock.adjust(Duration.millis(300))
      yield* limiter.acquire("k")
      const { starts } = yield* forkStarts(limiter, "k", [1, 2])
      yield* TestClock.adjust(Duration.millis(699))
      assert.deepStrictEqual(starts, [], "the window [0, 1000) is full")
      yield* TestClock.adjust(Duration.millis(1))
      assert.deepStrictEqual(starts, [{ id: 1, at: 1000 }])
      yield* TestClock.adjust(Duration.millis(299))
      assert.strictEqual(starts.length, 1, "the start at 300 still counts until 1300")
      yield* TestClock.adjust(Duration.millis(1))
      assert.deepStrictEqual(starts, [{ id: 1, at: 1000 }, { id: 2, at: 1300 }])
    }))

  it.scoped("keys are independent: a full key does not hold back another", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({ limit: 3, per: "1 second" })
      const a = yield* forkStarts(limiter, "a.example", range(0, 4))
      const b = yield* forkStarts(limiter, "b.example", range(0, 3))
      assert.deepStrictEqual(a.starts.map((start) => start.at), [0, 0, 0], "the 4th of a waits")
      assert.deepStrictEqual(b.starts.map((start) => start.at), [0, 0, 0], "b has its own window")
      assert.strictEqual(yield* limiter.waitingKeys, 1)
      yield* TestClock.adjust(Duration.seconds(1))
      assert.deepStrictEqual(a.starts.map((start) => start.at), [0, 0, 0, 1000])
    }))

  it.scoped("exact under irregular arrivals: every interval of `per` holds at most `limit` starts", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({ limit: 3, per: "700 millis" })
      const starts: Array<Start> = []
      const fibers: Array<Fiber.RuntimeFiber<void>> = []
      let seed = 42
      for (let id = 0; id < 120; id++) {
        seed = (seed * 1103515245 + 12345) % 2147483648
        yield* TestClock.adjust(Duration.millis(seed % 97))
        fibers.push(
          yield* limiter.acquire("k").pipe(
            Effect.zipRight(Clock.currentTimeMillis),
            Effect.map((at) => {
              starts.push({ id, at })
            }),
            Effect.fork
          )
        )
        yield* Effect.yieldNow()
      }
      yield* TestClock.adjust(Duration.seconds(40))
      yield* Fiber.joinAll(fibers)
      assert.strictEqual(starts.length, 120)
      assert.strictEqual(busiestWindow(starts, 700), 3)
      assert.deepStrictEqual(starts.map((start) => start.id), range(0, 120), "first come, first served")
    }))

  it.scoped("pauseUntil holds a key back until exactly that instant; a later pause extends, an earlier one does not shorten", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({ limit: 5, per: "1 second" })
      yield* limiter.pauseUntil("k", 2500)
      yield* limiter.pauseUntil("k", 1000)
      const { starts } = yield* forkStarts(limiter, "k", [0])
      const other = yield* forkStarts(limiter, "other", [0])
      assert.deepStrictEqual(other.starts, [{ id: 0, at: 0 }], "only the paused key waits")
      yield* TestClock.adjust(Duration.millis(2499))
      assert.deepStrictEqual(starts, [])
      yield* TestClock.adjust(Duration.millis(1))
      assert.deepStrictEqual(starts, [{ id: 0, at: 2500 }])

      yield* limiter.pauseUntil("k", 4000)
      const later = yield* forkStarts(limiter, "k", [1])
      yield* TestClock.adjust(Duration.millis(1000))
      yield* limiter.pauseUntil("k", 5000)
      yield* TestClock.adjust(Duration.millis(1499))
      assert.deepStrictEqual(later.starts, [], "extended from 4000 to 5000 while waiting")
      yield* TestClock.adjust(Duration.millis(1))
      assert.deepStrictEqual(later.starts, [{ id: 1, at: 5000 }])
    }))

  it.scoped("a waiter interrupted in the queue takes no slot: the next one starts when it would have", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({ limit: 1, per: "1 second" })
      yield* limiter.acquire("k")
      const { fibers, starts } = yield* forkStarts(limiter, "k", [1, 2, 3, 4, 5])
      yield* TestClock.adjust(Duration.millis(500))
      yield* Fiber.interrupt(fibers[0])
      yield* Fiber.interrupt(fibers[2])
      yield* TestClock.adjust(Duration.millis(500))
      assert.deepStrictEqual(starts, [{ id: 2, at: 1000 }], "2 took the slot 1 (the head, asleep) would have had")
      yield* TestClock.adjust(Duration.seconds(2))
      assert.deepStrictEqual(starts, [{ id: 2, at: 1000 }, { id: 4, at: 2000 }, { id: 5, at: 3000 }], "3 took none")
      assert.strictEqual(yield* limiter.waitingKeys, 0)
    }))

  it.scoped("when every waiter of a key is interrupted, its queue and timer go away", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({ limit: 1, per: "1 second" })
      yield* limiter.acquire("k")
      const { fibers } = yield* forkStarts(limiter, "k", [1, 2])
      assert.strictEqual(yield* limiter.waitingKeys, 1)
      yield* Fiber.interruptAll(fibers)
      yield* TestClock.adjust(Duration.seconds(1))
      assert.strictEqual(yield* limiter.waitingKeys, 0)
      const { starts } = yield* forkStarts(limiter, "k", [3])
      assert.deepStrictEqual(starts, [{ id: 3, at: 1000 }], "no slot was spent on the interrupted waiters")
    }))

  it.scoped("idle keys are forgotten: the store holds no key once every window has emptied", () =>
    Effect.gen(function*() {
      const store = yield* RateLimiter.makeMemoryStore({ idleTimeToLive: "1 second" })
      const limiter = yield* RateLimiter.make({ limit: 2, per: "500 millis", store })
      yield* Effect.forEach(range(0, 1000), (i) => limiter.acquire(`host-${i}`), { discard: true })
      assert.strictEqual(yield* store.size, 1000)
      yield* TestClock.adjust(Duration.millis(700))
      yield* limiter.acquire("host-7")
      yield* TestClock.adjust(Duration.millis(300))
      assert.strictEqual(yield* store.size, 1, "the sweep at 1 s kept only the key whose window [700, 1200) is live")
      yield* TestClock.adjust(Duration.seconds(1))
      assert.strictEqual(yield* store.size, 0)
    }))

  it.scoped("a paused key is kept until its pause has passed, then forgotten", () =>
    Effect.gen(function*() {
      const store = yield* RateLimiter.makeMemoryStore({ idleTimeToLive: "1 second" })
      const limiter = yield* RateLimiter.make({ limit: 2, per: "500 millis", store })
      yield* limiter.acquire("a")
      yield* limiter.pauseUntil("b", 2500)
      yield* limiter.pauseUntil("c", 0)
      assert.strictEqual(yield* store.size, 2, "a pause in the past stores nothing")
      yield* TestClock.adjust(Duration.seconds(2))
      assert.strictEqual(yield* store.size, 1, "b is still paused")
      const { starts } = yield* forkStarts(limiter, "b", [0])
      yield* TestClock.adjust(Duration.seconds(1))
      assert.deepStrictEqual(starts, [{ id: 0, at: 2500 }])
      yield* TestClock.adjust(Duration.seconds(1))
      assert.strictEqual(yield* store.size, 0)
    }))

  it.scoped("withPermit starts the effect once admitted", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({ limit: 1, per: "1 second" })
      const first = yield* limiter.withPermit("k")(Clock.currentTimeMillis)
      const second = yield* Effect.fork(limiter.withPermit("k")(Clock.currentTimeMillis))
      yield* TestClock.adjust(Duration.seconds(1))
      assert.deepStrictEqual([first, yield* Fiber.join(second)], [0, 1000])
    }))

  it.scoped("the head handed to a waiter at the moment it is interrupted passes on: the line never stalls", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({ limit: 1, per: "1 second" })
      yield* limiter.acquire("k")
      // Admitted at 1 s, the head makes `doomed` the new head, then (before `doomed` can run) interrupts it.
      const { arm, doomed, head } = yield* headInterruptingNext(limiter, "k")
      const { starts } = yield* forkStarts(limiter, "k", [3])
      yield* arm
      yield* TestClock.adjust(Duration.seconds(1))
      yield* Fiber.join(head)
      assert.isTrue(Exit.isInterrupted(yield* Fiber.await(doomed)))
      yield* TestClock.adjust(Duration.seconds(1))
      assert.deepStrictEqual(starts, [{ id: 3, at: 2000 }], "the slot at 2 s went to the next in line")
      assert.strictEqual(yield* limiter.waitingKeys, 0)
    }))

  it.scoped("a store's failure reaches the caller as a typed error", () =>
    Effect.gen(function*() {
      class StoreDown extends Data.TaggedError("StoreDown")<{ readonly key: string }> {}
      const limiter = yield* RateLimiter.make({
        limit: 1,
        per: "1 second",
        store: {
          tryAcquire: ({ key }) => Effect.fail(new StoreDown({ key })),
          pauseUntil: ({ key }) => Effect.fail(new StoreDown({ key }))
        }
      })
      const error = yield* Effect.flip(limiter.acquire("k"))
      assert.deepStrictEqual(error, new StoreDown({ key: "k" }))
      assert.strictEqual((yield* Effect.flip(limiter.pauseUntil("k", 1000)))._tag, "StoreDown")
    }))

  it.scoped("bad options fail with InvalidRateLimit naming the field and the reason", () =>
    Effect.gen(function*() {
      const cases: ReadonlyArray<readonly [RateLimiter.Options, string, string]> = [
        [{ limit: 0, per: "1 second" }, "limit", "must be a positive integer"],
        [{ limit: 2.5, per: "1 second" }, "limit", "must be a positive integer"],
        [{ limit: Number.NaN, per: "1 second" }, "limit", "must be a positive integer"],
        [{ limit: 5, per: 0 }, "per", "must be a positive, finite duration"],
        [{ limit: 5, per: -1000 }, "per", "must be a positive, finite duration"],
        [{ limit: 5, per: Duration.infinity }, "per", "must be a positive, finite duration"],
        [{ limit: 5, per: "1 fortnight" as Duration.DurationInput }, "per", "is not a duration"],
        [
          { limit: 5, per: "1 second", idleTimeToLive: "0 millis" },
          "idleTimeToLive",
          "must be a positive, finite duration"
        ]
      ]
      for (const [options, field, reason] of cases) {
        const error = yield* Effect.flip(RateLimiter.make(options))
        assert.strictEqual(error._tag, "InvalidRateLimit")
        assert.strictEqual(error.field, field)
        assert.strictEqual(error.reason, reason)
        assert.include(error.message, field)
      }
    }))

  it.scoped("pauseUntil with a non-instant is a defect", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({ limit: 1, per: "1 second" })
      const exit = yield* Effect.exit(limiter.pauseUntil("k", Number.NaN))
      assert.isTrue(Exit.isFailure(exit) && !Exit.isInterrupted(exit))
    }))

  /**
   * The memory store without its on-the-spot answer (like a shared store), holding reservations or not: every call,
   * its request and its block are logged.
   */
  const remoteStore = (holds: boolean) =>
    Effect.gen(function*() {
      const memory = yield* RateLimiter.makeMemoryStore({ idleTimeToLive: "10 seconds" })
      const calls: Array<{ readonly asked: number; readonly granted: number; readonly at: number }> = []
      const requests: Array<RateLimiter.TryAcquireRequest> = []
      const store: RateLimiter.RateLimiterStore = {
        holds,
        tryAcquire: (request) =>
          Effect.tap(memory.tryAcquire(request), (decision) => {
            requests.push(request)
            calls.push({
              asked: request.count ?? 1,
              granted: decision.allowed ? decision.granted ?? 1 : 0,
              at: request.now
            })
          }),
        pauseUntil: memory.pauseUntil
      }
      return { store, calls, requests }
    })
  const remoteLike = remoteStore(false)

  it.scoped("the head asks a store for a block of starts for its whole line, in order, never over the window", () =>
    Effect.gen(function*() {
      const { calls, store } = yield* remoteLike
      const limiter = yield* RateLimiter.make({ limit: 5, per: "1 second", store })
      const { starts } = yield* forkStarts(limiter, "k", range(0, 20))
      yield* TestClock.adjust(Duration.seconds(4))
      assert.deepStrictEqual(starts.map((start) => start.id), range(0, 20), "in arrival order")
      assert.deepStrictEqual(starts.map((start) => start.at), [0, 1000, 2000, 3000].flatMap((at) => Array(5).fill(at)))
      assert.strictEqual(busiestWindow(starts, 1000), 5)
      // Five lone callers, the sixth refused (the other 14 queue behind it), then one call per window for the line.
      assert.deepStrictEqual(calls.map((call) => [call.asked, call.granted]), [
        [1, 1],
        [1, 1],
        [1, 1],
        [1, 1],
        [1, 1],
        [1, 0],
        [15, 5],
        [10, 5],
        [5, 5]
      ])
      const recorded = calls.flatMap((call) => Array<number>(call.granted).fill(call.at))
      assert.deepStrictEqual(recorded, starts.map((start) => start.at), "each start was recorded when it went on")
      assert.strictEqual(yield* limiter.waitingKeys, 0)
    }))

  it.scoped("a block is capped at 256 starts per call", () =>
    Effect.gen(function*() {
      const { calls, store } = yield* remoteLike
      const limiter = yield* RateLimiter.make({ limit: 1000, per: "1 second", store })
      yield* limiter.pauseUntil("k", 1000)
      const fibers = yield* Effect.forEach(range(0, 600), () => Effect.fork(limiter.acquire("k")))
      yield* TestClock.adjust(Duration.seconds(1))
      yield* Fiber.joinAll(fibers)
      assert.deepStrictEqual(calls.filter((call) => call.granted > 0).map((call) => call.asked), [256, 256, 88])
    }))

  it.scoped("a caller interrupted after it was handed a start wastes it: no later caller gets it", () =>
    Effect.gen(function*() {
      const { calls, store } = yield* remoteLike
      const limiter = yield* RateLimiter.make({ limit: 2, per: "1 second", store })
      yield* limiter.acquire("k")
      yield* limiter.acquire("k")
      // At 1 s the head is granted a block of two, for itself and `doomed`, then interrupts `doomed` before it runs.
      const { arm, doomed, head } = yield* headInterruptingNext(limiter, "k")
      yield* arm
      yield* TestClock.adjust(Duration.seconds(1))
      yield* Fiber.join(head)
      assert.isTrue(Exit.isInterrupted(yield* Fiber.await(doomed)))
      assert.deepStrictEqual(calls.map((call) => [call.asked, call.granted, call.at]).slice(-1), [[2, 2, 1000]])
      const { starts } = yield* forkStarts(limiter, "k", [3])
      yield* TestClock.adjust(Duration.millis(999))
      assert.deepStrictEqual(starts, [], "the wasted start still counts in the window")
      yield* TestClock.adjust(Duration.millis(1))
      assert.deepStrictEqual(starts, [{ id: 3, at: 2000 }])
      assert.strictEqual(yield* limiter.waitingKeys, 0)
    }))

  it.scoped("a store that ignores `count` grants one start per call, and the line is still served in order", () =>
    Effect.gen(function*() {
      const memory = yield* RateLimiter.makeMemoryStore({ idleTimeToLive: "1 second" })
      let calls = 0
      const store: RateLimiter.RateLimiterStore = {
        tryAcquire: ({ key, limit, now, windowMillis }) =>
          Effect.sync(() => calls++).pipe(Effect.zipRight(memory.tryAcquire({ key, limit, now, windowMillis }))),
        pauseUntil: memory.pauseUntil
      }
      const limiter = yield* RateLimiter.make({ limit: 3, per: "1 second", store })
      const { starts } = yield* forkStarts(limiter, "k", range(0, 7))
      yield* TestClock.adjust(Duration.seconds(3))
      assert.deepStrictEqual(starts.map((start) => start.id), range(0, 7))
      assert.deepStrictEqual(starts.map((start) => start.at), [0, 0, 0, 1000, 1000, 1000, 2000])
      assert.isAtLeast(calls, 7)
    }))

  it.scoped("tryAcquireNow takes a start at once when there is room, and takes nothing otherwise", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({ limit: 3, per: "1 second" })
      assert.deepStrictEqual([0, 1, 2, 3].map(() => limiter.tryAcquireNow("k")), [true, true, true, false])
      // The refusal took nothing: at the window's end exactly three starts are free again.
      yield* TestClock.adjust(Duration.seconds(1))
      assert.deepStrictEqual([0, 1, 2, 3].map(() => limiter.tryAcquireNow("k")), [true, true, true, false])
      assert.isTrue(limiter.tryAcquireNow("other"), "keys are independent")
    }))

  it.scoped("tryAcquireNow never overtakes a caller in line, even when the window has room", () =>
    Effect.gen(function*() {
      const memory = yield* RateLimiter.makeMemoryStore({ idleTimeToLive: "1 second" })
      const gate = yield* Deferred.make<void>()
      let refusedOnce = false
      // Refuses the first caller on the spot (it joins the line); the line's head then asks `tryAcquire`, held open.
      const store: RateLimiter.RateLimiterStore = {
        unsafeTryAcquire: (key, now, limit, windowMillis) => {
          if (!refusedOnce) {
            refusedOnce = true
            return { allowed: false, retryAt: now }
          }
          return memory.unsafeTryAcquire!(key, now, limit, windowMillis)
        },
        tryAcquire: (request) => Effect.zipRight(Deferred.await(gate), memory.tryAcquire(request)),
        pauseUntil: memory.pauseUntil
      }
      const limiter = yield* RateLimiter.make({ limit: 3, per: "1 second", store })
      const waiting = yield* Effect.fork(limiter.acquire("k"))
      yield* Effect.yieldNow()
      assert.strictEqual(yield* limiter.waitingKeys, 1)
      assert.isFalse(limiter.tryAcquireNow("k"), "the window has room, but a caller is in line")
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(waiting)
      assert.deepStrictEqual([0, 1, 2].map(() => limiter.tryAcquireNow("k")), [true, true, false])
    }))

  it.scoped("tryAcquireNow never answers for a store that cannot decide on the spot", () =>
    Effect.gen(function*() {
      const memory = yield* RateLimiter.makeMemoryStore({ idleTimeToLive: "1 second" })
      const store: RateLimiter.RateLimiterStore = { tryAcquire: memory.tryAcquire, pauseUntil: memory.pauseUntil }
      const limiter = yield* RateLimiter.make({ limit: 3, per: "1 second", store })
      assert.isFalse(limiter.tryAcquireNow("k"))
      const { starts } = yield* forkStarts(limiter, "k", range(0, 3))
      yield* TestClock.adjust(Duration.millis(1))
      assert.strictEqual(starts.length, 3, "nothing was taken by the refusals")
    }))

  it.scoped("many starts at one instant count one by one, and expire together", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make({ limit: 1000, per: "1 second" })
      for (let i = 0; i < 600; i++) assert.isTrue(limiter.tryAcquireNow("k"))
      yield* TestClock.adjust(Duration.millis(500))
      for (let i = 0; i < 400; i++) assert.isTrue(limiter.tryAcquireNow("k"))
      assert.isFalse(limiter.tryAcquireNow("k"), "1000 in the window")
      yield* TestClock.adjust(Duration.millis(500))
      // The 600 of instant 0 left the window together; the 400 of instant 500 are still in it.
      for (let i = 0; i < 600; i++) assert.isTrue(limiter.tryAcquireNow("k"))
      assert.isFalse(limiter.tryAcquireNow("k"))
      const refused = yield* Effect.fork(limiter.acquire("k"))
      yield* TestClock.adjust(Duration.millis(499))
      assert.isNull(refused.unsafePoll(), "next room when instant 500's starts expire")
      yield* TestClock.adjust(Duration.millis(1))
      yield* Fiber.join(refused)
    }))

  describe("reservations (a remote store that holds)", () => {
    const holding = remoteStore(true)

    /**
     * A caller of "k" that, `rounds` times, pauses a little (a spread of 1–`spread` ms of virtual time), then starts
     * as a worker's callback would (at once if it can, else waiting), recording when it went on.
     */
    const caller =
      (limiter: RateLimiter.RateLimiter, starts: Array<Start>, rounds: number, spread: number) => (id: number) =>
        Effect.gen(function*() {
          for (let round = 0; round < rounds; round++) {
            yield* Effect.sleep(Duration.millis(((id * 37 + round * 11) % spread) + 1))
            if (!limiter.tryAcquireNow("k")) yield* limiter.acquire("k")
            starts.push({ id, at: yield* Clock.currentTimeMillis })
          }
        })

    it.scoped("starts reserved for callers to come are taken at once, without waiting for the store, until the hold ends", () =>
      Effect.gen(function*() {
        const { calls, requests, store } = yield* holding
        const limiter = yield* RateLimiter.make({ limit: 1000, per: "1 second", store })
        // One caller at a time, as a worker pool's callbacks ask: each request reserves what was asked since the last.
        for (let i = 0; i < 30; i++) {
          if (!limiter.tryAcquireNow("k")) yield* limiter.acquire("k")
        }
        assert.isBelow(requests.length, 5, `30 starts from ${requests.length} requests`)
        // A hold is a quarter of the window (at most 250 ms); a reservation at most that share of the limit.
        assert.isTrue(requests.slice(1).every((request) => request.holdMillis === 250 && (request.count ?? 1) <= 251))
        // On the spot, as long as the window has room: the store is asked in the background (this one answers at
        // once), for a block once half of the last one is used, so reserved starts run ahead of their use by two
        // blocks (of a hold's share of the limit, 1000 × 250 / 1000) at most.
        const leftNow = Array.from({ length: 600 }, () => limiter.tryAcquireNow("k")).filter(Boolean).length
        assert.isAbove(leftNow, 0)
        const reserved = calls.reduce((sum, call) => sum + call.granted, 0)
        assert.isAtMost(reserved - (30 + leftNow), 500)
        assert.isAtMost(reserved, 1000, "never over the window")
        // Reserved starts last the hold: past it the next caller asks the store again.
        yield* limiter.acquire("k")
        yield* TestClock.adjust(Duration.millis(250))
        assert.isFalse(limiter.tryAcquireNow("k"), "expired")
      }))

    it.scoped("a reserve is refilled in the background before it runs out: steady callers never wait for the store", () =>
      Effect.gen(function*() {
        const { requests, store } = yield* holding
        // A remote store's round trip: 2 ms.
        const remote: RateLimiter.RateLimiterStore = {
          ...store,
          tryAcquire: (request) => Effect.delay(store.tryAcquire(request), Duration.millis(2))
        }
        const limiter = yield* RateLimiter.make({ limit: 10_000, per: "1 second", store: remote })
        const starts: Array<Start> = []
        let waited = 0
        // 4 callers a millisecond for 600 ms, each starting at once if it can, else waiting in line.
        for (let ms = 0; ms < 600; ms++) {
          for (let i = 0; i < 4; i++) {
            if (!limiter.tryAcquireNow("k")) {
              waited++
              const fiber = yield* Effect.fork(limiter.acquire("k"))
              yield* TestClock.adjust(Duration.millis(2))
              yield* Fiber.join(fiber)
            }
            starts.push({ id: i, at: yield* Clock.currentTimeMillis })
          }
          yield* TestClock.adjust(Duration.millis(1))
        }
        assert.strictEqual(waited, 1, `only the first caller waits (${requests.length} requests)`)
        assert.isAtLeast(requests.length, 3, "2400 starts in blocks of a hold's demand (4 a ms × 250 ms) at most")
        assert.isAtMost(busiestWindow(starts, 1000), 10_000)
      }))

    it.scoped("a refill under way ends with the limiter's scope: nothing is left running", () =>
      Effect.gen(function*() {
        const { store } = yield* holding
        const asked = yield* Deferred.make<void>()
        const ended = yield* Deferred.make<boolean>()
        let blocked = false
        // Answers the first request; then, once blocked, never answers (until interrupted).
        const remote: RateLimiter.RateLimiterStore = {
          ...store,
          tryAcquire: (request) =>
            blocked
              ? Effect.zipRight(Deferred.succeed(asked, undefined), Effect.never).pipe(
                Effect.onInterrupt(() => Deferred.succeed(ended, true))
              )
              : store.tryAcquire(request)
        }
        const scope = yield* Scope.make()
        const limiter = yield* Scope.extend(RateLimiter.make({ limit: 1000, per: "1 second", store: remote }), scope)
        yield* limiter.acquire("k")
        yield* TestClock.adjust(Duration.millis(1))
        yield* limiter.acquire("k")
        blocked = true
        let taken = 0
        while (!(yield* Deferred.isDone(asked)) && limiter.tryAcquireNow("k")) {
          taken++
          yield* Effect.yieldNow()
        }
        assert.isTrue(yield* Deferred.isDone(asked), `a refill was asked for after ${taken} starts`)
        yield* Scope.close(scope, Exit.void)
        assert.isTrue(yield* Deferred.await(ended), "the refill was interrupted")
      }))

    it.scoped("no window ever holds more than the limit, counting each start when its caller goes on", () =>
      Effect.gen(function*() {
        const { store } = yield* holding
        const limiter = yield* RateLimiter.make({ limit: 100, per: "1 second", store })
        const starts: Array<Start> = []
        const fiber = yield* Effect.fork(
          Effect.all(range(0, 60).map(caller(limiter, starts, 8, 23)), { concurrency: "unbounded" })
        )
        for (let i = 0; i < 120; i++) yield* TestClock.adjust(Duration.millis(50))
        yield* Fiber.join(fiber)
        assert.strictEqual(starts.length, 480)
        assert.isAtMost(busiestWindow(starts, 1000), 100)
        assert.isAtLeast(busiestWindow(starts, 1000), 90, "and the limit is used, not wasted away")
      }))

    it.scoped("callers interrupted anywhere (in line, leading, holding a reserved start) leak nothing", () =>
      Effect.gen(function*() {
        const { requests, store } = yield* holding
        const limiter = yield* RateLimiter.make({ limit: 40, per: "1 second", store })
        const starts: Array<Start> = []
        const fibers = yield* Effect.forEach(range(0, 30), (id) => Effect.fork(caller(limiter, starts, 6, 17)(id)))
        for (let i = 0; i < 40; i++) {
          yield* TestClock.adjust(Duration.millis(25))
          if (i % 4 === 0) yield* Fiber.interrupt(fibers[(i * 7) % fibers.length]!)
        }
        for (let i = 0; i < 400; i++) yield* TestClock.adjust(Duration.millis(25))
        yield* Effect.forEach(fibers, Fiber.await, { discard: true })
        assert.isAtMost(busiestWindow(starts, 1000), 40)
        assert.isAbove(starts.length, 100)
        assert.strictEqual(yield* limiter.waitingKeys, 0, "no line left behind")
        assert.isAbove(requests.length, 0)
      }))

    it.scoped("a pause drops the reserve; a low limit reserves nothing", () =>
      Effect.gen(function*() {
        const { requests, store } = yield* holding
        const limiter = yield* RateLimiter.make({ limit: 1000, per: "1 second", store })
        yield* limiter.acquire("k")
        yield* limiter.acquire("k")
        assert.isTrue(limiter.tryAcquireNow("k") || limiter.tryAcquireNow("k") || requests.length > 0)
        yield* limiter.pauseUntil("k", 100)
        assert.isFalse(limiter.tryAcquireNow("k"), "the reserve is gone with the pause")
        const low = yield* holding
        const strict = yield* RateLimiter.make({ limit: 3, per: "1 second", store: low.store })
        for (let i = 0; i < 3; i++) yield* strict.acquire("k")
        assert.strictEqual(low.requests.length, 3, "3 per second: a hold's share (a quarter) is under one start")
        assert.isTrue(low.requests.every((request) => request.holdMillis === undefined && request.count === 1))
      }))
  })
})
