/**
 * RedisSlotStore — leased concurrency slots per host in Redis, the store behind `SharedConcurrency` when `REDIS_URL`
 * is set.
 *
 * A host's holders are a sorted set of tokens scored by lease expiry (Redis `TIME` + ttl). A claim is one Lua script:
 * drop expired holders, refuse when `limit` remain, else add the token (`claimMany`: up to `count` tokens at once). A
 * heartbeat re-scores a token only if it is still there (`ZADD XX`), so a lease that expired and was dropped is never
 * resurrected. The key itself expires when its last lease would, so hosts nobody uses cost nothing.
 */
import { Effect, Schema } from "effect"
import type { SlotStore } from "./LimitStore.js"
import { LimitStoreError } from "./LimitStore.js"
import { RedisClient, script } from "./RedisClient.js"

const NOW = `local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function int(x) return string.format("%.0f", x) end
local function keepFor(ttl) if redis.call("PTTL", KEYS[1]) < ttl then redis.call("PEXPIRE", KEYS[1], int(ttl)) end end`

/** KEYS: holders. ARGV: limit, ttl, token. Returns 1 when claimed. */
const CLAIM = `${NOW}
local ttl = tonumber(ARGV[2])
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", int(now))
if redis.call("ZCARD", KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call("ZADD", KEYS[1], int(now + ttl), ARGV[3])
keepFor(ttl)
return 1`

/** KEYS: holders. ARGV: limit, ttl, token prefix, count. Returns how many were claimed (tokens prefix:1..n). */
const CLAIM_MANY = `${NOW}
local ttl = tonumber(ARGV[2])
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", int(now))
local n = math.min(tonumber(ARGV[4]), tonumber(ARGV[1]) - redis.call("ZCARD", KEYS[1]))
if n <= 0 then return 0 end
for i = 1, n do redis.call("ZADD", KEYS[1], int(now + ttl), ARGV[3] .. ":" .. i) end
keepFor(ttl)
return n`

/** KEYS: holders. ARGV: ttl, token. Returns 1 when the lease was still there and is extended. */
const HEARTBEAT = `${NOW}
local ttl = tonumber(ARGV[1])
local changed = redis.call("ZADD", KEYS[1], "XX", "CH", int(now + ttl), ARGV[2])
if changed == 0 and not redis.call("ZSCORE", KEYS[1], ARGV[2]) then return 0 end
keepFor(ttl)
return 1`

/** KEYS: holders. Returns the live holders. */
const HOLDERS = `${NOW}
return redis.call("ZCOUNT", KEYS[1], "(" .. int(now), "+inf")`

const decodeCount = Schema.decodeUnknown(Schema.Number)

/** The store over the ambient {@link RedisClient}. */
export const make: Effect.Effect<SlotStore, never, RedisClient> = Effect.gen(function*() {
  const { prefix, redis } = yield* RedisClient
  const runClaim = script(redis, "claim", CLAIM)
  const runClaimMany = script(redis, "claimMany", CLAIM_MANY)
  const runHeartbeat = script(redis, "heartbeat", HEARTBEAT)
  const runHolders = script(redis, "holders", HOLDERS)
  const holdersKey = (key: string) => `${prefix}slots:{${key}}`
  const count = (operation: string) => (reply: unknown) =>
    decodeCount(reply).pipe(Effect.mapError((cause) => new LimitStoreError({ backend: "redis", operation, cause })))

  const claim: SlotStore["claim"] = ({ key, limit, token, ttlMillis }) =>
    runClaim([holdersKey(key)], [limit, Math.ceil(ttlMillis), token]).pipe(
      Effect.flatMap(count("claim")),
      Effect.map((claimed) => claimed === 1)
    )

  const claimMany: SlotStore["claimMany"] = ({ count: wanted, key, limit, token, ttlMillis }) =>
    runClaimMany([holdersKey(key)], [limit, Math.ceil(ttlMillis), token, wanted]).pipe(
      Effect.flatMap(count("claimMany")),
      Effect.map((claimed) => Array.from({ length: claimed }, (_, i) => `${token}:${i + 1}`))
    )

  const release: SlotStore["release"] = ({ key, token }) =>
    Effect.tryPromise({
      try: () => redis.zrem(holdersKey(key), token),
      catch: (cause) => new LimitStoreError({ backend: "redis", operation: "release", cause })
    }).pipe(Effect.asVoid)

  // One script call per held slot; auto-pipelining sends them in one round trip.
  const heartbeat: SlotStore["heartbeat"] = ({ holders, ttlMillis }) =>
    Effect.forEach(
      holders,
      ({ key, token }) =>
        Effect.flatMap(runHeartbeat([holdersKey(key)], [Math.ceil(ttlMillis), token]), count("heartbeat")),
      { concurrency: 64 }
    ).pipe(Effect.map((extended) => extended.reduce((sum, n) => sum + n, 0)))

  const holders: SlotStore["holders"] = ({ key }) => Effect.flatMap(runHolders([holdersKey(key)], []), count("holders"))

  return { backend: "redis", claim, claimMany, release, heartbeat, holders } satisfies SlotStore
})
