/**
 * Signals — wake-ups between harvester instances: "a job was created" (idle instances claim at once instead of at
 * their next scan) and "a job was cancelled" (every instance interrupts its fibers of that job, aborting their
 * sockets). On PostgreSQL they travel by `LISTEN/NOTIFY` on one channel, so a signal published by any instance
 * reaches every instance on the database (itself included); on SQLite (one process) through an in-process `PubSub`.
 * Either way the engine sees the same `publish` / `subscribe`.
 *
 * What it adds beyond `PgClient.listen`/`notify`: the typed signal, the listener kept alive (re-listened with backoff
 * after a failure) and the SQLite fallback. Polling stays the safety net: a notification lost while the listener
 * reconnects delays a wake-up by one scan (`HARVESTER_SCAN_EVERY`), it never loses work, and a cancel is still seen
 * by every runner's job-status watch. Publishing never fails its caller for the same reason.
 */
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import type { Queue, Scope } from "effect"
import { Effect, Either, Predicate, PubSub, Schedule, Schema, Stream } from "effect"

export const JobCreated = Schema.TaggedStruct("JobCreated", { jobId: Schema.String })
export const JobCancelled = Schema.TaggedStruct("JobCancelled", { jobId: Schema.String })
export const Signal = Schema.Union(JobCreated, JobCancelled)
export type Signal = typeof Signal.Type

/** The NOTIFY channel (per database: instances on other databases never hear it). */
export const CHANNEL = "spindle_harvester_jobs"

const encode = Schema.encodeSync(Schema.parseJson(Signal))
const decode = Schema.decodeUnknownEither(Schema.parseJson(Signal))

/** The `SqlClient` of a PostgreSQL layer is the `PgClient` itself, with `listen` and `notify`. */
const asPgClient = (sql: SqlClient.SqlClient): PgClient.PgClient | null =>
  Predicate.hasProperty(sql, PgClient.TypeId) ? sql as PgClient.PgClient : null

export class Signals extends Effect.Service<Signals>()("spindle/Signals", {
  scoped: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const pg = asPgClient(sql)
    const hub = yield* Effect.acquireRelease(PubSub.unbounded<Signal>(), PubSub.shutdown)

    if (pg !== null) {
      const relay = pg.listen(CHANNEL).pipe(
        Stream.runForEach((payload) =>
          Either.match(decode(payload), {
            onLeft: () => Effect.logWarning(`ignored a malformed signal on ${CHANNEL}: ${payload.slice(0, 200)}`),
            onRight: (signal) => PubSub.publish(hub, signal)
          })
        ),
        Effect.tapErrorCause((cause) => Effect.logWarning(`LISTEN ${CHANNEL} failed; polling until it is back`, cause)),
        Effect.retry(Schedule.exponential("100 millis").pipe(Schedule.union(Schedule.spaced("5 seconds"))))
      )
      yield* Effect.forkScoped(relay)
    }

    /** Tells every instance (this one included); a failure is logged and left to polling. */
    const publish = (signal: Signal): Effect.Effect<void> =>
      pg === null
        ? Effect.asVoid(PubSub.publish(hub, signal))
        : pg`SELECT pg_notify(${CHANNEL}, ${encode(signal)})`.pipe(
          Effect.asVoid,
          Effect.catchAllCause((cause) => Effect.logWarning(`NOTIFY ${signal._tag} failed; polling will see it`, cause))
        )

    /** The signals published from now on, while the scope lasts. */
    const subscribe: Effect.Effect<Queue.Dequeue<Signal>, never, Scope.Scope> = PubSub.subscribe(hub)

    return { transport: pg === null ? "in-process" as const : "notify" as const, publish, subscribe } as const
  })
}) {}
