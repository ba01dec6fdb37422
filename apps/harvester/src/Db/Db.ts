/**
 * Db — the harvester's SqlClient: an embedded SQLite file (WAL, synchronous=NORMAL, on a thread of its own:
 * `SqliteWorker`) by default, PostgreSQL when `DATABASE_URL` is set. Each layer runs the migrations through the
 * Migrator before anything uses it, so a service that depends on `SqlClient` sees the schema.
 *
 * Adds beyond @effect/sql: the choice by configuration, the data directory created on demand, the pragmas, and one
 * startup error (`DatabaseUnavailable`) instead of driver-specific ones.
 */
import { Reactivity } from "@effect/experimental"
import { FileSystem, Path } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { Migrator, SqlClient } from "@effect/sql"
import { PgClient, PgMigrator } from "@effect/sql-pg"
import { Config, Context, Data, Duration, Effect, Layer, Option, Redacted } from "effect"
import init from "./migrations/0001_init.js"
import failedPages from "./migrations/0002_failed_pages.js"
import noForeignKeys from "./migrations/0003_no_foreign_keys.js"
import jobSecrets from "./migrations/0004_job_secrets.js"
import binaryKeys from "./migrations/0005_binary_keys.js"
import claimStoreFunctions from "./migrations/0006_claim_store_functions.js"
import targetsStatusSeq from "./migrations/0007_targets_status_seq.js"
import * as SqliteWorker from "./SqliteWorker.js"

/** The database could not be opened, reached or migrated. */
export class DatabaseUnavailable extends Data.TaggedError("DatabaseUnavailable")<{
  readonly database: string
  readonly message: string
  readonly cause?: unknown
}> {}

export const DEFAULT_SQLITE_PATH = "./data/harvester.db"

const loader = Migrator.fromRecord({
  "0001_init": init,
  "0002_failed_pages": failedPages,
  "0003_no_foreign_keys": noForeignKeys,
  "0004_job_secrets": jobSecrets,
  "0005_binary_keys": binaryKeys,
  "0006_claim_store_functions": claimStoreFunctions,
  "0007_targets_status_seq": targetsStatusSeq
})

const unavailable = (database: string) => (cause: { readonly message: string }) =>
  new DatabaseUnavailable({ database, message: `${database}: ${cause.message}`, cause })

/** SQLite at `filename` (":memory:" for a private in-memory database), migrated. */
export const layerSqlite = (filename: string): Layer.Layer<SqlClient.SqlClient, DatabaseUnavailable> => {
  const client = Layer.scopedContext(
    Effect.gen(function*() {
      if (filename !== ":memory:") {
        const fs = yield* FileSystem.FileSystem
        const path = yield* Path.Path
        yield* fs.makeDirectory(path.dirname(filename), { recursive: true })
      }
      // Room for every shape of the page writer's statements (PageWriter: sizes in steps of 16, plus 1–15) besides
      // the rest: a statement prepared again costs ~0.15 ms (the default cache of 200 thrashed under load).
      const sql = yield* SqliteWorker.make({ filename, prepareCacheSize: 1000 })
      yield* sql`PRAGMA synchronous = NORMAL`
      yield* sql`PRAGMA busy_timeout = 10000`
      yield* sql`PRAGMA foreign_keys = ON`
      return Context.make(SqlClient.SqlClient, sql)
    })
  ).pipe(Layer.provide(Reactivity.layer))
  const migrations = Layer.effectDiscard(Migrator.make({})({ loader }))
  return migrations.pipe(
    Layer.provideMerge(client),
    Layer.provide(NodeContext.layer),
    Layer.mapError(unavailable(`SQLite ${filename}`)),
    Layer.map(Context.pick(SqlClient.SqlClient))
  )
}

/** PostgreSQL at `url` (postgres://user@host:port/database), migrated. */
export const layerPg = (
  url: Redacted.Redacted,
  options: { readonly maxConnections?: number } = {}
): Layer.Layer<SqlClient.SqlClient, DatabaseUnavailable> => {
  const client = PgClient.layer({
    url,
    maxConnections: options.maxConnections ?? 20,
    connectTimeout: Duration.seconds(5)
  })
  const migrations = Layer.effectDiscard(PgMigrator.run({ loader }))
  return migrations.pipe(
    Layer.provideMerge(client),
    Layer.provide(NodeContext.layer),
    Layer.mapError(unavailable(`PostgreSQL ${describeUrl(url)}`)),
    Layer.map(Context.pick(SqlClient.SqlClient))
  )
}

/** The URL without its password, for messages. */
export const describeUrl = (url: Redacted.Redacted): string => {
  const text = Redacted.value(url)
  if (!URL.canParse(text)) return "(unparsable DATABASE_URL)"
  const parsed = new URL(text)
  parsed.password = ""
  return parsed.toString()
}

/** Which database the configuration selects: `DATABASE_URL` wins, else `HARVESTER_DB_PATH` (SQLite). */
export const DatabaseConfig = Config.all({
  url: Config.option(Config.redacted("DATABASE_URL")),
  path: Config.string("HARVESTER_DB_PATH").pipe(Config.withDefault(DEFAULT_SQLITE_PATH))
})

/** The database chosen by configuration, migrated. */
export const layer: Layer.Layer<SqlClient.SqlClient, DatabaseUnavailable> = Layer.unwrapEffect(
  Effect.map(
    Effect.orDie(DatabaseConfig),
    ({ path, url }) => Option.match(url, { onNone: () => layerSqlite(path), onSome: (url) => layerPg(url) })
  )
)

/** Whether the database answers a trivial query. */
export const ping: Effect.Effect<boolean, never, SqlClient.SqlClient> = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  return yield* sql`SELECT 1 AS one`.pipe(Effect.as(true))
}).pipe(Effect.timeout(Duration.seconds(2)), Effect.orElseSucceed(() => false))
