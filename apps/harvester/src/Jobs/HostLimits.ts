/**
 * HostLimits — where the engine gets a job's per-host rate limiter and per-host concurrency from: shared by every
 * instance (the window and the slots in PostgreSQL or Redis, through `SharedLimits`) when several instances can run,
 * in memory (the core `RateLimiter` and `KeyedConcurrency`) when they cannot.
 *
 * The choice (`layer`): `REDIS_URL` set -> Redis; the database is PostgreSQL -> PostgreSQL; else (the SQLite file:
 * one process holds it) in memory, which costs no round trip per request. Either way a rate window is keyed by host,
 * so every job (and, shared, every instance) fetching from a host counts its starts in the host's window; precisely,
 * in the host's and the job's interval: jobs with the same interval (`5/1s` and `20/1s`) share one log,
 * each admitting a start while the log holds fewer than its own limit; jobs with different intervals keep separate
 * logs (one log cannot serve two windows: the shorter one would drop starts the longer one still counts). Per-host
 * concurrency is counted over all jobs likewise (in memory: one `KeyedConcurrency` pool), each job admitting a request
 * while fewer than its own limit are in flight at the host.
 */
import { SqlClient } from "@effect/sql"
import type { InvalidConcurrency } from "@spindle/core/KeyedConcurrency"
import * as KeyedConcurrency from "@spindle/core/KeyedConcurrency"
import type { InvalidRateLimit } from "@spindle/core/RateLimiter"
import * as RateLimiter from "@spindle/core/RateLimiter"
import type { Scope } from "effect"
import { Config, Context, Duration, Effect, Layer, Option } from "effect"
import type { LimitStoreError } from "../Limits/LimitStore.js"
import * as SharedConcurrency from "../Limits/SharedConcurrency.js"
import * as SharedLimits from "../Limits/SharedLimits.js"

export interface ConcurrencyOptions extends KeyedConcurrency.Options {
  /** How long a shared slot outlives a crashed instance (ignored in memory). */
  readonly lease?: Duration.DurationInput
  /** How long a shared slot this instance no longer uses is kept for its next request to the host (default 50 ms). */
  readonly linger?: Duration.DurationInput
  /** How long this instance may reuse a shared slot before it gives other instances a turn (default 1 s). */
  readonly maxHold?: Duration.DurationInput
}

/**
 * A worker's next request to a host follows its previous one within milliseconds (store the page, take the next
 * target): kept that long, a slot serves it without two store round trips. Others wait at most this much longer.
 */
const SLOT_LINGER = Duration.millis(50)

export interface HostLimits {
  /** Where the limits live: "memory" (this process only), or the shared store's backend. */
  readonly store: "memory" | "postgres" | "sqlite" | "redis"
  readonly rateLimiter: (options: {
    readonly limit: number
    readonly per: Duration.DurationInput
  }) => Effect.Effect<RateLimiter.RateLimiter, InvalidRateLimit, Scope.Scope>
  readonly concurrency: (
    options: ConcurrencyOptions
  ) => Effect.Effect<
    KeyedConcurrency.KeyedConcurrency,
    InvalidConcurrency | SharedConcurrency.InvalidLease,
    Scope.Scope
  >
}

export const HostLimits: Context.Tag<HostLimits, HostLimits> = Context.GenericTag<HostLimits>("spindle/HostLimits")

/** A job's view of a store shared by jobs (in memory, or by instances): a host's log per interval. */
const byInterval = <E>(
  windows: RateLimiter.RateLimiterStore<E>,
  per: Duration.DurationInput
): RateLimiter.RateLimiterStore<E> => {
  const perMillis = Option.match(Duration.decodeUnknown(per), { onNone: () => 0, onSome: Duration.toMillis })
  const keyOf = (key: string, windowMillis: number) => `${key} ${windowMillis}`
  const unsafe = windows.unsafeTryAcquire
  return {
    holds: windows.holds,
    tryAcquire: (request) => windows.tryAcquire({ ...request, key: keyOf(request.key, request.windowMillis) }),
    unsafeTryAcquire: unsafe === undefined
      ? undefined
      : (key, now, limit, windowMillis) => unsafe(keyOf(key, windowMillis), now, limit, windowMillis),
    pauseUntil: (request) => windows.pauseUntil({ ...request, key: keyOf(request.key, perMillis) })
  }
}

/**
 * Limits held by this process only: one rate window per host and interval for all jobs; a host's requests in flight
 * counted over all jobs (one `KeyedConcurrency` pool), each job admitting one while fewer than its own per-host limit
 * are in flight there.
 */
export const memory: Layer.Layer<HostLimits> = Layer.scoped(
  HostLimits,
  Effect.map(
    Effect.orDie(RateLimiter.makeMemoryStore({ idleTimeToLive: Duration.minutes(1) })),
    (windows): HostLimits => {
      const pool = KeyedConcurrency.makePool()
      return {
        store: "memory",
        rateLimiter: (options) => RateLimiter.make({ ...options, store: byInterval(windows, options.per) }),
        concurrency: ({ global, perKey }) => KeyedConcurrency.make({ perKey, global, pool })
      }
    }
  )
)

/** Limits every instance on the same store shares. */
export const shared: Layer.Layer<HostLimits, never, SharedLimits.SharedLimits> = Layer.effect(
  HostLimits,
  Effect.map(SharedLimits.SharedLimits, (limits): HostLimits => ({
    store: limits.backend,
    rateLimiter: (options) => RateLimiter.make({ ...options, store: byInterval(limits.rateStore, options.per) }),
    concurrency: (options) => SharedConcurrency.make(limits.slots, { linger: SLOT_LINGER, ...options })
  }))
)

/** `HARVESTER_LIMITS`: `auto` (default) or `memory`. */
export const ModeConfig: Config.Config<"auto" | "memory"> = Config.literal("auto", "memory")("HARVESTER_LIMITS").pipe(
  Config.withDefault("auto" as const)
)

/**
 * `HARVESTER_LIMITS=memory` keeps the limits in each process (one instance, or limits deliberately per instance);
 * otherwise (`auto`) Redis with `REDIS_URL`, else PostgreSQL when the database is, else in memory (SQLite: one
 * process holds the file).
 */
export const layer: Layer.Layer<HostLimits, LimitStoreError, SqlClient.SqlClient> = Layer.unwrapEffect(
  Effect.gen(function*() {
    const redis = yield* Effect.orDie(Config.option(Config.redacted("REDIS_URL")))
    const mode = yield* Effect.orDie(ModeConfig)
    const sql = yield* SqlClient.SqlClient
    const postgres = sql.onDialectOrElse({ pg: () => true, orElse: () => false })
    if (mode === "memory") return memory
    if (Option.isSome(redis)) return shared.pipe(Layer.provide(SharedLimits.layer))
    if (postgres) return shared.pipe(Layer.provide(SharedLimits.layerSql()))
    return memory
  })
)
