/**
 * async-resource — async context manager: a database connection opened (0.5 s), queried (0.1 s) and closed (0.1 s).
 *
 * `Effect.acquireRelease` is `__aenter__`/`__aexit__` with stronger guarantees: the close runs exactly once on
 * success, failure and interruption — even when the interruption lands during the connect, where Python skips
 * `__aexit__` — and resources acquired in one scope close in reverse order.
 */
import { Console, Data, Effect } from "effect"

export class QueryError extends Data.TaggedError("QueryError")<{
  readonly sql: string
  readonly reason: string
}> {}

export interface Row {
  readonly id: number
  readonly name: string
}

export interface AsyncDatabaseConnection {
  readonly connectionString: string
  readonly query: (sql: string) => Effect.Effect<ReadonlyArray<Row>, QueryError>
}

/** Where the connection reports what it does: the program prints, the tests keep a timed log. */
export type Journal = (entry: string) => Effect.Effect<void>

export const printJournal: Journal = (entry) => Console.log(entry)

const query = (sql: string) =>
  Effect.gen(function*() {
    if (sql.trim() === "") return yield* new QueryError({ sql, reason: "sql must not be empty" })
    yield* Effect.sleep("100 millis")
    return [{ id: 1, name: "Test" }] satisfies ReadonlyArray<Row>
  })

/** Opens a connection for the enclosing `Scope`; closing it is the scope's job. */
export const connect = (connectionString: string, journal: Journal = printJournal) =>
  Effect.acquireRelease(
    Effect.gen(function*() {
      yield* journal(`Connecting to ${connectionString}`)
      yield* Effect.sleep("500 millis")
      yield* journal(`Connected to ${connectionString}`)
      return { connectionString, query } satisfies AsyncDatabaseConnection
    }),
    () =>
      Effect.gen(function*() {
        yield* journal(`Closing connection to ${connectionString}`)
        yield* Effect.sleep("100 millis")
        yield* journal(`Closed ${connectionString}`)
      })
  )

export const main = Effect.scoped(
  Effect.gen(function*() {
    const db = yield* connect("postgres://localhost/db")
    const results = yield* db.query("SELECT * FROM users")
    yield* Console.log(results)
  })
)
