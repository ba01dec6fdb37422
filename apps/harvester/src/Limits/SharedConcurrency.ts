/**
 * SharedConcurrency — at most `perKey` effects in flight per key (per host) over ALL instances sharing a
 * {@link SlotStore} (PostgreSQL, SQLite or Redis), with the same `withPermit(key)(effect)` shape as the core
 * `KeyedConcurrency`, so it plugs into the fetcher's `concurrency` hook.
 *
 * What it adds beyond `KeyedConcurrency` (which it still uses in front, so at most `perKey` callers of a host wait or
 * run in one limiter, and `global` stays a per-instance bound): a leased slot in the store per effect in flight. A slot
 * is leased for `lease` by the store's clock; one heartbeat fiber per instance extends all of its leases every
 * `lease / 3`; a crashed (or partitioned) instance's slots free themselves when their lease runs out, so the bound is
 * exact while instances live and self-healing when they die.
 *
 * Round trips: a store round trip per request (claim, then release) would cap a host's throughput at what the store
 * answers, so an instance keeps the slots it leased while it has use for them:
 * - the callers of a key waiting in this instance form a line; the first claims, in one round trip, as many slots as
 *   the line needs (`claimMany`), and hands them out in order; only one claim per key is in flight per limiter;
 * - a slot an effect is done with goes straight to the next caller in line, without asking the store;
 * - with no caller in line it is kept idle for `linger` (default 0: given back at once) for this instance's next
 *   caller of the host, then given back;
 * - a lingering slot can also be taken at once, from plain code (`tryAcquireNow`, for `HttpFetcher.prepareLane`): its
 *   release hands it to the line or lets it linger as `withPermit` does, a store round trip running in the background;
 * - a slot is reused for `maxHold` (default 1 s, and less than the lease) after it was claimed; then it is renewed
 *   in the background together with the host's other slots (`SlotStore.renew`, one round trip per host; used on
 *   meanwhile, well inside its lease): kept, with a fresh lease, while no other instance waits for the host (a claim
 *   left short records its instance as waiting until after its next poll), else given back at its next release and,
 *   for one poll period (`1.5 × pollInterval`, the longest a waiting instance sleeps between polls), this instance
 *   claims one slot fewer of that host, so that the waiting instance finds it free. (Given back unconditionally, the
 *   slots of an instance alone on a host went back and were claimed again every `maxHold`: its workers queued for
 *   them meanwhile, 5–8 % of the requests of a 20k-page harvest.)
 * Fairness: an instance with steady demand for a saturated host keeps each slot at most `maxHold` once another
 * waits; an instance waiting for it gets a slot within about `maxHold + pollInterval`, though not in arrival order
 * across instances (waiters poll the store every `pollInterval`, jittered ±50 %). Slots a busy instance keeps idle
 * for `linger` are unavailable to others meanwhile.
 *
 * Interruption is safe at every point: an interrupted waiter takes no slot (a slot handed to it at that moment goes
 * to the next in line or back to the store; a claim runs uninterruptibly, and the slots it took go to the line or
 * back to the store), an interrupted holder passes its slot on, and closing the scope gives back every slot this
 * instance still holds. A store that fails is retried under `outagePolicy` (waiting, never exceeding the limit), then
 * a defect.
 *
 * Answers the tutorial's "Semaphore" section for a crawler that runs as several processes.
 */
import * as KeyedConcurrency from "@spindle/core/KeyedConcurrency"
import type { Scope } from "effect"
import { Data, Duration, Effect, Either, Exit, FiberSet, Option, Random, Schedule } from "effect"
import { randomUUID } from "node:crypto"
import type { LimitStoreError, SlotStore } from "./LimitStore.js"
import { outagePolicy } from "./LimitStore.js"

/** Bad timing options: `field` names the option, `reason` says what is wrong with `value`. */
export class InvalidLease extends Data.TaggedError("InvalidLease")<{
  readonly field: "lease" | "pollInterval" | "linger" | "maxHold"
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
  /**
   * How long a slot nobody in this instance uses is kept for the next caller of its host before it is given back
   * (default 0: at once). Saves two round trips per request when requests of a host follow each other closely.
   */
  readonly linger?: Duration.DurationInput
  /**
   * How long a slot may be reused after it was claimed (or renewed) before it is renewed, or given back when another
   * instance waits for its host (default 1 s, or half the lease).
   */
  readonly maxHold?: Duration.DurationInput
}

