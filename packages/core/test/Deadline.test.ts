import { assert, describe, it } from "@effect/vitest"
import { Clock, Duration, Effect, Exit, Fiber, Option, Ref, TestClock } from "effect"
import * as Deadline from "../src/Deadline.js"
import * as TaskGroup from "../src/TaskGroup.js"
import { forkAndAdjust } from "./support/VirtualTime.js"

const now = Clock.currentTimeMillis

const remainingMillis = Effect.map(Deadline.remaining, Option.map(Duration.toMillis))

describe("Deadline", () => {
  it.effect("outside any deadline, remaining is None", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* Deadline.remaining, Option.none())
      assert.deepStrictEqual(yield* Deadline.currentScope, Option.none())
    }))

  it.effect("remaining reads the budget left at each virtual instant, also in forked fibers", () =>
    Effect.gen(function*() {
      const readings = yield* Ref.make<ReadonlyArray<Option.Option<number>>>([])
      const read = Effect.flatMap(remainingMillis, (left) => Ref.update(readings, (all) => [...all, left]))
      const program = Effect.gen(function*() {
        yield* read
        yield* Effect.sleep("3 seconds")
        yield* read
        const child = yield* Effect.fork(Effect.zipRight(Effect.sleep("1500 millis"), read))
        yield* Fiber.join(child)
        yield* Effect.sleep("5500 millis")
        yield* read
      }).pipe(Deadline.within("job", "10 seconds"))
      const fiber = yield* forkAndAdjust(program, 10_000)
      yield* Fiber.join(fiber)
      assert.deepStrictEqual(yield* Ref.get(readings), [
        Option.some(10_000),
        Option.some(7000),
        Option.some(5500),
        Option.some(0)
      ])
      assert.deepStrictEqual(yield* Deadline.remaining, Option.none(), "the deadline ends with its scope")
    }))

  it.effect("an inner deadline longer than the outer one is clamped, and expiry names the outer scope", () =>
    Effect.gen(function*() {
      const inner = Effect.gen(function*() {
        const left = yield* remainingMillis
        const scope = yield* Deadline.currentScope
        yield* Effect.sleep("1 minute")
        return { left, scope }
      }).pipe(Deadline.within("page", "30 seconds"))
      const program = Effect.zipRight(Effect.sleep("2 seconds"), inner).pipe(Deadline.within("crawl", "5 seconds"))
      const fiber = yield* forkAndAdjust(program, 4999)
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
      yield* TestClock.adjust("1 millis")
      const exit = yield* Fiber.await(fiber)
      assert.deepStrictEqual(
        exit,
        Exit.fail(new Deadline.DeadlineExceeded({ scope: "crawl", budget: Duration.seconds(5) }))
      )
    }))

  it.effect("inside a clamped inner scope, remaining is the outer deadline's", () =>
    Effect.gen(function*() {
      const program = Effect.zipRight(
        Effect.sleep("2 seconds"),
        Effect.all([remainingMillis, Deadline.currentScope]).pipe(Deadline.within("page", "30 seconds"))
      ).pipe(Deadline.within("crawl", "5 seconds"))
      const fiber = yield* forkAndAdjust(program, 2000)
      assert.deepStrictEqual(yield* Fiber.join(fiber), [Option.some(3000), Option.some("crawl")])
    }))

  it.effect("a shorter inner deadline binds: it expires at exactly its instant and names the inner scope", () =>
    Effect.gen(function*() {
      const program = Effect.gen(function*() {
        yield* Effect.sleep("1 second")
        const inner = yield* Effect.either(
          Effect.zipRight(remainingMillis, Effect.never).pipe(Deadline.within("page", "2 seconds"))
        )
        return { inner, at: yield* now, left: yield* remainingMillis }
      }).pipe(Deadline.within("crawl", "10 seconds"))
      const fiber = yield* forkAndAdjust(program, 2999)
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)), "not expired 1 ms before the deadline")
      yield* TestClock.adjust("1 millis")
      const result = yield* Fiber.join(fiber)
      assert.deepStrictEqual(
        result.inner._tag === "Left" && result.inner.left,
        new Deadline.DeadlineExceeded({ scope: "page", budget: Duration.seconds(2) })
      )
      assert.strictEqual(result.at, 3000)
      assert.deepStrictEqual(result.left, Option.some(7000), "the outer deadline is back in force")
    }))

  it.effect("an outer deadline expiring inside an inner scope is raised once, by the outer scope", () =>
    Effect.gen(function*() {
      const seen = yield* Ref.make<ReadonlyArray<string>>([])
      const record =
        (where: string) => <A>(self: Effect.Effect<A, Deadline.DeadlineExceeded | Deadline.InvalidDeadline>) =>
          Effect.tapError(
            self,
            (error) =>
              Ref.update(
                seen,
                (all) => [...all, `${where}:${error._tag === "DeadlineExceeded" ? error.scope : error._tag}`]
              )
          )
      const program = Effect.never.pipe(
        Deadline.within("page", "3 seconds"),
        record("inner"),
        Deadline.within("crawl", "2 seconds"),
        record("outer")
      )
      const fiber = yield* forkAndAdjust(program, 2000)
      yield* Effect.exit(Fiber.join(fiber))
      assert.deepStrictEqual(yield* Ref.get(seen), ["outer:crawl"])
    }))

  it.effect("on expiry the work is interrupted and its finalizers have run; nothing is left running", () =>
    Effect.gen(function*() {
      const running = yield* Ref.make(0)
      const worker = Effect.acquireUseRelease(
        Ref.update(running, (n) => n + 1),
        () => Effect.never,
        () => Effect.zipRight(Effect.sleep("100 millis"), Ref.update(running, (n) => n - 1))
      )
      const program = Effect.all([worker, worker, worker], { concurrency: "unbounded" }).pipe(
        Deadline.within("batch", "1 second"),
        Effect.flip,
        Effect.zip(Effect.zip(now, Ref.get(running)))
      )
      const fiber = yield* forkAndAdjust(program, 1000)
      assert.strictEqual(yield* Ref.get(running), 3, "finalizers still running: the error is not raised yet")
      yield* TestClock.adjust("100 millis")
      const [error, [at, left]] = yield* Fiber.join(fiber)
      assert.strictEqual(error._tag, "DeadlineExceeded")
      assert.strictEqual(at, 1100)
      assert.strictEqual(left, 0)
    }))

  it.effect("tasks of a TaskGroup inside a deadline read its budget and are all interrupted when it expires", () =>
    Effect.gen(function*() {
      const running = yield* Ref.make(0)
      const budgets = yield* Ref.make<ReadonlyArray<Option.Option<number>>>([])
      const page = (delay: number) =>
        Effect.acquireUseRelease(
          Ref.update(running, (n) => n + 1),
          () =>
            Effect.zipRight(
              Effect.sleep(Duration.millis(delay)),
              Effect.flatMap(remainingMillis, (left) => Ref.update(budgets, (all) => [...all, left]))
            ).pipe(Effect.zipRight(Effect.never)),
          () => Ref.update(running, (n) => n - 1)
        )
      const crawl = TaskGroup.scoped((group) => Effect.forEach([500, 1500], (delay) => group.spawn(page(delay))))
      const fiber = yield* forkAndAdjust(Effect.flip(Deadline.within(crawl, "crawl", "2 seconds")), 2000)
      const error = yield* Fiber.join(fiber)
      assert.deepStrictEqual(error, new Deadline.DeadlineExceeded({ scope: "crawl", budget: Duration.seconds(2) }))
      assert.deepStrictEqual(yield* Ref.get(budgets), [Option.some(1500), Option.some(500)])
      assert.strictEqual(yield* Ref.get(running), 0)
    }))

  it.effect("a zero budget fails at once without running the effect; an infinite one adds no deadline", () =>
    Effect.gen(function*() {
      const ran = yield* Ref.make(false)
      const error = yield* Effect.flip(Deadline.within(Ref.set(ran, true), "now", 0))
      assert.deepStrictEqual(error, new Deadline.DeadlineExceeded({ scope: "now", budget: Duration.zero }))
      assert.isFalse(yield* Ref.get(ran))
      assert.deepStrictEqual(yield* Deadline.within(remainingMillis, "forever", Duration.infinity), Option.none())
      assert.deepStrictEqual(
        yield* remainingMillis.pipe(
          Deadline.within("forever", Duration.infinity),
          Deadline.within("outer", "1 second")
        ),
        Option.some(1000)
      )
    }))

  it.effect("a negative, NaN or unparsable budget is an InvalidDeadline naming the scope, and runs nothing", () =>
    Effect.gen(function*() {
      const ran = yield* Ref.make(false)
      const budgets: ReadonlyArray<Duration.DurationInput> = [-1, Number.NaN, "soon" as Duration.DurationInput, [-1, 0]]
      for (const budget of budgets) {
        const error = yield* Effect.flip(Deadline.within(Ref.set(ran, true), "bad", budget))
        assert.strictEqual(error._tag, "InvalidDeadline")
        if (error._tag === "InvalidDeadline") {
          assert.strictEqual(error.scope, "bad")
          assert.strictEqual(error.field, "budget")
        }
      }
      assert.isFalse(yield* Ref.get(ran))
    }))

  it.effect("at: a deadline at an absolute instant; one already past fails at once", () =>
    Effect.gen(function*() {
      yield* TestClock.adjust("10 seconds")
      const program = Effect.zipRight(remainingMillis, Effect.never).pipe(Deadline.at("until 12 s", 12_000))
      const fiber = yield* forkAndAdjust(Effect.flip(program), 2000)
      assert.deepStrictEqual(
        yield* Fiber.join(fiber),
        new Deadline.DeadlineExceeded({ scope: "until 12 s", budget: Duration.seconds(2) })
      )
      const past = yield* Effect.flip(Deadline.at(Effect.void, "past", 1000))
      assert.deepStrictEqual(past, new Deadline.DeadlineExceeded({ scope: "past", budget: Duration.zero }))
      const invalid = yield* Effect.flip(Deadline.at(Effect.void, "nan", Number.NaN))
      assert.strictEqual(invalid._tag, "InvalidDeadline")
    }))
})
