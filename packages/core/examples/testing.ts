/**
 * testing — the tutorial's pytest-asyncio tests: a task's result, a timeout, and a database fixture opened once per suite.
 *
 * A pytest fixture is a `Layer` here: scoped (its release runs on success, failure and interruption alike), shared by a
 * whole suite with @effect/vitest's `layer(...)`, and its type says what a test needs. With `TestClock` the 1 s timeout
 * test takes no real time, where pytest-asyncio sits through it. This program runs the same checks for real.
 */
import { Array, Console, Effect, Either, Layer, Ref } from "effect"
import { waitFor } from "./wait-for.js"

export const asyncTask = Effect.sleep("2 seconds").pipe(Effect.as("Done"))

export const slowOperation = Effect.sleep("10 seconds").pipe(Effect.as("Done"))

/** What happened to the database, in order. It outlives the connection, so "close" can be read afterwards. */
export class Lifecycle extends Effect.Service<Lifecycle>()("spindle/examples/Lifecycle", {
  effect: Effect.map(Ref.make<ReadonlyArray<string>>([]), (log) => ({
    events: Ref.get(log),
    record: (event: string) => Ref.update(log, Array.append(event))
  }))
}) {}

export interface Row {
  readonly id: number
  readonly name: string
}

/** `create_connection()` / `conn.close()` as one scoped service: "connect" on build, "close" when its scope ends. */
export class Database extends Effect.Service<Database>()("spindle/examples/Database", {
  scoped: Effect.gen(function*() {
    const lifecycle = yield* Lifecycle
    yield* Effect.acquireRelease(lifecycle.record("connect"), () => lifecycle.record("close"))
    const query = Effect.fn("Database.query")(function*(sql: string) {
      yield* lifecycle.record(`query ${sql}`)
      return [{ id: 1, name: "Test" }] satisfies ReadonlyArray<Row>
    })
    return { query } as const
  })
}) {
  /** The fixture: the database together with the lifecycle log the tests inspect. */
  static readonly Test = Database.Default.pipe(Layer.provideMerge(Lifecycle.Default))
}

const verdict = (passed: boolean) => passed ? "passed" : "FAILED"

export const main = Effect.gen(function*() {
  const lifecycle = yield* Lifecycle
  const [result, timedOut, rows] = yield* Effect.all([
    asyncTask,
    Effect.either(waitFor(slowOperation, "1 second")),
    Effect.flatMap(Database, (database) => database.query("SELECT 1"))
  ], { concurrency: "unbounded" }).pipe(Effect.provide(Database.Default))

  yield* Console.log(`test_async_function: ${verdict(result === "Done")} (result: ${result})`)
  const timeoutError = Either.isLeft(timedOut) ? `${timedOut.left._tag}: ${timedOut.left.message}` : "no timeout"
  yield* Console.log(`test_with_timeout: ${verdict(Either.isLeft(timedOut))} (${timeoutError})`)
  yield* Console.log(`test_with_fixture: ${verdict(rows.length > 0)} (rows: ${JSON.stringify(rows)})`)
  yield* Console.log(`fixture lifecycle: ${(yield* lifecycle.events).join(" -> ")}`)
}).pipe(Effect.provide(Lifecycle.Default))
