/**
 * SqliteWorker — @effect/sql's `SqlClient` for SQLite with better-sqlite3 running on a worker thread.
 *
 * Adds what Effect lacks: `@effect/sql-sqlite-node` runs every statement on the event loop's thread, so under a
 * harvest the database's CPU (claiming targets, committing pages: ~25 µs a page, a quarter of the thread's time at
 * 20k pages) is time the thread cannot spend on sockets. Here one worker thread owns the connection and its prepared
 * statements; the event loop only posts statements and takes rows back (the harvest: 8% faster, bench/results).
 *
 * Semantics are `SqliteClient`'s: one connection; statements run in the order they were sent; a transaction holds
 * the connection (no statement from outside it runs between its `BEGIN` and its end); `SqlError` for every failure,
 * its `cause` an `Error` with SQLite's message and `code`. A statement outside a transaction is sent while holding
 * the connection's permit (so it can never land inside a transaction that begins meanwhile) and then awaited without
 * it, so such statements are pipelined. An interrupted statement still runs on the worker (SQLite cannot stop it
 * midway); its result is dropped. Streams are not implemented (as in `SqliteClient`).
 *
 * One addition: `batchOf(client)` runs several statements in one transaction as one message (`BEGIN`, the statements,
 * `COMMIT`: one round trip to the thread instead of one per statement; the event loop's latency under load made a
 * page writer's four round trips hold the connection for 10–20 ms).
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import { SqlClient, SqlError, Statement } from "@effect/sql"
import type { SqlConnection } from "@effect/sql"
import { Duration, Effect, Layer, Option, Scope, Stream } from "effect"
import { createRequire } from "node:module"
import { Worker } from "node:worker_threads"

export interface SqliteWorkerConfig {
  /** A file path, or ":memory:" for a private in-memory database. */
  readonly filename: string
  /** Prepared statements kept by the worker (least recently used go first); default 200. */
  readonly prepareCacheSize?: number
  readonly readonly?: boolean
  readonly disableWAL?: boolean
}

type Op = "execute" | "raw" | "values" | "unprepared" | "batch"

interface Reply {
  readonly id: number
  readonly ok?: unknown
  readonly error?: { readonly message: string; readonly code?: string }
}

/**
 * The worker's program (CommonJS, evaluated): opens the database, answers `{ id, ok }` or `{ id, error }` to every
 * message in order, closes on `close`.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads")
const Database = require(workerData.driver)
const describe = (e) => ({ message: e && e.message ? String(e.message) : String(e), code: e && e.code ? String(e.code) : undefined })
let db
try {
  db = new Database(workerData.filename, { readonly: workerData.readonly })
  if (!workerData.disableWAL) db.pragma("journal_mode = WAL")
} catch (e) {
  db = undefined
  parentPort.postMessage({ id: 0, error: describe(e) })
}
const cache = new Map()
const prepare = (sql) => {
  let s = cache.get(sql)
  if (s !== undefined) {
    cache.delete(sql)
    cache.set(sql, s)
    return s
  }
  s = db.prepare(sql)
  cache.set(sql, s)
  if (cache.size > workerData.cacheSize) cache.delete(cache.keys().next().value)
  return s
}
const run = (m) => {
  switch (m.op) {
    case "execute":
    case "raw": {
      const s = prepare(m.sql)
      s.safeIntegers(m.safe)
      if (s.reader) return s.all(...m.params)
      const result = s.run(...m.params)
      return m.op === "raw" ? result : []
    }
    case "values": {
      const s = prepare(m.sql)
      s.safeIntegers(m.safe)
      if (!s.reader) {
        s.run(...m.params)
        return []
      }
      s.raw(true)
      try {
        return s.all(...m.params)
      } finally {
        s.raw(false)
      }
    }
    case "batch": {
      db.exec("BEGIN")
      try {
        const results = m.params.map(([sql, params]) => {
          const s = prepare(sql)
          s.safeIntegers(m.safe)
          if (s.reader) return s.all(...params)
          s.run(...params)
          return []
        })
        db.exec("COMMIT")
        return results
      } catch (e) {
        if (db.inTransaction) db.exec("ROLLBACK")
        throw e
      }
    }
    case "unprepared": {
      const s = db.prepare(m.sql)
      s.safeIntegers(m.safe)
      if (s.reader) return s.all(...m.params)
      s.run(...m.params)
      return []
    }
    default:
      throw new Error("unknown operation " + m.op)
  }
}
if (db !== undefined) parentPort.on("message", (m) => {
  if (m.op === "close") {
    cache.clear()
    try { db.close() } finally { parentPort.close() }
    return
  }
  let reply
  try {
    reply = { id: m.id, ok: run(m) }
  } catch (e) {
    reply = { id: m.id, error: describe(e) }
  }
  parentPort.postMessage(reply)
})
if (db !== undefined) parentPort.postMessage({ id: 0, ok: true })
`

const failure = (message: string, error: { readonly message: string; readonly code?: string | undefined }) =>
  new SqlError.SqlError({
    message,
    cause: Object.assign(new Error(error.message), error.code === undefined ? {} : { code: error.code })
  })

/** What a sent statement resolves with; `settle` runs once its reply arrived (or the worker is gone). */
interface Pending {
  reply: Reply | undefined
  resume: ((reply: Reply) => void) | undefined
}

