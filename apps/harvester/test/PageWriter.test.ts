import { SqlClient } from "@effect/sql"
import { assert, describe, layer } from "@effect/vitest"
import type { Cause } from "effect"
import { Effect, Exit, Fiber, Layer, Scope, TestClock } from "effect"
import type { Fence, NewPage, TargetRow } from "../src/Jobs/JobRepo.js"
import { JobRepo } from "../src/Jobs/JobRepo.js"
import * as PageWriter from "../src/Jobs/PageWriter.js"
import * as Databases from "./support/Databases.js"
import { pageRow } from "./support/Rows.js"

const page = (url: string): NewPage => pageRow(1, { url })

/** A job of `n` targets, all claimed by `owner`. */
const claimedJob = (jobId: string, n: number, owner = "owner") =>
  Effect.gen(function*() {
    const repo = yield* JobRepo
    yield* repo.insertJob({
      id: jobId,
      options: "{}",
      createdAt: 1,
      deadlineAt: null,
      secrets: null,
      targets: Array.from({ length: n }, (_, i) => ({ url: `http://127.0.0.1:1/${jobId}/${i}`, paginate: null }))
    })
    return yield* repo.claim(jobId, owner, 30_000, n)
  })

const fenceOf = (target: TargetRow, owner = "owner"): Fence => ({
  targetId: target.id,
  jobId: target.job_id,
  owner,
  attempt: target.attempt
})

/** Runs `effect` while virtual time moves past the writer's linger (the writer waits 5 ms for more pages). */
const pastLinger = <A, E>(effect: Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(effect)
    yield* Effect.yieldNow()
    yield* TestClock.adjust("10 millis")
    return yield* Fiber.join(fiber)
  })

/** A sink recording what it hears. */
const recordingSink = () => {
  const stored: Array<readonly [string, boolean]> = []
  const broken: Array<Cause.Cause<never>> = []
  const sink: PageWriter.WriteSink = {
    stored: (fence, owned) => Effect.sync(() => stored.push([fence.targetId, owned])),
    broken: (cause) => Effect.sync(() => broken.push(cause))
  }
  return { sink, stored, broken }
}

const statusOf = (targetId: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ readonly status: string; readonly lease_owner: string | null }>`
      SELECT status, lease_owner FROM targets WHERE id = ${targetId}`).pipe(Effect.map((rows) => rows[0]))

const pagesOf = (jobId: string) =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) => sql<{ readonly n: number | string }>`SELECT COUNT(*) AS n FROM pages WHERE job_id = ${jobId}`
  ).pipe(
    Effect.map((rows) => Number(rows[0]!.n))
  )

