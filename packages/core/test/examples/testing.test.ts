import { assert, describe, it, layer } from "@effect/vitest"
import { Context, Duration, Effect, Exit, Fiber, Layer, Option, TestClock } from "effect"
import { asyncTask, Database, Lifecycle, slowOperation } from "../../examples/testing.js"
import { waitFor, WaitForTimeout } from "../../examples/wait-for.js"

layer(Database.Test)("testing: one Database fixture shared by the suite", (it) => {
  it.effect("test_async_function: async_task returns \"Done\" at virtual 2 s", () =>
    Effect.gen(function*() {
      const start = yield* TestClock.currentTimeMillis
      const fiber = yield* Effect.fork(asyncTask)
      yield* TestClock.adjust(Duration.millis(1999))
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
      yield* TestClock.adjust(Duration.millis(1))
      assert.strictEqual(yield* Fiber.join(fiber), "Done")
      assert.strictEqual((yield* TestClock.currentTimeMillis) - start, 2000)
    }))

  it.effect("test_with_timeout: slow_operation under a 1 s wait_for fails with WaitForTimeout at virtual 1 s", () =>
    Effect.gen(function*() {
      const fiber = yield* Effect.fork(Effect.flip(waitFor(slowOperation, "1 second")))
      yield* TestClock.adjust(Duration.millis(999))
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
      yield* TestClock.adjust(Duration.millis(1))
      const error = yield* Fiber.join(fiber)
      assert.instanceOf(error, WaitForTimeout)
      assert.strictEqual(error._tag, "WaitForTimeout")
      assert.isTrue(Duration.equals(error.timeout, Duration.seconds(1)))
    }))

  it.effect("test_with_fixture: query(\"SELECT 1\") returns a non-empty result", () =>
    Effect.gen(function*() {
      const database = yield* Database
      const rows = yield* database.query("SELECT 1")
      assert.isAbove(rows.length, 0)
      assert.deepStrictEqual(rows[0], { id: 1, name: "Test" })
    }))

  it.effect("a later test reuses the same connection", () =>
    Effect.gen(function*() {
      const database = yield* Database
      assert.isAbove((yield* database.query("SELECT 2")).length, 0)
    }))

  it.effect("the fixture was opened exactly once for the suite, and is still open", () =>
    Effect.gen(function*() {
      const lifecycle = yield* Lifecycle
      const events = yield* lifecycle.events
      assert.deepStrictEqual(events, ["connect", "query SELECT 1", "query SELECT 2"])
      assert.strictEqual(events.filter((event) => event === "connect").length, 1)
      assert.notInclude(events, "close")
    }))
})

describe("testing: the fixture's release", () => {
  it.effect("close runs when the scope that built the layer ends", () =>
    Effect.gen(function*() {
      const lifecycle = yield* Lifecycle
      yield* Effect.scoped(Effect.gen(function*() {
        const database = Context.get(yield* Layer.build(Database.Default), Database)
        yield* database.query("SELECT 1")
        assert.deepStrictEqual(yield* lifecycle.events, ["connect", "query SELECT 1"], "open inside the scope")
      }))
      assert.deepStrictEqual(yield* lifecycle.events, ["connect", "query SELECT 1", "close"])
    }).pipe(Effect.provide(Lifecycle.Default)))

  it.effect("close runs when a test using the fixture fails", () =>
    Effect.gen(function*() {
      const lifecycle = yield* Lifecycle
      const exit = yield* Effect.exit(
        Effect.flatMap(Database, (database) => database.query("SELECT 1")).pipe(
          Effect.zipRight(Effect.fail("assertion failed")),
          Effect.provide(Database.Default)
        )
      )
      assert.deepStrictEqual(exit, Exit.fail("assertion failed"))
      assert.deepStrictEqual(yield* lifecycle.events, ["connect", "query SELECT 1", "close"])
    }).pipe(Effect.provide(Lifecycle.Default)))

  it.effect("close runs when a test using the fixture is interrupted", () =>
    Effect.gen(function*() {
      const lifecycle = yield* Lifecycle
      const fiber = yield* Effect.fork(
        Effect.flatMap(Database, () => Effect.never).pipe(Effect.provide(Database.Default))
      )
      yield* TestClock.adjust(Duration.seconds(1))
      assert.deepStrictEqual(yield* lifecycle.events, ["connect"])
      assert.isTrue(Exit.isInterrupted(yield* Fiber.interrupt(fiber)))
      assert.deepStrictEqual(yield* lifecycle.events, ["connect", "close"])
    }).pipe(Effect.provide(Lifecycle.Default)))
})
