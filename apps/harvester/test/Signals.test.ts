import { SqlClient } from "@effect/sql"
import { assert, describe, it } from "@effect/vitest"
import { Chunk, Context, Effect, Layer, Queue, Redacted, Schedule } from "effect"
import * as Db from "../src/Db/Db.js"
import { CHANNEL, Signals } from "../src/Jobs/Signals.js"
import * as Databases from "./support/Databases.js"

const pg = Databases.all.find((database) => database.name === "pg")!

/** A Signals service over its own connection pool (another instance, as far as PostgreSQL can tell). */
const instance = (url: string) =>
  Effect.map(
    Layer.build(Signals.Default.pipe(Layer.provideMerge(Db.layerPg(Redacted.make(url))))),
    (context) => ({ signals: Context.get(context, Signals), sql: Context.get(context, SqlClient.SqlClient) })
  ).pipe(Effect.orDie)

/** Backends of the current database listening on the channel right now. */
const listeners = (sql: SqlClient.SqlClient) =>
  sql<{ readonly n: number | string }>`SELECT COUNT(*) AS n FROM pg_stat_activity
    WHERE datname = current_database() AND query = ${`LISTEN "${CHANNEL}"`}`.pipe(
    Effect.map((rows) => Number(rows[0]!.n)),
    Effect.orDie
  )

const poll = <A>(effect: Effect.Effect<A>, until: (a: A) => boolean) =>
  Effect.repeat(effect, Schedule.recurUntil(until).pipe(Schedule.addDelay(() => "20 millis"), Schedule.passthrough))
    .pipe(Effect.timeout("10 seconds"))

describe("Signals", () => {
  it.scoped("in-process (SQLite): a subscriber receives what is published after it subscribed, in order", () =>
    Effect.gen(function*() {
      const signals = yield* Signals
      assert.strictEqual(signals.transport, "in-process")
      yield* signals.publish({ _tag: "JobCreated", jobId: "before" })
      const inbox = yield* signals.subscribe
      yield* signals.publish({ _tag: "JobCreated", jobId: "a" })
      yield* signals.publish({ _tag: "JobCancelled", jobId: "a" })
      assert.deepStrictEqual(Chunk.toReadonlyArray(yield* Queue.takeAll(inbox)), [
        { _tag: "JobCreated", jobId: "a" },
        { _tag: "JobCancelled", jobId: "a" }
      ])
    }).pipe(Effect.provide(Signals.Default.pipe(Layer.provide(Db.layerSqlite(":memory:")))), Effect.orDie))

  it.scoped("in-process: closing the subscriber's scope removes it (nothing queues for it any more)", () =>
    Effect.gen(function*() {
      const signals = yield* Signals
      const inbox = yield* Effect.scoped(
        Effect.tap(signals.subscribe, () => signals.publish({ _tag: "JobCreated", jobId: "x" }))
      )
      yield* signals.publish({ _tag: "JobCreated", jobId: "y" })
      assert.isTrue(yield* Queue.isShutdown(inbox))
    }).pipe(Effect.provide(Signals.Default.pipe(Layer.provide(Db.layerSqlite(":memory:")))), Effect.orDie))

  describe.skipIf(pg.skip !== null)("PostgreSQL (LISTEN/NOTIFY)", () => {
    it.live(
      "a signal published by one instance reaches every instance, the publisher included",
      () =>
        Effect.scoped(Effect.gen(function*() {
          const url = yield* Databases.pgDatabaseScoped
          const a = yield* instance(url)
          const b = yield* instance(url)
          assert.strictEqual(a.signals.transport, "notify")
          const inboxA = yield* a.signals.subscribe
          const inboxB = yield* b.signals.subscribe
          yield* poll(listeners(a.sql), (n) => n === 2)
          // Not ours to decode: ignored, the relay keeps going.
          yield* a.sql`SELECT pg_notify(${CHANNEL}, 'not a signal')`.pipe(Effect.orDie)
          yield* a.signals.publish({ _tag: "JobCancelled", jobId: "job_1" })
          yield* b.signals.publish({ _tag: "JobCreated", jobId: "job_2" })
          for (const inbox of [inboxA, inboxB]) {
            const first = yield* Queue.take(inbox).pipe(Effect.timeout("5 seconds"))
            const second = yield* Queue.take(inbox).pipe(Effect.timeout("5 seconds"))
            assert.deepStrictEqual([first, second], [
              { _tag: "JobCancelled", jobId: "job_1" },
              { _tag: "JobCreated", jobId: "job_2" }
            ])
          }
        })),
      30_000
    )

    it.live("closing an instance's scope closes its LISTEN connection", () =>
      Effect.scoped(Effect.gen(function*() {
        const url = yield* Databases.pgDatabaseScoped
        const observer = yield* instance(url)
        yield* poll(listeners(observer.sql), (n) => n === 1)
        yield* Effect.scoped(Effect.gen(function*() {
          yield* instance(url)
          yield* poll(listeners(observer.sql), (n) => n === 2)
        }))
        assert.strictEqual(yield* poll(listeners(observer.sql), (n) => n === 1), 1)
      })), 30_000)
  })
})
