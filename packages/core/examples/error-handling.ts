/**
 * error-handling — a typed failure after 1 s, caught by its tag: "Caught error: Something went wrong!".
 *
 * Python's `except ValueError` guesses what a coroutine may raise; here the failure is part of the type
 * (`Effect<never, OperationFailed>`), `catchTag` removes it from the type once handled, and the compiler rejects a
 * handler for a tag that cannot occur.
 */
import { Console, Data, Effect } from "effect"

export class OperationFailed extends Data.TaggedError("OperationFailed")<{
  readonly operation: string
  readonly message: string
}> {}

export const riskyOperation: Effect.Effect<never, OperationFailed> = Effect.sleep("1 second").pipe(
  Effect.zipRight(new OperationFailed({ operation: "risky_operation", message: "Something went wrong!" }))
)

/** `try: await risky_operation() except ValueError as e: print(...)`: returns the line it printed. */
export const handled: Effect.Effect<string> = riskyOperation.pipe(
  Effect.catchTag("OperationFailed", (error) => {
    const line = `Caught error: ${error.message}`
    return Console.log(line).pipe(Effect.as(line))
  })
)

export const main = handled
