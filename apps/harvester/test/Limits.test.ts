/**
 * Shared limits against the real stores: a fresh PostgreSQL database (`limits_test_<random>` on 127.0.0.1:5432,
 * dropped afterwards), a fresh SQLite file, and Redis at 127.0.0.1:6379 under a unique key prefix (deleted
 * afterwards). A PostgreSQL or Redis variant is skipped, with the reason printed, when its server is unreachable —
 * except under `CI=true`, where it must run. Several limiter instances in this process stand for several processes;
 * the cross-process tests also spawn real ones (test/fixtures/limits-worker.ts).
 *
 * Real time is the point here (database and Redis clocks), so the suites run without the test services. Windows are
 * small (5 starts per 200 ms) and the only assertions on time are the window-count invariants, judged from the
 * instants at which the store recorded each start (in the store's clock, the one clock every instance shares).
 */
import { Reactivity } from "@effect/experimental"
import { Command, FileSystem } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { assert, describe, it, layer } from "@effect/vitest"
import type * as KeyedConcurrency from "@spindle/core/KeyedConcurrency"
import * as RateLimiter from "@spindle/core/RateLimiter"
import {
  Cause,
  Clock,
  ConfigProvider,
  Context,
  Deferred,
  Duration,
  Effect,
  Exit,
  Fiber,
  FiberId,
  Layer,
  Option,
  Queue,
  Random,
  Redacted,
  Schema,
  Scope,
  Stream,
  TestClock
} from "effect"
import { Redis } from "ioredis"
import { fileURLToPath } from "node:url"
import type { SharedDecision, SharedRateLimiterStore } from "../src/Limits/LimitStore.js"
import { LimitStoreError, resilient } from "../src/Limits/LimitStore.js"
import * as PgRateLimiterStore from "../src/Limits/PgRateLimiterStore.js"
import { ensureSchema } from "../src/Limits/schema.js"
import * as SharedConcurrency from "../src/Limits/SharedConcurrency.js"
import * as SharedLimits from "../src/Limits/SharedLimits.js"
import { PG_PORT, probe, REDIS_PORT, required } from "./support/Services.js"

const PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/test"
const REDIS_URL = "redis://127.0.0.1:6379"

const [pgProblem, redisProblem] = await Promise.all([probe(PG_PORT), probe(REDIS_PORT)])
for (const [name, problem] of [["PostgreSQL", pgProblem], ["Redis", redisProblem]] as const) {
  if (problem !== null && !required) process.stderr.write(`[Limits tests] ${name} variants skipped: ${problem}\n`)
}

const randomSuffix = () => `${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`

/** How a test looks into a store, and how a worker process reaches it. */
class Probe extends Context.Tag("test/Limits/Probe")<Probe, {
  /** The pause of `key` in the store's clock, if any. */
  readonly pausedUntil: (key: string) => Effect.Effect<number | null>
  /** Slot rows (or members) of `key`, live or expired: 0 means every slot was released. */
  readonly slotRows: (key: string) => Effect.Effect<number>
  /** The worker fixture's `backend` argument, when a second process can share the store. */
  readonly worker: Option.Option<unknown>
}>() {}

type BackendLayer = Layer.Layer<SharedLimits.SharedLimits | Probe | NodeContext.NodeContext>

const Count = Schema.Struct({ n: Schema.Union(Schema.Number, Schema.NumberFromString) })
const Pause = Schema.Array(Schema.Struct({ until_ms: Schema.Union(Schema.Number, Schema.NumberFromString) }))

const sqlProbe = (worker: Option.Option<unknown>) =>
  Layer.effect(
    Probe,
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      return {
        pausedUntil: (key) =>
          sql`SELECT until_ms FROM limit_rate_pauses WHERE key = ${key}`.pipe(
            Effect.flatMap(Schema.decodeUnknown(Pause)),
            Effect.map((rows) => rows[0]?.until_ms ?? null),
            Effect.orDie
          ),
        slotRows: (key) =>
          sql`SELECT COUNT(*) AS n FROM limit_host_slots WHERE host = ${key}`.pipe(
            Effect.flatMap((rows) => Schema.decodeUnknown(Count)(rows[0])),
            Effect.map((row) => row.n),
            Effect.orDie
          ),
        worker
      }
    })
  )

const onAdmin = (statement: (sql: PgClient.PgClient) => Effect.Effect<unknown, unknown>) =>
  Effect.scoped(Effect.flatMap(PgClient.make({ url: Redacted.make(PG_ADMIN_URL), maxConnections: 1 }), statement)).pipe(
    Effect.provide(Reactivity.layer),
    Effect.orDie
  )

const postgres: BackendLayer = Layer.unwrapScoped(Effect.gen(function*() {
  const name = `limits_test_${randomSuffix()}`
  yield* Effect.acquireRelease(
    onAdmin((sql) => sql`CREATE DATABASE ${sql(name)}`),
    () => onAdmin((sql) => sql`DROP DATABASE IF EXISTS ${sql(name)} WITH (FORCE)`)
  )
  const url = `postgres://postgres@127.0.0.1:5432/${name}`
  const client = PgClient.layer({ url: Redacted.make(url), maxConnections: 10 })
  return Layer.mergeAll(
    SharedLimits.layerSql({ sweepInterval: "1 second" }),
    sqlProbe(Option.some({ kind: "postgres", url }))
  )
    .pipe(Layer.provide(client), Layer.orDie)
})).pipe(Layer.provideMerge(NodeContext.layer))

const sqlite: BackendLayer = Layer.unwrapScoped(
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const dir = yield* fs.makeTempDirectoryScoped({ prefix: "limits-test-" })
    const client = SqliteClient.layer({ filename: `${dir}/limits.db` })
    return Layer.mergeAll(SharedLimits.layerSql({ sweepInterval: "1 second" }), sqlProbe(Option.none()))
      .pipe(Layer.provide(client), Layer.orDie)
  }).pipe(Effect.orDie)
).pipe(Layer.provideMerge(NodeContext.layer))

const redis: BackendLayer = Layer.unwrapScoped(Effect.gen(function*() {
  const prefix = `spindle:test:${randomSuffix()}:`
  const client = yield* Effect.acquireRelease(
    Effect.sync(() => new Redis(REDIS_URL, { lazyConnect: false, maxRetriesPerRequest: 2 })),
    (client) =>
      Effect.promise(async () => {
        const keys = await client.keys(`${prefix}*`)
        if (keys.length > 0) await client.del(...keys)
        await client.quit()
      })
  )
  const redisProbe = Layer.succeed(Probe, {
    pausedUntil: (key) =>
      Effect.promise(() => client.get(`${prefix}rate:{${key}}:pause`)).pipe(
        Effect.map((value) => value === null ? null : Number(value))
      ),
    slotRows: (key) => Effect.promise(() => client.zcard(`${prefix}slots:{${key}}`)),
    worker: Option.some({ kind: "redis", url: REDIS_URL, prefix })
  })
  return Layer.merge(SharedLimits.layerRedis({ url: Redacted.make(REDIS_URL), prefix }), redisProbe).pipe(Layer.orDie)
})).pipe(Layer.provideMerge(NodeContext.layer))

