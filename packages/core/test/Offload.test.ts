import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Option, Schedule, Scope } from "effect"
import * as Offload from "../src/Offload.js"
import {
  Exit as ExitThread,
  Rejected,
  Requests,
  Spin,
  Square,
  ThrowUncaught,
  WhoAmI
} from "./fixtures/offload-requests.js"

// Real worker threads: `it.scopedLive`, and generous timeouts, because a thread takes 0.3-3 s to start on a loaded
// 2-core machine. Nothing below asserts a duration.
const timeout = 60_000
const script = new URL("./fixtures/offload-worker.ts", import.meta.url)

const makeOffload = (size: number, maxQueued: number) => Offload.make({ requests: Requests, script, size, maxQueued })

/** Polls the pool's counters until `predicate` holds (requests reach a thread asynchronously). */
const waitForStats = (offload: Offload.Offload<typeof Requests.Type>, predicate: (stats: Offload.Stats) => boolean) =>
  Effect.repeat(offload.stats, { until: predicate, schedule: Schedule.spaced("2 millis") })

const settled = (offload: Offload.Offload<typeof Requests.Type>, size: number) =>
  waitForStats(offload, (stats) => stats.busy === 0 && stats.queued === 0 && stats.threads === size)

describe("Offload", () => {
  it.scopedLive("returns typed results and typed failures decoded from the worker", () =>
    Effect.gen(function*() {
      const offload = yield* makeOffload(2, 4)
      const started = yield* offload.stats
      assert.deepStrictEqual([started.threads, started.started, started.busy], [2, 2, 0], "make waits for all threads")
      const squares = yield* Effect.forEach([1, 2, 3, 4, 5, 6], (n) => offload.run(new Square({ n })), {
        concurrency: 6
      })
      assert.deepStrictEqual(squares, [1, 4, 9, 16, 25, 36])
      const rejected = yield* Effect.flip(offload.run(new Square({ n: -2 })))
      assert.instanceOf(rejected, Rejected)
      assert.strictEqual(rejected.reason, "-2 is negative")
      const stats = yield* offload.stats
      assert.deepStrictEqual([stats.threads, stats.started, stats.busy, stats.queued, stats.crashed], [2, 2, 0, 0, 0])
    }), timeout)

  it.scopedLive(
    "a thread that exits mid-request fails that request with WorkerCrashed and is replaced",
    () =>
      Effect.gen(function*() {
        const offload = yield* makeOffload(1, 0)
        const first = yield* offload.run(new WhoAmI())
        const crash = yield* Effect.flip(offload.run(new ExitThread({ code: 7 })))
        assert(crash._tag === "WorkerCrashed", crash._tag)
        assert.strictEqual(crash.request, "Exit")
        assert.strictEqual(crash.threadId, first)
        assert.strictEqual(crash.reason, "exited with code 7")
        assert.strictEqual(yield* offload.run(new Square({ n: 3 })), 9, "the next request succeeds")
        assert.notStrictEqual(yield* offload.run(new WhoAmI()), first, "on a new thread")
        const stats = yield* offload.stats
        assert.deepStrictEqual([stats.threads, stats.started, stats.crashed, stats.busy], [1, 2, 1, 0])
      }),
    timeout
  )

  it.scopedLive("an uncaught error in the worker thread is a WorkerCrashed too", () =>
    Effect.gen(function*() {
      const offload = yield* makeOffload(1, 0)
      const crash = yield* Effect.flip(offload.run(new ThrowUncaught({ message: "kaboom" })))
      assert(crash._tag === "WorkerCrashed", crash._tag)
      assert.strictEqual(crash.reason, "kaboom")
      assert.strictEqual(yield* offload.run(new Square({ n: 4 })), 16)
      yield* settled(offload, 1)
      assert.strictEqual((yield* offload.stats).started, 2)
    }), timeout)

  it.scopedLive(
    "interrupting a running request terminates its thread; the pool replaces it, nothing is left over",
    () =>
      Effect.gen(function*() {
        const offload = yield* makeOffload(1, 0)
        const spinning = yield* offload.run(new WhoAmI())
        // 60 s of synchronous spinning: were the thread not terminated, the next request could not finish in time.
        const result = yield* offload.run(new Spin({ millis: 60_000 })).pipe(Effect.timeoutOption("300 millis"))
        assert.isTrue(Option.isNone(result))
        const afterInterrupt = yield* offload.stats
        assert.deepStrictEqual([afterInterrupt.cancelled, afterInterrupt.busy, afterInterrupt.queued], [1, 0, 0])
        assert.strictEqual(
          afterInterrupt.threads,
          afterInterrupt.started - afterInterrupt.cancelled,
          "the spinning thread has exited when the caller resumes (its replacement may be starting)"
        )
        const replacement = yield* offload.run(new WhoAmI())
        assert.notStrictEqual(replacement, spinning)
        yield* settled(offload, 1)
        assert.strictEqual((yield* offload.stats).started, 2)
      }),
    timeout
  )

  it.scopedLive(
    "bounded queue: a request beyond size + maxQueued is refused; an interrupted waiter frees its place",
    () =>
      Effect.gen(function*() {
        const offload = yield* makeOffload(1, 1)
        const running = yield* Effect.fork(offload.run(new Spin({ millis: 60_000 })))
        yield* waitForStats(offload, (stats) => stats.busy === 1)
        const waiting = yield* Effect.fork(offload.run(new Square({ n: 5 })))
        yield* waitForStats(offload, (stats) => stats.queued === 1)
        const refused = yield* Effect.flip(offload.run(new Square({ n: 6 })))
        assert(refused._tag === "OffloadQueueFull", refused._tag)
        assert.deepStrictEqual([refused.request, refused.size, refused.maxQueued], ["Square", 1, 1])
        assert.isTrue(Exit.isInterrupted(yield* Fiber.interrupt(waiting)))
        assert.strictEqual((yield* offload.stats).queued, 0, "the interrupted waiter left the queue")
        const next = yield* Effect.fork(offload.run(new Square({ n: 7 })))
        yield* waitForStats(offload, (stats) => stats.queued === 1)
        yield* Fiber.interrupt(running)
        assert.strictEqual(yield* Fiber.join(next), 49, "served by the thread that replaced the terminated one")
        yield* settled(offload, 1)
        const stats = yield* offload.stats
        assert.deepStrictEqual([stats.cancelled, stats.started, stats.crashed], [1, 2, 0])
      }),
    timeout
  )

  it.scopedLive("closing the scope stops every thread", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const offload = yield* Scope.extend(makeOffload(2, 0), scope)
      assert.strictEqual(yield* offload.run(new Square({ n: 2 })), 4)
      assert.strictEqual((yield* offload.stats).threads, 2)
      yield* Scope.close(scope, Exit.void)
      assert.strictEqual((yield* offload.stats).threads, 0)
    }), timeout)

  it.scopedLive("a script that cannot start fails make with WorkerStartFailed", () =>
    Effect.gen(function*() {
      const missing = yield* Effect.flip(
        Offload.make({
          requests: Requests,
          script: new URL("./fixtures/no-such-worker.ts", import.meta.url),
          size: 1,
          maxQueued: 0
        })
      )
      assert.strictEqual(missing._tag, "WorkerStartFailed")
      assert.include(missing.reason, "no-such-worker.ts")
      const exiting = yield* Effect.flip(
        Offload.make({
          requests: Requests,
          script: new URL("./fixtures/offload-exiting-worker.ts", import.meta.url),
          size: 2,
          maxQueued: 0
        })
      )
      assert.strictEqual(exiting._tag, "WorkerStartFailed")
      assert.strictEqual(exiting.reason, "exited with code 3")
      const silent = yield* Effect.flip(
        Offload.make({
          requests: Requests,
          script: new URL("./fixtures/offload-silent-worker.ts", import.meta.url),
          size: 1,
          maxQueued: 0,
          startTimeout: "2 seconds"
        })
      )
      assert.strictEqual(silent._tag, "WorkerStartFailed")
      assert.strictEqual(silent.reason, "not ready after 2s")
    }), timeout)

  it.effect("bad options are typed errors naming the field", () =>
    Effect.gen(function*() {
      const size = yield* Effect.flip(makeOffload(0, 1))
      assert(size._tag === "InvalidOffloadOptions", size._tag)
      assert.strictEqual(size.field, "size")
      const fraction = yield* Effect.flip(makeOffload(1.5, 1))
      assert(fraction._tag === "InvalidOffloadOptions", fraction._tag)
      assert.strictEqual(fraction.field, "size")
      const maxQueued = yield* Effect.flip(makeOffload(1, -1))
      assert(maxQueued._tag === "InvalidOffloadOptions", maxQueued._tag)
      assert.strictEqual(maxQueued.field, "maxQueued")
      assert.strictEqual(maxQueued.reason, "must be a non-negative integer")
      const startTimeout = yield* Effect.flip(
        Offload.make({ requests: Requests, script, size: 1, maxQueued: 0, startTimeout: "-1 millis" })
      )
      assert(startTimeout._tag === "InvalidOffloadOptions", startTimeout._tag)
      assert.strictEqual(startTimeout.field, "startTimeout")
    }).pipe(Effect.scoped))
})
