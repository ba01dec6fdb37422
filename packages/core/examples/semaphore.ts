/**
 * semaphore — `asyncio.Semaphore(3)`: ten one-second tasks, never more than three at once, done in 4 s.
 *
 * `Effect.makeSemaphore(3)` with `withPermits(1)` is `async with semaphore`; the permit is returned however the task
 * ends, interruption included, so cancelling the batch mid-flight leaves all three permits free.
 */
import { Console, Effect, Ref } from "effect"

/** Counts the tasks running right now and the most that ever ran at once. */
export interface ConcurrencyGauge {
  readonly running: Effect.Effect<number>
  readonly peak: Effect.Effect<number>
  readonly track: <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
}

export const makeConcurrencyGauge = Effect.gen(function*() {
  const running = yield* Ref.make(0)
  const peak = yield* Ref.make(0)
  const enter = Ref.updateAndGet(running, (n) => n + 1).pipe(
    Effect.flatMap((now) => Ref.update(peak, (max) => Math.max(max, now)))
  )
  const exit = Ref.update(running, (n) => n - 1)
  return {
    running: Ref.get(running),
    peak: Ref.get(peak),
    track: (self) => Effect.acquireUseRelease(enter, () => self, () => exit)
  } satisfies ConcurrencyGauge
})

export const limitedTask = (semaphore: Effect.Semaphore, gauge: ConcurrencyGauge, n: number) =>
  Effect.gen(function*() {
    yield* Console.log(`Task ${n} starting`)
    yield* Effect.sleep("1 second")
    yield* Console.log(`Task ${n} done`)
  }).pipe(gauge.track, semaphore.withPermits(1))

/** Starts all `count` tasks at once, like `gather`; the semaphore decides how many actually run. */
export const limitedTasks = (semaphore: Effect.Semaphore, gauge: ConcurrencyGauge, count: number) =>
  Effect.forEach(Array.from({ length: count }, (_, n) => n), (n) => limitedTask(semaphore, gauge, n), {
    concurrency: "unbounded",
    discard: true
  })

export const main = Effect.gen(function*() {
  const semaphore = yield* Effect.makeSemaphore(3)
  const gauge = yield* makeConcurrencyGauge
  yield* limitedTasks(semaphore, gauge, 10)
  yield* Console.log(`At most ${yield* gauge.peak} tasks ran at once`)
})
