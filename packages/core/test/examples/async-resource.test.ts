import { assert, describe, it } from "@effect/vitest"
import { Array, Clock, Duration, Effect, Exit, Fiber, Option, Ref, TestClock } from "effect"
import type { Journal } from "../../examples/async-resource.js"
import { connect, QueryError } from "../../examples/async-resource.js"

/** A journal that keeps every entry with the virtual time it was written at, e.g. "500 Connected to db". */
const makeTimedJournal = Effect.gen(function*() {
  const entries = yield* Ref.make<ReadonlyArray<string>>([])
  const journal: Journal = (entry) =>
    Clock.currentTimeMillis.pipe(Effect.flatMap((at) => Ref.update(entries, Array.append(`${at} ${entry}`))))
  return { journal, entries: Ref.get(entries) } as const
})

/** One connection's journal when it opened at 0 and its close began at `closingAt`. */
const lifecycle = (db: string, closingAt: number) => [
  `0 Connecting to ${db}`,
  `500 Connected to ${db}`,
  `${closingAt} Closing connection to ${db}`,
  `${closingAt + 100} Closed ${db}`
]

const primaryThenReplica = (sql: string) =>
  Effect.gen(function*() {
    const { entries, journal } = yield* makeTimedJournal
    const fiber = yield* Effect.fork(Effect.scoped(Effect.gen(function*() {
      yield* connect("primary", journal)
      const replica = yield* connect("replica", journal)
      return yield* replica.query(sql)
    })))
    yield* TestClock.adjust(Duration.seconds(2))
    return { entries, exit: yield* Fiber.await(fiber) } as const
  })

describe("async-resource", () => {
  it.effect("success: connect 0.5 s, query 0.1 s, close 0.1 s — closed once, done at virtual 0.7 s", () =>
    Effect.gen(function*() {
      const { entries, journal } = yield* makeTimedJournal
      const fiber = yield* Effect.fork(
        Effect.scoped(connect("db", journal).pipe(Effect.flatMap((db) => db.query("SELECT * FROM users"))))
      )
      yield* TestClock.adjust(Duration.millis(699))
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)), "still closing just before 0.7 s")
      yield* TestClock.adjust(Duration.millis(1))

      assert.deepStrictEqual(yield* Fiber.join(fiber), [{ id: 1, name: "Test" }])
      assert.deepStrictEqual(yield* entries, lifecycle("db", 600))
    }))

  it.effect("failure: a failed query keeps its typed error and the connection is still closed once", () =>
    Effect.gen(function*() {
      const { entries, journal } = yield* makeTimedJournal
      const fiber = yield* Effect.fork(
        Effect.scoped(connect("db", journal).pipe(Effect.flatMap((db) => db.query(" "))))
      )
      yield* TestClock.adjust(Duration.millis(600))

      const exit = yield* Fiber.await(fiber)
      assert.deepStrictEqual(exit, Exit.fail(new QueryError({ sql: " ", reason: "sql must not be empty" })))
      assert.deepStrictEqual(yield* entries, lifecycle("db", 500))
    }))

  it.effect("interruption mid-query: the close runs once and the fiber ends interrupted", () =>
    Effect.gen(function*() {
      const { entries, journal } = yield* makeTimedJournal
      const fiber = yield* Effect.fork(
        Effect.scoped(connect("db", journal).pipe(Effect.flatMap((db) => db.query("SELECT * FROM users"))))
      )
      yield* TestClock.adjust(Duration.millis(550))
      yield* Fiber.interruptFork(fiber)
      yield* TestClock.adjust(Duration.millis(100))

      assert.isTrue(Exit.isInterrupted(yield* Fiber.await(fiber)))
      assert.deepStrictEqual(yield* entries, lifecycle("db", 550))
    }))

  it.effect("interruption during the connect: the connect completes, then the close runs once", () =>
    Effect.gen(function*() {
      const { entries, journal } = yield* makeTimedJournal
      const fiber = yield* Effect.fork(
        Effect.scoped(connect("db", journal).pipe(Effect.flatMap((db) => db.query("SELECT * FROM users"))))
      )
      yield* TestClock.adjust(Duration.millis(250))
      yield* Fiber.interruptFork(fiber)
      yield* TestClock.adjust(Duration.millis(350))

      assert.isTrue(Exit.isInterrupted(yield* Fiber.await(fiber)))
      assert.deepStrictEqual(yield* entries, lifecycle("db", 500), "no query ran and nothing leaked")
    }))

  it.effect("two connections in one scope close in reverse order of acquisition", () =>
    Effect.gen(function*() {
      const { entries, exit } = yield* primaryThenReplica("SELECT 1")
      assert.deepStrictEqual(exit, Exit.succeed([{ id: 1, name: "Test" }]))
      assert.deepStrictEqual(yield* entries, [
        "0 Connecting to primary",
        "500 Connected to primary",
        "500 Connecting to replica",
        "1000 Connected to replica",
        "1100 Closing connection to replica",
        "1200 Closed replica",
        "1200 Closing connection to primary",
        "1300 Closed primary"
      ])
    }))

  it.effect("two connections close in reverse order when the work fails too", () =>
    Effect.gen(function*() {
      const { entries, exit } = yield* primaryThenReplica("")
      assert.deepStrictEqual(exit, Exit.fail(new QueryError({ sql: "", reason: "sql must not be empty" })))
      assert.deepStrictEqual(yield* entries, [
        "0 Connecting to primary",
        "500 Connected to primary",
        "500 Connecting to replica",
        "1000 Connected to replica",
        "1000 Closing connection to replica",
        "1100 Closed replica",
        "1100 Closing connection to primary",
        "1200 Closed primary"
      ])
    }))
})
