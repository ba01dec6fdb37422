import { Duration, Effect, TestClock } from "effect"

/** Forks `effect`, lets it start, and moves virtual time by `millis`; returns the fiber (still running or done). */
export const forkAndAdjust = <A, E>(effect: Effect.Effect<A, E>, millis: number) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(effect)
    yield* Effect.yieldNow()
    yield* TestClock.adjust(Duration.millis(millis))
    return fiber
  })