for (const db of Databases.all) {
  describe.skipIf(db.skip !== null)(`PageWriter on ${db.name}`, () => {
    layer(Layer.provideMerge(JobRepo.Default, db.layer), { timeout: "30 seconds" })((it) => {
      it.scoped("queued pages commit together; each sink hears whether its lease held", () =>
        Effect.gen(function*() {
          const repo = yield* JobRepo
          const writer = yield* PageWriter.make(repo)
          const [a, b, c] = yield* claimedJob("pw-commit", 3)
          const { sink, stored } = recordingSink()
          yield* writer.write(fenceOf(a!), page(a!.url), true, sink)
          yield* writer.write(fenceOf(b!), page(b!.url), true, sink)
          // A lease taken over: the attempt no longer matches.
          yield* writer.write({ ...fenceOf(c!), attempt: c!.attempt + 1 }, page(c!.url), true, sink)
          assert.deepStrictEqual(stored, [], "nothing is committed before the writer runs")
          yield* pastLinger(writer.flush)
          assert.deepStrictEqual(stored, [[a!.id, true], [b!.id, true], [c!.id, false]])
          assert.strictEqual(yield* pagesOf("pw-commit"), 2)
          assert.deepStrictEqual(yield* statusOf(a!.id), { status: "done", lease_owner: null })
          assert.deepStrictEqual(yield* statusOf(c!.id), { status: "leased", lease_owner: "owner" })
          yield* writer.flush.pipe(Effect.timeout("1 second"))
        }))

      it.scoped("store waits for its own commit; more pages than one statement holds all commit", () =>
        Effect.gen(function*() {
          const repo = yield* JobRepo
          const writer = yield* PageWriter.make(repo)
          const targets = yield* claimedJob("pw-many", 600)
          const { sink, stored } = recordingSink()
          for (const target of targets.slice(1)) yield* writer.write(fenceOf(target), page(target.url), true, sink)
          const first = targets[0]!
          assert.isTrue(yield* pastLinger(writer.store(fenceOf(first), page(first.url), false)))
          assert.isFalse(yield* pastLinger(writer.store(fenceOf(first, "intruder"), page(first.url), false)))
          assert.strictEqual(stored.length, 599)
          assert.isTrue(stored.every(([, owned]) => owned))
          assert.strictEqual(yield* pagesOf("pw-many"), 600)
          assert.deepStrictEqual(yield* statusOf(first.id), { status: "leased", lease_owner: "owner" })
        }))

      it.scoped("a full queue holds the next write back until the queue has committed", () =>
        Effect.gen(function*() {
          const repo = yield* JobRepo
          const writer = yield* PageWriter.make(repo, { maxQueued: 2 })
          const [a, b, c] = yield* claimedJob("pw-full", 3)
          const { sink, stored } = recordingSink()
          yield* writer.write(fenceOf(a!), page(a!.url), true, sink)
          yield* writer.write(fenceOf(b!), page(b!.url), true, sink)
          const third = yield* Effect.fork(writer.write(fenceOf(c!), page(c!.url), true, sink))
          yield* Effect.yieldNow()
          assert.isNull(third.unsafePoll(), "the third write waits while two pages are queued")
          yield* TestClock.adjust("10 millis")
          yield* Fiber.join(third)
          assert.deepStrictEqual(stored.slice(0, 2).map(([id]) => id), [a!.id, b!.id], "let in once they committed")
          yield* pastLinger(writer.flush)
          assert.deepStrictEqual(stored.map(([id]) => id), [a!.id, b!.id, c!.id])
          assert.strictEqual(yield* pagesOf("pw-full"), 3)
        }))

      it.scoped("unsafeWrite queues from plain code and wakes the writer; refuses (queues nothing) when full", () =>
        Effect.gen(function*() {
          const repo = yield* JobRepo
          const writer = yield* PageWriter.make(repo, { maxQueued: 2 })
          const [a, b, c] = yield* claimedJob("pw-unsafe", 3)
          const { sink, stored } = recordingSink()
          assert.isTrue(writer.unsafeWrite(fenceOf(a!), page(a!.url), true, sink))
          assert.isTrue(writer.unsafeWrite(fenceOf(b!), page(b!.url), true, sink))
          assert.isFalse(writer.unsafeWrite(fenceOf(c!), page(c!.url), true, sink), "two queued: full")
          yield* pastLinger(writer.flush)
          assert.deepStrictEqual(stored, [[a!.id, true], [b!.id, true]])
          assert.isTrue(writer.unsafeWrite(fenceOf(c!), page(c!.url), true, sink), "room again after the commit")
          yield* pastLinger(writer.flush)
          assert.strictEqual(yield* pagesOf("pw-unsafe"), 3)
          assert.deepStrictEqual(yield* statusOf(c!.id), { status: "done", lease_owner: null })
          // A sink with `ownedNow` hears an owned commit there, and a lost lease through `stored`.
          let heardNow = 0
          const lost: Array<boolean> = []
          const counting: PageWriter.WriteSink = {
            stored: (_, owned) => Effect.sync(() => lost.push(owned)),
            ownedNow: () => heardNow++,
            broken: () => Effect.void
          }
          const [d, e] = yield* claimedJob("pw-unsafe-2", 2)
          assert.isTrue(writer.unsafeWrite(fenceOf(d!), page(d!.url), true, counting))
          assert.isTrue(writer.unsafeWrite({ ...fenceOf(e!), attempt: e!.attempt + 1 }, page(e!.url), true, counting))
          yield* pastLinger(writer.flush)
          assert.deepStrictEqual([heardNow, lost], [1, [false]])
        }))

      it.scoped("a failing transaction breaks its sinks and fails flush; nothing of it is stored", () =>
        Effect.gen(function*() {
          const repo = yield* JobRepo
          const writer = yield* PageWriter.make(repo)
          const [a, b] = yield* claimedJob("pw-broken", 2)
          const { broken, sink, stored } = recordingSink()
          yield* writer.write(fenceOf(a!), page(a!.url), true, sink)
          // `url` is NOT NULL: the insert fails and the whole transaction rolls back.
          const bad: NewPage = { ...page(b!.url), url: null as unknown as string }
          yield* writer.write(fenceOf(b!), bad, true, sink)
          const exit = yield* Effect.exit(pastLinger(writer.flush))
          assert.isTrue(Exit.isFailure(exit))
          assert.strictEqual(broken.length, 1, "each sink hears it once")
          assert.deepStrictEqual(stored, [])
          assert.strictEqual(yield* pagesOf("pw-broken"), 0)
          assert.deepStrictEqual(yield* statusOf(a!.id), { status: "leased", lease_owner: "owner" })
          // The writer goes on with the next transaction.
          const { sink: next, stored: nextStored } = recordingSink()
          yield* writer.write(fenceOf(a!), page(a!.url), true, next)
          yield* pastLinger(writer.flush)
          assert.deepStrictEqual(nextStored, [[a!.id, true]])
        }))

      it.effect("closed mid-flight: queued pages are not stored, the targets stay leased, a new writer goes on", () =>
        Effect.gen(function*() {
          const repo = yield* JobRepo
          const [a, b] = yield* claimedJob("pw-interrupt", 2)
          const scope = yield* Scope.make()
          const writer = yield* Scope.extend(PageWriter.make(repo), scope)
          const { sink, stored } = recordingSink()
          yield* writer.write(fenceOf(a!), page(a!.url), true, sink)
          // A caller waiting for its commit, interrupted: its page is still queued, its fiber ends.
          const waiting = yield* Effect.fork(writer.store(fenceOf(b!), page(b!.url), true))
          yield* Effect.yieldNow()
          yield* Fiber.interrupt(waiting)
          yield* Scope.close(scope, Exit.void)
          yield* TestClock.adjust("10 millis")
          assert.deepStrictEqual(stored, [], "the writer stopped before its linger ended")
          assert.strictEqual(yield* pagesOf("pw-interrupt"), 0)
          assert.deepStrictEqual(yield* statusOf(a!.id), { status: "leased", lease_owner: "owner" })
          assert.strictEqual(yield* repo.release("owner", "pw-interrupt"), 2)

          const [again] = yield* repo.claim("pw-interrupt", "owner", 30_000, 1)
          const { sink: next, stored: nextStored } = recordingSink()
          yield* Effect.scoped(Effect.gen(function*() {
            const fresh = yield* PageWriter.make(repo)
            yield* fresh.write(fenceOf(again!), page(again!.url), true, next)
            yield* pastLinger(fresh.flush)
          }))
          assert.deepStrictEqual(nextStored, [[again!.id, true]])
          assert.strictEqual(yield* pagesOf("pw-interrupt"), 1)
        }))
    })
  })
}
