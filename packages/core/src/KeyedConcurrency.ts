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
 * Limiters made with one `Pool` (`makePool`) share their keys' counts: a host's requests are counted over all of them
 * (every job of a process fetching from the host), each admitting one more while fewer than its own `perKey` are in
 * flight, in one line per key (a waiter whose limit is reached holds up those behind it: nobody is overtaken). Each
 * keeps its own `global`.
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
  /** Keys' counts shared with the other limiters of this pool (`makePool`); default: this limiter's own. */
  readonly pool?: Pool | undefined
}

/** Per-key counts and lines shared by the limiters made with it (`Options.pool`). */
export interface Pool {
  readonly _tag: "KeyedConcurrency.Pool"
  /** @internal */
  readonly keys: Map<string, Permits>
}

/** A pool of keys for limiters that count each key's effects together (the jobs of one process, by host). */
export const makePool = (): Pool => ({ _tag: "KeyedConcurrency.Pool", keys: new Map() })

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
  /** Permits taken at most when this waiter takes one (its limiter's `perKey`, or `global`). */
  readonly limit: number
  granted: boolean
}

/**
 * Permits of one level: taken, and the line of waiters released permits are handed to. Each taker brings its limit
 * (one limiter: always the same; a pool's key: each limiter's own `perKey`).
 */
class Permits {
  taken = 0
  readonly waiters = new Set<Waiter>()

  /** Takes a permit when fewer than `limit` are taken and nobody is in line (so nobody is overtaken). */
  tryTake(limit: number) {
    if (this.taken < limit && this.waiters.size === 0) {
      this.taken++
      return true
    }
    return false
  }

  /** Frees the permit and hands permits to the waiters at the head of the line while their limits allow. */
  release() {
    this.taken--
    this.serve()
  }

  private serve() {
    for (const head of this.waiters) {
      if (this.taken >= head.limit) return
      this.waiters.delete(head)
      this.taken++
      head.granted = true
      head.resume(Effect.void)
    }
  }

  /**
   * Waits for a permit. Interrupted before it is handed over: leaves the line (those behind it may go now).
   * Interrupted after (the hand-over and the interruption raced): passes the permit on. Either way `onInterrupt` then
   * runs.
   */
  take(limit: number, onInterrupt: () => void): Effect.Effect<void> {
    return Effect.async<void>((resume) => {
      const waiter: Waiter = { resume, limit, granted: false }
      // Checked again here: a permit may have come back since the caller's `tryTake` (the fiber can yield between).
      if (this.tryTake(limit)) {
        waiter.granted = true
        resume(Effect.void)
      } else {
        this.waiters.add(waiter)
      }
      return Effect.sync(() => {
        if (waiter.granted) {
          this.release()
        } else {
          this.waiters.delete(waiter)
          this.serve()
        }
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
    const global = options.global
    const everyKey = new Permits()
    const keys = options.pool?.keys ?? new Map<string, Permits>()

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
          permits = new Permits()
          keys.set(key, permits)
        }
        const own = permits
        const run = Effect.flatMap(Effect.exit(restore(effect)), (exit) => {
          everyKey.release()
          releaseKey(key, own)
          return exit
        })
        const takeGlobal = () =>
          everyKey.tryTake(global)
            ? run
            : Effect.zipRight(restore(everyKey.take(global, () => releaseKey(key, own))), run)
        return own.tryTake(perKey)
          ? takeGlobal()
          : Effect.zipRight(restore(own.take(perKey, () => forget(key, own))), Effect.suspend(takeGlobal))
      })

    const tryAcquireNow = (key: string): (() => void) | undefined => {
      const known = keys.get(key)
      const own = known ?? new Permits()
      if (!own.tryTake(perKey)) return undefined
      if (!everyKey.tryTake(global)) {
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
      global,
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