/** Opens the database on a new worker thread; the worker closes the database and ends with the scope. */
export const make = (
  options: SqliteWorkerConfig
): Effect.Effect<SqlClient.SqlClient, SqlError.SqlError, Scope.Scope | Reactivity.Reactivity> =>
  Effect.gen(function*() {
    const pending = new Map<number, Pending>()
    let nextId = 1
    let gone: { readonly message: string } | undefined

    const worker = yield* Effect.acquireRelease(
      Effect.async<Worker, SqlError.SqlError>((resume) => {
        const started = new Worker(WORKER_SOURCE, {
          eval: true,
          workerData: {
            driver: createRequire(import.meta.url).resolve("better-sqlite3"),
            filename: options.filename,
            readonly: options.readonly ?? false,
            disableWAL: options.disableWAL ?? false,
            cacheSize: options.prepareCacheSize ?? 200
          }
        })
        const onError = (cause: Error) =>
          resume(
            Effect.zipRight(
              Effect.promise(() => started.terminate()),
              Effect.fail(failure(`Failed to open database: ${cause.message}`, cause))
            )
          )
        started.once("error", onError)
        started.once("message", (first: Reply) => {
          started.off("error", onError)
          if (first.error !== undefined) {
            const error = failure(`Failed to open database: ${first.error.message}`, first.error)
            resume(Effect.zipRight(Effect.promise(() => started.terminate()), Effect.fail(error)))
          } else {
            resume(Effect.succeed(started))
          }
        })
      }),
      (worker) =>
        Effect.async<void>((resume) => {
          worker.once("exit", () => resume(Effect.void))
          worker.postMessage({ op: "close" })
        }).pipe(
          Effect.timeoutOption(Duration.seconds(10)),
          Effect.flatMap((closed) => closed._tag === "Some" ? Effect.void : Effect.promise(() => worker.terminate()))
        )
    )

    const settle = (reply: Reply) => {
      const entry = pending.get(reply.id)
      if (entry === undefined) return
      pending.delete(reply.id)
      if (entry.resume === undefined) entry.reply = reply
      else entry.resume(reply)
    }
    /** The worker died (a bug or a crash of the driver): every statement waiting and every later one fails. */
    const die = (message: string) => {
      gone = { message }
      for (const id of [...pending.keys()]) settle({ id, error: { message } })
    }
    worker.on("message", settle)
    worker.on("error", (cause) => die(`SQLite worker failed: ${cause.message}`))
    worker.on("exit", (code) => die(`SQLite worker exited (${code})`))

    /** Posts a statement now; the effect waits for its reply. */
    const send = (op: Op, sql: string, params: ReadonlyArray<unknown>, safe: boolean): Pending => {
      const entry: Pending = { reply: undefined, resume: undefined }
      if (gone !== undefined) {
        entry.reply = { id: 0, error: gone }
        return entry
      }
      const id = nextId++
      pending.set(id, entry)
      worker.postMessage({ id, op, sql, params, safe })
      return entry
    }

    const await_ = (entry: Pending): Effect.Effect<unknown, SqlError.SqlError> =>
      Effect.async<unknown, SqlError.SqlError>((resume) => {
        const finish = (reply: Reply) =>
          resume(
            reply.error === undefined
              ? Effect.succeed(reply.ok)
              : Effect.fail(failure("Failed to execute statement", reply.error))
          )
        if (entry.reply !== undefined) return finish(entry.reply)
        entry.resume = finish
        // Interrupted: the statement still runs on the worker; its reply is dropped.
        return Effect.sync(() => (entry.resume = () => {}))
      })

    const semaphore = yield* Effect.makeSemaphore(1)
    const safeIntegers: Effect.Effect<boolean> = SqlClient.SafeIntegers

    /** Outside a transaction: sent holding the permit (never inside another fiber's transaction), awaited without. */
    const free = (op: Op) => (sql: string, params: ReadonlyArray<unknown>) =>
      Effect.flatMap(
        safeIntegers,
        (safe) =>
          Effect.flatMap(semaphore.withPermits(1)(Effect.sync(() => send(op, sql, params, safe))), (entry) =>
            await_(entry))
      )
    /** Inside a transaction (its scope holds the permit): sent at once. */
    const owned = (op: Op) => (sql: string, params: ReadonlyArray<unknown>) =>
      Effect.flatMap(safeIntegers, (safe) => Effect.suspend(() => await_(send(op, sql, params, safe))))

    const connection = (
      post: (op: Op) => (sql: string, params: ReadonlyArray<unknown>) => Effect.Effect<unknown, SqlError.SqlError>
    ): SqlConnection.Connection => {
      const execute = post("execute")
      const raw = post("raw")
      const values = post("values")
      const unprepared = post("unprepared")
      const rows = (effect: Effect.Effect<unknown, SqlError.SqlError>) =>
        effect as Effect.Effect<ReadonlyArray<Record<string, unknown>>, SqlError.SqlError>
      return {
        execute: (sql, params, transformRows) =>
          transformRows === undefined
            ? rows(execute(sql, params))
            : Effect.map(rows(execute(sql, params)), transformRows),
        executeRaw: (sql, params) => raw(sql, params),
        executeValues: (sql, params) =>
          values(sql, params) as Effect.Effect<ReadonlyArray<ReadonlyArray<unknown>>, SqlError.SqlError>,
        executeUnprepared: (sql, params, transformRows) =>
          transformRows === undefined
            ? rows(unprepared(sql, params ?? []))
            : Effect.map(rows(unprepared(sql, params ?? [])), transformRows),
        executeStream: () => Stream.dieMessage("executeStream not implemented")
      }
    }
    const outside = connection(free)
    const inside = connection(owned)

    const transactionAcquirer: SqlConnection.Connection.Acquirer = Effect.uninterruptibleMask((restore) =>
      Effect.as(
        Effect.zipRight(
          restore(semaphore.take(1)),
          Effect.tap(Effect.scope, (scope) => Scope.addFinalizer(scope, semaphore.release(1)))
        ),
        inside
      )
    )

    const compiler = Statement.makeCompilerSqlite()
    const client = yield* SqlClient.make({
      acquirer: Effect.succeed(outside),
      compiler,
      transactionAcquirer,
      spanAttributes: [["db.system.name", "sqlite"]]
    })
    const batch: Batch = (statements) =>
      Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (inside) =>
        Option.isSome(inside)
          ? Effect.dieMessage("SqliteWorker batch: not inside a transaction (it is one)")
          : free("batch")("", statements.map((statement) => compiler.compile(statement, false)))) as Effect.Effect<
          ReadonlyArray<ReadonlyArray<Record<string, unknown>>>,
          SqlError.SqlError
        >
    return Object.assign(client, { [BatchTypeId]: batch })
  })

/**
 * Runs the statements in order in one transaction on the worker (rolled back if one fails) and returns each one's
 * rows. One message and one round trip, whatever the count. Not for use inside `withTransaction` (it dies).
 */
export type Batch = (
  statements: ReadonlyArray<Statement.Statement<unknown>>
) => Effect.Effect<ReadonlyArray<ReadonlyArray<Record<string, unknown>>>, SqlError.SqlError>

const BatchTypeId: unique symbol = Symbol.for("spindle/SqliteWorker/Batch")

/** The client's `Batch` when it is a `SqliteWorker` client. */
export const batchOf = (client: SqlClient.SqlClient): Option.Option<Batch> =>
  BatchTypeId in client ? Option.some(client[BatchTypeId] as Batch) : Option.none()

/** The client as a layer (`SqlClient`), with its own `Reactivity`. */
export const layer = (options: SqliteWorkerConfig): Layer.Layer<SqlClient.SqlClient, SqlError.SqlError> =>
  Layer.scoped(SqlClient.SqlClient, make(options)).pipe(Layer.provide(Reactivity.layer))
