/**
 * blocking-vs-yielding — measured: a blocking call stalls every other fiber, a yielding sleep lets them run.
 *
 * Python can only warn that `time.sleep` blocks the event loop; here a ticker fiber measures it: while `Effect.sync`
 * busy-waits (it owns the one thread until it returns) the ticker records nothing, while `Effect.sleep` waits (it
 * suspends one fiber only) the ticker keeps its pace. The test asserts those counts: checked, not assumed.
 */
import { Array, Console, Effect, Ref } from "effect"
import { performance } from "node:perf_hooks"

/** When a wait began and ended, in milliseconds of the monotonic clock. */
export interface Window {
  readonly startMillis: number
  readonly endMillis: number
}

export interface Measurement {
  readonly label: string
  readonly waitedMillis: number
  /** Ticks the ticker recorded strictly inside the wait. */
  readonly ticksDuring: number
  /** Ticks a free ticker would have recorded in that time. */
  readonly expectedTicks: number
}

const now = Effect.sync(() => performance.now())

/** `time.sleep(ms)`: spins the one JavaScript thread, so nothing else runs until it returns. */
export const blockingSleep = (millis: number) =>
  Effect.sync((): Window => {
    const startMillis = performance.now()
    let endMillis = startMillis
    while (endMillis - startMillis < millis) {
      endMillis = performance.now()
    }
    return { startMillis, endMillis }
  })

/** `await asyncio.sleep(ms)`: suspends this fiber only. */
export const yieldingSleep = (millis: number) =>
  Effect.gen(function*() {
    const startMillis = yield* now
    yield* Effect.sleep(millis)
    const endMillis = yield* now
    return { startMillis, endMillis } satisfies Window
  })

/** Runs `wait` beside a ticker fiber that records a timestamp every `tickMillis`, and counts its ticks inside the wait. */
export const measure = (label: string, wait: Effect.Effect<Window>, tickMillis = 10) =>
  Effect.scoped(Effect.gen(function*() {
    const ticks = yield* Ref.make<ReadonlyArray<number>>([])
    const ticker = now.pipe(
      Effect.flatMap((at) => Ref.update(ticks, Array.append(at))),
      Effect.zipRight(Effect.sleep(tickMillis)),
      Effect.forever
    )
    yield* Effect.forkScoped(ticker)
    yield* Effect.sleep(tickMillis * 2)
    const { endMillis, startMillis } = yield* wait
    const recorded = yield* Ref.get(ticks)
    const waitedMillis = endMillis - startMillis
    return {
      label,
      waitedMillis,
      ticksDuring: recorded.filter((at) => at > startMillis && at < endMillis).length,
      expectedTicks: Math.floor(waitedMillis / tickMillis)
    } satisfies Measurement
  }))

export const compare = (millis: number) =>
  Effect.all([
    measure(`blocking busy-wait ${millis} ms`, blockingSleep(millis)),
    measure(`yielding Effect.sleep ${millis} ms`, yieldingSleep(millis))
  ])

export const main = Effect.gen(function*() {
  const measurements = yield* compare(200)
  for (const { expectedTicks, label, ticksDuring, waitedMillis } of measurements) {
    yield* Console.log(
      `${label}: took ${
        waitedMillis.toFixed(0)
      } ms, ticker ticked ${ticksDuring} times (a free ticker: ~${expectedTicks})`
    )
  }
})
