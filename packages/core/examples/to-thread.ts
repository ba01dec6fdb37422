/**
 * to-thread — `asyncio.to_thread()`: counting primes on a worker thread keeps the main thread's 10 ms ticker on time.
 *
 * The tutorial's "Avoid Blocking Calls": a blocking call on the event loop stalls every other task, so it goes to
 * a thread. Here a ticker fiber measures how late its 10 ms ticks come while the same CPU-heavy work runs either
 * inline (`Effect.sync`: the ticker stalls for the whole computation) or through `Offload` (a worker thread: the
 * ticker keeps its pace). The request is a `Schema.TaggedRequest`, so the count comes back typed and a bad limit
 * arrives as the typed `InvalidLimit` raised in the worker. Unlike a Python thread, an offloaded computation can be
 * cancelled: a timeout terminates its thread (the last part of `main`).
 */
import { Console, Effect, Schema } from "effect"
import { performance } from "node:perf_hooks"
import * as Offload from "../src/Offload.js"

export class InvalidLimit extends Schema.TaggedError<InvalidLimit>()("InvalidLimit", {
  limit: Schema.Number,
  reason: Schema.String
}) {
  override get message() {
    return `invalid limit ${this.limit}: ${this.reason}`
  }
}

/** How many primes are `<= limit`. */
export class CountPrimes extends Schema.TaggedRequest<CountPrimes>()("CountPrimes", {
  failure: InvalidLimit,
  success: Schema.Number,
  payload: { limit: Schema.Number }
}) {}

export const maxLimit = 100_000_000

export const checkLimit = (limit: number) =>
  Number.isSafeInteger(limit) && limit >= 0 && limit <= maxLimit
    ? Effect.succeed(limit)
    : Effect.fail(new InvalidLimit({ limit, reason: `must be an integer from 0 to ${maxLimit}` }))

/** Trial division: deliberately CPU-bound and synchronous, like any blocking call. */
export const countPrimes = (limit: number): number => {
  let count = limit >= 2 ? 1 : 0
  for (let n = 3; n <= limit; n += 2) {
    let prime = true
    for (let divisor = 3; divisor * divisor <= n; divisor += 2) {
      if (n % divisor === 0) {
        prime = false
        break
      }
    }
    if (prime) count++
  }
  return count
}

/** The work, as a blocking call on the current thread: `blocking_io()` called straight from a coroutine. */
export const countInline = (limit: number) =>
  Effect.flatMap(checkLimit(limit), (valid) => Effect.sync(() => countPrimes(valid)))

export const script = new URL("./to-thread/worker.ts", import.meta.url)

/** Two worker threads serving `CountPrimes` (examples/to-thread/worker.ts); up to 8 more requests may wait. */
export const makeOffload = Offload.make({ requests: CountPrimes, script, size: 2, maxQueued: 8 })

export interface LagReport<A> {
  readonly result: A
  /** How long the work took, wall clock. */
  readonly workMillis: number
  /** The latest any 10 ms tick came, beyond its 10 ms, while the work ran. */
  readonly maxLagMillis: number
  readonly ticks: number
}

const now = Effect.sync(() => performance.now())

/** Runs `work` beside a ticker fiber that wants to run every `tickMillis`, and reports how late its ticks came. */
export const measureLag = <A, E, R>(work: Effect.Effect<A, E, R>, tickMillis = 10) =>
  Effect.scoped(Effect.gen(function*() {
    const ticks: Array<number> = []
    yield* Effect.forkScoped(
      Effect.forever(Effect.zipRight(Effect.map(now, (at) => ticks.push(at)), Effect.sleep(tickMillis)))
    )
    yield* Effect.sleep(tickMillis * 3)
    const startMillis = yield* now
    const result = yield* work
    const endMillis = yield* now
    // A tick held up by the work only comes once the work returns: wait for it.
    yield* Effect.sleep(tickMillis * 3)
    let maxLagMillis = 0
    let during = 0
    for (let index = 1; index < ticks.length; index++) {
      if (ticks[index] < startMillis || ticks[index - 1] > endMillis) continue
      during++
      maxLagMillis = Math.max(maxLagMillis, ticks[index] - ticks[index - 1] - tickMillis)
    }
    return { result, workMillis: endMillis - startMillis, maxLagMillis, ticks: during } satisfies LagReport<A>
  }))

/** The same count measured inline and then offloaded, on an Offload made beforehand (its threads are warm). */
export const compare = (offload: Offload.Offload<CountPrimes>, limit: number) =>
  Effect.gen(function*() {
    const inline = yield* measureLag(countInline(limit))
    const offloaded = yield* measureLag(offload.run(new CountPrimes({ limit })))
    return { inline, offloaded }
  })

const describe = (label: string, report: LagReport<number>) =>
  `${label}: ${report.result} primes in ${report.workMillis.toFixed(0)} ms; ticker's worst lag ${
    report.maxLagMillis.toFixed(0)
  } ms (${report.ticks} ticks)`

export const main = Effect.scoped(Effect.gen(function*() {
  const offload = yield* makeOffload
  const limit = 2_000_000
  const { inline, offloaded } = yield* compare(offload, limit)
  yield* Console.log(describe(`inline    countPrimes(${limit})`, inline))
  yield* Console.log(describe(`offloaded countPrimes(${limit})`, offloaded))

  const invalid = yield* Effect.flip(offload.run(new CountPrimes({ limit: -1 })))
  yield* Console.log(`typed error from the worker: ${invalid._tag} (${invalid.message})`)

  const abandoned = yield* offload.run(new CountPrimes({ limit: maxLimit })).pipe(Effect.timeoutOption("200 millis"))
  const stats = yield* offload.stats
  yield* Console.log(
    `countPrimes(${maxLimit}) with a 200 ms timeout: ${abandoned._tag}; threads terminated: ${stats.cancelled}`
  )
}))
