/**
 * PgSlotStore — leased concurrency slots per host in the SQL database (PostgreSQL across instances, SQLite for one),
 * the store behind `SharedConcurrency`.
 *
 * A host's slots are rows `(host, slot_no)` with `slot_no` in `0 .. limit - 1`; the primary key is the guarantee that
 * at most `limit` holders exist. A claim is one statement: pick a slot number that has no live row (in random order,
 * so concurrent claimers rarely collide) and insert it, or take it over if its lease expired
 * (`ON CONFLICT ... DO UPDATE ... WHERE expires_at <= now`). Two instances racing for one number: PostgreSQL makes
 * the second wait for the first's commit and then re-checks the condition on the committed row, so it takes nothing
 * and its caller tries again. No lock. Leases expire by the database clock (`clock_timestamp()`); one heartbeat
 * statement per instance extends the leases it holds; a sweep deletes expired rows of hosts nobody claims any more.
 * `claimMany` takes several slots of a host in that one statement (free numbers found by one anti-join against the
 * host's live rows, random order, one token each), for an instance with several callers waiting for the host.
 * A claim short of what it asked for (`waitMillis`) records its owner as waiting for the host (`limit_host_waiters`,
 * until its next poll should have renewed it); `renew` extends a holder's lease unless someone else waits, in one
 * statement. Writes commit asynchronously on PostgreSQL (see `asyncCommit`).
 */
import { SqlClient } from "@effect/sql"
import type { Statement } from "@effect/sql"
import type { Scope } from "effect"
import { Chunk, Duration, Effect, Schema } from "effect"
import type { SlotStore } from "./LimitStore.js"
import { LimitStoreError } from "./LimitStore.js"
import { asyncCommit, DbInt, storeNow } from "./schema.js"

/** Tokens per heartbeat statement: well under both databases' bound-parameter limits. */
const HEARTBEAT_CHUNK = 500

const CountRow = Schema.Struct({ n: DbInt })
const decodeCount = Schema.decodeUnknown(CountRow)
const decodeTokens = Schema.decodeUnknown(Schema.Array(Schema.Struct({ token: Schema.String })))
const decodeRenewal = Schema.decodeUnknown(Schema.Struct({ waiting: DbInt, kept: Schema.Array(Schema.String) }))

export interface Options {
  /** How often expired slot rows are deleted (default 1 minute). */
  readonly sweepInterval?: Duration.DurationInput
}

