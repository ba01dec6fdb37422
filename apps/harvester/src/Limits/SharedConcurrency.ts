/**
 * SharedConcurrency — at most `perKey` effects in flight per key (per host) over ALL instances sharing a
 * {@link SlotStore} (PostgreSQL, SQLite or Redis), with the same `withPermit(key)(effect)` shape as the core
 * `KeyedConcurrency`, so it plugs into the fetcher's `concurrency` hook.
 *
 * What it adds beyond `KeyedConcurrency` (which it still uses in front, so an instance never asks the store for more
 * than `perKey` slots of a host at once, and `global` stays a per-instance bound): a leased slot in the store per
 * effect in flight. A slot is leased for `lease` by the store's clock; one heartbeat fiber per instance extends all of
 * its leases every `lease / 3`; a crashed (or partitioned) instance's slots free themselves when their lease runs
 * out, so the bound is exact while instances live and self-healing when they die. A waiter whose host is full
 * everywhere polls the store every `pollInterval` (jittered) — cross-instance waiters are not served in order.
 * Interruption is safe at every point: an interrupted waiter holds no slot (each claim runs uninterruptibly and
 * only the waits between claims can be interrupted), an interrupted holder releases its slot, and closing the scope
 * releases every slot this instance still holds. A store that fails is retried under `outagePolicy` (waiting, never
 * exceeding the limit), then a defect.
 *
 * Answers the tutorial's "Semaphore" section for a crawler that runs as several processes.
 */
import * as KeyedConcurrency from "@spindle/core/KeyedConcurrency"
import type { Scope } from "effect"
import { Data, Duration, Effect, Either, Option, Random, Schedule } from "effect"
import { randomUUID } from "node:crypto"
import type { SlotStore } from "./LimitStore.js"
import { outagePolicy } from "./LimitStore.js"

/** Bad timing options: `field` names the option, `reason` says what is wrong with `value`. */
export class InvalidLease extends Data.TaggedError("InvalidLease")<{
  readonly field: "lease" | "pollInterval"
  readonly value: unknown
  readonly reason: string
}> {
  override get message() {
    return `invalid shared concurrency: ${this.field} ${this.reason} (got ${String(this.value)})`
  }
}

export interface Options extends KeyedConcurrency.Options {
  /** How long a slot outlives its instance's last heartbeat (default 15 s): a crashed instance's slots free then. */
  readonly lease?: Duration.DurationInput
  /** How often a waiter asks the store again while its host is full everywhere (default 50 ms, ±50 % jitter). */
  readonly pollInterval?: Duration.DurationInput
}

export interface SharedConcurrency extends KeyedConcurrency.KeyedConcurrency {
  /** This instance's id in the store (the `owner` of its slots). */
  readonly owner: string
  /** Slots this instance holds in the store. */
  readonly held: Effect.Effect<number>
  /** Live slots of `key` in the store, over all instances. */
  readonly holders: (key: string) => Effect.Effect<number>
}

/** Immediate re-claims after losing a race for a slot number, before waiting a poll interval. */
const MAX_RACES = 3

const positiveDuration = (field: "lease" | "pollInterval", input: Duration.DurationInput) =>
  Option.match(Duration.decodeUnknown(input), {
    onNone: () => Effect.fail(new InvalidLease({ field, value: input, reason: "is not a duration" })),
    onSome: (duration) =>
      Duration.isFinite(duration) && Duration.toMillis(duration) >= 1
        ? Effect.succeed(duration)
        : Effect.fail(new InvalidLease({ field, value: input, reason: "must be a finite duration of at least 1 ms" }))
  })

export const make = (
  store: SlotStore,
  options: Options
): Effect.Effect<SharedConcurrency, KeyedConcurrency.InvalidConcurrency | InvalidLease, Scope.Scope> =>
  Effect.gen(function*() {
    const local = yield* KeyedConcurrency.make(options)
    const ttlMillis = Duration.toMillis(yield* positiveDuration("lease", options.lease ?? Duration.seconds(15)))
    const pollMillis = Duration.toMillis(
      yield* positiveDuration("pollInterval", options.pollInterval ?? Duration.millis(50))
    )
    const clock = yield* Effect.clock
    const owner = randomUUID()
    const held = new Map<string, string>()
    const holdersList = () => Array.from(held, ([token, key]) => ({ key, token }))
    const perKey = options.perKey

    const release = (key: string, token: string) =>
      Effect.suspend(() => {
        held.delete(token)
        return store.release({ key, token })
      }).pipe(Effect.catchAll((error) => Effect.logWarning(`${error.message}; the slot frees when its lease ends`)))

    const hasFreeSlot = (key: string) =>
      store.holders({ key, now: clock.unsafeCurrentTimeMillis() }).pipe(
        Effect.map((holders) => holders < perKey),
        Effect.orElseSucceed(() => false)
      )

    const pollDelay = Effect.map(
      Random.nextRange(0.5, 1.5),
      (factor) => Duration.millis(Math.max(1, Math.round(pollMillis * factor)))
    )

    // Runs inside `uninterruptibleMask`: a claim is never cut in half, only the waits between claims are interruptible.
    const claim = (key: string, restore: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>) =>
      Effect.gen(function*() {
        const token = randomUUID()
        const outage = yield* Schedule.driver(outagePolicy)
        let races = 0
        while (true) {
          const claimed = yield* Effect.either(
            store.claim({ key, limit: perKey, owner, token, ttlMillis, now: clock.unsafeCurrentTimeMillis() })
          )
          if (Either.isLeft(claimed)) {
            const error = claimed.left
            yield* restore(outage.next(error)).pipe(Effect.catchAll(() => Effect.die(error)))
          } else if (claimed.right) {
            held.set(token, key)
            return token
          } else if (races < MAX_RACES && (yield* hasFreeSlot(key))) {
            // Lost a race for a slot number to another claimer, though other slots are free: try again at once.
            races++
          } else {
            races = 0
            yield* restore(Effect.flatMap(pollDelay, Effect.sleep))
          }
        }
      })

    const shared = (key: string) => <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(claim(key, restore), (token) => Effect.ensuring(restore(effect), release(key, token)))
      )

    const heartbeat = Effect.suspend(() => {
      const holders = holdersList()
      return store.heartbeat({ owner, holders, ttlMillis, now: clock.unsafeCurrentTimeMillis() }).pipe(
        Effect.flatMap((extended) => {
          // Holders released meanwhile are not missing; a holder still here whose row was not extended lost its lease.
          const stillHeld = holders.filter(({ token }) => held.has(token)).length
          return extended < stillHeld
            ? Effect.logWarning(`${stillHeld - extended} slot lease(s) expired before their heartbeat`)
            : Effect.void
        })
      )
    }).pipe(Effect.catchAll((error) => Effect.logWarning(`${error.message}; leases not extended`)))
    yield* heartbeat.pipe(Effect.delay(Duration.millis(ttlMillis / 3)), Effect.forever, Effect.forkScoped)

    yield* Effect.addFinalizer(() =>
      Effect.forEach(holdersList(), ({ key, token }) => release(key, token), { concurrency: 16, discard: true })
    )

    return {
      perKey,
      global: options.global,
      owner,
      withPermit: (key) => (effect) => local.withPermit(key)(shared(key)(effect)),
      inFlight: local.inFlight,
      globalInFlight: local.globalInFlight,
      keys: local.keys,
      held: Effect.sync(() => held.size),
      holders: (key) =>
        store.holders({ key, now: clock.unsafeCurrentTimeMillis() }).pipe(Effect.retry(outagePolicy), Effect.orDie)
    } satisfies SharedConcurrency
  })
