import { Reactivity } from "@effect/experimental"
import { SqlClient } from "@effect/sql"
import type { SqlError } from "@effect/sql"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { assert, describe, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Exit, Fiber, Option, Scope } from "effect"
import { mkdtempSync, readdirSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as SqliteWorker from "../src/Db/SqliteWorker.js"

/** A fresh database file in a temporary directory, its client, and the directory removed afterwards. */
const withClient = <A, E>(
  use: (sql: SqlClient.SqlClient, file: string) => Effect.Effect<A, E, Scope.Scope>
): Effect.Effect<A, E | SqlError.SqlError, Scope.Scope> =>
  Effect.gen(function*() {
    const dir = yield* Effect.acquireRelease(
      Effect.sync(() => mkdtempSync(join(tmpdir(), "spindle-sqlite-worker-"))),
      (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
    )
    const file = join(dir, "test.db")
    const sql = yield* SqliteWorker.make({ filename: file }).pipe(Effect.provide(Reactivity.layer))
    yield* sql`CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)`
    return yield* use(sql, file)
  })

/** Threads of this process (Linux): a worker thread that ended is gone from the list. */
const threads = () => readdirSync("/proc/self/task").length

const names = (sql: SqlClient.SqlClient) =>
  Effect.map(sql<{ readonly name: string }>`SELECT name FROM items ORDER BY id`, (rows) => rows.map((r) => r.name))

const causeCode = (error: SqlError.SqlError): unknown =>
  typeof error.cause === "object" && error.cause !== null && "code" in error.cause ? error.cause.code : undefined

describe("SqliteWorker", () => {
  it.scoped("runs statements on its thread: rows, values, raw results, unprepared", () =>
    withClient((sql) =>
      Effect.gen(function*() {
        yield* sql`INSERT INTO items ${sql.insert([{ name: "a" }, { name: "b" }])}`
        assert.deepStrictEqual(yield* names(sql), ["a", "b"])
        assert.deepStrictEqual(yield* sql`SELECT id, name FROM items ORDER BY id`.values, [[1, "a"], [2, "b"]])
        const raw = (yield* sql`UPDATE items SET name = name || '!'`.raw) as { readonly changes: number }
        assert.strictEqual(raw.changes, 2)
        assert.deepStrictEqual(yield* sql`SELECT COUNT(*) AS n FROM items`.unprepared, [{ n: 2 }])
        // The same statement again (from the worker's cache), then values again: raw mode was switched back.
        assert.deepStrictEqual(yield* names(sql), ["a!", "b!"])
        const big = yield* sql<{ readonly n: bigint }>`SELECT 9007199254740993 AS n`.pipe(
          Effect.provideService(SqlClient.SafeIntegers, true)
        )
        assert.strictEqual(big[0]!.n, 9007199254740993n)
      })
    ))

  it.scoped("a failing statement is a SqlError carrying SQLite's code; the connection goes on", () =>
    withClient((sql) =>
      Effect.gen(function*() {
        yield* sql`INSERT INTO items (name) VALUES ('a')`
        const duplicate = yield* Effect.flip(sql`INSERT INTO items (name) VALUES ('a')`)
        assert.strictEqual(duplicate._tag, "SqlError")
        assert.strictEqual(causeCode(duplicate), "SQLITE_CONSTRAINT_UNIQUE")
        const syntax = yield* Effect.flip(sql`SELEC nothing`)
        assert.strictEqual(causeCode(syntax), "SQLITE_ERROR")
        assert.include(String((syntax.cause as Error).message), "syntax error")
        assert.deepStrictEqual(yield* names(sql), ["a"])
      })
    ))

  it.scoped("no statement from outside a transaction runs inside it", () =>
    withClient((sql) =>
      Effect.gen(function*() {
        const inside = yield* Deferred.make<void>()
        const release = yield* Deferred.make<void>()
        const order: Array<string> = []
        // The transaction inserts, waits, counts its rows, then fails: everything it ran must roll back.
        const transaction = yield* sql.withTransaction(
          Effect.gen(function*() {
            yield* sql`INSERT INTO items (name) VALUES ('in-transaction')`
            yield* Deferred.succeed(inside, undefined)
            yield* Deferred.await(release)
            // Answered after anything sent before it: an outside insert that ran in here would be counted.
            const rows = yield* sql<{ readonly n: number }>`SELECT COUNT(*) AS n FROM items`
            order.push("transaction")
            return yield* Effect.fail({ rows: rows[0]!.n })
          })
        ).pipe(Effect.fork)
        yield* Deferred.await(inside)
        // Started while the transaction is open: it must wait for the transaction's end, then run on its own.
        const outside = yield* Effect.fork(
          Effect.tap(sql`INSERT INTO items (name) VALUES ('outside')`, () => Effect.sync(() => order.push("outside")))
        )
        for (let i = 0; i < 10; i++) yield* Effect.yieldNow()
        yield* Deferred.succeed(release, undefined)
        const ended = yield* Fiber.await(transaction)
        yield* Fiber.join(outside)
        assert.deepStrictEqual(
          Exit.isFailure(ended) ? Cause.failureOption(ended.cause) : Option.none(),
          Option.some({ rows: 1 })
        )
        assert.deepStrictEqual(order, ["transaction", "outside"])
        assert.deepStrictEqual(yield* names(sql), ["outside"])
      })
    ))

  it.scoped("interrupted mid-transaction: rolled back, the connection free again, nothing left open", () =>
    withClient((sql) =>
      Effect.gen(function*() {
        const inside = yield* Deferred.make<void>()
        const fiber = yield* sql.withTransaction(
          Effect.gen(function*() {
            yield* sql`INSERT INTO items (name) VALUES ('lost')`
            yield* Deferred.succeed(inside, undefined)
            return yield* Effect.never
          })
        ).pipe(Effect.fork)
        yield* Deferred.await(inside)
        yield* Fiber.interrupt(fiber)
        assert.deepStrictEqual(yield* names(sql), [])
        // A new transaction begins (none was left open) and commits.
        yield* sql.withTransaction(sql`INSERT INTO items (name) VALUES ('kept')`)
        assert.deepStrictEqual(yield* names(sql), ["kept"])
      })
    ))

  it.scoped("statements interrupted in flight: their results are dropped, every later one is answered", () =>
    withClient((sql) =>
      Effect.gen(function*() {
        const inserts = Array.from({ length: 200 }, (_, i) =>
          Effect.fork(sql`INSERT INTO items (name) VALUES (${`n${i}`})`))
        const fibers = yield* Effect.all(inserts)
        // Interrupt every other one, whatever stage it is at (sent or not).
        yield* Effect.forEach(
          fibers.filter((_, i) =>
            i % 2 === 0
          ),
          Fiber.interrupt,
          { discard: true }
        )
        const exits = yield* Effect.forEach(fibers, Fiber.await)
        const completed = exits.filter(Exit.isSuccess).length
        const rows = (yield* names(sql)).length
        // An interrupted insert may still have run (SQLite cannot stop a statement it was sent); none ran twice,
        // none failed, and every one that completed is there.
        assert.isAtLeast(rows, completed)
        assert.isAtMost(rows, 200)
        assert.isTrue(exits.every((exit) => Exit.isSuccess(exit) || Cause.isInterruptedOnly(exit.cause)))
        assert.deepStrictEqual(yield* sql`SELECT 1 AS one`, [{ one: 1 }])
      })
    ))

  it.scoped("batchOf runs statements in one transaction, as one message: all of them, or none", () =>
    withClient((sql) =>
      Effect.gen(function*() {
        const batch = Option.getOrThrow(SqliteWorker.batchOf(sql))
        const results = yield* batch([
          sql`INSERT INTO items (name) VALUES ('a'), ('b')`,
          sql`SELECT name FROM items ORDER BY id`,
          sql`UPDATE items SET name = name || '!' RETURNING name`
        ])
        assert.deepStrictEqual(results, [[], [{ name: "a" }, { name: "b" }], [{ name: "a!" }, { name: "b!" }]])
        const failed = yield* Effect.flip(
          batch([sql`INSERT INTO items (name) VALUES ('c')`, sql`INSERT INTO items (name) VALUES ('a!')`])
        )
        assert.strictEqual(causeCode(failed), "SQLITE_CONSTRAINT_UNIQUE")
        assert.deepStrictEqual(yield* names(sql), ["a!", "b!"], "the failed batch was rolled back")
        // Inside a transaction of the same connection it would wait for itself: it refuses (a defect).
        const inside = yield* Effect.exit(sql.withTransaction(batch([sql`SELECT 1`])))
        assert.isTrue(Exit.isFailure(inside) && Cause.isDie(inside.cause))
        const other = yield* SqliteClient.make({ filename: ":memory:" }).pipe(Effect.provide(Reactivity.layer))
        assert.isTrue(Option.isNone(SqliteWorker.batchOf(other)), "another client has no batch")
      })
    ))

  it.effect("a file that cannot be opened is a SqlError, and no thread is left running", () =>
    Effect.gen(function*() {
      const dir = mkdtempSync(join(tmpdir(), "spindle-sqlite-worker-"))
      const before = threads()
      const exit = yield* SqliteWorker.make({ filename: join(dir, "missing", "x.db") }).pipe(
        Effect.provide(Reactivity.layer),
        Effect.scoped,
        Effect.exit
      )
      rmSync(dir, { recursive: true, force: true })
      const error = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
      assert.isTrue(Option.isSome(error))
      assert.strictEqual(Option.getOrThrow(error)._tag, "SqlError")
      assert.include(Option.getOrThrow(error).message, "Failed to open database")
      assert.strictEqual(threads(), before)
    }))

  it.effect("closing the scope closes the database and ends the thread; later statements fail", () =>
    Effect.gen(function*() {
      const dir = mkdtempSync(join(tmpdir(), "spindle-sqlite-worker-"))
      const before = threads()
      const scope = yield* Scope.make()
      const sql = yield* SqliteWorker.make({ filename: join(dir, "x.db") }).pipe(
        Effect.provide(Reactivity.layer),
        Scope.extend(scope)
      )
      yield* sql`CREATE TABLE t (x INTEGER)`
      yield* sql`INSERT INTO t VALUES (1)`
      assert.strictEqual(threads(), before + 1)
      yield* Scope.close(scope, Exit.void)
      assert.strictEqual(threads(), before)
      // Closed cleanly: SQLite checkpointed and removed its WAL; only the database file is left.
      assert.deepStrictEqual(readdirSync(dir), ["x.db"])
      rmSync(dir, { recursive: true, force: true })
      const late = yield* Effect.exit(sql`SELECT 1`)
      assert.isTrue(Exit.isFailure(late))
    }))
})