interface Backend {
  readonly name: string
  readonly skip: string | null
  /** Whether a second process can share the store (one process holds a SQLite file). */
  readonly crossProcess: boolean
  readonly layer: BackendLayer
}

const backends: ReadonlyArray<Backend> = [
  { name: "postgres", skip: required ? null : pgProblem, crossProcess: true, layer: postgres },
  { name: "sqlite", skip: null, crossProcess: false, layer: sqlite },
  { name: "redis", skip: required ? null : redisProblem, crossProcess: true, layer: redis }
]

/** Spawning Node with tsx takes a few seconds on this 2-core machine. */
const PROCESS_TEST_TIMEOUT = 60_000

const LIMIT = 5
const WINDOW = 200

/**
 * A limiter over the shared store that records the store instant of every start it is granted (each start of a block),
 * and the size of every block.
 */
const recordingLimiter = (starts: Array<number>, blocks: Array<number> = []) =>
  Effect.gen(function*() {
    const { rateStore } = yield* SharedLimits.SharedLimits
    return yield* RateLimiter.make({
      limit: LIMIT,
      per: WINDOW,
      store: {
        pauseUntil: rateStore.pauseUntil,
        tryAcquire: (request) =>
          Effect.tap(rateStore.tryAcquire(request), (decision: SharedDecision) => {
            if (!decision.allowed) return
            const granted = decision.granted ?? 1
            assert.isAtMost(granted, request.count ?? 1, "granted more starts than asked for")
            blocks.push(granted)
            starts.push(...Array<number>(granted).fill(decision.at))
          })
      }
    })
  })

/** No `LIMIT + 1` starts within any half-open interval of `WINDOW`; returns how many windows were full. */
const assertWindowInvariant = (starts: ReadonlyArray<number>) => {
  const sorted = [...starts].sort((a, b) => a - b)
  for (let i = 0; i + LIMIT < sorted.length; i++) {
    const span = sorted[i + LIMIT] - sorted[i]
    assert.isAtLeast(span, WINDOW, `starts ${i}..${i + LIMIT} (${sorted.slice(i, i + LIMIT + 1)}) within ${span} ms`)
  }
  let full = 0
  for (let i = 0; i + LIMIT - 1 < sorted.length; i++) {
    if (sorted[i + LIMIT - 1] - sorted[i] < WINDOW) full++
  }
  return full
}

const StartLine = Schema.parseJson(Schema.Struct({ at: Schema.Number }))

const key = (name: string) => `host-${name}-${randomSuffix()}.test`

/** Polls until `condition` holds (these tests run in real time against real stores). */
const eventually = <E, R>(condition: Effect.Effect<boolean, E, R>, what: string, attempts = 1000) =>
  Effect.gen(function*() {
    for (let i = 0; i < attempts; i++) {
      if (yield* condition) return
      yield* Effect.sleep("5 millis")
    }
    return yield* Effect.dieMessage(`timed out waiting until ${what}`)
  })

/** `meet(value)` returns `value` once `parties` callers are inside it at the same time. */
const meetingOf = (parties: number) => {
  let arrived = 0
  return <A>(value: A) =>
    Effect.sync(() => arrived++).pipe(
      Effect.zipRight(eventually(Effect.sync(() => arrived === parties), `${parties} callers meet`)),
      Effect.as(value)
    )
}

const fixture = fileURLToPath(new URL("./fixtures/limits-worker.ts", import.meta.url))
const appDir = fileURLToPath(new URL("..", import.meta.url))

/** A real second process running the worker fixture; its stdout lines are collected. */
const spawnWorker = (task: Record<string, unknown>) =>
  Effect.gen(function*() {
    const command = Command.make(process.execPath, "--import", "tsx", fixture, JSON.stringify(task)).pipe(
      Command.workingDirectory(appDir)
    )
    const proc = yield* Command.start(command)
    const lines: Array<string> = []
    const errors: Array<string> = []
    const collect = (stream: Stream.Stream<Uint8Array, unknown>, into: Array<string>) =>
      stream.pipe(
        Stream.decodeText(),
        Stream.splitLines,
        Stream.runForEach((line) => Effect.sync(() => into.push(line))),
        Effect.orDie,
        Effect.forkScoped
      )
    const stdout = yield* collect(proc.stdout, lines)
    yield* collect(proc.stderr, errors)
    /** Waits until the worker prints a line matching `expected` (a line, or a predicate named by `what`). */
    const waitFor = (expected: string | ((line: string) => boolean), what = String(expected)) => {
      const seen = () => lines.some((line) => typeof expected === "string" ? line === expected : expected(line))
      return eventually(
        Effect.gen(function*() {
          if (seen()) return true
          if (yield* proc.isRunning) return false
          yield* Fiber.join(stdout)
          return seen() ||
            (yield* Effect.dieMessage(`worker exited before printing ${what}:\n${errors.join("\n")}`))
        }).pipe(Effect.orDie),
        `the worker prints ${what}`,
        4000
      )
    }
    const stdin = yield* Queue.unbounded<Uint8Array>()
    yield* Stream.fromQueue(stdin).pipe(Stream.run(proc.stdin), Effect.orDie, Effect.forkScoped)
    const send = (line: string) => Queue.offer(stdin, new TextEncoder().encode(`${line}\n`))
    return { proc, lines, waitFor, send }
  })

