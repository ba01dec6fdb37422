/**
 * timeout — `async with asyncio.timeout(2)` around a 10 s operation: a typed timeout at 2 s, the operation interrupted.
 *
 * `Effect.timeoutFail` puts the timeout in the error channel as a tagged error the caller must handle, and it does not
 * return before the slow operation has been interrupted and its finalizers have run: nothing keeps going behind the
 * caller's back.
 */
import { Console, Data, Duration, Effect, Ref } from "effect"

export class OperationTimedOut extends Data.TaggedError("OperationTimedOut")<{ readonly after: Duration.Duration }> {
  override get message() {
    return `Operation timed out after ${Duration.format(this.after)}`
  }
}

/** Sleeps 10 s and returns "Done"; if interrupted first, records it in `interrupted` (its cleanup). */
export const slowOperation = (interrupted: Ref.Ref<boolean>) =>
  Effect.sleep("10 seconds").pipe(
    Effect.as("Done"),
    Effect.onInterrupt(() => Ref.set(interrupted, true))
  )

/** `async with asyncio.timeout(after)`: the block fails with `OperationTimedOut` if it is not done in time. */
export const timeout = (after: Duration.DurationInput) => <A, E, R>(block: Effect.Effect<A, E, R>) =>
  Effect.timeoutFail(block, {
    duration: after,
    onTimeout: () => new OperationTimedOut({ after: Duration.decode(after) })
  })

export const main = Effect.gen(function*() {
  const interrupted = yield* Ref.make(false)
  yield* Effect.gen(function*() {
    const result = yield* slowOperation(interrupted)
    yield* Console.log(`Result: ${result}`)
  }).pipe(
    timeout("2 seconds"),
    Effect.catchTag("OperationTimedOut", () => Console.log("Operation timed out!"))
  )
  yield* Console.log(`Slow operation interrupted: ${yield* Ref.get(interrupted)}`)
})
