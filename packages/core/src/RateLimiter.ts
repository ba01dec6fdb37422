/**
 * An exact sliding-window rate limiter: per key (per host), FIFO-fair, pausable until an instant (Retry-After).
 *
 * What it adds over `effect/RateLimiter`: that one is a single token bucket or fixed window for everything (no keys,
 * no pause), and both algorithms let up to `2 × limit` starts through within one interval when a burst straddles a
 * refill or window boundary (so do `@effect/experimental`'s, whose memory store also never forgets a key). Here no
 * half-open interval of length `per` ever holds more than `limit` starts, for each key separately; waiters of a key
 * are served in arrival order; `pauseUntil` holds a key back until an instant; an interrupted waiter takes no slot;
 * idle keys are forgotten, so millions of hosts cost memory only while active. An uncontended acquire is a synchronous
 * check of a ring buffer of start instants: no fiber, no semaphore. Waiters of a key share one timer.
 *
 * The window lives behind a {@link RateLimiterStore} shaped like `@effect/experimental`'s `RateLimiterStore`: a
 * sliding-window log keyed by key, `tryAcquire -> allowed | retryAt`, so a PostgreSQL or Redis store can make several
 * processes share one limit. The in-memory store is the default. Unlike `@effect/experimental`'s, a store can grant a
 * block of starts in one call (`count`): a shared store costs a round trip per decision, so the head of a key's line
 * asks for as many starts as there are callers in the line and hands the granted ones to the first of them at once.
 * Each granted start is recorded at the instant of the decision and goes to a caller that goes on at once; a caller
 * interrupted before it runs wastes its start (it is never handed to a later caller), so the window stays exact. A
 * store that `holds` can also grant starts reserved for callers to come, recorded at the end of their reservation (see
 * `make`), so that a caller of a busy key mostly starts at once (`tryAcquireNow`) with a remote store too.
 *
 * Answers the tutorial's "Rate-Limited API Client": its limiter deadlocks at the 6th request, because it awaits
 * `self.acquire()` recursively inside `async with self.lock`, re-entering a non-reentrant `asyncio.Lock` it holds
 * (see examples/rate-limited-fetch.ts).
 */
import type { Scope } from "effect"
import { Context, Data, Duration, Effect, FiberSet, Layer, Option } from "effect"

/** Bad options: `field` names the option, `reason` says what is wrong with `value`. */
export class InvalidRateLimit extends Data.TaggedError("InvalidRateLimit")<{
  readonly field: "limit" | "per" | "idleTimeToLive"
  readonly value: unknown
  readonly reason: string
}> {
  override get message() {
    return `invalid rate limit: ${this.field} ${this.reason} (got ${String(this.value)})`
  }
}

/**
 * A store's answer: `granted` starts (default 1; at least 1 and at most the `count` asked for) are recorded at `now`,
 * with, when fewer were granted than asked, the earliest instant `retryAt` another can be; or none is, until `retryAt`
 * (epoch millis) at the earliest.
 */
export type Decision =
  | { readonly allowed: true; readonly granted?: number; readonly retryAt?: number }
  | { readonly allowed: false; readonly retryAt: number }

const allowed: Decision = { allowed: true }

/**
 * What a limiter asks its store for: up to `count` (default 1) starts of `key` at `now`. With `holdMillis` (only to a
 * store that `holds`), the caller may use the starts until `now + holdMillis`: see `RateLimiterStore.holds`.
 */
export interface TryAcquireRequest {
  readonly key: string
  readonly now: number
  readonly limit: number
  readonly windowMillis: number
  readonly count?: number | undefined
  readonly holdMillis?: number | undefined
}

/**
 * The shared state of a limiter: a sliding-window log of start instants per key, plus a pause instant per key.
 * Both operations must be atomic per key. `now` is the caller's clock; a store shared by several processes may use
 * its own clock instead (then `retryAt` is in that clock too). Entries whose window is empty and whose pause has
 * passed must not be kept forever (expire them, e.g. with a TTL of the window).
 */