// These suites come before the backend suites: @effect/vitest's `layer()` re-points the shared `it` at its runtime
// (without the test services here), so an `it.effect` registered after it would lose the TestClock.
describe("SharedLimits.layer", () => {
  const inMemorySqlite = SqliteClient.layer({ filename: ":memory:" })
  const withConfig = (entries: ReadonlyArray<readonly [string, string]>) =>
    Layer.setConfigProvider(ConfigProvider.fromMap(new Map(entries)))
  const backendOf = Effect.map(SharedLimits.SharedLimits, (limits) => limits.backend)

  it.effect("uses the SQL database when REDIS_URL is not set", () =>
    Effect.gen(function*() {
      const backend = yield* backendOf.pipe(
        Effect.provide(SharedLimits.layer.pipe(Layer.provide([inMemorySqlite, withConfig([])])))
      )
      assert.strictEqual(backend, "sqlite")
    }))

  it.effect.skipIf(redisProblem !== null && !required)(
    "uses Redis when REDIS_URL is set",
    () =>
      Effect.gen(function*() {
        const config = withConfig([["REDIS_URL", REDIS_URL], ["REDIS_PREFIX", `spindle:test:${randomSuffix()}:`]])
        const backend = yield* backendOf.pipe(
          Effect.provide(SharedLimits.layer.pipe(Layer.provide([inMemorySqlite, config])))
        )
        assert.strictEqual(backend, "redis")
      })
  )

  it.effect("fails to start with LimitStoreError when Redis does not answer", () =>
    Effect.gen(function*() {
      // Port 1 on loopback: nothing listens there.
      const error = yield* Effect.flip(Effect.scoped(Layer.build(
        SharedLimits.layerRedis({ url: Redacted.make("redis://127.0.0.1:1"), prefix: "unused:" })
      )))
      assert.strictEqual(error._tag, "LimitStoreError")
      assert.strictEqual(error.backend, "redis")
      assert.strictEqual(error.operation, "connect")
    }))

  it.scoped("rejects bad options with a typed error naming the field", () =>
    Effect.gen(function*() {
      const perKey = yield* Effect.flip(SharedLimits.concurrency({ perKey: 0, global: 1 }))
      assert.strictEqual(perKey._tag, "InvalidConcurrency")
      assert.strictEqual(perKey._tag === "InvalidConcurrency" && perKey.field, "perKey")
      const lease = yield* Effect.flip(SharedLimits.concurrency({ perKey: 1, global: 1, lease: "0 millis" }))
      assert.strictEqual(lease._tag, "InvalidLease")
      assert.strictEqual(lease._tag === "InvalidLease" && lease.field, "lease")
      const rate = yield* Effect.flip(SharedLimits.rateLimiter({ limit: 0, per: WINDOW }))
      assert.strictEqual(rate.field, "limit")
    }).pipe(Effect.provide(SharedLimits.layerSql().pipe(Layer.provide(inMemorySqlite), Layer.orDie))))
})

describe("LimitStore.resilient", () => {
  const request = { key: "host", now: 0, limit: 1, windowMillis: 1000 }
  const outage = new LimitStoreError({ backend: "postgres", operation: "tryAcquire", cause: new Error("down") })

  it.effect("retries a failing store with backoff, then turns a long outage into a defect naming the store", () =>
    Effect.gen(function*() {
      let calls = 0
      const flaky: SharedRateLimiterStore = {
        backend: "postgres",
        tryAcquire: () =>
          Effect.suspend(() => ++calls < 3 ? Effect.fail(outage) : Effect.succeed({ allowed: true, at: 7 })),
        pauseUntil: () => Effect.fail(outage)
      }
      const store = resilient(flaky)

      const decision = yield* Effect.fork(store.tryAcquire(request))
      yield* TestClock.adjust("1 second")
      assert.deepStrictEqual(yield* Fiber.join(decision), { allowed: true, at: 7 })
      assert.strictEqual(calls, 3)

      const pause = yield* Effect.fork(Effect.exit(store.pauseUntil({ key: "host", until: 10, now: 0 })))
      for (let second = 0; second < 29; second++) yield* TestClock.adjust("1 second")
      assert.isTrue(Option.isNone(yield* Fiber.poll(pause)), "gave up before the 30 s outage budget")
      for (let second = 0; second < 5; second++) yield* TestClock.adjust("1 second")
      const exit = yield* Fiber.join(pause)
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) {
        const defect = Cause.dieOption(exit.cause)
        assert.isTrue(Option.isSome(defect) && defect.value instanceof LimitStoreError)
      }
    }))
})

