import { assert, describe, it } from "@effect/vitest"
import type { Scope } from "effect"
import { Effect, Fiber, TestClock } from "effect"
import * as HostLimits from "../src/Jobs/HostLimits.js"

const withMemoryLimits = <A, E>(f: (limits: HostLimits.HostLimits) => Effect.Effect<A, E, Scope.Scope>) =>
  Effect.flatMap(HostLimits.HostLimits, f).pipe(Effect.provide(HostLimits.memory))

describe("HostLimits in memory", () => {
  it.scoped("jobs with the same interval share a host's window, each up to its own limit", () =>
    withMemoryLimits((limits) =>
      Effect.gen(function*() {
        const first = yield* limits.rateLimiter({ limit: 2, per: "1 second" })
        const second = yield* limits.rateLimiter({ limit: 2, per: "1 second" })
        const generous = yield* limits.rateLimiter({ limit: 3, per: "1 second" })
        yield* first.acquire("api.example")
        yield* first.acquire("api.example")
        const waiting = yield* Effect.fork(second.acquire("api.example"))
        yield* Effect.yieldNow()
        assert.isNull(waiting.unsafePoll(), "the second job sees the first job's two starts in the host's window")
        // Another host is not affected; a job allowing 3 a second still has one start left in this window.
        yield* second.acquire("other.example")
        yield* generous.acquire("api.example")
        const generousWaiting = yield* Effect.fork(generous.acquire("api.example"))
        yield* Effect.yieldNow()
        assert.isNull(generousWaiting.unsafePoll())
        yield* TestClock.adjust("1 second")
        yield* Fiber.join(waiting)
        yield* Fiber.join(generousWaiting)
      })
    ))

  it.scoped("jobs with different intervals keep separate logs; an interrupted waiter takes no start", () =>
    withMemoryLimits((limits) =>
      Effect.gen(function*() {
        const perSecond = yield* limits.rateLimiter({ limit: 1, per: "1 second" })
        const perMinute = yield* limits.rateLimiter({ limit: 1, per: "1 minute" })
        yield* perSecond.acquire("api.example")
        yield* perMinute.acquire("api.example")
        const waiting = yield* Effect.fork(perSecond.acquire("api.example"))
        yield* Effect.yieldNow()
        yield* Fiber.interrupt(waiting)
        yield* TestClock.adjust("1 second")
        // The interrupted waiter's start was never recorded: the next second's start is free.
        const next = yield* Effect.fork(perSecond.acquire("api.example"))
        yield* Effect.yieldNow()
        assert.isNotNull(next.unsafePoll())
        const minuteWaiting = yield* Effect.fork(perMinute.acquire("api.example"))
        yield* Effect.yieldNow()
        assert.isNull(minuteWaiting.unsafePoll(), "the per-minute job's window still holds its start")
        yield* TestClock.adjust("59 seconds")
        yield* Fiber.join(minuteWaiting)
      })
    ))
})
