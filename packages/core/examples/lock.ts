/**
 * lock — `asyncio.Lock`: ten concurrent read-sleep-write increments end at 10 with the lock, at 1 without it.
 *
 * A one-permit `Semaphore` is the lock and `withPermits(1)` is `async with lock`, except that the permit also comes
 * back when the holder is interrupted mid-update, so a cancelled increment can never leave the lock taken.
 */
import { Console, Effect, Ref } from "effect"

export interface SharedResource {
  readonly data: Effect.Effect<number>
  readonly lock: Effect.Semaphore
  /** Read, work for 100 ms, write: under the lock. */
  readonly increment: Effect.Effect<void>
  /** The same read-sleep-write without the lock: concurrent callers overwrite each other's updates. */
  readonly incrementUnlocked: Effect.Effect<void>
}

export const makeSharedResource = Effect.gen(function*() {
  const data = yield* Ref.make(0)
  const lock = yield* Effect.makeSemaphore(1)
  const incrementUnlocked = Effect.gen(function*() {
    const current = yield* Ref.get(data)
    yield* Effect.sleep("100 millis")
    yield* Ref.set(data, current + 1)
  })
  return {
    data: Ref.get(data),
    lock,
    increment: lock.withPermits(1)(incrementUnlocked),
    incrementUnlocked
  } satisfies SharedResource
})

/** Ten increments at once on a fresh resource; returns the final value. */
export const incrementTenTimes = (options: { readonly locked: boolean }) =>
  Effect.gen(function*() {
    const resource = yield* makeSharedResource
    const increment = options.locked ? resource.increment : resource.incrementUnlocked
    yield* Effect.replicateEffect(increment, 10, { concurrency: "unbounded", discard: true })
    return yield* resource.data
  })

export const main = Effect.gen(function*() {
  const locked = yield* incrementTenTimes({ locked: true })
  yield* Console.log(`Final value: ${locked}`)
  const unlocked = yield* incrementTenTimes({ locked: false })
  yield* Console.log(`Final value without the lock: ${unlocked} (${10 - unlocked} updates lost)`)
})
