/**
 * wait-for — `asyncio.wait_for(op, timeout)` as `waitFor(effect, duration)`: the value in time, else a typed timeout.
 *
 * `waitFor` adds `WaitForTimeout` to the effect's own error type instead of raising `TimeoutError` out of nowhere, and
 * it interrupts the late operation (running its finalizers) before failing.
 */
import { Console, Data, Duration, Effect, Option, Ref } from "effect"

export class WaitForTimeout extends Data.TaggedError("WaitForTimeout")<{ readonly timeout: Duration.Duration }> {
  override get message() {
    return `Timed out after ${Duration.format(this.timeout)}`
  }
}

/**
 * `await asyncio.wait_for(effect, timeout)`. Built on `timeoutOption` rather than mapping `TimeoutException`, so a
 * `TimeoutException` the effect itself may fail with is never mistaken for this deadline.
 */
export const waitFor = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  timeout: Duration.DurationInput
): Effect.Effect<A, E | WaitForTimeout, R> =>
  Effect.timeoutOption(effect, timeout).pipe(
    Effect.flatMap(Option.match({
      onNone: () => Effect.fail(new WaitForTimeout({ timeout: Duration.decode(timeout) })),
      onSome: Effect.succeed
    }))
  )

/** Sleeps `duration` and returns "Done"; if interrupted first, records it in `interrupted`. */
export const operation = (duration: Duration.DurationInput, interrupted: Ref.Ref<boolean>) =>
  Effect.sleep(duration).pipe(
    Effect.as("Done"),
    Effect.onInterrupt(() => Ref.set(interrupted, true))
  )

const attempt = (label: string, duration: Duration.DurationInput) =>
  Effect.gen(function*() {
    const interrupted = yield* Ref.make(false)
    yield* waitFor(operation(duration, interrupted), "2 seconds").pipe(
      Effect.flatMap((result) => Console.log(`${label}: ${result}`)),
      Effect.catchTag("WaitForTimeout", () => Console.log(`${label}: Timed out!`))
    )
    yield* Console.log(`${label}: operation interrupted: ${yield* Ref.get(interrupted)}`)
  })

export const main = Effect.gen(function*() {
  yield* attempt("slow_operation (10 s, limit 2 s)", "10 seconds")
  yield* attempt("fast operation (500 ms, limit 2 s)", "500 millis")
})
