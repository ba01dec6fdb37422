import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Exit, Fiber, Option, Ref, Scope, Supervisor, TestClock } from "effect"
import { forkDaemonAndLeave, parent, scopedWorkers, worker } from "../../examples/structured-concurrency.js"

/** Runs `effect` with `Console.log` muted. */
const silently = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.flatMap(Effect.console, (console) => Effect.withConsole(effect, { ...console, log: () => Effect.void }))

describe("structured-concurrency", () => {
  it.effect("interrupting the parent interrupts every child and grandchild: 0 live descendants after", () =>
    Effect.gen(function*() {
      const interrupted = yield* Ref.make<ReadonlyArray<string>>([])
      const supervisor = yield* Supervisor.track
      const fiber = yield* Effect.fork(silently(Effect.supervised(parent(interrupted), supervisor)))
      yield* TestClock.adjust(Duration.seconds(1))
      const descendants = yield* supervisor.value
      assert.strictEqual(descendants.length, 3, "child 1, child 2 and the grandchild are running")
      assert.deepStrictEqual(yield* Ref.get(interrupted), [])
      assert.isTrue(Exit.isInterrupted(yield* Fiber.interrupt(fiber)))
      assert.deepStrictEqual([...(yield* Ref.get(interrupted))].sort(), ["child 1", "child 2", "grandchild"])
      for (const descendant of descendants) {
        assert.isTrue(Exit.isInterrupted(yield* Fiber.await(descendant)))
      }
      assert.strictEqual((yield* supervisor.value).length, 0)
    }))

  it.effect("closing the scope interrupts its forkScoped fibers: alive at 0.5 s, interrupted at 1 s", () =>
    Effect.gen(function*() {
      const interrupted = yield* Ref.make<ReadonlyArray<string>>([])
      const supervisor = yield* Supervisor.track
      const fiber = yield* Effect.fork(silently(Effect.supervised(scopedWorkers(interrupted), supervisor)))
      yield* TestClock.adjust(Duration.millis(500))
      assert.strictEqual((yield* supervisor.value).length, 2)
      assert.deepStrictEqual(yield* Ref.get(interrupted), [])
      yield* TestClock.adjust(Duration.millis(500))
      yield* Fiber.join(fiber)
      assert.deepStrictEqual([...(yield* Ref.get(interrupted))].sort(), ["scoped 1", "scoped 2"])
      assert.strictEqual((yield* supervisor.value).length, 0)
    }))

  it.effect("forkIn: a fiber may outlive the fiber that forked it, but not the scope it was forked in", () =>
    Effect.gen(function*() {
      const interrupted = yield* Ref.make<ReadonlyArray<string>>([])
      const scope = yield* Scope.make()
      const child = yield* silently(Effect.forkIn(worker("in scope", interrupted), scope)).pipe(
        Effect.fork,
        Effect.flatMap(Fiber.join)
      )
      yield* TestClock.adjust(Duration.seconds(1))
      assert.isTrue(Option.isNone(yield* Fiber.poll(child)), "its parent is done, it is still running")
      yield* Scope.close(scope, Exit.void)
      assert.isTrue(Exit.isInterrupted(yield* Fiber.await(child)))
      assert.deepStrictEqual(yield* Ref.get(interrupted), ["in scope"])
    }))

  it.effect("contrast: a daemon survives its parent and must be interrupted by hand", () =>
    Effect.gen(function*() {
      const interrupted = yield* Ref.make<ReadonlyArray<string>>([])
      const supervisor = yield* Supervisor.track
      const daemon = yield* silently(Effect.supervised(forkDaemonAndLeave(interrupted), supervisor))
      yield* TestClock.adjust(Duration.seconds(1))
      assert.isTrue(Option.isNone(yield* Fiber.poll(daemon)), "still running after its parent ended")
      assert.strictEqual((yield* supervisor.value).length, 1)
      assert.isTrue(Exit.isInterrupted(yield* Fiber.interrupt(daemon)))
      assert.deepStrictEqual(yield* Ref.get(interrupted), ["daemon"])
      assert.strictEqual((yield* supervisor.value).length, 0)
    }))
})
