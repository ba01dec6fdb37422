/**
 * structured-concurrency — no fiber outlives its scope: interrupting a parent interrupts all its descendants.
 *
 * Python needs `TaskGroup` (3.11+) and discipline for this; in Effect every `fork` is a child of its parent fiber by
 * default, `forkScoped`/`forkIn` tie a fiber to a `Scope` instead, and the one escape hatch, `forkDaemon`, says so in its
 * name. A `Supervisor` counts the live fibers, so "nothing leaked" is a number, not a hope.
 */
import { Array, Console, Effect, Fiber, Option, Ref, Supervisor } from "effect"

export type Interrupted = Ref.Ref<ReadonlyArray<string>>

/** Runs until interrupted; its interruption handler appends `name` to `interrupted`. */
export const worker = (name: string, interrupted: Interrupted) =>
  Effect.never.pipe(
    Effect.onInterrupt(() =>
      Console.log(`${name}: interrupted, cleaning up`).pipe(
        Effect.zipRight(Ref.update(interrupted, Array.append(name)))
      )
    )
  )

/** Forks "child 1" and "child 2", and "child 2" forks a "grandchild"; then works forever. */
export const parent = (interrupted: Interrupted) =>
  Effect.gen(function*() {
    yield* Effect.fork(worker("child 1", interrupted))
    yield* Effect.fork(Effect.gen(function*() {
      yield* Effect.fork(worker("grandchild", interrupted))
      return yield* worker("child 2", interrupted)
    }))
    return yield* Effect.never
  })

/** Two `forkScoped` workers inside `Effect.scoped`: they live exactly as long as the scope (here 1 s of work). */
export const scopedWorkers = (interrupted: Interrupted) =>
  Effect.scoped(Effect.gen(function*() {
    yield* Effect.forkScoped(worker("scoped 1", interrupted))
    yield* Effect.forkScoped(worker("scoped 2", interrupted))
    yield* Effect.sleep("1 second")
  }))

/** A parent fiber that forks a daemon and ends at once: the daemon is nobody's child and keeps running. */
export const forkDaemonAndLeave = (interrupted: Interrupted) =>
  Effect.fork(Effect.forkDaemon(worker("daemon", interrupted))).pipe(Effect.flatMap(Fiber.join))

const count = (supervisor: Supervisor.Supervisor<Array<Fiber.RuntimeFiber<unknown, unknown>>>) =>
  Effect.map(supervisor.value, (fibers) => fibers.length)

export const main = Effect.gen(function*() {
  const interrupted = yield* Ref.make<ReadonlyArray<string>>([])

  const family = yield* Supervisor.track
  const parentFiber = yield* Effect.fork(Effect.supervised(parent(interrupted), family))
  yield* Effect.sleep("100 millis")
  yield* Console.log(`parent running with ${yield* count(family)} live descendants; interrupting the parent`)
  yield* Fiber.interrupt(parentFiber)
  yield* Console.log(`after the parent's interruption: ${yield* count(family)} live descendants`)

  const scoped = yield* Supervisor.track
  yield* Effect.supervised(scopedWorkers(interrupted), scoped)
  yield* Console.log(`after the scope closed: ${yield* count(scoped)} live scoped fibers`)

  const daemon = yield* forkDaemonAndLeave(interrupted)
  yield* Effect.sleep("100 millis")
  yield* Console.log(`daemon still running after its parent ended: ${Option.isNone(yield* Fiber.poll(daemon))}`)
  yield* Fiber.interrupt(daemon)
  yield* Console.log(`interrupted, in order: ${(yield* Ref.get(interrupted)).join(", ")}`)
})
