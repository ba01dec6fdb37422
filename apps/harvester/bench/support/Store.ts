/**
 * Store — the peers' page table (the harvester's `pages` columns, minus its job bookkeeping) on SQLite
 * (better-sqlite3, WAL, synchronous=NORMAL like the harvester) or PostgreSQL (`pg`, the driver @effect/sql-pg runs
 * on), written in batches: the plain script and Crawlee store through the same code. Also the driver's queries:
 * create/drop a benchmark database, count what a run stored.
 *
 * Neither driver ships type declarations here (and no @types package is installed), so each is loaded with
 * `createRequire` and described by the few members the benchmark calls.
 */
import { createRequire } from "node:module"
import { selectHeaders as keptHeaders } from "../../src/Jobs/KeptHeaders.js"

const require = createRequire(import.meta.url)

interface SqliteStatement {
  run(...params: ReadonlyArray<unknown>): unknown
  get(...params: ReadonlyArray<unknown>): unknown
}

interface SqliteDatabase {
  pragma(source: string): unknown
  exec(source: string): unknown
  prepare(source: string): SqliteStatement
  transaction<A extends ReadonlyArray<unknown>>(fn: (...args: A) => void): (...args: A) => void
  close(): unknown
}

interface PgPool {
  query(text: string, values?: ReadonlyArray<unknown>): Promise<{ readonly rows: ReadonlyArray<unknown> }>
  end(): Promise<void>
  on(event: "error", listener: (error: Error) => void): unknown
}

const Sqlite = require("better-sqlite3") as new(filename: string) => SqliteDatabase
const Pg = require("pg") as {
  readonly Pool: new(config: { readonly connectionString: string; readonly max: number }) => PgPool
}

/** Where a run stores: a SQLite file or a PostgreSQL database URL. */
export type Database =
  | { readonly _tag: "Sqlite"; readonly path: string }
  | { readonly _tag: "Pg"; readonly url: string }

/** `sqlite:<path>` or `postgres://...`. */
export const parseDatabase = (spec: string): Database =>
  spec.startsWith("postgres://") || spec.startsWith("postgresql://")
    ? { _tag: "Pg", url: spec }
    : { _tag: "Sqlite", path: spec.replace(/^sqlite:/, "") }

export const formatDatabase = (db: Database): string => db._tag === "Pg" ? db.url : `sqlite:${db.path}`

/** One stored page, as the harvester stores it: selected headers and the parsed body as JSON text. */
export interface PageRow {
  readonly url: string
  readonly status: number
  readonly headers: string
  readonly body: string
  readonly bytes: number
  readonly durationMillis: number
  readonly fetchedAt: number
}

const COLUMNS = "url, status, headers, body, bytes, duration_ms, fetched_at"

const tableSql = (idColumn: string) =>
  `CREATE TABLE IF NOT EXISTS pages (
    id ${idColumn},
    url TEXT NOT NULL UNIQUE,
    status INTEGER,
    headers TEXT NOT NULL,
    body TEXT,
    bytes INTEGER NOT NULL,
    duration_ms DOUBLE PRECISION NOT NULL,
    fetched_at BIGINT NOT NULL
  )`

const valuesOf = (row: PageRow): ReadonlyArray<unknown> => [
  row.url,
  row.status,
  row.headers,
  row.body,
  row.bytes,
  row.durationMillis,
  row.fetchedAt
]

export interface PageStore {
  /** Stores the rows in one transaction. */
  readonly insert: (rows: ReadonlyArray<PageRow>) => Promise<void>
  readonly close: () => Promise<void>
}

export const openStore = async (db: Database): Promise<PageStore> => {
  if (db._tag === "Sqlite") {
    const sqlite = new Sqlite(db.path)
    sqlite.pragma("journal_mode = WAL")
    sqlite.pragma("synchronous = NORMAL")
    sqlite.exec(tableSql("INTEGER PRIMARY KEY AUTOINCREMENT"))
    const statement = sqlite.prepare(`INSERT INTO pages (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)`)
    const insertAll = sqlite.transaction((rows: ReadonlyArray<PageRow>) => {
      for (const row of rows) statement.run(...valuesOf(row))
    })
    return {
      insert: async (rows) => insertAll(rows),
      close: async () => void sqlite.close()
    }
  }
  const pool = new Pg.Pool({ connectionString: db.url, max: 4 })
  await pool.query(tableSql("BIGSERIAL PRIMARY KEY"))
  return {
    // One multi-row INSERT: a single statement is a transaction of its own.
    insert: async (rows) => {
      if (rows.length === 0) return
      const placeholders = rows.map((_, row) =>
        `(${Array.from({ length: 7 }, (_, column) => `$${row * 7 + column + 1}`).join(", ")})`
      )
      await pool.query(`INSERT INTO pages (${COLUMNS}) VALUES ${placeholders.join(", ")}`, rows.flatMap(valuesOf))
    },
    close: () => pool.end()
  }
}