export interface SharedConcurrency extends KeyedConcurrency.KeyedConcurrency {
  /** This instance's id in the store (the `owner` of its slots). */
  readonly owner: string
  /** Slots this instance holds in the store (in use or lingering). */
  readonly held: Effect.Effect<number>
  /** Live slots of `key` in the store, over all instances. */
  readonly holders: (key: string) => Effect.Effect<number>
  /** Claims this instance has sent to the store (each for one slot or more). */
  readonly claims: Effect.Effect<number>
}

/** Immediate re-claims after losing a race for slot numbers, before waiting a poll interval. */
const MAX_RACES = 3

const duration = (field: InvalidLease["field"], input: Duration.DurationInput, least: number) =>
  Option.match(Duration.decodeUnknown(input), {
    onNone: () => Effect.fail(new InvalidLease({ field, value: input, reason: "is not a duration" })),
    onSome: (duration) =>
      Duration.isFinite(duration) && Duration.toMillis(duration) >= least
        ? Effect.succeed(Duration.toMillis(duration))
        : Effect.fail(
          new InvalidLease({ field, value: input, reason: `must be a finite duration of at least ${least} ms` })
        )
  })

/** A slot this instance holds in the store. */
interface Slot {
  readonly token: string
  /**
   * This instance's clock just before the claim, or before the last renewal that kept it: the lease runs until at
   * least `renewedAt + lease`.
   */
  renewedAt: number
  idleSince: number
  /** Another instance waits for the host (or the slot was lost): given back at its next release. */
  yieldDue: boolean
}

/** A caller waiting for a slot of its host. */
interface Waiter {
  resume: ((effect: Effect.Effect<Slot>) => void) | undefined
  /** The slot handed to it (it has left the line then). */
  slot: Slot | undefined
  /** Told to claim for the line (until its claim is done). */
  leading: boolean
}

/** One host's slots in this instance; forgotten when it holds none and nobody waits. */
interface Host {
  readonly key: string
  readonly line: Set<Waiter>
  /** Lingering slots, oldest first. */
  readonly idle: Array<Slot>
  /** Every slot of the host this instance holds. */
  readonly slots: Set<Slot>
  /** A renewal of its slots is under way. */
  renewing: boolean
  /** Slots of the host this instance holds in the store: in use, lingering, or being handed over. */
  held: number
  /** Slots given back after `maxHold` whose turn for the other instances is not over: not claimed again until then. */
  yielded: number
  claiming: boolean
  polling: boolean
}

type Step =
  | { readonly _tag: "Slot"; readonly slot: Slot }
  | { readonly _tag: "Failed"; readonly error: LimitStoreError }
  | { readonly _tag: "Wait" }
  | { readonly _tag: "Retry"; readonly claimed: number }

const first = <A>(set: Set<A>): A | undefined => set.values().next().value