export interface RateLimiterStore<E = never> {
  /**
   * Drops the key's starts at or before `now - windowMillis`; then refuses if `now` is before the key's pause or
   * `limit` starts remain (with the earliest instant a retry can succeed), else records `min(count, limit - remaining)`
   * starts at `now` (`count` defaults to 1; a store that ignores it grants one, which is correct, only slower).
   */
  readonly tryAcquire: (request: TryAcquireRequest) => Effect.Effect<Decision, E>
  /**
   * Whether `tryAcquire` honours `holdMillis`: it then records the starts it grants at `now + holdMillis` (their
   * latest possible use), so that they count in every window any of their uses can fall into, and it counts every
   * recorded start later than `now - windowMillis`, those recorded ahead included. Any start used between `now` and
   * `now + holdMillis` then keeps every window exact (the limiter keeps such starts for callers to come: a
   * reservation).
   */
  readonly holds?: boolean | undefined
  /**
   * `tryAcquire` answered on the spot, for a store in this process: the limiter then checks without building an effect
   * (the uncontended acquire is the hot path).
   */
  readonly unsafeTryAcquire?: ((key: string, now: number, limit: number, windowMillis: number) => Decision) | undefined
  /** No start for `key` before `until`; a later instant extends the pause, an earlier one never shortens it. */
  readonly pauseUntil: (request: {
    readonly key: string
    readonly until: number
    readonly now: number
  }) => Effect.Effect<void, E>
}

/** The in-memory store: `size` counts the keys it holds (for leak tests). */
export interface MemoryStore extends RateLimiterStore {
  readonly size: Effect.Effect<number>
}

export interface Options<E = never> {
  /** Starts allowed per key in any interval of length `per`: a positive integer. */
  readonly limit: number
  readonly per: Duration.DurationInput
  /**
   * How often the default in-memory store forgets keys whose window has emptied (default: `per`): a key idle for
   * `per + idleTimeToLive` holds no memory. A custom `store` expires its own entries.
   */
  readonly idleTimeToLive?: Duration.DurationInput | undefined
  readonly store?: RateLimiterStore<E> | undefined
}

export interface RateLimiter<E = never> {
  readonly limit: number
  readonly per: Duration.Duration
  /** Waits, first come first served among the callers of `key`, until a start for `key` is allowed, and takes it. */
  readonly acquire: (key: string) => Effect.Effect<void, E>
  /**
   * Takes a start for `key` at once and returns `true` when the store answers synchronously (the memory store), no
   * caller of `key` is waiting (none is overtaken) and the window has room; `false` otherwise, having taken nothing
   * (then `acquire`). For callback code on a hot path (`HttpFetcher.prepareLane`).
   */
  readonly tryAcquireNow: (key: string) => boolean
  /** No start for `key` before `epochMillis` (Retry-After); a later pause extends, an earlier one never shortens. */
  readonly pauseUntil: (key: string, epochMillis: number) => Effect.Effect<void, E>
  /** `acquire(key)`, then the effect. */
  readonly withPermit: (key: string) => <A, E2, R>(effect: Effect.Effect<A, E2, R>) => Effect.Effect<A, E | E2, R>
  /** Keys that have callers waiting (their per-key queue and timer exist only while this is so). */
  readonly waitingKeys: Effect.Effect<number>
}

/** The limiter as a service, for an application that shares one limiter (keyed by host) between its parts. */
export const RateLimiter: Context.Tag<RateLimiter, RateLimiter> = Context.GenericTag<RateLimiter>("spindle/RateLimiter")

/** Starts of one key, oldest first, in a ring buffer of (instant, starts) that grows to the most instants seen. */
class StartLog {
  /** Instants, oldest first, in a ring; several starts at one instant share an entry (`counts`). */
  times: Array<number> = []
  counts: Array<number> = []
  head = 0
  entries = 0
  /** Starts in the log. */
  count = 0
  startsExpireAt = 0
  pausedUntil = 0