describe("SharedConcurrency keeping slots (virtual time, the SQLite store)", () => {
  // The SQLite store decides with the caller's clock, so its leases run on the TestClock: the real store's statements,
  // in virtual time.
  const store = SharedLimits.layerSql().pipe(
    Layer.provideMerge(SqliteClient.layer({ filename: ":memory:" })),
    Layer.orDie
  )
  const slotRows = (host: string) =>
    Effect.flatMap(
      SqlClient.SqlClient,
      (sql) =>
        sql`SELECT COUNT(*) AS n FROM limit_host_slots WHERE host = ${host}`.pipe(
          Effect.flatMap((rows) => Schema.decodeUnknown(Count)(rows[0])),
          Effect.map((row) => row.n),
          Effect.orDie
        )
    )
  const kept = {
    perKey: 2,
    global: 10,
    lease: "10 seconds",
    pollInterval: "50 millis",
    linger: "50 millis",
    maxHold: "1 second"
  } as const
  /** Runs `body` counting how many run at once, over every instance. */
  const gauge = () => {
    const state = { inFlight: 0, peak: 0, done: 0 }
    const run = (millis: number) =>
      Effect.acquireUseRelease(
        Effect.sync(() => {
          state.inFlight++
          state.peak = Math.max(state.peak, state.inFlight)
        }),
        () => Effect.zipRight(Effect.sleep(millis), Effect.sync(() => state.done++)),
        () => Effect.sync(() => state.inFlight--)
      )
    return { state, run }
  }
  /** Two callers of `host` that request for ever, 10 ms each (a host saturated at perKey 2), until the scope ends. */
  const saturate = (
    limits: KeyedConcurrency.KeyedConcurrency,
    host: string,
    run: (millis: number) => Effect.Effect<void>
  ) =>
    Effect.forkScoped(
      Effect.forEach([0, 1], () => Effect.forever(limits.withPermit(host)(run(10))), { concurrency: 2, discard: true })
    )
  const advance = (millis: number, step = 5) =>
    Effect.forEach(Array.from({ length: millis / step }), () => TestClock.adjust(step), { discard: true })

  it.scoped("a slot goes to the next caller without the store: one claim for a line, given back after `linger`", () =>
    Effect.gen(function*() {
      const host = "reuse.test"
      const limits = yield* SharedLimits.concurrency(kept)
      const { run, state } = gauge()
      const work = yield* Effect.fork(
        Effect.forEach([0, 1, 2, 3], () => Effect.repeatN(limits.withPermit(host)(run(10)), 9), {
          concurrency: 4,
          discard: true
        })
      )
      yield* advance(200)
      yield* Fiber.join(work)
      assert.strictEqual(state.done, 40)
      assert.strictEqual(state.peak, 2)
      assert.isAtMost(yield* limits.claims, 2, "40 requests, at most two claims (the second for the rest of the line)")
      assert.strictEqual(yield* limits.held, 2, "kept for the next caller")
      assert.strictEqual(yield* slotRows(host), 2)
      yield* advance(75)
      assert.strictEqual(yield* limits.held, 0, "given back within 1.5 × linger")
      assert.strictEqual(yield* slotRows(host), 0)
    }).pipe(Effect.provide(store)))

  it.scoped("tryAcquireNow takes a lingering slot at once; its release lingers it again, or hands it to the line", () =>
    Effect.gen(function*() {
      const host = "now.test"
      const limits = yield* SharedLimits.concurrency({ ...kept, perKey: 1 })
      assert.isUndefined(limits.tryAcquireNow(host), "no slot lingers yet: nothing is taken")
      assert.strictEqual(yield* limits.claims, 0)
      yield* limits.withPermit(host)(Effect.void)
      assert.strictEqual(yield* limits.held, 1, "claimed, then lingering")
      const release = limits.tryAcquireNow(host)
      assert.isDefined(release)
      assert.strictEqual(yield* limits.inFlight(host), 1)
      assert.isUndefined(limits.tryAcquireNow(host), "the only lingering slot is taken")
      // A caller waiting in line gets the slot at its release, without the store.
      const waiting = yield* Effect.fork(limits.withPermit(host)(Effect.sleep(10)))
      yield* advance(5)
      release!()
      yield* advance(20)
      yield* Fiber.join(waiting)
      assert.strictEqual(yield* limits.claims, 1, "the waiter was handed the slot: no second claim")
      assert.strictEqual(yield* limits.inFlight(host), 0)
      // Past maxHold a slot goes back to the store instead of being reused; nothing is held after the linger.
      const again = limits.tryAcquireNow(host)
      assert.isDefined(again)
      yield* advance(1100)
      again!()
      yield* advance(100)
      assert.strictEqual(yield* limits.held, 0)
      assert.strictEqual(yield* slotRows(host), 0)
      assert.strictEqual(yield* limits.inFlight(host), 0)
    }).pipe(Effect.provide(store)))

  it.scoped("an instance saturating a host gives a waiting instance a turn within maxHold + a poll", () =>
    Effect.gen(function*() {
      const host = "fair.test"
      const busy = yield* SharedLimits.concurrency(kept)
      const waiting = yield* SharedLimits.concurrency(kept)
      const { run, state } = gauge()
      yield* saturate(busy, host, run)
      yield* advance(100)
      const arrived = yield* Clock.currentTimeMillis
      const turn = yield* Effect.fork(waiting.withPermit(host)(Effect.zipLeft(Clock.currentTimeMillis, run(10))))
      yield* advance(1500)
      const started = yield* Fiber.poll(turn)
      assert.isTrue(Option.isSome(started) && Exit.isSuccess(started.value), "the waiting instance never got a slot")
      const waited = Option.isSome(started) && Exit.isSuccess(started.value) ? started.value.value - arrived : Infinity
      // The busy instance's slots were claimed at 0 and reused until 1 s; their renewal then found the waiting
      // instance recorded (its claim fell short), so they went back, each not claimed again for 75 ms, while the
      // waiting one polls every 25–75 ms.
      assert.isAtMost(waited, 1000 + 75, `waited ${waited} ms`)
      assert.strictEqual(state.peak, 2, "never more than perKey in flight over both instances")
      assert.isAbove(state.done, 200, "the busy instance kept going meanwhile")
      assert.isAtMost(yield* busy.claims, 10, "and claimed once per slot and turn, not per request")
    }).pipe(Effect.provide(store)))

  it.scoped("an instance alone on a host renews its slots past maxHold instead of giving them back", () =>
    Effect.gen(function*() {
      const host = "alone.test"
      const limits = yield* SharedLimits.concurrency(kept)
      const { run, state } = gauge()
      yield* saturate(limits, host, run)
      yield* advance(2500, 10)
      assert.isAbove(state.done, 400)
      assert.strictEqual(state.peak, 2)
      // The claims at the start (one per caller in line then); none later, though each slot passed maxHold twice.
      assert.isAtMost(yield* limits.claims, 2)
      assert.strictEqual(yield* slotRows(host), 2)
      // Renewed: the leases run a full lease (10 s) from the last renewal (at 2 s), not from the claim.
      const leases = yield* Effect.flatMap(
        SqlClient.SqlClient,
        (sql) =>
          sql<{ readonly expires_at: number }>`SELECT expires_at FROM limit_host_slots WHERE host = ${host}`.pipe(
            Effect.orDie
          )
      )
      const now = yield* Clock.currentTimeMillis
      assert.isTrue(leases.every((lease) => lease.expires_at >= now + 10_000 - 600), JSON.stringify(leases))
    }).pipe(Effect.provide(store)))

  it.scoped("a renewal under way when the instance closes leaks nothing: its slots go back", () =>
    Effect.gen(function*() {
      const host = "renewing.test"
      const { slots } = yield* SharedLimits.SharedLimits
      const asked = yield* Deferred.make<void>()
      const interrupted = yield* Deferred.make<void>()
      // A store whose renewal never answers (until interrupted).
      const stuck = {
        ...slots,
        renew: () =>
          Effect.zipRight(Deferred.succeed(asked, undefined), Effect.never).pipe(
            Effect.onInterrupt(() => Deferred.succeed(interrupted, undefined))
          )
      }
      const scope = yield* Scope.make()
      const limits = yield* Scope.extend(SharedConcurrency.make(stuck, kept), scope)
      // Held past maxHold: at its release the slot is renewed (in the background) and lingers meanwhile.
      yield* Effect.fork(limits.withPermit(host)(Effect.sleep(1100)))
      yield* advance(1110)
      assert.isTrue(yield* Deferred.isDone(asked), "renewing past maxHold")
      assert.strictEqual(yield* slotRows(host), 1)
      yield* Scope.close(scope, Exit.void)
      yield* Deferred.await(interrupted)
      assert.strictEqual(yield* slotRows(host), 0)
    }).pipe(Effect.provide(store)))

  it.scoped("a slot handed to a waiter at the moment it is interrupted goes on to the next; nothing leaks", () =>
    Effect.gen(function*() {
      const host = "handover.test"
      const limits = yield* SharedLimits.concurrency({ ...kept, perKey: 1 })
      const doomed = yield* Deferred.make<Fiber.RuntimeFiber<void>>()
      const ran: Array<string> = []
      // The holder interrupts `doomed` (waiting in line) as it finishes: its slot is handed to `doomed` right after.
      const holder = yield* Effect.fork(
        limits.withPermit(host)(
          Effect.sleep(10).pipe(
            Effect.zipRight(Deferred.await(doomed)),
            Effect.flatMap((fiber) => Effect.sync(() => fiber.unsafeInterruptAsFork(FiberId.none)))
          )
        )
      )
      yield* TestClock.adjust(1)
      const victim = yield* Effect.fork(limits.withPermit(host)(Effect.sync(() => void ran.push("doomed"))))
      const next = yield* Effect.fork(limits.withPermit(host)(Effect.sync(() => void ran.push("next"))))
      yield* Deferred.succeed(doomed, victim)
      yield* TestClock.adjust(10)
      yield* Fiber.join(holder)
      assert.isTrue(Exit.isInterrupted(yield* Fiber.await(victim)))
      yield* Fiber.join(next)
      assert.deepStrictEqual(ran, ["next"])
      assert.strictEqual(yield* limits.claims, 1, "the slot went from the holder to `next` without the store")
      yield* advance(100)
      assert.strictEqual(yield* limits.held, 0)
      assert.strictEqual(yield* slotRows(host), 0)
    }).pipe(Effect.provide(store)))

  it.scoped("interruptions anywhere (waiting, claiming, holding, lingering) leak no slot and no permit", () =>
    Effect.gen(function*() {
      const host = "interrupt.test"
      const first = yield* SharedLimits.concurrency(kept)
      const second = yield* SharedLimits.concurrency(kept)
      const { run, state } = gauge()
      for (let round = 0; round < 5; round++) {
        const fibers = yield* Effect.forEach(
          Array.from({ length: 24 }),
          (_, i) => Effect.fork((i % 2 === 0 ? first : second).withPermit(host)(run(3)))
        )
        yield* Effect.forEach(
          fibers,
          (fiber) =>
            Effect.flatMap(
              Random.nextIntBetween(0, 40),
              (millis) => Effect.zipRight(Effect.sleep(millis), Fiber.interrupt(fiber))
            ),
          { concurrency: "unbounded", discard: true }
        ).pipe(Effect.fork, Effect.zipLeft(advance(45, 1)), Effect.flatMap(Fiber.join))
        assert.isAtMost(state.peak, 2)
        assert.strictEqual(yield* first.inFlight(host), 0, "no local permit left taken")
        assert.strictEqual(yield* second.inFlight(host), 0)
        yield* advance(100)
        assert.strictEqual(yield* first.held, 0)
        assert.strictEqual(yield* second.held, 0)
        assert.strictEqual(yield* slotRows(host), 0)
      }
      assert.strictEqual(state.inFlight, 0)
    }).pipe(Effect.provide(store)))

  it.scoped("rejects a maxHold not shorter than the lease, and an endless linger", () =>
    Effect.gen(function*() {
      const maxHold = yield* Effect.flip(SharedLimits.concurrency({ ...kept, lease: "1 second", maxHold: "1 second" }))
      assert.strictEqual(maxHold._tag === "InvalidLease" && maxHold.field, "maxHold")
      const linger = yield* Effect.flip(SharedLimits.concurrency({ ...kept, linger: Duration.infinity }))
      assert.strictEqual(linger._tag === "InvalidLease" && linger.field, "linger")
    }).pipe(Effect.provide(store)))
})

