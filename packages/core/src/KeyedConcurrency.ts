/**
 * At most `perKey` effects in flight per key (per host) and at most `global` in all, waiters served in arrival order.
 *
 * What it adds over Effect's `Semaphore`: one semaphore per key plus a global one, created on demand and forgotten as
 * soon as a key has nothing in flight and nobody waiting (millions of hosts cost memory only while active); an
 * acquire whose permits are free costs no async round-trip (`Semaphore.withPermits` always takes one, 2.2 µs); a
 * released permit goes straight to the oldest waiter, so newcomers never overtake the queue. The two levels cannot
 * deadlock: a caller takes its key's permit, then a global one, and never holds a global permit while waiting for a
 * key's. Interruption is safe at every point: an interrupted waiter takes nothing, an interrupted holder returns both
 * permits. Like `asyncio.Semaphore`, a permit is not reentrant: nesting `withPermit` on the same key inside itself can
 * wait forever when `perKey` is 1 (the tutorial's rate limiter deadlocks that way).
 *
 * Answers the tutorial's `asyncio.Semaphore` (Synchronization Primitives) at a crawler's scale, and what its "HTTP
 * Client with aiohttp" lacks: that `gather` opens every request at once, to every host.
 */
import type { Scope } from "effect"
import { Context, Data, Effect, Layer } from "effect"

/** Bad options: `field` names the option, `reason` says what is wrong with `value`. */
export class InvalidConcurrency extends Data.TaggedError("InvalidConcurrency")<{
  readonly field: "perKey" | "global"
  readonly value: unknown
  readonly reason: string
}> {
  override get message() {
    return `invalid concurrency: ${this.field} ${this.reason} (got ${String(this.value)})`
  }
}

export interface Options {
  /** Effects in flight per key: a positive integer. */
  readonly perKey: number
  /** Effects in flight over all keys: a positive integer. */
  readonly global: number
}

export interface KeyedConcurrency {
  readonly perKey: number
  readonly global: number
  /** Runs the effect holding one permit of `key` and one global permit, waiting in line for them if needed. */
  readonly withPermit: (key: string) => <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /**
   * Takes a permit of `key` and a global one at once when both are free and nobody waits for either (none is
   * overtaken), and returns their release (call it exactly once); `undefined` otherwise, having taken nothing (then
   * `withPermit`). For callback code on a hot path (`HttpFetcher.prepareLane`).
   */
  readonly tryAcquireNow: (key: string) => (() => void) | undefined
  /** Effects of `key` holding its permit (the key's line counts once it reaches the global stage). */
  readonly inFlight: (key: string) => Effect.Effect<number>
  /** Global permits taken. */
  readonly globalInFlight: Effect.Effect<number>
  /** Keys with something in flight or waiting: the only keys that hold memory. */
  readonly keys: Effect.Effect<number>
}

/** The limiter as a service, for an application that shares one (keyed by host) between its parts. */
export const KeyedConcurrency: Context.Tag<KeyedConcurrency, KeyedConcurrency> = Context.GenericTag<
  KeyedConcurrency
>("spindle/KeyedConcurrency")

interface Waiter {
  readonly resume: (effect: Effect.Effect<void>) => void
  granted: boolean
}

/** Permits of one level: taken, and the line of waiters a released permit is handed to. */
class Permits {
  taken = 0
  readonly waiters = new Set<Waiter>()

  constructor(readonly capacity: number) {}

  /** Takes a permit when one is free and nobody is in line (so nobody is overtaken). */
  tryTake() {
    if (this.taken < this.capacity && this.waiters.size === 0) {
      this.taken++
      return true
    }
    return false
  }

  /** Hands the permit to the oldest waiter, or frees it. */
  release() {
    const head: Waiter | undefined = this.waiters.values().next().value
    if (head === undefined) {
      this.taken--
    } else {
      this.waiters.delete(head)
      head.granted = true
      head.resume(Effect.void)
    }
  }

  /**
   * Waits for a permit. Interrupted before it is handed over: leaves the line. Interrupted after (the hand-over and
   * the interruption raced): passes the permit on. Either way `onInterrupt` then runs.
   */
  take(onInterrupt: () => void): Effect.Effect<void> {
    return Effect.async<void>((resume) => {
      const waiter: Waiter = { resume, granted: false }
      // Checked again here: a permit may have come back since the caller's `tryTake` (the fiber can yield between).
      if (this.tryTake()) {
        waiter.granted = true
        resume(Effect.void)
      } else {
        this.waiters.add(waiter)
      }
      return Effect.sync(() => {
        if (waiter.granted) this.release()
        else this.waiters.delete(waiter)
        onInterrupt()
      })
    })
  }
}

const positiveInteger = (field: "perKey" | "global", value: number) =>
  Number.isSafeInteger(value) && value > 0
    ? Effect.void
    : Effect.fail(new InvalidConcurrency({ field, value, reason: "must be a positive integer" }))

export const make = (options: Options): Effect.Effect<KeyedConcurrency, InvalidConcurrency, Scope.Scope> =>
  Effect.gen(function*() {
    yield* positiveInteger("perKey", options.perKey)
    yield* positiveInteger("global", options.global)
    const perKey = options.perKey
    const everyKey = new Permits(options.global)
    const keys = new Map<string, Permits>()

    const forget = (key: string, permits: Permits) => {
      if (permits.taken === 0 && permits.waiters.size === 0) keys.delete(key)
    }
    const releaseKey = (key: string, permits: Permits) => {
      permits.release()
      forget(key, permits)
    }

    // Not an `Effect.fn`: a span per call would cost more than the permits.
    const withPermit = (key: string) => <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
      Effect.uninterruptibleMask((restore) => {
        let permits = keys.get(key)
        if (permits === undefined) {
          permits = new Permits(perKey)
          keys.set(key, permits)
        }
        const own = permits
        const run = Effect.flatMap(Effect.exit(restore(effect)), (exit) => {
          everyKey.release()
          releaseKey(key, own)
          return exit
        })
        const takeGlobal = () =>
          everyKey.tryTake() ? run : Effect.zipRight(restore(everyKey.take(() => releaseKey(key, own))), run)
        return own.tryTake()
          ? takeGlobal()
          : Effect.zipRight(restore(own.take(() => forget(key, own))), Effect.suspend(takeGlobal))
      })

    const tryAcquireNow = (key: string): (() => void) | undefined => {
      const known = keys.get(key)
      const own = known ?? new Permits(perKey)
      if (!own.tryTake()) return undefined
      if (!everyKey.tryTake()) {
        own.release()
        return undefined
      }
      if (known === undefined) keys.set(key, own)
      return () => {
        everyKey.release()
        releaseKey(key, own)
      }
    }

    return {
      perKey,
      global: options.global,
      withPermit,
      tryAcquireNow,
      inFlight: (key) => Effect.sync(() => keys.get(key)?.taken ?? 0),
      globalInFlight: Effect.sync(() => everyKey.taken),
      keys: Effect.sync(() => keys.size)
    } satisfies KeyedConcurrency
  })

/** The {@link KeyedConcurrency} service. */
export const layer = (options: Options): Layer.Layer<KeyedConcurrency, InvalidConcurrency> =>
  Layer.scoped(KeyedConcurrency, make(options))
