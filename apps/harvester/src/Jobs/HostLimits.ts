/**
 * HostLimits — where the engine gets a job's per-host rate limiter and per-host concurrency from: shared by every
 * instance (the window and the slots in PostgreSQL or Redis, through `SharedLimits`) when several instances can run,
 * in memory (the core `RateLimiter` and `KeyedConcurrency`) when they cannot.
 *
 * The choice (`layer`): `REDIS_URL` set -> Redis; the database is PostgreSQL -> PostgreSQL; else (the SQLite file:
 * one process holds it) in memory, which costs no round trip per request. Either way a limit is keyed by host, so
 * every job and every instance fetching from a host shares the host's window and slots.
 */
import { SqlClient } from "@effect/sql"
import type { InvalidConcurrency } from "@spindle/core/KeyedConcurrency"
import * as KeyedConcurrency from "@spindle/core/KeyedConcurrency"
import type { InvalidRateLimit } from "@spindle/core/RateLimiter"
import * as RateLimiter from "@spindle/core/RateLimiter"
import type { Duration, Scope } from "effect"
import { Config, Context, Effect, Layer, Option } from "effect"
import type { LimitStoreError } from "../Limits/LimitStore.js"
import * as SharedConcurrency from "../Limits/SharedConcurrency.js"
import * as SharedLimits from "../Limits/SharedLimits.js"

export interface ConcurrencyOptions extends KeyedConcurrency.Options {
  /** How long a shared slot outlives a crashed instance (ignored in memory). */
  readonly lease?: Duration.DurationInput
}

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

/** Limits held by this process only. */
export const memory: Layer.Layer<HostLimits> = Layer.succeed(HostLimits, {
  store: "memory",
  rateLimiter: (options) => RateLimiter.make(options),
  concurrency: ({ global, perKey }) => KeyedConcurrency.make({ perKey, global })
})

/** Limits every instance on the same store shares. */
export const shared: Layer.Layer<HostLimits, never, SharedLimits.SharedLimits> = Layer.effect(
  HostLimits,
  Effect.map(SharedLimits.SharedLimits, (limits): HostLimits => ({
    store: limits.backend,
    rateLimiter: (options) => RateLimiter.make({ ...options, store: limits.rateStore }),
    concurrency: (options) => SharedConcurrency.make(limits.slots, options)
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