for (const backend of backends) {
  describe.skipIf(backend.skip !== null)(`shared limits on ${backend.name}`, () => {
    layer(backend.layer, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
      it.scoped("limiter instances sharing the store never admit more than `limit` starts in any window", () =>
        Effect.gen(function*() {
          const host = key("window")
          const starts: Array<number> = []
          // Four instances (as if four processes), two callers each, four starts per caller.
          const perInstance = yield* Effect.forEach([0, 1, 2, 3], () =>
            Effect.gen(function*() {
              const own: Array<number> = []
              const limiter = yield* recordingLimiter(own)
              yield* Effect.forEach([0, 1], () => Effect.repeatN(limiter.acquire(host), 3), { concurrency: 2 })
              starts.push(...own)
              return own.length
            }), { concurrency: 4 })
          assert.deepStrictEqual(perInstance, [8, 8, 8, 8])
          assert.strictEqual(starts.length, 32)
          const full = assertWindowInvariant(starts)
          assert.isAbove(full, 0, "the instances never filled a window: the test did not contend")
        }))

      it.scoped("limiters take starts in blocks (one call for a line), and no window holds more than `limit`", () =>
        Effect.gen(function*() {
          const host = key("blocks")
          const starts: Array<number> = []
          const blocks: Array<number> = []
          // Three instances, six callers each, two starts per caller: lines form, and their heads ask for them.
          yield* Effect.forEach([0, 1, 2], () =>
            Effect.gen(function*() {
              const limiter = yield* recordingLimiter(starts, blocks)
              yield* Effect.forEach(Array.from({ length: 6 }), () => Effect.repeatN(limiter.acquire(host), 1), {
                concurrency: 6
              })
            }), { concurrency: 3 })
          assert.strictEqual(starts.length, 36)
          assert.strictEqual(blocks.reduce((sum, n) => sum + n, 0), 36)
          assert.isAbove(Math.max(...blocks), 1, "no block of starts was ever granted")
          assert.isBelow(blocks.length, 36)
          assertWindowInvariant(starts)
        }))

      it.scoped("one call grants at most the room left in the window, and says when more will fit", () =>
        Effect.gen(function*() {
          const { rateStore } = yield* SharedLimits.SharedLimits
          const host = key("block")
          const ask = (count: number) =>
            Effect.suspend(() => {
              const now = Date.now()
              return Effect.map(
                rateStore.tryAcquire({ key: host, now, limit: LIMIT, windowMillis: WINDOW, count }),
                (decision) => ({ now, decision })
              )
            })
          const first = yield* ask(3)
          const second = yield* ask(4)
          const third = yield* ask(2)
          assert.isTrue(first.decision.allowed && first.decision.granted === 3 && first.decision.retryAt === undefined)
          assert.isTrue(second.decision.allowed && second.decision.granted === 2, "two were left of five")
          assert.isFalse(third.decision.allowed)
          if (second.decision.allowed && first.decision.allowed) {
            // More fit once the first block leaves the window: `retryAt` (caller clock) is within one window.
            const retryIn = (second.decision.retryAt ?? Infinity) - second.now
            assert.isAbove(retryIn, 0)
            assert.isAtMost(retryIn, WINDOW)
            assertWindowInvariant([
              ...Array<number>(3).fill(first.decision.at),
              ...Array<number>(2).fill(second.decision.at)
            ])
          }
        }))

      it.scoped("starts granted with a hold count until the hold's end plus a window", () =>
        Effect.gen(function*() {
          const { rateStore } = yield* SharedLimits.SharedLimits
          assert.isTrue(rateStore.holds)
          const host = key("hold")
          const ask = (request: { readonly count?: number; readonly holdMillis?: number }) =>
            Effect.suspend(() =>
              rateStore.tryAcquire({ key: host, now: Date.now(), limit: 2, windowMillis: 300, ...request })
            )
          const started = Date.now()
          const held = yield* ask({ count: 2, holdMillis: 250 })
          assert.isTrue(held.allowed && held.granted === 2)
          // One window after the grant the held starts still count: they may be used until 250 ms after it.
          yield* Effect.sleep(Duration.millis(Math.max(0, started + 400 - Date.now())))
          assert.isFalse((yield* ask({})).allowed, "recorded at the end of the hold")
          yield* Effect.sleep(Duration.millis(Math.max(0, started + 600 - Date.now())))
          assert.isTrue((yield* ask({})).allowed, "free once the hold's end is a window old")
        }))

      it.scoped("the store's check-and-record is atomic under many concurrent callers", () =>
        Effect.gen(function*() {
          const { rateStore } = yield* SharedLimits.SharedLimits
          const burst = (host: string) =>
            Effect.forEach(
              Array.from({ length: 24 }),
              () => rateStore.tryAcquire({ key: host, now: Date.now(), limit: LIMIT, windowMillis: WINDOW }),
              { concurrency: "unbounded" }
            ).pipe(Effect.map((decisions) => decisions.flatMap((decision) => decision.allowed ? [decision.at] : [])))
          yield* burst(key("warm-up")) // opens the pool's connections, so the bursts below really overlap
          // 24 callers at once on a fresh key, no limiter in front: like 24 processes racing for an empty window.
          for (let round = 0; round < 5; round++) {
            const starts = yield* burst(key("atomic"))
            assert.isAtLeast(starts.length, 1)
            assertWindowInvariant(starts)
          }
        }))

      it.scoped("a pause set through one instance holds back the others; an earlier pause never shortens it", () =>
        Effect.gen(function*() {
          const host = key("pause")
          const probe = yield* Probe
          const { rateStore } = yield* SharedLimits.SharedLimits
          const pausing = yield* SharedLimits.rateLimiter({ limit: LIMIT, per: WINDOW })
          const starts: Array<number> = []
          const other = yield* recordingLimiter(starts)
          const now = Date.now()
          yield* pausing.pauseUntil(host, now + 1000)
          yield* pausing.pauseUntil(host, now + 100)
          const until = yield* probe.pausedUntil(host)
          assert.isNotNull(until)

          const callerNow = Date.now()
          const decision = yield* rateStore.tryAcquire({
            key: host,
            now: callerNow,
            limit: LIMIT,
            windowMillis: WINDOW
          })
          assert.isFalse(decision.allowed)
          if (!decision.allowed) {
            // `retryAt` comes back in the caller's clock: the rest of the 1 s pause, not the 100 ms one.
            assert.isAbove(decision.retryAt - callerNow, 100)
            assert.isAtMost(decision.retryAt - callerNow, 1000)
          }

          yield* other.acquire(host)
          assert.strictEqual(starts.length, 1)
          assert.isAtLeast(starts[0], until ?? Infinity, "a start was admitted before the pause ended (store clock)")
        }))

      it.scoped("shared concurrency never exceeds perKey in flight over all instances", () =>
        Effect.gen(function*() {
          const host = key("slots")
          const probe = yield* Probe
          let inFlight = 0
          let peak = 0
          let completed = 0
          const instances = yield* Effect.forEach(
            [0, 1, 2],
            () => SharedLimits.concurrency({ perKey: 2, global: 10, lease: "5 seconds", pollInterval: "10 millis" })
          )
          const body = Effect.gen(function*() {
            inFlight++
            peak = Math.max(peak, inFlight)
            yield* Effect.sleep("15 millis")
            inFlight--
            completed++
          })
          yield* Effect.forEach(
            instances.flatMap((instance) => Array.from({ length: 6 }, () => instance.withPermit(host)(body))),
            (task) => task,
            { concurrency: "unbounded", discard: true }
          )
          assert.strictEqual(completed, 18)
          assert.strictEqual(peak, 2)
          assert.strictEqual(yield* instances[0].holders(host), 0)
          assert.strictEqual(yield* probe.slotRows(host), 0)
          for (const instance of instances) assert.strictEqual(yield* instance.held, 0)
        }))

      it.scoped("an interrupted holder releases its slot and an interrupted waiter takes none", () =>
        Effect.gen(function*() {
          const host = key("interrupt")
          const probe = yield* Probe
          const options = { perKey: 1, global: 10, lease: "5 seconds", pollInterval: "10 millis" } as const
          const first = yield* SharedLimits.concurrency(options)
          const second = yield* SharedLimits.concurrency(options)

          const holder = yield* Effect.fork(first.withPermit(host)(Effect.never))
          yield* eventually(Effect.map(first.held, (n) => n === 1), "the holder has its slot")
          let waiterRan = false
          const waiter = yield* Effect.fork(second.withPermit(host)(Effect.sync(() => (waiterRan = true))))
          yield* Effect.sleep("50 millis")
          assert.isTrue(Option.isNone(yield* Fiber.poll(waiter)))
          yield* Fiber.interrupt(waiter)
          assert.isFalse(waiterRan)
          assert.strictEqual(yield* second.held, 0)
          assert.strictEqual(yield* probe.slotRows(host), 1)

          yield* Fiber.interrupt(holder)
          assert.strictEqual(yield* first.held, 0)
          assert.strictEqual(yield* probe.slotRows(host), 0)

          // Interruptions landing anywhere (while claiming, waiting, holding or releasing) leak nothing either.
          const fibers = yield* Effect.forEach(
            Array.from({ length: 24 }),
            (_, i) => Effect.fork((i % 2 === 0 ? first : second).withPermit(host)(Effect.sleep("3 millis")))
          )
          yield* Effect.forEach(
            fibers,
            (fiber) =>
              Effect.flatMap(
                Random.nextIntBetween(0, 25),
                (millis) => Effect.zipRight(Effect.sleep(millis), Fiber.interrupt(fiber))
              ),
            { concurrency: "unbounded" }
          )
          assert.strictEqual(yield* first.held, 0)
          assert.strictEqual(yield* second.held, 0)
          assert.strictEqual(yield* probe.slotRows(host), 0)
        }))

      it.scoped("claimMany takes as many free slots as asked for, at most, in one call", () =>
        Effect.gen(function*() {
          const host = key("claim-many")
          const { slots } = yield* SharedLimits.SharedLimits
          const claim = (token: string, count: number) =>
            slots.claimMany({ key: host, limit: 5, owner: "me", token, count, ttlMillis: 5000, now: Date.now() })
          assert.deepStrictEqual(yield* claim("a", 3), ["a:1", "a:2", "a:3"])
          assert.deepStrictEqual(yield* claim("b", 4), ["b:1", "b:2"])
          assert.deepStrictEqual(yield* claim("c", 1), [])
          yield* slots.release({ key: host, token: "a:2" })
          assert.deepStrictEqual(yield* claim("d", 2), ["d:1"])
          assert.strictEqual(yield* slots.holders({ key: host, now: Date.now() }), 5)
          yield* Effect.forEach(["a:1", "a:3", "b:1", "b:2", "d:1"], (token) => slots.release({ key: host, token }))
          assert.strictEqual(yield* (yield* Probe).slotRows(host), 0)
        }))

      it.scoped("renew keeps a lease while nobody else waits, and says to yield once another owner's claim fell short", () =>
        Effect.gen(function*() {
          const host = key("renew")
          const { slots } = yield* SharedLimits.SharedLimits
          const claim = (owner: string, token: string, count: number) =>
            slots.claimMany({
              key: host,
              limit: 2,
              owner,
              token,
              count,
              ttlMillis: 5000,
              now: Date.now(),
              waitMillis: 300
            })
          const renew = (owner: string, tokens: ReadonlyArray<string>) =>
            slots.renew({ key: host, owner, tokens, ttlMillis: 5000, now: Date.now() })
          assert.deepStrictEqual(yield* claim("a", "a", 2), ["a:1", "a:2"])
          // `a` wanting a third slot records only itself as waiting: it still renews its own (not a token it lost).
          assert.deepStrictEqual(yield* claim("a", "a-more", 1), [])
          const mine = yield* renew("a", ["a:1", "gone", "a:2"])
          assert.isFalse(mine.othersWaiting)
          assert.deepStrictEqual([...mine.kept].sort(), ["a:1", "a:2"])
          assert.deepStrictEqual(yield* claim("b", "b", 1), [], "full: b waits")
          assert.deepStrictEqual(yield* renew("a", ["a:1", "a:2"]), { othersWaiting: true, kept: [] })
          // The record lapses unless renewed by the waiter's next poll.
          yield* Effect.sleep(Duration.millis(400))
          assert.deepStrictEqual(yield* renew("a", ["a:1"]), { othersWaiting: false, kept: ["a:1"] })
          yield* Effect.forEach(["a:1", "a:2"], (token) => slots.release({ key: host, token }))
          assert.strictEqual(yield* (yield* Probe).slotRows(host), 0)
        }))

      it.scoped("instances keeping slots never exceed perKey together, and give back every slot", () =>
        Effect.gen(function*() {
          const host = key("kept")
          const probe = yield* Probe
          // Real time: leases and lingering run on the store's clock here (the virtual-time suite uses SQLite).
          const options = {
            perKey: 2,
            global: 10,
            lease: "5 seconds",
            pollInterval: "10 millis",
            linger: "30 millis",
            maxHold: "150 millis"
          } as const
          const instances = yield* Effect.forEach([0, 1], () => SharedLimits.concurrency(options))
          let inFlight = 0
          let peak = 0
          let completed = 0
          const body = Effect.acquireUseRelease(
            Effect.sync(() => {
              inFlight++
              peak = Math.max(peak, inFlight)
            }),
            () => Effect.zipRight(Effect.sleep("5 millis"), Effect.sync(() => completed++)),
            () => Effect.sync(() => inFlight--)
          )
          yield* Effect.forEach(
            instances.flatMap((instance) => Array.from({ length: 6 }, () => instance.withPermit(host)(body))),
            (task) => Effect.repeatN(task, 4),
            { concurrency: "unbounded", discard: true }
          )
          assert.strictEqual(completed, 60)
          assert.strictEqual(peak, 2)
          const claims = (yield* instances[0].claims) + (yield* instances[1].claims)
          assert.isBelow(claims, 60, "every request claimed a slot of its own")
          // Then interruptions landing anywhere; afterwards, once the lingering is over, nothing is held.
          const fibers = yield* Effect.forEach(
            Array.from({ length: 24 }),
            (_, i) => Effect.fork(instances[i % 2]!.withPermit(host)(body))
          )
          yield* Effect.forEach(
            fibers,
            (fiber) =>
              Effect.flatMap(
                Random.nextIntBetween(0, 25),
                (millis) => Effect.zipRight(Effect.sleep(millis), Fiber.interrupt(fiber))
              ),
            { concurrency: "unbounded" }
          )
          assert.strictEqual(peak, 2)
          assert.strictEqual(inFlight, 0)
          yield* eventually(
            Effect.map(Effect.all(instances.map((instance) => instance.held)), (held) => held[0] + held[1] === 0),
            "every kept slot is given back"
          )
          // A slot given back leaves `held` at once and the store one round trip later.
          yield* eventually(Effect.map(probe.slotRows(host), (n) => n === 0), "the store holds no slot row")
        }))

      it.scoped("slots of a holder that stopped heartbeating are reclaimed once their lease expires", () =>
        Effect.gen(function*() {
          const host = key("crashed")
          const { slots } = yield* SharedLimits.SharedLimits
          // A process that claimed both slots and died before its first heartbeat.
          for (const token of ["dead-1", "dead-2"]) {
            const claimed = yield* slots.claim({
              key: host,
              limit: 2,
              owner: "dead",
              token,
              ttlMillis: 300,
              now: Date.now()
            })
            assert.isTrue(claimed)
          }
          const survivor = yield* SharedLimits.concurrency({ perKey: 2, global: 10, pollInterval: "10 millis" })
          assert.strictEqual(yield* survivor.holders(host), 2)
          // Both survivors must hold a slot at the same time: only possible once both dead leases were reclaimed.
          const together = meetingOf(2)
          const ran = yield* Effect.forEach([1, 2], (n) => survivor.withPermit(host)(together(n)), { concurrency: 2 })
          assert.deepStrictEqual(ran, [1, 2])
          assert.strictEqual(yield* survivor.holders(host), 0)
          assert.strictEqual(yield* survivor.held, 0)
          assert.strictEqual(yield* (yield* Probe).slotRows(host), 0)
        }))

      it.scoped("a live holder keeps its slot beyond the lease through heartbeats", () =>
        Effect.gen(function*() {
          const host = key("heartbeat")
          const options = { perKey: 1, global: 10, lease: "900 millis", pollInterval: "10 millis" } as const
          const first = yield* SharedLimits.concurrency(options)
          const second = yield* SharedLimits.concurrency(options)
          const events: Array<string> = []
          const holder = yield* Effect.fork(
            first.withPermit(host)(
              Effect.sync(() => events.push("first start")).pipe(
                Effect.zipRight(Effect.sleep("2 seconds")),
                Effect.zipRight(Effect.sync(() => events.push("first end")))
              )
            )
          )
          yield* eventually(Effect.map(first.held, (n) => n === 1), "the holder has its slot")
          yield* second.withPermit(host)(Effect.sync(() => events.push("second start")))
          yield* Fiber.join(holder)
          assert.deepStrictEqual(events, ["first start", "first end", "second start"])
        }))

      if (!backend.crossProcess) return

      it.scoped("real second processes share the window", () =>
        Effect.gen(function*() {
          const probe = yield* Probe
          if (Option.isNone(probe.worker)) return yield* Effect.dieMessage("no worker backend")
          const host = key("process")
          const task = { mode: "rate", backend: probe.worker.value, key: host, limit: LIMIT, windowMillis: WINDOW }
          const workers = yield* Effect.forEach([0, 1], () => spawnWorker({ ...task, fibers: 2 }), { concurrency: 2 })
          yield* Effect.forEach(workers, (worker) => worker.waitFor("ready"), { concurrency: 2, discard: true })
          yield* Effect.forEach(workers, (worker) => worker.send("go"), { discard: true })
          // This process joins once both workers are taking starts; they keep on until told to stop after it is done.
          yield* Effect.forEach(
            workers,
            (worker) => worker.waitFor((line) => line.startsWith("{"), "a start"),
            { concurrency: 2, discard: true }
          )
          const starts: Array<number> = []
          yield* Effect.forEach([0, 1], () =>
            Effect.gen(function*() {
              const limiter = yield* recordingLimiter(starts)
              yield* Effect.forEach([0, 1], () => Effect.repeatN(limiter.acquire(host), 3), { concurrency: 2 })
            }), { concurrency: 2 })
          assert.strictEqual(starts.length, 16)
          const ours = { first: Math.min(...starts), last: Math.max(...starts) }
          // Each worker was acquiring for the whole of this process's run: it took starts before and after it.
          const startAt = (line: string) => line.startsWith("{") ? Schema.decodeUnknownSync(StartLine)(line).at : null
          yield* Effect.forEach(
            workers,
            (worker) => worker.waitFor((line) => (startAt(line) ?? 0) > ours.last, "a start after this process's"),
            { concurrency: 2, discard: true }
          )
          yield* Effect.forEach(workers, (worker) => worker.send("stop"), { discard: true })
          yield* Effect.forEach(workers, (worker) => worker.waitFor("done"), { concurrency: 2, discard: true })
          const theirs = workers.map((worker) => worker.lines.flatMap((line) => startAt(line) ?? []))
          for (const own of theirs) {
            assert.isBelow(Math.min(...own), ours.first)
            assert.isAbove(Math.max(...own), ours.last)
          }
          starts.push(...theirs.flat())
          const full = assertWindowInvariant(starts)
          assert.isAbove(full, 0, "the processes never filled a window: the test did not contend")
        }), PROCESS_TEST_TIMEOUT)

      it.scoped("the slots of a SIGKILLed process are taken over after its lease", () =>
        Effect.gen(function*() {
          const probe = yield* Probe
          if (Option.isNone(probe.worker)) return yield* Effect.dieMessage("no worker backend")
          const host = key("sigkill")
          const worker = yield* spawnWorker({
            mode: "hold",
            backend: probe.worker.value,
            key: host,
            perKey: 2,
            leaseMillis: 1000
          })
          yield* worker.waitFor("held")
          const survivor = yield* SharedLimits.concurrency({ perKey: 2, global: 10, pollInterval: "10 millis" })
          assert.strictEqual(yield* survivor.holders(host), 2)
          const together = meetingOf(2)
          const waiting = yield* Effect.fork(
            Effect.forEach([1, 2], (n) => survivor.withPermit(host)(together(n)), { concurrency: 2 })
          )
          yield* Effect.sleep("50 millis")
          assert.isTrue(Option.isNone(yield* Fiber.poll(waiting)), "a slot was taken while the worker held both")
          yield* Effect.orDie(worker.proc.kill("SIGKILL"))
          assert.deepStrictEqual(yield* Fiber.join(waiting), [1, 2])
          assert.strictEqual(yield* survivor.holders(host), 0)
          assert.strictEqual(yield* probe.slotRows(host), 0)
        }), PROCESS_TEST_TIMEOUT)
    })
  })
}

