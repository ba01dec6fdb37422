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
import type { RateLimiterStore } from "@spindle/core/RateLimiter"
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

/** A rate store's decision, with the recorded start's instant in the store's clock when it is allowed. */
export type SharedDecision =
  | { readonly allowed: true; readonly at: number }
  | { readonly allowed: false; readonly retryAt: number }

/** A {@link RateLimiterStore} whose admitted starts say when (store clock) they were recorded. */
export interface SharedRateLimiterStore<E = LimitStoreError> extends RateLimiterStore<E> {
  readonly backend: Backend
  readonly tryAcquire: (request: {
    readonly key: string
    readonly now: number
    readonly limit: number
    readonly windowMillis: number
  }) => Effect.Effect<SharedDecision, E>
}

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
  tryAcquire: (request) => store.tryAcquire(request).pipe(Effect.retry(outagePolicy), Effect.orDie),
  pauseUntil: (request) => store.pauseUntil(request).pipe(Effect.retry(outagePolicy), Effect.orDie)
})
