/**
 * event — `asyncio.Event`: two waiters resume together when the setter fires at 2 s.
 *
 * A `Latch` is the event (`open` is `set`, `await` is `wait`), and a waiter is just a fiber: interrupting one removes
 * it from the latch and leaves the event and the other waiters untouched.
 */
import { Clock, Console, Effect } from "effect"

export interface Resumed {
  readonly name: string
  readonly atMillis: number
}

export const waiter = (event: Effect.Latch, name: string) =>
  Effect.gen(function*() {
    yield* Console.log(`${name} waiting for event...`)
    yield* event.await
    yield* Console.log(`${name} got the event!`)
    return { name, atMillis: yield* Clock.currentTimeMillis } satisfies Resumed
  })

export const setter = (event: Effect.Latch) =>
  Effect.gen(function*() {
    yield* Effect.sleep("2 seconds")
    yield* Console.log("Setting event!")
    yield* event.open
  })

/** Both waiters and the setter at once, like `gather`; returns when and in which order the waiters resumed. */
export const eventDemo = Effect.gen(function*() {
  const event = yield* Effect.makeLatch()
  const [first, second] = yield* Effect.all([waiter(event, "Task 1"), waiter(event, "Task 2"), setter(event)], {
    concurrency: "unbounded"
  })
  return [first, second] as const
})

export const main = Effect.asVoid(eventDemo)