/** A bare SQL database for each SQL store: no limit tables yet (as before the stores' first start). */
const bareSql: ReadonlyArray<{
  readonly name: string
  readonly skip: string | null
  readonly layer: Layer.Layer<SqlClient.SqlClient | NodeContext.NodeContext>
}> = [
  {
    name: "postgres",
    skip: required ? null : pgProblem,
    layer: Layer.unwrapScoped(Effect.gen(function*() {
      const name = `limits_upgrade_${randomSuffix()}`
      yield* Effect.acquireRelease(
        onAdmin((sql) => sql`CREATE DATABASE ${sql(name)}`),
        () => onAdmin((sql) => sql`DROP DATABASE IF EXISTS ${sql(name)} WITH (FORCE)`)
      )
      return PgClient.layer({ url: Redacted.make(`postgres://postgres@127.0.0.1:5432/${name}`), maxConnections: 2 })
    })).pipe(Layer.orDie, Layer.provideMerge(NodeContext.layer))
  },
  {
    name: "sqlite",
    skip: null,
    layer: Layer.unwrapScoped(Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped({ prefix: "limits-upgrade-" })
      return SqliteClient.layer({ filename: `${dir}/limits.db` })
    })).pipe(Layer.orDie, Layer.provideMerge(NodeContext.layer))
  }
]

