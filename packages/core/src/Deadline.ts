/**
 * Deadlines that nest and propagate, as Trio's cancel scopes do: `within("crawl", "30 seconds")` around a whole job,
 * `within("page", "5 seconds")` around each page, and any code underneath reads what is left with `remaining` (the
 * HTTP fetcher uses it as its request timeout).
 *
 * What it adds beyond `Effect.timeout`: a timeout only knows its own duration, so a nested timeout can outlive the
 * one around it and code underneath cannot ask how much time is left. Here the absolute deadline in force lives in a
 * `FiberRef` (read from `Clock`, so `TestClock` drives it, and inherited by forked fibers); an inner scope can only
 * shorten it (effective deadline = min(outer, now + budget)), and only the scope that binds arms a timer. When the
 * time is up, the error names the scope whose deadline it was (the outer one when the outer one binds, even while
 * inner code runs), is raised once, at exactly the deadline, by that scope, and only after the interrupted work has
 * run its finalizers.
 *
 * Answers the tutorial's "Timeouts and Cancellation" section (`asyncio.timeout()`, `wait_for`).
 *
 * Defined edge cases: a budget of zero (or `at` with an instant already past) fails with `DeadlineExceeded` naming
 * the scope at once, without starting the effect (unless an enclosing deadline already passed binds: its timer fires
 * and names it); an infinite budget adds no deadline; a negative, NaN or unparsable budget (or a non-finite instant)
 * fails with `InvalidDeadline` naming the scope and the field, without running the effect.
 */
import { Clock, Data, Duration, Effect, FiberRef, Function, GlobalValue, Option } from "effect"

/** The deadline of scope `scope` (given `budget` when it was entered) passed before its effect finished. */
export class DeadlineExceeded extends Data.TaggedError("DeadlineExceeded")<{
  readonly scope: string
  readonly budget: Duration.Duration
}> {
  override get message() {
    return `deadline "${this.scope}" exceeded (budget ${Duration.format(this.budget)})`
  }
}

/** A budget or instant that is no time at all: `field` names the argument, `reason` says what is wrong. */
export class InvalidDeadline extends Data.TaggedError("InvalidDeadline")<{
  readonly scope: string
  readonly field: "budget" | "epochMillis"
  readonly value: unknown
  readonly reason: string
}> {
  override get message() {
    return `invalid deadline "${this.scope}": ${this.field} ${this.reason} (got ${String(this.value)})`
  }
}

/** The deadline in force: an absolute instant (Clock millis) and the scope it belongs to. */
interface Binding {
  readonly scope: string
  readonly budget: Duration.Duration
  readonly deadlineMillis: number
}

const current: FiberRef.FiberRef<Option.Option<Binding>> = GlobalValue.globalValue(
  Symbol.for("@spindle/core/Deadline/current"),
  () => FiberRef.unsafeMake<Option.Option<Binding>>(Option.none())
)

/** Time left before the deadline in force (zero once it has passed); `None` outside any deadline. */
export const remaining: Effect.Effect<Option.Option<Duration.Duration>> = Effect.flatMap(
  FiberRef.get(current),
  (binding) =>
    Option.isNone(binding)
      ? Effect.succeedNone
      : Effect.map(
        Clock.currentTimeMillis,
        (now) => Option.some(Duration.millis(Math.max(0, binding.value.deadlineMillis - now)))
      )
)

/** The name of the scope whose deadline is in force; `None` outside any deadline. */
export const currentScope: Effect.Effect<Option.Option<string>> = Effect.map(
  FiberRef.get(current),
  Option.map((binding) => binding.scope)
)

const negative = (input: Duration.DurationInput): boolean => {
  if (typeof input === "number") return input < 0
  if (typeof input === "bigint") return input < BigInt(0)
  if (Array.isArray(input)) return input.some((part) => part < 0)
  return false
}

const hasNaN = (input: Duration.DurationInput): boolean =>
  typeof input === "number" ? Number.isNaN(input) : Array.isArray(input) && input.some(Number.isNaN)

