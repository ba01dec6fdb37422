/**
 * LimitStore — what the shared (cross-process) limit stores have in common: their error, the slot-lease store behind
 * `SharedConcurrency`, the rate-store shape that also reports the instant a start was recorded, and the outage
 * policy that turns a typed store error into "wait and retry, then give up loudly".
 *
 * Clocks: a shared store decides with its own clock (PostgreSQL's `clock_timestamp()`, Redis's `TIME`), so instances
 * whose clocks disagree still share one window. The stores translate at the boundary: a `retryAt` they return is in
 * the caller's clock (`callerNow + (storeRetryAt - storeNow)`), and a `pauseUntil` instant is sent as a delay from the
 * caller's `now`. Only `at` (the instant a start was recorded) stays in the store's clock, for audits and tests.
 */
import type { RateLimiterStore, TryAcquireRequest } from "@spindle/core/RateLimiter"
import { Data, Duration, Effect, Schedule } from "effect"

export type Backend = "postgres" | "sqlite" | "redis"

/** The store could not be reached or answered with an error. */
export class LimitStoreError extends Data.TaggedError("LimitStoreError")<{
  readonly backend: Backend
  readonly operation: string
  readonly cause: unknown
}> {
  override get message() {
    const reason = this.cause instanceof Error ? this.cause.message : String(this.cause)
    return `${this.backend} limit store: ${this.operation} failed: ${reason}`
  }
}

/**
 * A rate store's decision, with the instant (store clock) at which the `granted` starts (default 1) were recorded
 * when it is allowed, and `retryAt` (caller clock) when fewer were granted than asked for.
 */
export type SharedDecision =
  | { readonly allowed: true; readonly at: number; readonly granted?: number; readonly retryAt?: number }
  | { readonly allowed: false; readonly retryAt: number }

/** A {@link RateLimiterStore} whose admitted starts say when (store clock) they were recorded. */
export interface SharedRateLimiterStore<E = LimitStoreError> extends RateLimiterStore<E> {
  readonly backend: Backend
  /** Up to `count` (default 1) starts in one round trip: see `RateLimiterStore.tryAcquire`. */
  readonly tryAcquire: (request: TryAcquireRequest) => Effect.Effect<SharedDecision, E>
}

/** The decision for a block of `count` starts of which `granted` (≥ 1) were recorded at `at`. */
export const grantedDecision = (
  at: number,
  count: number,
  granted: number,
  retryAt: number
): SharedDecision => granted < count ? { allowed: true, at, granted, retryAt } : { allowed: true, at, granted }

/**
 * Leased slots per key, shared by every instance: slot numbers `0 .. limit - 1` of a key are held by at most one
 * holder each, a lease the holder's instance does not extend in time becomes free again.
 */
export interface SlotStore {
  readonly backend: Backend
  /** Takes a free (or expired) slot of `key` for `token` with a lease of `ttlMillis`; false when all are live. */
  readonly claim: (request: {
    readonly key: string
    readonly limit: number
    readonly owner: string
    readonly token: string
    readonly ttlMillis: number
    readonly now: number
  }) => Effect.Effect<boolean, LimitStoreError>
  /**
   * Takes up to `count` free (or expired) slots of `key` in one round trip, with a lease of `ttlMillis` each, for the
   * tokens `${token}:1`, `${token}:2`, ...; returns the tokens it took (none when every slot is live). Taking fewer
   * than `count`, with `waitMillis`, it also records that `owner` waits for `key`, for `waitMillis` (see `renew`).
   */
  readonly claimMany: (request: {
    readonly key: string
    readonly limit: number
    readonly owner: string
    readonly token: string
    readonly count: number
    readonly ttlMillis: number
    readonly now: number
    readonly waitMillis?: number | undefined
  }) => Effect.Effect<ReadonlyArray<string>, LimitStoreError>
  /**
   * For a holder that has kept slots of `key` a while: when another owner waits for `key` (recorded by its
   * `claimMany`), `othersWaiting` and nothing changes; else the leases of `tokens` that still hold a slot of `key` are
   * extended by `ttlMillis` from now, and returned as `kept`. One round trip, whatever the number of tokens.
   */
  readonly renew: (request: {
    readonly key: string
    readonly owner: string
    readonly tokens: ReadonlyArray<string>
    readonly ttlMillis: number
    readonly now: number
  }) => Effect.Effect<{ readonly othersWaiting: boolean; readonly kept: ReadonlyArray<string> }, LimitStoreError>
  /** Frees the slot `token` holds (nothing if it has already expired and been taken over). */
  readonly release: (request: { readonly key: string; readonly token: string }) => Effect.Effect<void, LimitStoreError>
  /** Extends the leases `owner` still holds by `ttlMillis` from now; returns how many were extended. */
  readonly heartbeat: (request: {
    readonly owner: string
    readonly holders: ReadonlyArray<{ readonly key: string; readonly token: string }>
    readonly ttlMillis: number
    readonly now: number
  }) => Effect.Effect<number, LimitStoreError>
  /** Live (unexpired) leases of `key`. */
  readonly holders: (request: { readonly key: string; readonly now: number }) => Effect.Effect<number, LimitStoreError>
}

/** How long a store may stay unreachable before callers give up (a defect): 30 s, retried with backoff ≤ 2 s. */
export const outagePolicy: Schedule.Schedule<unknown, LimitStoreError> = Schedule.exponential("50 millis").pipe(
  Schedule.union(Schedule.spaced("2 seconds")),
  Schedule.upTo(Duration.seconds(30)),
  Schedule.tapInput((error: LimitStoreError) => Effect.logWarning(`${error.message}; retrying`))
)

/**
 * The store as the core `RateLimiter` and the fetcher need it (no error channel): a failing call is retried under
 * {@link outagePolicy}, so a short outage only delays starts (fail closed: limits are never exceeded), and a long one
 * becomes a defect naming the store.
 */
export const resilient = (store: SharedRateLimiterStore): SharedRateLimiterStore<never> => ({
  backend: store.backend,
  holds: store.holds,
  tryAcquire: (request) => store.tryAcquire(request).pipe(Effect.retry(outagePolicy), Effect.orDie),
  pauseUntil: (request) => store.pauseUntil(request).pipe(Effect.retry(outagePolicy), Effect.orDie)
})
