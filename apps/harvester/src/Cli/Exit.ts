/**
 * Exit — how a CLI command ends: the process exit code and the lines it prints to stderr on the way out.
 *
 * 0 every target succeeded (or the command did what it was asked), 1 something failed (targets failed permanently,
 * the server refused, the job was not found), 2 bad usage (flags, arguments, configuration, input files).
 */
import { ValidationError } from "@effect/cli"
import { Cause, ConfigError, Console, Data, Effect, Exit, Predicate } from "effect"
import { formatConfigError } from "../Config.js"

export class CliExit extends Data.TaggedError("CliExit")<{
  readonly code: number
  readonly lines: ReadonlyArray<string>
}> {}

/** Bad usage: exit 2 with one line per problem. */
export const usage = (...lines: ReadonlyArray<string>) => new CliExit({ code: 2, lines })

/** A failure that is not the user's usage: exit 1. */
export const failure = (...lines: ReadonlyArray<string>) => new CliExit({ code: 1, lines })

const messageOf = (error: unknown): string =>
  Predicate.hasProperty(error, "message") && Predicate.isString(error.message) && error.message.length > 0
    ? error.message
    : String(error)

/**
 * Turns the outcome of a command into an exit code, printing what the user must read: configuration problems one
 * line each (2), @effect/cli validation errors (already printed by @effect/cli; 2), `CliExit` lines, and any other
 * failure as one `harvester: <tag>: <message>` line (1). Defects are left to the runtime (logged, 1).
 */
export const toExitCode = <R>(program: Effect.Effect<void, unknown, R>): Effect.Effect<number, never, R> =>
  program.pipe(
    Effect.as(0),
    Effect.catchAll((error) => {
      if (ConfigError.isConfigError(error)) {
        return Effect.as(
          Effect.forEach(formatConfigError(error), (line) => Console.error(`harvester: invalid config: ${line}`)),
          2
        )
      }
      if (ValidationError.isValidationError(error)) return Effect.succeed(2)
      if (error instanceof CliExit) {
        return Effect.as(Effect.forEach(error.lines, (line) => Console.error(line)), error.code)
      }
      const tag = Predicate.hasProperty(error, "_tag") && Predicate.isString(error._tag) ? `${error._tag}: ` : ""
      return Effect.as(Console.error(`harvester: ${tag}${messageOf(error)}`), 1)
    })
  )

/** The process exit code of the main fiber's exit: its value, 0 when interrupted by a signal, else 1. */
export const exitCodeOf = <E, A>(exit: Exit.Exit<A, E>): number =>
  Exit.isSuccess(exit)
    ? (Predicate.isNumber(exit.value) ? exit.value : 0)
    : Cause.isInterruptedOnly(exit.cause)
    ? 0
    : 1