const decodeBudget = (
  scope: string,
  input: Duration.DurationInput
): Effect.Effect<Duration.Duration, InvalidDeadline> => {
  const invalid = (reason: string) => Effect.fail(new InvalidDeadline({ scope, field: "budget", value: input, reason }))
  if (hasNaN(input)) return invalid("is NaN")
  if (negative(input)) return invalid("must not be negative")
  return Option.match(Duration.decodeUnknown(input), {
    onNone: () => invalid("is not a duration"),
    onSome: Effect.succeed
  })
}

const runWithin = <A, E, R>(
  self: Effect.Effect<A, E, R>,
  scope: string,
  budget: Duration.Duration,
  now: number
): Effect.Effect<A, E | DeadlineExceeded, R> =>
  Effect.flatMap(FiberRef.get(current), (outer) => {
    if (!Duration.isFinite(budget)) return self
    const deadlineMillis = now + Duration.toMillis(budget)
    if (Option.isSome(outer) && outer.value.deadlineMillis <= deadlineMillis) {
      // The enclosing deadline binds: its own timer fires and names it; arming a second one here would raise the
      // same expiry twice (or name the wrong scope).
      return self
    }
    if (Duration.isZero(budget)) return Effect.fail(new DeadlineExceeded({ scope, budget }))
    return self.pipe(
      Effect.locally(current, Option.some({ scope, budget, deadlineMillis })),
      Effect.timeoutFail({ duration: budget, onTimeout: () => new DeadlineExceeded({ scope, budget }) })
    )
  })

/**
 * Runs the effect with a deadline `budget` from now, named `scope`, or the enclosing deadline if that one is sooner.
 * Fails with `DeadlineExceeded` naming the scope whose deadline passed, after interrupting the effect.
 */
export const within: {
  (scope: string, budget: Duration.DurationInput): <A, E, R>(
    self: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | DeadlineExceeded | InvalidDeadline, R>
  <A, E, R>(
    self: Effect.Effect<A, E, R>,
    scope: string,
    budget: Duration.DurationInput
  ): Effect.Effect<A, E | DeadlineExceeded | InvalidDeadline, R>
} = Function.dual(
  3,
  <A, E, R>(
    self: Effect.Effect<A, E, R>,
    scope: string,
    budget: Duration.DurationInput
  ): Effect.Effect<A, E | DeadlineExceeded | InvalidDeadline, R> =>
    Effect.flatMap(
      decodeBudget(scope, budget),
      (decoded) => Effect.flatMap(Clock.currentTimeMillis, (now) => runWithin(self, scope, decoded, now))
    )
)

/**
 * Runs the effect with a deadline at the instant `epochMillis` (Clock time), named `scope`, or the enclosing deadline
 * if that one is sooner. An instant already past fails with `DeadlineExceeded` without starting the effect; the
 * error's `budget` is the time there was from entering the scope to the instant.
 */
export const at: {
  (scope: string, epochMillis: number): <A, E, R>(
    self: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | DeadlineExceeded | InvalidDeadline, R>
  <A, E, R>(
    self: Effect.Effect<A, E, R>,
    scope: string,
    epochMillis: number
  ): Effect.Effect<A, E | DeadlineExceeded | InvalidDeadline, R>
} = Function.dual(
  3,
  <A, E, R>(
    self: Effect.Effect<A, E, R>,
    scope: string,
    epochMillis: number
  ): Effect.Effect<A, E | DeadlineExceeded | InvalidDeadline, R> =>
    Number.isFinite(epochMillis)
      ? Effect.flatMap(
        Clock.currentTimeMillis,
        (now) => runWithin(self, scope, Duration.millis(Math.max(0, epochMillis - now)), now)
      )
      : Effect.fail(
        new InvalidDeadline({ scope, field: "epochMillis", value: epochMillis, reason: "must be a finite number" })
      )
)
