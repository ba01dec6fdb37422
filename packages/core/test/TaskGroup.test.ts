import { assert, describe, it } from "@effect/vitest"
import {
  Cause,
  Chunk,
  Clock,
  Data,
  Deferred,
  Duration,
  Effect,
  Exit,
  Fiber,
  FiberRef,
  Option,
  Ref,
  Scheduler,
  TestClock
} from "effect"
import * as TaskGroup from "../src/TaskGroup.js"
import { forkAndAdjust } from "./support/VirtualTime.js"

class PageFailed extends Data.TaggedError("PageFailed")<{ readonly page: string }> {}
class Timeout extends Data.TaggedError("Timeout")<{ readonly page: string }> {}

const now = Clock.currentTimeMillis

/** Counts running tasks: up on start, down when they end (however they end). */
const tracked = <A, E>(running: Ref.Ref<number>, effect: Effect.Effect<A, E>) =>
  Effect.acquireUseRelease(Ref.update(running, (n) => n + 1), () => effect, () => Ref.update(running, (n) => n - 1))

describe("TaskGroup", () => {
  it.effect("returns once every task is done, including tasks spawned late by other tasks", () =>
    Effect.gen(function*() {
      const finished = yield* Ref.make<ReadonlyArray<string>>([])
      const visit = (page: string, millis: number) =>
        Effect.sleep(Duration.millis(millis)).pipe(
          Effect.zipRight(now),
          Effect.tap((at) => Ref.update(finished, (pages) => [...pages, `${page}@${at}`]))
        )
      // A crawler: the root page takes 1 s, then its two links are spawned; one of them discovers a third page.
      const crawl = TaskGroup.scoped((group) =>
        Effect.gen(function*() {
          const root = yield* group.spawn(
            Effect.gen(function*() {
              yield* visit("/", 1000)
              const a = yield* group.spawn(visit("/a", 2000))
              const b = yield* group.spawn(
                Effect.gen(function*() {
                  yield* visit("/b", 500)
                  return yield* group.spawn(visit("/b/c", 2500))
                })
              )
              return { a, b }
            })
          )
          return root
        })
      )
      const fiber = yield* forkAndAdjust(crawl, 3999)
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)), "/b/c (spawned at 1.5 s, 2.5 s long) still running")
      yield* TestClock.adjust(Duration.millis(1))
      const root = yield* Fiber.join(fiber)
      assert.deepStrictEqual(yield* Ref.get(finished), ["/@1000", "/b@1500", "/a@3000", "/b/c@4000"])
      const { a, b } = yield* root.join
      assert.strictEqual(yield* a.join, 3000)
      assert.strictEqual(yield* (yield* b.join).join, 4000)
    }))

  it.effect("each handle joins to its own typed result, during and after the block", () =>
    Effect.gen(function*() {
      const program = TaskGroup.scoped((group) =>
        Effect.gen(function*() {
          const slow = yield* group.spawn(Effect.as(Effect.sleep("3 seconds"), "slow"))
          const fast = yield* group.spawn(Effect.as(Effect.sleep("1 second"), 42))
          const fastValue = yield* fast.join
          const joinedAt = yield* now
          assert.isTrue(Option.isNone(yield* slow.poll), "slow is still running when fast is joined")
          return { slow, fast, fastValue, joinedAt }
        })
      )
      const fiber = yield* forkAndAdjust(program, 3000)
      const { fast, fastValue, joinedAt, slow } = yield* Fiber.join(fiber)
      assert.strictEqual(fastValue, 42)
      assert.strictEqual(joinedAt, 1000)
      assert.strictEqual(yield* slow.join, "slow")
      assert.deepStrictEqual(yield* fast.await, Exit.succeed(42))
      assert.deepStrictEqual(yield* slow.poll, Option.some(Exit.succeed("slow")))
    }))

  // TestClock wakes sleepers one at a time and lets the runtime settle in between, so two sleeps ending at the same
  // virtual instant are not simultaneous; tasks woken by one event (the Deferred) are.
  it.effect("the first failure interrupts the siblings; failures at the same instant are all collected, typed", () =>
    Effect.gen(function*() {
      const interrupted = yield* Ref.make(0)
      const responses = yield* Deferred.make<void>()
      const program = TaskGroup.scoped((group: TaskGroup.TaskGroup<PageFailed | Timeout>) =>
        Effect.gen(function*() {
          yield* group.spawn(Effect.zipRight(Effect.sleep("1 second"), Deferred.succeed(responses, undefined)))
          yield* group.spawn(Effect.zipRight(Deferred.await(responses), new PageFailed({ page: "/a" })))
          yield* group.spawn(Effect.zipRight(Deferred.await(responses), new Timeout({ page: "/b" })))
          for (let i = 0; i < 3; i++) {
            yield* group.spawn(
              Effect.onInterrupt(Effect.sleep("10 seconds"), () => Ref.update(interrupted, (n) => n + 1))
            )
          }
          return "body done"
        })
      ).pipe(
        Effect.catchTag(
          "TaskGroupError",
          (error) => Effect.map(now, (at) => ({ at, tags: error.errors.map((e) => `${e._tag}:${e.page}`) }))
        )
      )
      const fiber = yield* forkAndAdjust(program, 1000)
      const result = yield* Fiber.join(fiber)
      assert.deepStrictEqual(result, { at: 1000, tags: ["PageFailed:/a", "Timeout:/b"] })
      assert.strictEqual(yield* Ref.get(interrupted), 3, "every sibling's onInterrupt ran before the group returned")
    }))

  it.effect("failures raised while siblings are interrupted are collected; defects stay defects", () =>
    Effect.gen(function*() {
      const program = TaskGroup.scoped((group: TaskGroup.TaskGroup<string>) =>
        Effect.gen(function*() {
          yield* group.spawn(Effect.zipRight(Effect.sleep("1 second"), Effect.fail("first")))
          // An uninterruptible step cannot be cut short: it fails at 2 s, while the group is aborting.
          yield* group.spawn(Effect.uninterruptible(Effect.zipRight(Effect.sleep("2 seconds"), Effect.fail("during"))))
          // A cleanup that dies when interrupted.
          yield* group.spawn(Effect.onInterrupt(Effect.never, () => Effect.die("finalizer bug")))
        })
      )
      const fiber = yield* forkAndAdjust(program, 1000)
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)), "waits for the uninterruptible task")
      yield* TestClock.adjust("1 second")
      const exit = yield* Fiber.await(fiber)
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) {
        const [error] = Chunk.toReadonlyArray(Cause.failures(exit.cause))
        assert.strictEqual(error._tag, "TaskGroupError")
        assert.deepStrictEqual(error.errors, ["first", "during"])
        assert.deepStrictEqual(Chunk.toReadonlyArray(Cause.defects(error.cause)), ["finalizer bug"])
        assert.deepStrictEqual(Chunk.toReadonlyArray(Cause.defects(exit.cause)), ["finalizer bug"])
      }
      // A TaskGroupError handler still sees the defect.
      const defects = yield* Fiber.join(fiber).pipe(
        Effect.as([]),
        Effect.catchTag("TaskGroupError", (error) => Effect.succeed(Chunk.toReadonlyArray(Cause.defects(error.cause))))
      )
      assert.deepStrictEqual(defects, ["finalizer bug"])
    }))

  it.effect("a failing body interrupts its tasks and its error joins the group's", () =>
    Effect.gen(function*() {
      const running = yield* Ref.make(0)
      const program = TaskGroup.scoped((group: TaskGroup.TaskGroup<string>) =>
        Effect.gen(function*() {
          for (let i = 0; i < 4; i++) yield* group.spawn(tracked(running, Effect.never))
          yield* Effect.sleep("500 millis")
          return yield* new PageFailed({ page: "body" })
        })
      )
      const fiber = yield* forkAndAdjust(program, 499)
      assert.strictEqual(yield* Ref.get(running), 4)
      yield* TestClock.adjust("1 millis")
      const error = yield* Effect.flip(Fiber.join(fiber))
      assert.deepStrictEqual(error.errors, [new PageFailed({ page: "body" })])
      assert.strictEqual(yield* Ref.get(running), 0)
    }))

  it.effect("interrupting the caller interrupts the body and every task, leaving none running", () =>
    Effect.gen(function*() {
      const running = yield* Ref.make(0)
      const program = TaskGroup.scoped((group) =>
        Effect.gen(function*() {
          for (let i = 0; i < 5; i++) {
            yield* group.spawn(
              tracked(running, Effect.zipRight(Effect.sleep("1 second"), group.spawn(tracked(running, Effect.never))))
            )
          }
          return yield* tracked(running, Effect.never)
        })
      )
      const fiber = yield* forkAndAdjust(program, 2000)
      assert.strictEqual(yield* Ref.get(running), 6, "5 late-spawned tasks and the body")
      const exit = yield* Fiber.interrupt(fiber)
      assert.isTrue(Exit.isInterrupted(exit))
      assert.strictEqual(yield* Ref.get(running), 0)
    }))

  it.effect("a cancelled task is not a failure; a spawn on a closed group never runs", () =>
    Effect.gen(function*() {
      const ran = yield* Ref.make(false)
      const program = TaskGroup.scoped((group) =>
        Effect.gen(function*() {
          const cancelled = yield* group.spawn(Effect.never)
          const other = yield* group.spawn(Effect.as(Effect.sleep("1 second"), "ok"))
          yield* cancelled.interrupt
          return { cancelled, other, group }
        })
      )
      const fiber = yield* forkAndAdjust(program, 1000)
      const { cancelled, group, other } = yield* Fiber.join(fiber)
      assert.strictEqual(yield* other.join, "ok")
      assert.isTrue(Exit.isInterrupted(yield* cancelled.await))
      const late = yield* group.spawn(Ref.set(ran, true))
      assert.isTrue(Exit.isInterrupted(yield* late.await))
      yield* Effect.yieldNow()
      assert.isFalse(yield* Ref.get(ran))
      assert.strictEqual(yield* group.size, 0)
    }))

  it.effect("bounds concurrency: waiting tasks start in order as slots free, and never start after a failure", () =>
    Effect.gen(function*() {
      const running = yield* Ref.make(0)
      const peak = yield* Ref.make(0)
      const started = yield* Ref.make<ReadonlyArray<number>>([])
      const task = (i: number) =>
        tracked(
          running,
          Effect.gen(function*() {
            yield* Ref.update(started, (all) => [...all, i])
            yield* Ref.get(running).pipe(Effect.flatMap((n) => Ref.update(peak, (p) => Math.max(p, n))))
            yield* Effect.sleep("1 second")
            if (i === 3) return yield* Effect.fail(`task ${i}`)
            return i
          })
        )
      const program = TaskGroup.scoped(
        (group: TaskGroup.TaskGroup<string>) => Effect.forEach([0, 1, 2, 3, 4, 5, 6], (i) => group.spawn(task(i))),
        { concurrency: 2 }
      )
      const fiber = yield* forkAndAdjust(program, 1000)
      assert.deepStrictEqual(yield* Ref.get(started), [0, 1, 2, 3])
      yield* TestClock.adjust("1 second")
      const error = yield* Effect.flip(Fiber.join(fiber))
      assert.deepStrictEqual(error._tag === "TaskGroupError" && error.errors, ["task 3"])
      assert.deepStrictEqual(yield* Ref.get(started), [0, 1, 2, 3], "4, 5 and 6 never started")
      assert.strictEqual(yield* Ref.get(peak), 2)
      assert.strictEqual(yield* Ref.get(running), 0)
    }))

  it.effect("with a bound, all tasks run and finish at the expected virtual time", () =>
    Effect.gen(function*() {
      const program = TaskGroup.scoped(
        (group) => Effect.forEach([1, 2, 3, 4, 5], (i) => group.spawn(Effect.as(Effect.sleep("1 second"), i))),
        { concurrency: 2 }
      ).pipe(Effect.flatMap((tasks) => Effect.forEach(tasks, (task) => task.join)))
      const fiber = yield* forkAndAdjust(program, 2999)
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(yield* Fiber.join(fiber), [1, 2, 3, 4, 5])
    }))

  it.effect("a waiting task cancelled through its handle never starts and does not hold the group open", () =>
    Effect.gen(function*() {
      const started = yield* Ref.make<ReadonlyArray<string>>([])
      const task = (name: string) =>
        Effect.zipRight(Ref.update(started, (all) => [...all, name]), Effect.sleep("1 second"))
      const program = TaskGroup.scoped((group) =>
        Effect.gen(function*() {
          yield* group.spawn(task("first"))
          const waiting = yield* group.spawn(task("waiting"))
          const sizeBefore = yield* group.size
          yield* waiting.interrupt
          return { waiting, sizeBefore, sizeAfter: yield* group.size }
        }), { concurrency: 1 })
      const fiber = yield* forkAndAdjust(program, 1000)
      const { sizeAfter, sizeBefore, waiting } = yield* Fiber.join(fiber)
      assert.deepStrictEqual([sizeBefore, sizeAfter], [2, 1])
      assert.isTrue(Exit.isInterrupted(yield* waiting.await))
      assert.deepStrictEqual(yield* Ref.get(started), ["first"])
      assert.strictEqual(yield* Clock.currentTimeMillis, 1000)
    }))

  it.effect("a group whose tasks can only die dies with every defect (its error type is never)", () =>
    Effect.gen(function*() {
      const go = yield* Deferred.make<void>()
      const program: Effect.Effect<void> = TaskGroup.scoped((group) =>
        Effect.gen(function*() {
          yield* group.spawn(Effect.zipRight(Deferred.await(go), Effect.die("bug A")))
          yield* group.spawn(Effect.zipRight(Deferred.await(go), Effect.die("bug B")))
          yield* Deferred.succeed(go, undefined)
        })
      )
      const exit = yield* Effect.exit(program)
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) {
        assert.deepStrictEqual(Chunk.toReadonlyArray(Cause.defects(exit.cause)), ["bug A", "bug B"])
        assert.isTrue(Chunk.isEmpty(Cause.failures(exit.cause)))
      }
    }))

  it.effect("tasks share a group scheduler, unless the caller set a scheduler of its own", () =>
    Effect.gen(function*() {
      const schedulerOfATask = TaskGroup.scoped((group) =>
        Effect.flatMap(group.spawn(FiberRef.get(FiberRef.currentScheduler)), (task) => task.join)
      )
      const custom = Scheduler.make((task, priority, fiber) =>
        Scheduler.defaultScheduler.scheduleTask(task, priority, fiber)
      )
      assert.strictEqual(yield* Effect.withScheduler(schedulerOfATask, custom), custom)
      const own = yield* schedulerOfATask
      assert.notStrictEqual(own, Scheduler.defaultScheduler)
      assert.notStrictEqual(own, yield* schedulerOfATask, "one scheduler per group")
    }))

  it.effect("rejects a concurrency that is not a positive integer", () =>
    Effect.gen(function*() {
      for (const concurrency of [0, -1, 1.5, Number.NaN]) {
        const error = yield* Effect.flip(TaskGroup.scoped(() => Effect.void, { concurrency }))
        assert.strictEqual(error._tag, "InvalidTaskGroupOptions")
        if (error._tag === "InvalidTaskGroupOptions") assert.strictEqual(error.field, "concurrency")
      }
    }))
})