  dropUpTo(cutoff: number) {
    const times = this.times
    while (this.entries > 0 && times[this.head]! <= cutoff) {
      this.count -= this.counts[this.head]!
      this.head = this.head + 1 === times.length ? 0 : this.head + 1
      this.entries--
    }
  }

  oldest() {
    return this.times[this.head]!
  }

  push(instant: number) {
    this.pushMany(instant, 1)
  }

  /** Records `n` starts at `instant` (never earlier than the last one: the clock only moves on). */
  pushMany(instant: number, n: number) {
    this.count += n
    const times = this.times
    if (this.entries > 0) {
      const last = this.head + this.entries - 1
      const at = last < times.length ? last : last - times.length
      if (times[at] === instant) {
        this.counts[at]! += n
        return
      }
    }
    if (this.entries < times.length) {
      const tail = this.head + this.entries
      const at = tail < times.length ? tail : tail - times.length
      times[at] = instant
      this.counts[at] = n
    } else {
      if (this.head !== 0) {
        this.times = times.slice(this.head).concat(times.slice(0, this.head))
        this.counts = this.counts.slice(this.head).concat(this.counts.slice(0, this.head))
        this.head = 0
      }
      this.times.push(instant)
      this.counts.push(n)
    }
    this.entries++
  }
}

const positiveDuration = (field: "per" | "idleTimeToLive", input: Duration.DurationInput) => {
  const decoded = Duration.decodeUnknown(input)
  if (Option.isNone(decoded)) {
    return Effect.fail(new InvalidRateLimit({ field, value: input, reason: "is not a duration" }))
  }
  const millis = Duration.toMillis(decoded.value)
  return Duration.isFinite(decoded.value) && millis > 0
    ? Effect.succeed(decoded.value)
    : Effect.fail(new InvalidRateLimit({ field, value: input, reason: "must be a positive, finite duration" }))
}

/**
 * The default store. Keys sit in a `Map` in the order they were last written, so the sweep that runs every
 * `idleTimeToLive` walks only the stale front: its cost is the number of keys it forgets, not the number it holds.
 */
export const makeMemoryStore = (options: {
  readonly idleTimeToLive: Duration.DurationInput
}): Effect.Effect<MemoryStore, InvalidRateLimit, Scope.Scope> =>
  Effect.gen(function*() {
    const idleTimeToLive = yield* positiveDuration("idleTimeToLive", options.idleTimeToLive)
    const clock = yield* Effect.clock
    const logs = new Map<string, StartLog>()
    let lastWritten: string | undefined

    const written = (key: string, log: StartLog) => {
      if (key !== lastWritten) {
        logs.delete(key)
        logs.set(key, log)
        lastWritten = key
      }
    }

    const sweep = () => {
      const now = clock.unsafeCurrentTimeMillis()
      let budget = logs.size
      for (const [key, log] of logs) {
        if (budget-- === 0) break
        if (log.startsExpireAt > now) break
        logs.delete(key)
        if (log.pausedUntil > now) logs.set(key, log)
      }
      lastWritten = undefined
    }

    yield* Effect.sync(sweep).pipe(Effect.delay(idleTimeToLive), Effect.forever, Effect.forkScoped)

    const unsafeTryAcquire = (key: string, now: number, limit: number, windowMillis: number): Decision => {
      let log = logs.get(key)
      if (log === undefined) {
        log = new StartLog()
        logs.set(key, log)
        lastWritten = key
      } else if (now < log.pausedUntil) {
        return { allowed: false, retryAt: log.pausedUntil }
      } else {
        log.dropUpTo(now - windowMillis)
        if (log.count >= limit) return { allowed: false, retryAt: log.oldest() + windowMillis }
        written(key, log)
      }
      log.push(now)
      log.startsExpireAt = Math.max(log.startsExpireAt, now + windowMillis)
      return allowed
    }

    const tryAcquireMany = (
      key: string,
      now: number,
      limit: number,
      windowMillis: number,
      count: number,
      holdMillis: number
    ): Decision => {
      const log = logs.get(key) ?? new StartLog()
      if (now < log.pausedUntil) return { allowed: false, retryAt: log.pausedUntil }
      log.dropUpTo(now - windowMillis)
      const free = limit - log.count
      if (free <= 0) return { allowed: false, retryAt: log.oldest() + windowMillis }
      const granted = Math.min(count, free)
      // Recorded at their latest possible use; an instant earlier than the log's last one (a start taken since on
      // the spot) only keeps older starts counted a little longer.
      log.pushMany(now + holdMillis, granted)
      log.startsExpireAt = Math.max(log.startsExpireAt, now + holdMillis + windowMillis)
      written(key, log)
      return granted === count
        ? { allowed: true, granted }
        : { allowed: true, granted, retryAt: log.oldest() + windowMillis }
    }

    return {
      size: Effect.sync(() => logs.size),
      unsafeTryAcquire,
      holds: true,
      tryAcquire: ({ count, holdMillis, key, limit, now, windowMillis }) =>
        Effect.sync(() =>
          (count === undefined || count <= 1) && !holdMillis
            ? unsafeTryAcquire(key, now, limit, windowMillis)
            : tryAcquireMany(key, now, limit, windowMillis, count ?? 1, holdMillis ?? 0)
        ),
      pauseUntil: ({ key, now, until }) =>
        Effect.sync(() => {
          if (until <= now) return
          const log = logs.get(key) ?? new StartLog()
          log.pausedUntil = Math.max(log.pausedUntil, until)
          written(key, log)
        })
    } satisfies MemoryStore
  })