for (const db of bareSql) {
  describe.skipIf(db.skip !== null)(`the ${db.name} rate window's rows`, () => {
    layer(db.layer, { excludeTestServices: true, timeout: "30 seconds" })((it) => {
      it.scoped("a block of starts is one row; an older version's rows (one per start) still count, one each", () =>
        Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          // The table as the previous version created it, holding 3 live starts of "old".
          yield* sql`CREATE TABLE limit_rate_starts (key TEXT NOT NULL, at BIGINT NOT NULL, expires_at BIGINT NOT NULL)`
          const now = Date.now()
          for (let i = 0; i < 3; i++) {
            yield* sql`INSERT INTO limit_rate_starts (key, at, expires_at) VALUES ('old', ${now}, ${now + 60_000})`
          }
          yield* ensureSchema
          yield* ensureSchema // idempotent: an instance starting later runs it again
          const store = yield* PgRateLimiterStore.make()
          const ask = (key: string, count: number) =>
            store.tryAcquire({ key, now: Date.now(), limit: 5, windowMillis: 60_000, count, holdMillis: 10 })
          const old = yield* ask("old", 10)
          assert.isTrue(old.allowed && old.granted === 2, "5 - 3 older starts")
          const fresh = yield* ask("new", 4)
          assert.isTrue(fresh.allowed && fresh.granted === 4)
          const rows = yield* sql<{ readonly key: string; readonly n: number | string }>`
            SELECT key, n FROM limit_rate_starts ORDER BY key, n`
          assert.deepStrictEqual(rows.map((row) => [row.key, Number(row.n)]), [
            ["new", 4],
            ["old", 1],
            ["old", 1],
            ["old", 1],
            ["old", 2]
          ])
          const last = yield* ask("new", 2)
          assert.isTrue(last.allowed && last.granted === 1, "one left of five")
          assert.isFalse((yield* ask("new", 1)).allowed, "full: the block counts 4, not 1")
        }))

      // PostgreSQL only (registered there alone: SQLite has no functions, and no older instance shares its file).
      if (db.name === "postgres") {
        it.scoped("the overloads older versions call decide over blocks too", () =>
          Effect.gen(function*() {
            const sql = yield* SqlClient.SqlClient
            yield* ensureSchema
            const block = yield* sql<{ readonly granted: number | string }>`
              SELECT granted FROM limit_rate_try_acquire('k', 10, 60000, 10)`
            assert.strictEqual(Number(block[0]?.granted), 10)
            const one = yield* sql<{ readonly retry_at: number | string }>`
              SELECT retry_at FROM limit_rate_try_acquire('k', 10, 60000)`
            assert.isAbove(Number(one[0]?.retry_at), 0, "refused: the one row holds 10 starts")
            const other = yield* sql<{ readonly retry_at: number | string }>`
              SELECT retry_at FROM limit_rate_try_acquire('other', 10, 60000)`
            assert.strictEqual(Number(other[0]?.retry_at), 0, "granted")
          }))
      }
    })
  })
}
