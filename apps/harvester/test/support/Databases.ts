/**
 * The databases every engine test runs on: a fresh SQLite file in a temp directory, and a fresh PostgreSQL database
 * (`harvester_test_<random>` on 127.0.0.1:5432, dropped afterwards). PostgreSQL is skipped, with the reason printed,
 * when it is unreachable — except under `CI=true`, where it must run.
 */
import { Reactivity } from "@effect/experimental"
import { FileSystem } from "@effect/platform"
import { NodeFileSystem } from "@effect/platform-node"
import type { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Redacted } from "effect"
import * as Db from "../../src/Db/Db.js"
import { PG_PORT, probe, required } from "./Services.js"

export const PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/test"

const pgProblem = await probe(PG_PORT)
const requirePg = required
if (pgProblem !== null && !requirePg) {
  process.stderr.write(`[harvester tests] PostgreSQL variants skipped: ${pgProblem}\n`)
}

export type DatabaseName = "sqlite" | "pg"

/** A migrated SQLite database in a fresh temp directory; `path` is the file. */
export const sqliteAt = (path: string): Layer.Layer<SqlClient.SqlClient, Db.DatabaseUnavailable> => Db.layerSqlite(path)

/** A fresh SQLite file; returns the layer and the directory it lives in. */
export const sqliteTemp: Layer.Layer<SqlClient.SqlClient, Db.DatabaseUnavailable> = Layer.unwrapScoped(
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const dir = yield* fs.makeTempDirectoryScoped({ prefix: "harvester-test-" })
    return Db.layerSqlite(`${dir}/nested/harvester.db`)
  }).pipe(Effect.orDie)
).pipe(Layer.provide(NodeFileSystem.layer))

const randomName = () => `harvester_test_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`

const onAdmin = (statement: (sql: PgClient.PgClient) => Effect.Effect<unknown, unknown>) =>
  Effect.scoped(Effect.flatMap(PgClient.make({ url: Redacted.make(PG_ADMIN_URL), maxConnections: 1 }), statement)).pipe(
    Effect.provide(Reactivity.layer),
    Effect.orDie
  )

/** Creates a database on the local server for the scope's lifetime (dropped, connections forced out, after). */
export const pgDatabaseScoped = Effect.gen(function*() {
  const name = randomName()
  yield* Effect.acquireRelease(
    onAdmin((sql) => sql`CREATE DATABASE ${sql(name)}`),
    () => onAdmin((sql) => sql`DROP DATABASE IF EXISTS ${sql(name)} WITH (FORCE)`)
  )
  return `postgres://postgres@127.0.0.1:5432/${name}`
})

/** A fresh, migrated PostgreSQL database. */
export const pgTemp: Layer.Layer<SqlClient.SqlClient, Db.DatabaseUnavailable> = Layer.unwrapScoped(
  Effect.map(pgDatabaseScoped, (url) => Db.layerPg(Redacted.make(url)))
)

export interface Database {
  readonly name: DatabaseName
  /** Why the variant cannot run here, or null. */
  readonly skip: string | null
  readonly layer: Layer.Layer<SqlClient.SqlClient, Db.DatabaseUnavailable>
}

/** SQLite always; PostgreSQL when reachable (always under CI=true, where unreachable fails the tests). */
export const all: ReadonlyArray<Database> = [
  { name: "sqlite", skip: null, layer: sqliteTemp },
  { name: "pg", skip: requirePg ? null : pgProblem, layer: pgTemp }
]