/** The most starts the head of a line asks a store for at once for its line (reserved ones come on top). */
const MAX_BLOCK = 256
/** The most starts reserved per request to the store. */
const MAX_RESERVED = 1024
/** How long reserved starts last (at most: a twentieth of the window). */
const HOLD_MILLIS = 250
/** Keys with reservation state before the expired ones are dropped. */
const MAX_RESERVES = 10_000

/**
 * A key's reserved starts: `left` usable until `until`, then the block a refill brought (`next`, usable until
 * `nextUntil`); the callers who asked for a start since the last request to the store (made at `since`); the size of
 * the last block granted (a refill starts when half of it is used); whether a refill is under way, and the instant
 * before which none starts (the store refused the last one).
 */
interface Reserve {
  left: number
  until: number
  next: number
  nextUntil: number
  asked: number
  since: number
  block: number
  refilling: boolean
  refillAfter: number
}

/**
 * A caller in a key's line. `resume` is set while it waits for its turn; `next` holds what it was handed before it
 * started waiting (go on with a granted start, or lead the line); `granted` once it was handed a start.
 */
interface Waiter<E> {
  resume: ((effect: Effect.Effect<void, E>) => void) | undefined
  next: Effect.Effect<void, E> | undefined
  granted: boolean
}

/** A key's line: its waiters in arrival order (the first is the head), and when the head may ask the store again. */
interface Line<E> {
  readonly waiters: Set<Waiter<E>>
  retryAt: number | undefined
}

const first = <A>(set: Set<A>): A | undefined => set.values().next().value

const handTo = <E>(waiter: Waiter<E>, effect: Effect.Effect<void, E>) => {
  const resume = waiter.resume
  if (resume === undefined) {
    waiter.next = effect
  } else {
    waiter.resume = undefined
    resume(effect)
  }
}

