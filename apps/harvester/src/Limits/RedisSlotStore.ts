/**
 * RedisSlotStore — leased concurrency slots per host in Redis, the store behind `SharedConcurrency` when `REDIS_URL`
 * is set.
 *
 * A host's holders are a sorted set of tokens scored by lease expiry (Redis `TIME` + ttl). A claim is one Lua script:
 * drop expired holders, refuse when `limit` remain, else add the token (`claimMany`: up to `count` tokens at once). A
 * heartbeat re-scores a token only if it is still there (`ZADD XX`), so a lease that expired and was dropped is never
 * resurrected. The key itself expires when its last lease would, so hosts nobody uses cost nothing. Owners a claim
 * left short wait in a second sorted set (scored by when their record lapses, same hash tag): `renew` extends a lease
 * only while nobody else waits.
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

/**
 * KEYS: holders, waiters. ARGV: limit, ttl, token prefix, count, owner, wait (0: no record). Returns how many were
 * claimed (tokens prefix:1..n); short of `count`, records `owner` as waiting until `now + wait`.
 */
const CLAIM_MANY = `${NOW}
local ttl = tonumber(ARGV[2])
local count = tonumber(ARGV[4])
local wait = tonumber(ARGV[6])
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", int(now))
local n = math.max(0, math.min(count, tonumber(ARGV[1]) - redis.call("ZCARD", KEYS[1])))
if n < count and wait > 0 then
  redis.call("ZREMRANGEBYSCORE", KEYS[2], "-inf", int(now))
  redis.call("ZADD", KEYS[2], int(now + wait), ARGV[5])
  if redis.call("PTTL", KEYS[2]) < wait then redis.call("PEXPIRE", KEYS[2], int(wait)) end
end
if n == 0 then return 0 end
for i = 1, n do redis.call("ZADD", KEYS[1], int(now + ttl), ARGV[3] .. ":" .. i) end
keepFor(ttl)
return n`

/**
 * KEYS: holders, waiters. ARGV: ttl, owner, tokens... Returns -1 when another owner waits (nothing changed), else the
 * indices (1-based, into the tokens) of the leases that were still there and are extended.
 */
const RENEW = `${NOW}
local ttl = tonumber(ARGV[1])
local waiting = redis.call("ZRANGEBYSCORE", KEYS[2], "(" .. int(now), "+inf", "LIMIT", 0, 2)
for _, owner in ipairs(waiting) do if owner ~= ARGV[2] then return -1 end end
local kept = {}
for i = 3, #ARGV do
  if redis.call("ZSCORE", KEYS[1], ARGV[i]) then
    redis.call("ZADD", KEYS[1], "XX", int(now + ttl), ARGV[i])
    kept[#kept + 1] = i - 2
  end
end
if #kept > 0 then keepFor(ttl) end
return kept`

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
const decodeRenewal = Schema.decodeUnknown(Schema.Union(Schema.Number, Schema.Array(Schema.Number)))

/** The store over the ambient {@link RedisClient}. */
export const make: Effect.Effect<SlotStore, never, RedisClient> = Effect.gen(function*() {
  const { prefix, redis } = yield* RedisClient
  const runClaim = script(redis, "claim", CLAIM)
  const runClaimMany = script(redis, "claimMany", CLAIM_MANY)
  const runHeartbeat = script(redis, "heartbeat", HEARTBEAT)
  const runRenew = script(redis, "renew", RENEW)
  const runHolders = script(redis, "holders", HOLDERS)
  const holdersKey = (key: string) => `${prefix}slots:{${key}}`
  const waitersKey = (key: string) => `${prefix}slot-waiters:{${key}}`
  const count = (operation: string) => (reply: unknown) =>
    decodeCount(reply).pipe(Effect.mapError((cause) => new LimitStoreError({ backend: "redis", operation, cause })))

  const claim: SlotStore["claim"] = ({ key, limit, token, ttlMillis }) =>
    runClaim([holdersKey(key)], [limit, Math.ceil(ttlMillis), token]).pipe(
      Effect.flatMap(count("claim")),
      Effect.map((claimed) => claimed === 1)
    )

  const claimMany: SlotStore["claimMany"] = ({ count: wanted, key, limit, owner, token, ttlMillis, waitMillis }) =>
    runClaimMany(
      [holdersKey(key), waitersKey(key)],
      [limit, Math.ceil(ttlMillis), token, wanted, owner, Math.ceil(waitMillis ?? 0)]
    ).pipe(
      Effect.flatMap(count("claimMany")),
      Effect.map((claimed) => Array.from({ length: claimed }, (_, i) => `${token}:${i + 1}`))
    )

  const renew: SlotStore["renew"] = ({ key, owner, tokens, ttlMillis }) =>
    tokens.length === 0
      ? Effect.succeed({ othersWaiting: false, kept: [] })
      : runRenew([holdersKey(key), waitersKey(key)], [Math.ceil(ttlMillis), owner, ...tokens]).pipe(
        Effect.flatMap((reply) =>
          decodeRenewal(reply).pipe(
            Effect.mapError((cause) => new LimitStoreError({ backend: "redis", operation: "renew", cause }))
          )
        ),
        Effect.map((reply) =>
          typeof reply === "number"
            ? { othersWaiting: true, kept: [] }
            : { othersWaiting: false, kept: reply.flatMap((i) => tokens[i - 1] ?? []) }
        )
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

  return { backend: "redis", claim, claimMany, renew, release, heartbeat, holders } satisfies SlotStore
})
