/**
 * error-group — `ExceptionGroup` / `except*`: every concurrent failure is kept; handling one tag lets the rest propagate.
 *
 * A `Cause` holding parallel failures is Effect's exception group, and it is typed: after `catchEveryTag("InvalidValue")`
 * the error channel is exactly what is left (`ServiceUnavailable`), so an unhandled kind cannot slip by unnoticed.
 * (Beware: plain `catchTag` on such a Cause handles the first failure only and drops its siblings; the test shows it.)
 */
import { Array, Cause, Chunk, Console, Data, Effect, Exit, Option, Predicate } from "effect"

export class InvalidValue extends Data.TaggedError("InvalidValue")<{ readonly task: number }> {
  override get message() {
    return `Task ${this.task} failed!`
  }
}

export class ServiceUnavailable extends Data.TaggedError("ServiceUnavailable")<{ readonly task: number }> {
  override get message() {
    return `Task ${this.task}: service unavailable`
  }
}

/** After 1 s: even tasks fail with `InvalidValue`, other multiples of 3 with `ServiceUnavailable`, the rest succeed. */
export const mightFail = (task: number) =>
  Effect.gen(function*() {
    yield* Effect.sleep("1 second")
    if (task % 2 === 0) return yield* new InvalidValue({ task })
    if (task % 3 === 0) return yield* new ServiceUnavailable({ task })
    return `Task ${task} succeeded`
  })

/**
 * `async with TaskGroup()`: runs the tasks concurrently, each to its end, and fails with all of their failures side by
 * side (`Cause.parallel`). Where TaskGroup cancels the siblings at the first failure, this waits for every task so each
 * failure is reported; `Effect.all`'s default mode is the cancelling one.
 */
export const taskGroup = <A, E, R>(tasks: Iterable<Effect.Effect<A, E, R>>): Effect.Effect<Array<A>, E, R> =>
  Effect.forEach(tasks, Effect.exit, { concurrency: "unbounded" }).pipe(
    Effect.flatMap((exits) => Option.getOrElse(Exit.all(exits, { parallel: true }), () => Exit.succeed([])))
  )

/**
 * `except* Tag`: hands every failure tagged `tag` to `handler` at once and re-fails with whatever else the Cause held
 * (other tags, defects, interruptions). With nothing else left, the group is fully handled.
 */
export const catchEveryTag = <
  E,
  const K extends E extends { readonly _tag: string } ? E["_tag"] : never,
  A1,
  E1,
  R1
>(
  tag: K,
  handler: (errors: Array.NonEmptyReadonlyArray<NoInfer<Extract<E, { readonly _tag: K }>>>) => Effect.Effect<A1, E1, R1>
) =>
<A, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A | A1, Exclude<E, { readonly _tag: K }> | E1, R | R1> =>
  Effect.catchAllCause(self, (cause) => {
    const isHandled = (error: E): error is Extract<E, { readonly _tag: K }> => Predicate.isTagged(error, tag)
    const isLeft = (error: E): error is Exclude<E, { readonly _tag: K }> => !isHandled(error)
    const handled = Array.filter(Chunk.toReadonlyArray(Cause.failures(cause)), isHandled)
    const rest = Cause.flatMap(cause, (error) => isLeft(error) ? Cause.fail(error) : Cause.empty)
    if (!Array.isNonEmptyReadonlyArray(handled)) return Effect.failCause(rest)
    return Effect.flatMap(Effect.exit(handler(handled)), (exit) =>
      Cause.isEmpty(rest)
        ? exit
        : Effect.failCause(Exit.isFailure(exit) ? Cause.parallel(exit.cause, rest) : rest))
  })

const printCaught = (errors: Array.NonEmptyReadonlyArray<InvalidValue>) =>
  Effect.forEach(errors, (error) => Console.log(`Caught: ${error.message}`), { discard: true })

/** Tasks 1, 2 and 4: only `InvalidValue` failures, so `except* InvalidValue` handles the whole group. */
export const onlyInvalid = taskGroup([mightFail(1), mightFail(2), mightFail(4)]).pipe(
  catchEveryTag("InvalidValue", printCaught)
)

/** Tasks 1, 2 and 3: task 3's `ServiceUnavailable` is still in the error channel after `except* InvalidValue`. */
export const mixed = taskGroup([mightFail(1), mightFail(2), mightFail(3)]).pipe(
  catchEveryTag("InvalidValue", printCaught)
)

export const main = Effect.gen(function*() {
  yield* Console.log("Group of tasks 1, 2, 4:")
  yield* onlyInvalid
  yield* Console.log("Group of tasks 1, 2, 3:")
  yield* mixed.pipe(
    catchEveryTag(
      "ServiceUnavailable",
      (errors) =>
        Effect.forEach(errors, (error) => Console.log(`Propagated past except* InvalidValue: ${error.message}`), {
          discard: true
        })
    )
  )
})