/**
 * A limiter allowing `limit` starts per key in any interval of length `per`. The scope holds the default store's
 * sweeper.
 *
 * Callers of a key that cannot start at once form a line (with a store that cannot answer on the spot, every caller
 * joins it). Only its head asks the store, for as many starts as the line holds (at most 256), and waits for the
 * store's `retryAt` while refused (one timer per key). The granted starts go to the head and the callers right behind
 * it, which go on at once; the next caller becomes the head and asks in turn.
 *
 * Reservations, with a store that cannot answer on the spot but `holds`: the head also asks for the starts the key's
 * callers are likely to want within the next `hold` (as many as asked for it since its last request, at most the
 * share of the limit a `hold` is of the window: none for a low limit), recorded at the end of the hold; the extra
 * ones are kept here, and a caller of the key takes one at once (`acquire` with no effect to wait for,
 * `tryAcquireNow`), until the hold ends. Once half of a block is used, the next is asked for in the background (a
 * fiber of the limiter's scope), so callers starting at once keep doing so without waiting for the store. A pause set
 * here drops them; one set through another process lets them run out (at most `hold`). Unused ones are wasted, as a
 * start handed to an interrupted caller is.
 */
export const make = <E = never>(options: Options<E>): Effect.Effect<RateLimiter<E>, InvalidRateLimit, Scope.Scope> =>
  Effect.gen(function*() {
    const limit = options.limit
    if (!Number.isSafeInteger(limit) || limit < 1) {
      return yield* new InvalidRateLimit({ field: "limit", value: limit, reason: "must be a positive integer" })
    }
    const per = yield* positiveDuration("per", options.per)
    const windowMillis = Duration.toMillis(per)
    const store: RateLimiterStore<E> = options.store ??
      (yield* makeMemoryStore({ idleTimeToLive: options.idleTimeToLive ?? per }))
    const clock = yield* Effect.clock
    const lines = new Map<string, Line<E>>()

    const decide = store.unsafeTryAcquire
    const holdMillis = Math.min(HOLD_MILLIS, Math.floor(windowMillis / 4))
    const mostReserved = Math.min(MAX_RESERVED, Math.floor((limit * holdMillis) / windowMillis))
    const reserving = decide === undefined && store.holds === true && holdMillis > 0 && mostReserved > 0
    /** Per key: starts reserved (until when), and how many callers asked since the last request to the store. */
    const reserves = new Map<string, Reserve>()

    const reserveOf = (key: string) => {
      let reserve = reserves.get(key)
      if (reserve === undefined) {
        if (reserves.size >= MAX_RESERVES) {
          const now = clock.unsafeCurrentTimeMillis()
          for (const [other, old] of reserves) {
            if (old.until <= now && old.nextUntil <= now && !old.refilling) reserves.delete(other)
          }
        }
        reserve = {
          left: 0,
          until: 0,
          next: 0,
          nextUntil: 0,
          asked: 0,
          since: clock.unsafeCurrentTimeMillis(),
          block: 0,
          refilling: false,
          refillAfter: 0
        }
        reserves.set(key, reserve)
      }
      return reserve
    }
    /**
     * Keeps `granted` starts, recorded at `until`, for callers to come: the current block when it is used up or over,
     * else the next one. (Two blocks at once, should a refill and a head's request both land: the next block takes
     * the earlier end of the two, so no start is used after the instant it was recorded at.)
     */
    const keep = (reserve: Reserve, granted: number, until: number, now: number) => {
      if (granted <= 0) return
      reserve.block = granted
      if (reserve.left === 0 || now >= reserve.until) {
        reserve.left = granted
        reserve.until = until
      } else if (reserve.next === 0 || now >= reserve.nextUntil) {
        reserve.next = granted
        reserve.nextUntil = until
      } else {
        reserve.next += granted
        reserve.nextUntil = Math.min(reserve.nextUntil, until)
      }
    }
    /** Takes up to `n` reserved starts of `key`; how many it took. */
    const takeReserved = (key: string, n: number, now: number) => {
      const reserve = reserves.get(key)
      if (reserve === undefined) return 0
      if (reserve.left === 0 || now >= reserve.until) {
        reserve.left = now < reserve.nextUntil ? reserve.next : 0
        reserve.until = reserve.nextUntil
        reserve.next = 0
        reserve.nextUntil = 0
        if (reserve.left === 0) return 0
      }
      const taken = Math.min(n, reserve.left)
      reserve.left -= taken
      return taken
    }
    /** The starts the key's callers are likely to want within a hold: as many as they asked per ms since `since`. */
    const wanted = (reserve: Reserve, now: number) =>
      reserve.asked === 0
        ? 0
        : Math.min(mostReserved, Math.ceil((reserve.asked * holdMillis) / Math.max(1, now - reserve.since)))

    /** Store requests started from plain code (refills): run here, interrupted with the scope. */
    const background = yield* FiberSet.make<void>()
    const runInBackground = yield* FiberSet.runtime(background)<never>()

    /**
     * Asks the store, in the background, for the next block of a key whose callers start at once from its reserve,
     * once half of the last block is used: the reserve is refilled before it runs out, so those callers never wait
     * for a round trip to the store (nor fall back to the line). A refusal stops refills until its `retryAt` (the
     * line takes over); a failure is left for the line to meet.
     */
    const refill = (key: string, reserve: Reserve, now: number) => {
      if (reserve.refilling || now < reserve.refillAfter || reserve.left * 2 > reserve.block) return
      if (reserve.next > 0 && now < reserve.nextUntil) return
      const want = wanted(reserve, now)
      if (want === 0) return
      reserve.asked = 0
      reserve.since = now
      reserve.refilling = true
      runInBackground(
        store.tryAcquire({ key, now, limit, windowMillis, count: want, holdMillis }).pipe(
          Effect.matchCause({
            onFailure: () => {
              reserve.refillAfter = now + holdMillis
            },
            onSuccess: (decision) => {
              if (decision.allowed) keep(reserve, decision.granted ?? 1, now + holdMillis, now)
              else reserve.refillAfter = decision.retryAt
            }
          }),
          Effect.ensuring(Effect.sync(() => {
            reserve.refilling = false
          }))
        )
      )
    }

    /**
     * A caller of `key` asks for a start: counted (for the next request's reservation), and given a reserved one
     * (which may start a refill).
     */
    const askReserved = (key: string) => {
      const reserve = reserveOf(key)
      reserve.asked++
      if (lines.has(key)) return false
      const now = clock.unsafeCurrentTimeMillis()
      if (takeReserved(key, 1, now) === 0) return false
      refill(key, reserve, now)
      return true
    }

    const leave = (key: string, line: Line<E>, waiter: Waiter<E>) => {
      if (waiter.granted) return
      const wasHead = first(line.waiters) === waiter
      line.waiters.delete(waiter)
      if (!wasHead) return
      const next = first(line.waiters)
      if (next === undefined) {
        if (lines.get(key) === line) lines.delete(key)
      } else {
        const retryAt = line.retryAt
        line.retryAt = undefined
        handTo(next, lead(key, line, retryAt))
      }
    }

    /** The head of a key's line: asks the store for the line, sleeping until `retryAt` while refused. */
    const lead = (key: string, line: Line<E>, retryAt: number | undefined): Effect.Effect<void, E> =>
      Effect.suspend(() => {
        const now = clock.unsafeCurrentTimeMillis()
        if (retryAt !== undefined && retryAt > now) {
          return Effect.zipRight(clock.sleep(Duration.millis(retryAt - now)), lead(key, line, undefined))
        }
        /** The head (first in the line) keeps one start; the callers right behind it get the others. */
        const handOut = (starts: number) => {
          let handed = 0
          for (const waiter of line.waiters) {
            if (handed === starts) break
            if (handed++ === 0) continue
            line.waiters.delete(waiter)
            waiter.granted = true
            handTo(waiter, Effect.void)
          }
          return handed
        }
        // Starts reserved earlier go to the line first.
        const reserved = reserving ? takeReserved(key, Math.min(line.waiters.size, MAX_BLOCK), now) : 0
        if (reserved > 0) {
          handOut(reserved)
          return Effect.void
        }
        // As many as the key's callers asked for per millisecond since the last request, for a whole hold.
        const asked = reserving ? reserveOf(key) : undefined
        const want = asked === undefined ? 0 : wanted(asked, now)
        const waiting = Math.min(line.waiters.size, MAX_BLOCK)
        const count = waiting + want
        if (asked !== undefined) {
          asked.asked = 0
          asked.since = now
        }
        const request = want > 0
          ? { key, now, limit, windowMillis, count, holdMillis }
          : { key, now, limit, windowMillis, count }
        return Effect.flatMap(store.tryAcquire(request), (decision) => {
          if (!decision.allowed) {
            // Kept for the next head too, should this one be interrupted while it waits.
            line.retryAt = Math.max(decision.retryAt, now + 1)
            return lead(key, line, line.retryAt)
          }
          const granted = Math.max(1, Math.min(count, decision.granted ?? 1))
          line.retryAt = granted < waiting ? decision.retryAt ?? now : undefined
          const handed = handOut(granted)
          // Recorded at `now + holdMillis`: usable until then by callers to come.
          if (want > 0) keep(reserveOf(key), granted - handed, now + holdMillis, now)
          return Effect.void
        })
      })

    // Whatever way the caller leaves the line (admitted, failed, interrupted, even while being handed the head), the
    // next in line becomes the head; a caller handed a start has left the line already (interrupted, it wastes it).
    const queue = (key: string, retryAt: number | undefined): Effect.Effect<void, E> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.suspend(() => {
          let line = lines.get(key)
          if (line === undefined) {
            line = { waiters: new Set(), retryAt: undefined }
            lines.set(key, line)
          }
          const joined = line
          const waiter: Waiter<E> = { resume: undefined, next: undefined, granted: false }
          joined.waiters.add(waiter)
          const turn = first(joined.waiters) === waiter
            ? lead(key, joined, retryAt)
            : Effect.async<void, E>((resume) => {
              const next = waiter.next
              if (next === undefined) {
                waiter.resume = resume
              } else {
                waiter.next = undefined
                resume(next)
              }
            })
          return Effect.ensuring(restore(turn), Effect.sync(() => leave(key, joined, waiter)))
        })
      )

    // Not an `Effect.fn`: a span per acquire would cost more than the acquire.
    const acquire = decide === undefined
      ? (key: string): Effect.Effect<void, E> =>
        Effect.suspend(() => reserving && askReserved(key) ? Effect.void : queue(key, undefined))
      : (key: string): Effect.Effect<void, E> =>
        Effect.suspend(() => {
          if (lines.has(key)) return queue(key, undefined)
          const decision = decide(key, clock.unsafeCurrentTimeMillis(), limit, windowMillis)
          return decision.allowed ? Effect.void : queue(key, decision.retryAt)
        })

    const tryAcquireNow = decide === undefined
      ? (key: string) => reserving && askReserved(key)
      : (key: string) => !lines.has(key) && decide(key, clock.unsafeCurrentTimeMillis(), limit, windowMillis).allowed

    const pauseUntil = Effect.fn("RateLimiter.pauseUntil")(function*(key: string, epochMillis: number) {
      if (!Number.isFinite(epochMillis)) {
        return yield* Effect.dieMessage(`RateLimiter.pauseUntil: ${epochMillis} is not an instant`)
      }
      reserves.delete(key)
      yield* store.pauseUntil({ key, until: epochMillis, now: clock.unsafeCurrentTimeMillis() })
    })

    return {
      limit,
      per,
      acquire,
      tryAcquireNow,
      pauseUntil,
      withPermit: (key) => (effect) => Effect.zipRight(acquire(key), effect),
      waitingKeys: Effect.sync(() => lines.size)
    } satisfies RateLimiter<E>
  })

/** The {@link RateLimiter} service over the in-memory store. */
export const layer = (options: Options): Layer.Layer<RateLimiter, InvalidRateLimit> =>
  Layer.scoped(RateLimiter, make(options))
