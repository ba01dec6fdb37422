import type { Console } from "effect"
import { Array, Clock, Effect, Ref } from "effect"

export interface Line {
  readonly at: number
  readonly text: string
}

/** A console whose `log` records each line with the virtual time it was printed at. */
export const recordingConsole = Effect.gen(function*() {
  const lines = yield* Ref.make<ReadonlyArray<Line>>([])
  const current = yield* Effect.console
  const console: Console.Console = {
    ...current,
    log: (...args) =>
      Effect.flatMap(Clock.currentTimeMillis, (at) => Ref.update(lines, Array.append({ at, text: args.join(" ") })))
  }
  return { lines, console } as const
})
