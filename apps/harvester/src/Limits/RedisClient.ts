/**
 * RedisClient — one scoped ioredis connection for the Redis limit stores, and their Lua scripts.
 *
 * `@effect/experimental`'s Redis rate-limiter store opens a private connection inside its constructor and exports no
 * connection layer, so there is nothing of it to share; this is the same thing (ioredis, closed with the scope) made
 * shareable. Beyond ioredis it adds: a connection checked at start (an unreachable Redis fails the layer, it does not
 * queue commands forever), auto-pipelining, and scripts sent by SHA1 with a fallback to the full text after a
 * restart or `SCRIPT FLUSH` (`NOSCRIPT`).
 */
import type { Scope } from "effect"
import { Context, Effect, Layer, Redacted } from "effect"
import { Redis } from "ioredis"
import { createHash } from "node:crypto"
import { LimitStoreError } from "./LimitStore.js"

export interface RedisClient {
  readonly redis: Redis
  /** Keys of these stores start with this prefix (e.g. one per test run, or per deployment). */
  readonly prefix: string
}

export const RedisClient: Context.Tag<RedisClient, RedisClient> = Context.GenericTag<RedisClient>(
  "spindle/Limits/RedisClient"
)

export interface Options {
  readonly url: Redacted.Redacted
  /** Default "spindle:limits:". */
  readonly prefix?: string
}

const fail = (operation: string) => (cause: unknown) => new LimitStoreError({ backend: "redis", operation, cause })

/** Connects (failing with `LimitStoreError` when Redis does not answer) and quits when the scope closes. */
export const make = (options: Options): Effect.Effect<RedisClient, LimitStoreError, Scope.Scope> =>
  Effect.map(
    Effect.acquireRelease(
      Effect.suspend(() => {
        const redis = new Redis(Redacted.value(options.url), {
          lazyConnect: true,
          enableAutoPipelining: true,
          maxRetriesPerRequest: 2,
          connectTimeout: 5_000
        })
        // Connection errors surface through the commands they fail (as `LimitStoreError`, under the outage policy);
        // without a listener ioredis would also print every reconnection attempt's error.
        redis.on("error", () => {})
        return Effect.tryPromise({
          try: () => redis.connect(),
          catch: (cause) => {
            redis.disconnect()
            return fail("connect")(cause)
          }
        }).pipe(Effect.as(redis))
      }),
      (redis) => Effect.promise(() => redis.quit().catch(() => redis.disconnect()))
    ),
    (redis) => ({ redis, prefix: options.prefix ?? "spindle:limits:" })
  )

export const layer = (options: Options): Layer.Layer<RedisClient, LimitStoreError> =>
  Layer.scoped(RedisClient, make(options))

/** A Lua script run with EVALSHA, re-sent in full once if the server does not know it. */
export const script = (redis: Redis, operation: string, lua: string) => {
  const sha = createHash("sha1").update(lua).digest("hex")
  return (keys: ReadonlyArray<string>, args: ReadonlyArray<string | number>): Effect.Effect<unknown, LimitStoreError> =>
    Effect.tryPromise({
      try: () =>
        redis.evalsha(sha, keys.length, ...keys, ...args).catch((error: unknown) =>
          error instanceof Error && error.message.startsWith("NOSCRIPT")
            ? redis.eval(lua, keys.length, ...keys, ...args)
            : Promise.reject(error)
        ),
      catch: fail(operation)
    })
}