/**
 * Buffers rows and stores them `size` at a time; `flush` stores the rest and waits for every insert. A failed insert
 * is kept and rethrown by `flush`, so a run that lost rows fails.
 */
export const batcher = (store: PageStore, size: number) => {
  let buffer: Array<PageRow> = []
  const pending = new Set<Promise<void>>()
  let failure: unknown = undefined
  const write = (rows: ReadonlyArray<PageRow>) => {
    const done = store.insert(rows).catch((error: unknown) => {
      failure ??= error
    })
    pending.add(done)
    void done.finally(() => pending.delete(done))
  }
  return {
    add: (row: PageRow) => {
      buffer.push(row)
      if (buffer.length >= size) {
        write(buffer)
        buffer = []
      }
    },
    flush: async () => {
      if (buffer.length > 0) write(buffer)
      buffer = []
      await Promise.all(pending)
      if (failure !== undefined) return Promise.reject(failure)
    }
  }
}

/** The harvester's kept headers as its pages table stores them (JSON), for the same storage work. */
export const selectHeaders = (headers: Readonly<Record<string, unknown>>): string =>
  JSON.stringify(keptHeaders(headers))

// ---------------------------------------------------------------------------------------------------------------
// The driver's side: databases per run, and what a run stored
// ---------------------------------------------------------------------------------------------------------------

export const PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"

const withPool = async <A>(url: string, use: (pool: PgPool) => Promise<A>): Promise<A> => {
  const pool = new Pg.Pool({ connectionString: url, max: 1 })
  // `end()` resolves before its idle connection has closed; dropping the database right after terminates that
  // connection, and the pool re-emits the error: harmless then, fatal without a listener.
  pool.on("error", () => undefined)
  try {
    return await use(pool)
  } finally {
    await pool.end()
  }
}

export const createPgDatabase = (name: string) =>
  withPool(PG_ADMIN_URL, (pool) => pool.query(`CREATE DATABASE ${name}`)).then(() => undefined)

export const dropPgDatabase = (name: string) =>
  withPool(PG_ADMIN_URL, (pool) => pool.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).then(() => undefined)

/** What a run left in the database: pages without error, distinct URLs, and the harvester's job timing. */
export interface Stored {
  readonly pages: number
  readonly distinctUrls: number
  readonly failed: number
  /** The harvester's job: created → finished, in ms (null for the peers). */
  readonly jobMillis: number | null
  /** The harvester's job: created → first page stored, in ms (job and targets inserted, first claim, first fetch). */
  readonly firstPageMillis: number | null
}

const STORED_SQL = {
  peer: `SELECT COUNT(*) AS pages, COUNT(DISTINCT url) AS distinct_urls, 0 AS failed FROM pages`,
  harvester: `SELECT COUNT(*) FILTER (WHERE error IS NULL) AS pages, COUNT(DISTINCT url) AS distinct_urls,
    COUNT(*) FILTER (WHERE error IS NOT NULL) AS failed FROM pages`,
  job: `SELECT MAX(j.finished_at) - MIN(j.created_at) AS job_millis,
    (SELECT MIN(p.fetched_at) FROM pages p) - MIN(j.created_at) AS first_page_millis FROM jobs j`
}

const numberOf = (row: unknown, key: string): number | null => {
  const value = typeof row === "object" && row !== null ? (row as Record<string, unknown>)[key] : undefined
  return value === null || value === undefined ? null : Number(value)
}

export const stored = async (db: Database, contender: "peer" | "harvester"): Promise<Stored> => {
  const read = async (query: (text: string) => Promise<unknown>): Promise<Stored> => {
    const counts = await query(STORED_SQL[contender])
    const job = contender === "harvester" ? await query(STORED_SQL.job) : undefined
    return {
      pages: numberOf(counts, "pages") ?? 0,
      distinctUrls: numberOf(counts, "distinct_urls") ?? 0,
      failed: numberOf(counts, "failed") ?? 0,
      jobMillis: job === undefined ? null : numberOf(job, "job_millis"),
      firstPageMillis: job === undefined ? null : numberOf(job, "first_page_millis")
    }
  }
  if (db._tag === "Pg") return withPool(db.url, (pool) => read(async (text) => (await pool.query(text)).rows[0]))
  const sqlite = new Sqlite(db.path)
  try {
    return await read(async (text) => sqlite.prepare(text).get())
  } finally {
    sqlite.close()
  }
}