export const make = (
  store: SlotStore,
  options: Options
): Effect.Effect<SharedConcurrency, KeyedConcurrency.InvalidConcurrency | InvalidLease, Scope.Scope> =>
  Effect.gen(function*() {
    const local = yield* KeyedConcurrency.make(options)
    const ttlMillis = yield* duration("lease", options.lease ?? Duration.seconds(15), 1)
    const pollMillis = yield* duration("pollInterval", options.pollInterval ?? Duration.millis(50), 1)
    const lingerMillis = yield* duration("linger", options.linger ?? Duration.zero, 0)
    const maxHoldMillis = yield* duration("maxHold", options.maxHold ?? Math.min(1000, ttlMillis / 2), 1)
    if (maxHoldMillis >= ttlMillis) {
      // A slot is then only ever reused within the lease it was claimed with, whatever the heartbeats do.
      return yield* new InvalidLease({
        field: "maxHold",
        value: options.maxHold,
        reason: "must be shorter than the lease"
      })
    }
    const turnMillis = Math.ceil(pollMillis * 1.5)
    /** How long a claim left short records this instance as waiting: until after its next poll. */
    const waitMarkMillis = turnMillis * 2
    /** A slot past `maxHold` whose renewal has not answered yet is used on until then (< the lease). */
    const renewLimitMillis = (maxHoldMillis + ttlMillis) / 2
    const scope = yield* Effect.scope
    const clock = yield* Effect.clock
    const owner = randomUUID()
    const perKey = options.perKey
    /** Every slot this instance holds, token -> key (for the heartbeat and the final release). */
    const tokens = new Map<string, string>()
    const hosts = new Map<string, Host>()
    const lingering = new Set<Host>()
    let claims = 0
    let closed = false

    const hostOf = (key: string) => {
      let host = hosts.get(key)
      if (host === undefined) {
        host = {
          key,
          line: new Set(),
          idle: [],
          slots: new Set(),
          renewing: false,
          held: 0,
          yielded: 0,
          claiming: false,
          polling: false
        }
        hosts.set(key, host)
      }
      return host
    }

    const forget = (host: Host) => {
      if (host.held === 0 && host.line.size === 0 && host.yielded === 0 && !host.claiming && !host.polling) {
        if (hosts.get(host.key) === host) hosts.delete(host.key)
      }
    }

    const release = (key: string, token: string) =>
      Effect.suspend(() => {
        tokens.delete(token)
        return store.release({ key, token })
      }).pipe(Effect.catchAll((error) => Effect.logWarning(`${error.message}; the slot frees when its lease ends`)))

    /** Slots the line could use that this instance may still claim. */
    const wanted = (host: Host) => Math.min(host.line.size, perKey - host.held - host.yielded)

    /** Has the head of the line claim for it, unless a claim or a poll is under way, or there is nothing to claim. */
    const kick = (host: Host) => {
      if (closed || host.claiming || host.polling || wanted(host) <= 0) return
      const head = first(host.line)
      if (head === undefined) return
      host.claiming = true
      head.leading = true
      const resume = head.resume
      if (resume !== undefined) {
        head.resume = undefined
        resume(lead(host, head))
      }
    }

    const endLead = (host: Host, waiter: Waiter) => {
      waiter.leading = false
      host.claiming = false
      kick(host)
    }

    const giveBack = (host: Host, slot: Slot, yieldTurn: boolean): Effect.Effect<void> =>
      Effect.suspend(() => {
        host.held--
        host.slots.delete(slot)
        if (yieldTurn) host.yielded++
        const turnOver = Effect.sync(() => {
          host.yielded--
          kick(host)
          forget(host)
        })
        return release(host.key, slot.token).pipe(
          Effect.zipRight(
            yieldTurn ? Effect.forkIn(Effect.delay(turnOver, Duration.millis(turnMillis)), scope) : Effect.void
          ),
          Effect.zipRight(Effect.sync(() => {
            kick(host)
            forget(host)
          }))
        )
      })

    /** Store requests started from plain code (`tryAcquireNow`'s release, renewals): run here, ended with the scope. */
    const background = yield* FiberSet.make<void>()
    const runInBackground = yield* FiberSet.runtime(background)<never>()

    /**
     * Renews, in one request, every slot of the host at least half way to `maxHold` (so that a host's slots renew
     * together: one round trip per host and `maxHold`): kept with a fresh lease while nobody else waits for the host;
     * else, or when the store fails or a slot was lost, each goes back at its next release.
     */
    const renew = (host: Host, now: number) => {
      const batch = Array.from(host.slots).filter((slot) => !slot.yieldDue && now - slot.renewedAt >= maxHoldMillis / 2)
      if (batch.length === 0) return
      host.renewing = true
      runInBackground(
        store.renew({ key: host.key, owner, tokens: batch.map((slot) => slot.token), ttlMillis, now }).pipe(
          Effect.matchCause({
            onFailure: () => {
              for (const slot of batch) slot.yieldDue = true
            },
            onSuccess: ({ kept, othersWaiting }) => {
              const renewed = new Set(kept)
              for (const slot of batch) {
                if (!othersWaiting && renewed.has(slot.token)) slot.renewedAt = now
                else slot.yieldDue = true
              }
            }
          }),
          Effect.ensuring(Effect.sync(() => {
            host.renewing = false
          }))
        )
      )
    }

    /**
     * Whether a slot must be given back instead of being used again: past `maxHold` its host's slots are renewed in
     * the background (`renew`), and it is used on meanwhile, while well inside its lease (`renewLimit`); a slot
     * another instance waits for goes back at its next release.
     */
    const due = (host: Host, slot: Slot, now: number): boolean => {
      if (slot.yieldDue) return true
      const age = now - slot.renewedAt
      if (age < maxHoldMillis) return false
      if (!host.renewing) renew(host, now)
      return age >= renewLimitMillis
    }

    /**
     * A slot nobody holding it uses any more: to the next caller in line, or kept for a while (both at once), or given
     * back (the effect returned: a store round trip).
     */
    const giveNow = (host: Host, slot: Slot): Effect.Effect<void> | undefined => {
      const now = clock.unsafeCurrentTimeMillis()
      if (closed || due(host, slot, now)) return giveBack(host, slot, !closed)
      const head = first(host.line)
      if (head !== undefined) {
        host.line.delete(head)
        head.slot = slot
        const resume = head.resume
        if (resume !== undefined) {
          head.resume = undefined
          resume(Effect.succeed(slot))
        }
        return undefined
      }
      if (lingerMillis === 0) return giveBack(host, slot, false)
      slot.idleSince = now
      host.idle.push(slot)
      lingering.add(host)
      return undefined
    }
    const give = (host: Host, slot: Slot): Effect.Effect<void> =>
      Effect.suspend(() => giveNow(host, slot) ?? Effect.void)

    const hasFreeSlot = (key: string) =>
      store.holders({ key, now: clock.unsafeCurrentTimeMillis() }).pipe(
        Effect.map((holders) => holders < perKey),
        Effect.orElseSucceed(() => false)
      )

    /** One claim for the line, by its head, run uninterruptibly: the slots it takes are always handed on. */
    const claimStep = (host: Host, waiter: Waiter): Effect.Effect<Step> =>
      Effect.gen(function*() {
        if (waiter.slot !== undefined) return { _tag: "Slot", slot: waiter.slot } as const
        const count = wanted(host)
        if (count <= 0) return { _tag: "Wait" } as const
        const claimedAt = clock.unsafeCurrentTimeMillis()
        const token = randomUUID()
        claims++
        const result = yield* Effect.either(
          store.claimMany({
            key: host.key,
            limit: perKey,
            owner,
            token,
            count,
            ttlMillis,
            now: claimedAt,
            waitMillis: waitMarkMillis
          })
        )
        if (Either.isLeft(result)) return { _tag: "Failed", error: result.left } as const
        const extra: Array<Slot> = []
        for (const claimed of result.right) {
          tokens.set(claimed, host.key)
          host.held++
          const slot: Slot = {
            token: claimed,
            renewedAt: claimedAt,
            idleSince: claimedAt,
            yieldDue: false
          }
          host.slots.add(slot)
          if (waiter.slot === undefined) {
            host.line.delete(waiter)
            waiter.slot = slot
          } else {
            extra.push(slot)
          }
        }
        yield* Effect.forEach(extra, (slot) => give(host, slot), { discard: true })
        return waiter.slot === undefined
          ? { _tag: "Retry", claimed: result.right.length } as const
          : { _tag: "Slot", slot: waiter.slot } as const
      })

    const pollDelay = Effect.map(
      Random.nextRange(0.5, 1.5),
      (factor) => Duration.millis(Math.max(1, Math.round(pollMillis * factor)))
    )

    const poll = (host: Host) =>
      Effect.forkIn(
        Effect.flatMap(pollDelay, Effect.sleep).pipe(
          Effect.ensuring(Effect.sync(() => {
            host.polling = false
            kick(host)
            forget(host)
          }))
        ),
        scope
      )

    /** The head claims for the line until it has a slot, or polls, or waits for a slot of this instance. */
    const lead = (host: Host, waiter: Waiter): Effect.Effect<Slot> =>
      Effect.gen(function*() {
        const outage = yield* Schedule.driver(outagePolicy)
        let races = 0
        while (true) {
          const step = yield* Effect.uninterruptible(claimStep(host, waiter))
          switch (step._tag) {
            case "Slot": {
              endLead(host, waiter)
              return step.slot
            }
            case "Failed": {
              // Still the head meanwhile (a slot coming back is handed to it all the same); interruptible.
              yield* outage.next(step.error).pipe(Effect.catchAll(() => Effect.die(step.error)))
              break
            }
            case "Wait": {
              endLead(host, waiter)
              return yield* wait(host, waiter)
            }
            case "Retry": {
              // Lost a race for slot numbers to another instance, though some are free: try again at once.
              if (step.claimed === 0 && races < MAX_RACES && (yield* hasFreeSlot(host.key))) {
                races++
                break
              }
              host.polling = true
              yield* poll(host)
              endLead(host, waiter)
              return yield* wait(host, waiter)
            }
          }
        }
      })

    const wait = (host: Host, waiter: Waiter): Effect.Effect<Slot> =>
      Effect.async<Slot>((resume) => {
        if (waiter.slot !== undefined) return resume(Effect.succeed(waiter.slot))
        if (waiter.leading) return resume(lead(host, waiter))
        waiter.resume = resume
        // Interrupted while waiting: out of the line at once, so nothing is handed to it any more.
        return Effect.sync(() => {
          waiter.resume = undefined
          host.line.delete(waiter)
        })
      })

    /** A slot of `key` for this caller: a lingering one, else one from the line. Runs inside `uninterruptibleMask`. */
    const acquire = (key: string, restore: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>) =>
      Effect.gen(function*() {
        const host = hostOf(key)
        while (host.line.size === 0 && host.idle.length > 0) {
          const slot = host.idle.pop()!
          if (host.idle.length === 0) lingering.delete(host)
          if (!due(host, slot, clock.unsafeCurrentTimeMillis())) return { host, slot }
          yield* giveBack(host, slot, true)
        }
        const waiter: Waiter = { resume: undefined, slot: undefined, leading: false }
        host.line.add(waiter)
        kick(host)
        const slot = yield* restore(wait(host, waiter)).pipe(
          Effect.onExit((exit) =>
            Effect.suspend(() => {
              host.line.delete(waiter)
              // Told to claim for the line but interrupted before it could: the next in line claims instead.
              if (waiter.leading) {
                waiter.leading = false
                host.claiming = false
              }
              const handedOn = Exit.isFailure(exit) && waiter.slot !== undefined ? give(host, waiter.slot) : Effect.void
              return Effect.zipRight(
                handedOn,
                Effect.sync(() => {
                  kick(host)
                  forget(host)
                })
              )
            })
          )
        )
        return { host, slot }
      })

    /**
     * A lingering slot of `key` and the local permits at once, when one lingers and nobody waits; their release runs
     * `give` (a slot past `maxHold` goes back to the store from a background fiber). Otherwise nothing is taken.
     */
    const tryAcquireNow = (key: string): (() => void) | undefined => {
      const host = hosts.get(key)
      if (closed || host === undefined || host.line.size > 0 || host.idle.length === 0) return undefined
      const releaseLocal = local.tryAcquireNow(key)
      if (releaseLocal === undefined) return undefined
      const now = clock.unsafeCurrentTimeMillis()
      while (host.idle.length > 0) {
        const slot = host.idle.pop()!
        if (host.idle.length === 0) lingering.delete(host)
        if (!due(host, slot, now)) {
          return () => {
            const rest = giveNow(host, slot)
            if (rest !== undefined) runInBackground(rest)
            releaseLocal()
          }
        }
        runInBackground(giveBack(host, slot, true))
      }
      releaseLocal()
      return undefined
    }

    const shared = (key: string) => <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(
          acquire(key, restore),
          ({ host, slot }) => Effect.ensuring(restore(effect), give(host, slot))
        )
      )

    const heartbeat = Effect.suspend(() => {
      const holders = Array.from(tokens, ([token, key]) => ({ key, token }))
      return store.heartbeat({ owner, holders, ttlMillis, now: clock.unsafeCurrentTimeMillis() }).pipe(
        Effect.flatMap((extended) => {
          // Holders released meanwhile are not missing; a holder still here whose row was not extended lost its lease.
          const stillHeld = holders.filter(({ token }) => tokens.has(token)).length
          return extended < stillHeld
            ? Effect.logWarning(`${stillHeld - extended} slot lease(s) expired before their heartbeat`)
            : Effect.void
        })
      )
    }).pipe(Effect.catchAll((error) => Effect.logWarning(`${error.message}; leases not extended`)))
    yield* heartbeat.pipe(Effect.delay(Duration.millis(ttlMillis / 3)), Effect.forever, Effect.forkScoped)

    // Lingering slots go back to the store after `linger` (at most half as long again: one pass every `linger / 2`).
    const sweep = Effect.suspend(() => {
      const cutoff = clock.unsafeCurrentTimeMillis() - lingerMillis
      const due: Array<readonly [Host, Slot]> = []
      for (const host of lingering) {
        while (host.idle.length > 0 && host.idle[0]!.idleSince <= cutoff) due.push([host, host.idle.shift()!])
        if (host.idle.length === 0) lingering.delete(host)
      }
      return Effect.forEach(due, ([host, slot]) => giveBack(host, slot, false), { concurrency: 16, discard: true })
    })
    if (lingerMillis > 0) {
      yield* sweep.pipe(Effect.delay(Duration.millis(Math.max(1, lingerMillis / 2))), Effect.forever, Effect.forkScoped)
    }

    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        closed = true
        lingering.clear()
        return Effect.forEach(tokens, ([token, key]) => release(key, token), { concurrency: 16, discard: true })
      })
    )

    return {
      perKey,
      global: options.global,
      owner,
      withPermit: (key) => (effect) => local.withPermit(key)(shared(key)(effect)),
      tryAcquireNow,
      inFlight: local.inFlight,
      globalInFlight: local.globalInFlight,
      keys: local.keys,
      held: Effect.sync(() => tokens.size),
      claims: Effect.sync(() => claims),
      holders: (key) =>
        store.holders({ key, now: clock.unsafeCurrentTimeMillis() }).pipe(Effect.retry(outagePolicy), Effect.orDie)
    } satisfies SharedConcurrency
  })
