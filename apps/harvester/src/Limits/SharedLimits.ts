/**
 * SharedLimits — the store that makes per-host rate and concurrency limits hold across harvester instances: the SQL
 * database by default (PostgreSQL with `DATABASE_URL`, else the SQLite file — one code path), Redis when `REDIS_URL`
 * is set. Limiters themselves stay the core ones: `rateLimiter` is `RateLimiter.make` over the shared window store,
 * `concurrency` is a {@link SharedConcurrency.SharedConcurrency} (a `KeyedConcurrency` in front of leased slots).
 *
 * Beyond `@effect/experimental`'s `RateLimiter` stores (whose Redis store is a fixed window or a token bucket, both
 * letting up to twice the limit through around a window edge): an exact sliding-window log, concurrency slots, and
 * no store round trip per request for a busy host — the rate store grants a block of starts for a whole waiting line
 * per call, and an instance keeps a slot while it has requests for the host (see SharedConcurrency).
 */
import { SqlClient } from "@effect/sql"
import type { InvalidConcurrency } from "@spindle/core/KeyedConcurrency"
import * as RateLimiter from "@spindle/core/RateLimiter"
import type { Duration, Scope } from "effect"
import { Config, Context, Effect, Layer, Option } from "effect"
import type { Backend, SharedRateLimiterStore, SlotStore } from "./LimitStore.js"
import { LimitStoreError, resilient } from "./LimitStore.js"
import * as PgRateLimiterStore from "./PgRateLimiterStore.js"
import * as PgSlotStore from "./PgSlotStore.js"
import * as RedisClient from "./RedisClient.js"
import * as RedisRateLimiterStore from "./RedisRateLimiterStore.js"
import * as RedisSlotStore from "./RedisSlotStore.js"
import { ensureSchema } from "./schema.js"
import * as SharedConcurrency from "./SharedConcurrency.js"

export interface SharedLimits {
  readonly backend: Backend
  /** The shared sliding window for `RateLimiter.make({ ..., store })`; outages are retried, then a defect. */
  readonly rateStore: SharedRateLimiterStore<never>
  readonly slots: SlotStore
}

export const SharedLimits: Context.Tag<SharedLimits, SharedLimits> = Context.GenericTag<SharedLimits>(
  "spindle/SharedLimits"
)

/** A per-key (per-host) rate limiter whose window every instance shares. */
export const rateLimiter = (
  options: Omit<RateLimiter.Options, "store" | "idleTimeToLive">
): Effect.Effect<RateLimiter.RateLimiter, RateLimiter.InvalidRateLimit, SharedLimits | Scope.Scope> =>
  Effect.flatMap(SharedLimits, ({ rateStore }) => RateLimiter.make({ ...options, store: rateStore }))

/** Per-key (per-host) concurrency bounded over every instance (`global` bounds this instance only). */
export const concurrency = (
  options: SharedConcurrency.Options
): Effect.Effect<
  SharedConcurrency.SharedConcurrency,
  SharedConcurrency.InvalidLease | InvalidConcurrency,
  SharedLimits | Scope.Scope
> => Effect.flatMap(SharedLimits, ({ slots }) => SharedConcurrency.make(slots, options))

export interface SweepOptions {
  /** How often the SQL stores delete expired rows (default 1 minute). */
  readonly sweepInterval?: Duration.DurationInput
}

/** The stores in the ambient SQL database (tables created if missing). */
export const layerSql = (options: SweepOptions = {}): Layer.Layer<SharedLimits, LimitStoreError, SqlClient.SqlClient> =>
  Layer.scoped(
    SharedLimits,
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const backend = sql.onDialectOrElse({ pg: () => "postgres" as const, orElse: () => "sqlite" as const })
      yield* ensureSchema.pipe(
        Effect.mapError((cause) => new LimitStoreError({ backend, operation: "ensureSchema", cause }))
      )
      const rateStore = yield* PgRateLimiterStore.make(options)
      const slots = yield* PgSlotStore.make(options)
      return { backend, rateStore: resilient(rateStore), slots }
    })
  )

/** The stores in Redis; fails with `LimitStoreError` when Redis does not answer at start. */
export const layerRedis = (options: RedisClient.Options): Layer.Layer<SharedLimits, LimitStoreError> =>
  Layer.effect(
    SharedLimits,
    Effect.gen(function*() {
      const rateStore = yield* RedisRateLimiterStore.make
      const slots = yield* RedisSlotStore.make
      return { backend: "redis" as const, rateStore: resilient(rateStore), slots }
    })
  ).pipe(Layer.provide(RedisClient.layer(options)))

/** Redis when `REDIS_URL` is set (keys prefixed by `REDIS_PREFIX`, default "spindle:limits:"), else the SQL database. */
export const layer: Layer.Layer<SharedLimits, LimitStoreError, SqlClient.SqlClient> = Layer.unwrapEffect(
  Effect.map(
    Effect.orDie(Config.all({
      url: Config.option(Config.redacted("REDIS_URL")),
      prefix: Config.option(Config.string("REDIS_PREFIX"))
    })),
    ({ prefix, url }) =>
      Option.match(url, {
        onNone: () => layerSql(),
        onSome: (url) =>
          layerRedis(Option.match(prefix, { onNone: () => ({ url }), onSome: (prefix) => ({ url, prefix }) }))
      })
  )
)
