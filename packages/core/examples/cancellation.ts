/**
 * cancellation — a "Working..." loop forked, interrupted by the main fiber after 3 s; its cleanup runs, the main sees it.
 *
 * Interruption is not an exception a task may catch: cleanup goes in `Effect.onInterrupt`/`ensuring` (which always run),
 * `catchAll`/`catchAllCause` never see it, so no task can swallow its cancellation the way a Python coroutine can by
 * forgetting to re-raise `CancelledError`. The canceller gets an `Exit` saying "interrupted", not a guess.
 */
import type { Duration } from "effect"
import { Console, Effect, Exit, Fiber } from "effect"

export const longRunningTask = Console.log("Working...").pipe(
  Effect.zipRight(Effect.sleep("1 second")),
  Effect.forever,
  Effect.onInterrupt(() => Console.log("Task was cancelled!"))
)

/** The same loop wrapped in handlers that try to turn any failure, interruption included, into a success. */
export const stubbornTask = longRunningTask.pipe(
  Effect.catchAllCause(() => Console.log("Swallowed the cancellation").pipe(Effect.as("swallowed"))),
  Effect.catchAll(() => Effect.succeed("swallowed"))
)

/** `task.cancel()` after `after`, then `await task`: returns the task's exit. */
export const cancelAfter = <A, E, R>(task: Effect.Effect<A, E, R>, after: Duration.DurationInput) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(task)
    yield* Effect.sleep(after)
    yield* Fiber.interruptFork(fiber)
    const exit = yield* Fiber.await(fiber)
    if (Exit.isInterrupted(exit)) yield* Console.log("Main: Task cancelled successfully")
    return exit
  })

export const main = Effect.gen(function*() {
  yield* cancelAfter(longRunningTask, "3 seconds")
  yield* Console.log("--- a task that tries to swallow its cancellation ---")
  const exit = yield* cancelAfter(stubbornTask, "1500 millis")
  yield* Console.log(`Stubborn task's exit: ${Exit.isInterrupted(exit) ? "interrupted" : "not interrupted"}`)
})
