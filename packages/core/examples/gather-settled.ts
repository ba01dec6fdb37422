/**
 * gather-settled — `gather(..., return_exceptions=True)`: failures come back as values beside the successes.
 *
 * `Effect.all` with `mode: "either"` returns an `Either` per task, so a failure neither cancels its siblings nor loses
 * its type: the caller gets `Either<string, TaskFailed>`, not a list mixing results with any `Exception`.
 */
import type { Duration } from "effect"
import { Console, Data, Effect, Either } from "effect"

export class TaskFailed extends Data.TaggedError("TaskFailed")<{ readonly task: number }> {
  override get message() {
    return `Task ${this.task} failed!`
  }
}

export const mightFail = (task: number, delay: Duration.DurationInput = "1 second") =>
  Effect.sleep(delay).pipe(
    Effect.zipRight(task === 2 ? Effect.fail(new TaskFailed({ task })) : Effect.succeed(`Task ${task} succeeded`))
  )

/** Runs every task to its end, concurrently; each outcome is an `Either`, in argument order. */
export const gatherSettled = <A, E, R>(tasks: Iterable<Effect.Effect<A, E, R>>) =>
  Effect.all(tasks, { concurrency: "unbounded", mode: "either" })

export const main = Effect.gen(function*() {
  const results = yield* gatherSettled([mightFail(1), mightFail(2), mightFail(3)])
  for (const result of results) {
    yield* Either.match(result, {
      onLeft: (error) => Console.log(`Error: ${error.message}`),
      onRight: (value) => Console.log(`Success: ${value}`)
    })
  }
})