/** The store over the ambient `SqlClient` (run `ensureSchema` first); its sweep lives in the scope. */
export const make = (options: Options = {}): Effect.Effect<SlotStore, never, SqlClient.SqlClient | Scope.Scope> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const backend = sql.onDialectOrElse({ pg: () => "postgres" as const, orElse: () => "sqlite" as const })
    const fail = (operation: string) => (cause: unknown) => new LimitStoreError({ backend, operation, cause })
    const asyncWrite = asyncCommit(sql)

    const claim: SlotStore["claim"] = ({ key, limit, now, owner, token, ttlMillis }) => {
      const ttl = Math.ceil(ttlMillis)
      return sql`WITH RECURSIVE slots (n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM slots WHERE n + 1 < ${limit}),
          clock AS (SELECT ${storeNow(sql, now)} AS now)
        INSERT INTO limit_host_slots (host, slot_no, owner, token, expires_at)
        SELECT ${key}, slots.n, ${owner}, ${token}, clock.now + ${ttl} FROM slots, clock
        WHERE NOT EXISTS (
          SELECT 1 FROM limit_host_slots AS held
          WHERE held.host = ${key} AND held.slot_no = slots.n AND held.expires_at > clock.now
        ) AND ${asyncWrite}
        ORDER BY random() LIMIT 1
        ON CONFLICT (host, slot_no) DO UPDATE
          SET owner = excluded.owner, token = excluded.token, expires_at = excluded.expires_at
          WHERE limit_host_slots.expires_at <= excluded.expires_at - ${ttl}
        RETURNING slot_no`.pipe(
        Effect.map((rows) => rows.length > 0),
        Effect.mapError(fail("claim"))
      )
    }

    // The free slot numbers are found with one anti-join against the key's live rows (not one probe per number), taken
    // in random order so that instances claiming at once rarely collide, and numbered to name their tokens.
    const slotNumbers = (limit: number) =>
      sql.onDialectOrElse({
        pg: () => sql`SELECT generate_series(0, ${limit - 1}) AS n`,
        orElse: () => sql`SELECT 0 AS n UNION ALL SELECT n + 1 FROM slots WHERE n + 1 < ${limit}`
      })
    /** Records that `owner` waits for `key` until `waitMillis` from now (the store's clock). */
    const markWaiting = (key: string, owner: string, now: number, waitMillis: number) =>
      sql`INSERT INTO limit_host_waiters (host, owner, expires_at)
        SELECT ${key}, ${owner}, ${storeNow(sql, now)} + ${Math.ceil(waitMillis)} WHERE ${asyncWrite}
        ON CONFLICT (host, owner) DO UPDATE SET expires_at = excluded.expires_at`

    const claimMany: SlotStore["claimMany"] = ({ count, key, limit, now, owner, token, ttlMillis, waitMillis }) => {
      const ttl = Math.ceil(ttlMillis)
      return sql`WITH RECURSIVE slots (n) AS (${slotNumbers(limit)}),
          clock AS (SELECT ${storeNow(sql, now)} AS now),
          free AS (
            SELECT slots.n AS n, ROW_NUMBER() OVER (ORDER BY random()) AS i FROM slots
            WHERE slots.n NOT IN (
              SELECT held.slot_no FROM limit_host_slots AS held, clock
              WHERE held.host = ${key} AND held.expires_at > clock.now
            )
          )
        INSERT INTO limit_host_slots (host, slot_no, owner, token, expires_at)
        SELECT ${key}, free.n, ${owner}, ${token} || ':' || CAST(free.i AS TEXT), clock.now + ${ttl} FROM free, clock
        WHERE free.i <= ${count} AND ${asyncWrite}
        ON CONFLICT (host, slot_no) DO UPDATE
          SET owner = excluded.owner, token = excluded.token, expires_at = excluded.expires_at
          WHERE limit_host_slots.expires_at <= excluded.expires_at - ${ttl}
        RETURNING token`.pipe(
        Effect.flatMap(decodeTokens),
        Effect.map((rows) => rows.map((row) => row.token)),
        Effect.tap((tokens) =>
          tokens.length < count && waitMillis !== undefined && waitMillis > 0
            ? markWaiting(key, owner, now, waitMillis)
            : Effect.void
        ),
        Effect.mapError(fail("claimMany"))
      )
    }

    // PostgreSQL in one statement (the UPDATE runs only when nobody else waits); SQLite, which has no UPDATE in a
    // WITH, in a transaction on its single connection.
    const othersWaiting = (key: string, owner: string, now: Statement.Fragment) =>
      sql`SELECT COUNT(*) AS n FROM limit_host_waiters
        WHERE host = ${key} AND owner <> ${owner} AND expires_at > ${now}`
    const renew: SlotStore["renew"] = ({ key, now, owner, tokens, ttlMillis }) => {
      const ttl = Math.ceil(ttlMillis)
      const clock = storeNow(sql, now)
      if (tokens.length === 0) return Effect.succeed({ othersWaiting: false, kept: [] })
      const renewal: Effect.Effect<{ readonly waiting: number; readonly kept: ReadonlyArray<string> }, unknown> = sql
        .onDialectOrElse({
          pg: () =>
            sql`WITH waiting AS (${othersWaiting(key, owner, clock)}),
              renewed AS (
                UPDATE limit_host_slots SET expires_at = ${clock} + ${ttl}
                WHERE host = ${key} AND token IN ${sql.in(tokens)} AND (SELECT n FROM waiting) = 0 AND ${asyncWrite}
                RETURNING token
              )
            SELECT (SELECT n FROM waiting) AS waiting, ARRAY(SELECT token FROM renewed) AS kept`.pipe(
              Effect.flatMap((rows) => decodeRenewal(rows[0]))
            ),
          orElse: () =>
            sql.withTransaction(Effect.gen(function*() {
              const waiting = yield* Effect.flatMap(othersWaiting(key, owner, clock), (rows) => decodeCount(rows[0]))
              if (waiting.n > 0) return { waiting: waiting.n, kept: [] }
              const renewed = yield* sql`UPDATE limit_host_slots SET expires_at = ${clock} + ${ttl}
              WHERE host = ${key} AND token IN ${sql.in(tokens)} RETURNING token`.pipe(Effect.flatMap(decodeTokens))
              return { waiting: 0, kept: renewed.map((row) => row.token) }
            }))
        })
      return Effect.map(Effect.mapError(renewal, fail("renew")), ({ kept, waiting }) => ({
        othersWaiting: waiting > 0,
        kept
      }))
    }

    const release: SlotStore["release"] = ({ key, token }) =>
      sql`DELETE FROM limit_host_slots WHERE host = ${key} AND token = ${token} AND ${asyncWrite}`.pipe(
        Effect.asVoid,
        Effect.mapError(fail("release"))
      )

    // By token, not by owner alone: a row whose release failed is no longer held here and must be left to expire.
    const heartbeat: SlotStore["heartbeat"] = ({ holders, now, owner, ttlMillis }) =>
      Effect.forEach(
        Chunk.toReadonlyArray(Chunk.chunksOf(Chunk.fromIterable(holders), HEARTBEAT_CHUNK)),
        (chunk) =>
          sql`UPDATE limit_host_slots
            SET expires_at = ${storeNow(sql, now)} + ${Math.ceil(ttlMillis)}
            WHERE owner = ${owner} AND ${asyncWrite}
              AND token IN ${sql.in(Chunk.toReadonlyArray(chunk).map((holder) => holder.token))}
            RETURNING slot_no`.pipe(Effect.map((rows) => rows.length))
      ).pipe(
        Effect.map((counts) => counts.reduce((sum, n) => sum + n, 0)),
        Effect.mapError(fail("heartbeat"))
      )

    const holders: SlotStore["holders"] = ({ key, now }) =>
      sql`SELECT COUNT(*) AS n FROM limit_host_slots WHERE host = ${key} AND expires_at > ${storeNow(sql, now)}`.pipe(
        Effect.flatMap((rows) => decodeCount(rows[0])),
        Effect.map((row) => row.n),
        Effect.mapError(fail("holders"))
      )

    const clock = yield* Effect.clock
    yield* Effect.suspend(() => {
      const now = storeNow(sql, clock.unsafeCurrentTimeMillis())
      return Effect.zipRight(
        sql`DELETE FROM limit_host_slots WHERE expires_at <= ${now}`,
        sql`DELETE FROM limit_host_waiters WHERE expires_at <= ${now}`
      )
    }).pipe(
      Effect.catchAll((error) => Effect.logWarning("slot sweep failed", error)),
      Effect.delay(options.sweepInterval ?? Duration.minutes(1)),
      Effect.forever,
      Effect.forkScoped
    )

    return { backend, claim, claimMany, renew, release, heartbeat, holders } satisfies SlotStore
  })
