/**
 * RedisRateLimiterStore — the core `RateLimiter`'s exact sliding window shared by every instance through Redis (used
 * when `REDIS_URL` is set).
 *
 * Why not `@effect/experimental`'s Redis `RateLimiterStore`: it offers a fixed window (a counter whose TTL grows by
 * `window / limit` per token) and a token bucket, and both admit up to `2 × limit` starts in some interval of length
 * `window` (a burst at the end of one window plus one at the start of the next, or a full bucket plus its refill).
 * Our limiter promises that no interval of length `per` holds more than `limit` starts, which needs the log of start
 * instants: here a sorted set per key, scored by start instant, checked and appended by one Lua script (atomic in
 * Redis): `ZREMRANGEBYSCORE` drops starts at or before `now - window`, `ZCARD` counts the rest, `ZADD` records up to
 * `count` starts (a block for the limiter's whole line, in one round trip) and `PEXPIRE` lets an idle key vanish after
 * one window. A pause is a plain key with a `PX` expiry, raised
 * (never lowered) by a second script. "Now" is the Redis server's `TIME`, one clock for every instance; a `retryAt`
 * is translated into the caller's clock as `callerNow + (redisRetryAt - redisNow)`, a pause is sent as a delay.
 * Keys use a hash tag (`{key}`) so both keys of a host live in one cluster slot.
 */
import { Effect, Schema } from "effect"
import { randomUUID } from "node:crypto"
import type { SharedRateLimiterStore } from "./LimitStore.js"
import { grantedDecision, LimitStoreError } from "./LimitStore.js"
import { RedisClient, script } from "./RedisClient.js"

const NOW = `local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function int(x) return string.format("%.0f", x) end`

/**
 * KEYS: starts, pause. ARGV: limit, window, member prefix, count, hold. Returns {1, now, granted, retryAt (0 when all
 * were granted)} or {0, now, retryAt}. The granted starts are scored `now + hold` (`RateLimiterStore.holds`).
 */
const TRY_ACQUIRE = `${NOW}
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local count = tonumber(ARGV[4]) or 1
local hold = tonumber(ARGV[5]) or 0
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", int(now - window))
local retryAt = 0
local paused = tonumber(redis.call("GET", KEYS[2]) or "0")
if paused > now then retryAt = paused end
local live = redis.call("ZCARD", KEYS[1])
local function oldestFree()
  local oldest = redis.call("ZRANGE", KEYS[1], 0, 0, "WITHSCORES")
  return tonumber(oldest[2]) + window
end
if live >= limit then
  local free = oldestFree()
  if free > retryAt then retryAt = free end
end
if retryAt > 0 then return { 0, now, retryAt } end
local granted = math.min(math.max(count, 1), limit - live)
for i = 1, granted do redis.call("ZADD", KEYS[1], int(now + hold), ARGV[3] .. ":" .. i) end
if redis.call("PTTL", KEYS[1]) < window + hold then redis.call("PEXPIRE", KEYS[1], int(window + hold)) end
if granted < count then retryAt = oldestFree() end
return { 1, now, granted, retryAt }`

/** KEYS: pause. ARGV: delay. */
const PAUSE = `${NOW}
local untilMs = now + tonumber(ARGV[1])
local current = tonumber(redis.call("GET", KEYS[1]) or "0")
if untilMs > current then redis.call("SET", KEYS[1], int(untilMs), "PX", int(untilMs - now)) end
return 1`

const Reply = Schema.Union(
  Schema.Tuple(Schema.Literal(1), Schema.Number, Schema.Number, Schema.Number),
  Schema.Tuple(Schema.Literal(0), Schema.Number, Schema.Number)
)
const decodeReply = Schema.decodeUnknown(Reply)

/** The store over the ambient {@link RedisClient}. */
export const make: Effect.Effect<SharedRateLimiterStore, never, RedisClient> = Effect.gen(function*() {
  const { prefix, redis } = yield* RedisClient
  const runTryAcquire = script(redis, "tryAcquire", TRY_ACQUIRE)
  const runPause = script(redis, "pauseUntil", PAUSE)
  const instance = randomUUID()
  let sequence = 0
  const startsKey = (key: string) => `${prefix}rate:{${key}}:starts`
  const pauseKey = (key: string) => `${prefix}rate:{${key}}:pause`

  const tryAcquire: SharedRateLimiterStore["tryAcquire"] = (
    { count = 1, holdMillis = 0, key, limit, now, windowMillis }
  ) =>
    // The members are drawn when the effect runs: one that is run twice (a retry) records its starts twice, never once.
    Effect.suspend(() =>
      runTryAcquire(
        [startsKey(key), pauseKey(key)],
        [limit, Math.ceil(windowMillis), `${instance}:${sequence++}`, count, Math.ceil(holdMillis)]
      )
    ).pipe(
      Effect.flatMap((reply) =>
        decodeReply(reply).pipe(
          Effect.mapError((cause) => new LimitStoreError({ backend: "redis", operation: "tryAcquire", cause }))
        )
      ),
      Effect.map((reply) =>
        reply[0] === 1
          ? grantedDecision(reply[1], count, reply[2], now + (reply[3] - reply[1]))
          : { allowed: false, retryAt: now + (reply[2] - reply[1]) } as const
      )
    )

  const pauseUntil: SharedRateLimiterStore["pauseUntil"] = ({ key, now, until }) =>
    until <= now ? Effect.void : Effect.asVoid(runPause([pauseKey(key)], [Math.ceil(until - now)]))

  return { backend: "redis", holds: true, tryAcquire, pauseUntil } satisfies SharedRateLimiterStore
})
