/**
 * RateLimiter — window violations under a bursty workload, and the cost of an uncontended acquire, for our sliding
 * window against `effect/RateLimiter` (token bucket, fixed window), `@effect/experimental`'s RateLimiter over its
 * memory store (fixed window, token bucket) and bottleneck (reservoir refresh, minTime spacing).
 *
 * Violations: each limiter gets the same waves of requests in real time (limit 50 per 200 ms, ~350 requests over
 * ~1.5 s); the start instants are logged with `Date.now()` (as a server would log them) and every start is tried as
 * the origin of a 200 ms window `[s, s + 200)`; a window holding more than 50 starts is a violation.
 * Overhead: sequential acquires with a limit that is never reached (1e9 per second), µs per acquire, median of
 * interleaved runs.
 */
import { RateLimiter as Experimental } from "@effect/experimental"
import Bottleneck from "bottleneck"
import { Duration, Effect, RateLimiter as EffectRateLimiter } from "effect"
import type { Scope } from "effect"
import * as RateLimiter from "../../src/RateLimiter.js"

const limit = 50
const perMillis = 200
const rounds = 5
const acquiresPerRun = 100_000
const bottleneckAcquiresPerRun = 500
/** [offset ms, requests]: bursts landing just before and after window boundaries, idle gaps that fill buckets. */
const waves: ReadonlyArray<readonly [number, number]> = [
  [0, 60],
  [150, 40],
  [210, 30],
  [480, 50],
  [700, 10],
  [780, 70],
  [1100, 40],
  [1190, 50]
]

/** One contender: `make` builds a limiter in a scope and returns "wait for a start". */
interface Contender {
  readonly name: string
  readonly algorithm: string
  readonly make: (limit: number, perMillis: number) => Effect.Effect<Effect.Effect<void>, never, Scope.Scope>
  /** Waits `per / limit` between any two starts by design: no uncontended acquire to time. */
  readonly spacesStarts?: boolean
}

const fromPromise = (limiter: Bottleneck): Effect.Effect<void> =>
  Effect.promise(() => limiter.schedule(() => Promise.resolve()))

const contenders: ReadonlyArray<Contender> = [
  {
    name: "ours (`@spindle/core/RateLimiter`)",
    algorithm: "sliding window log",
    make: (limit, perMillis) =>
      RateLimiter.make({ limit, per: perMillis }).pipe(Effect.orDie, Effect.map((limiter) => limiter.acquire("host")))
  },
  {
    name: "`effect/RateLimiter`",
    algorithm: "token bucket",
    make: (limit, perMillis) =>
      EffectRateLimiter.make({ limit, interval: perMillis, algorithm: "token-bucket" }).pipe(
        Effect.map((limiter) => limiter(Effect.void))
      )
  },
  {
    name: "`effect/RateLimiter`",
    algorithm: "fixed window",
    make: (limit, perMillis) =>
      EffectRateLimiter.make({ limit, interval: perMillis, algorithm: "fixed-window" }).pipe(
        Effect.map((limiter) => limiter(Effect.void))
      )
  },
  ...(["fixed-window", "token-bucket"] as const).map((algorithm): Contender => ({
    name: "`@effect/experimental` RateLimiter, memory store",
    algorithm: algorithm.replace("-", " "),
    make: (limit, perMillis) =>
      Experimental.make.pipe(
        Effect.provide(Experimental.layerStoreMemory),
        Effect.map((limiter) =>
          limiter.consume({ key: "host", limit, window: perMillis, algorithm, onExceeded: "delay" }).pipe(
            Effect.flatMap((result) => Duration.isZero(result.delay) ? Effect.void : Effect.sleep(result.delay)),
            Effect.orDie
          )
        )
      )
  })),
  {
    name: "bottleneck",
    algorithm: "reservoir refreshed every window",
    make: (limit, perMillis) =>
      Effect.acquireRelease(
        Effect.sync(() =>
          new Bottleneck({ reservoir: limit, reservoirRefreshAmount: limit, reservoirRefreshInterval: perMillis })
        ),
        (limiter) => Effect.promise(() => limiter.stop({ dropWaitingJobs: true }))
      ).pipe(Effect.map(fromPromise))
  },
  {
    name: "bottleneck",
    algorithm: "minTime = per / limit",
    spacesStarts: true,
    make: (limit, perMillis) =>
      Effect.acquireRelease(
        Effect.sync(() => new Bottleneck({ minTime: perMillis / limit })),
        (limiter) => Effect.promise(() => limiter.stop({ dropWaitingJobs: true }))
      ).pipe(Effect.map(fromPromise))
  }
]

const median = (values: ReadonlyArray<number>) => {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}

/** Windows `[s, s + span)` (every start `s` as origin) holding more than `limit` starts, and the busiest. */
const windows = (starts: ReadonlyArray<number>, span: number) => {
  const sorted = [...starts].sort((a, b) => a - b)
  let violations = 0
  let busiest = 0
  let end = 0
  for (let origin = 0; origin < sorted.length; origin++) {
    if (origin > 0 && sorted[origin] === sorted[origin - 1]) continue
    while (end < sorted.length && sorted[end] < sorted[origin] + span) end++
    const count = end - origin
    busiest = Math.max(busiest, count)
    if (count > limit) violations++
  }
  return { violations, busiest }
}

const sendWaves = (request: Effect.Effect<unknown>) =>
  Effect.forEach(
    waves,
    ([offset, count]) =>
      Effect.sleep(offset).pipe(
        Effect.zipRight(Effect.replicateEffect(request, count, { concurrency: "unbounded", discard: true }))
      ),
    { concurrency: "unbounded", discard: true }
  )

const runWaves = (contender: Contender) =>
  Effect.gen(function*() {
    const acquire = yield* contender.make(limit, perMillis)
    const starts: Array<number> = []
    const began = Date.now()
    yield* sendWaves(Effect.zipRight(acquire, Effect.sync(() => starts.push(Date.now()))))
    const strict = windows(starts, perMillis)
    return {
      violations: strict.violations,
      busiest: strict.busiest,
      violationsBeyondJitter: windows(starts, perMillis - 1).violations,
      millis: Date.now() - began
    }
  }).pipe(Effect.scoped)

/** Ours again, counting on the instants its store recorded as it admitted each start (not when the caller ran on). */
const oursAdmissions = Effect.gen(function*() {
  const memory = yield* RateLimiter.makeMemoryStore({ idleTimeToLive: perMillis })
  const admitted: Array<number> = []
  const limiter = yield* RateLimiter.make({
    limit,
    per: perMillis,
    store: {
      tryAcquire: (request) =>
        Effect.map(memory.tryAcquire(request), (decision) => {
          if (decision.allowed) admitted.push(...Array<number>(decision.granted ?? 1).fill(request.now))
          return decision
        }),
      pauseUntil: memory.pauseUntil
    }
  }).pipe(Effect.orDie)
  yield* sendWaves(limiter.acquire("host"))
  return windows(admitted, perMillis)
}).pipe(Effect.scoped)

const microsPerAcquire = (contender: Contender) =>
  Effect.gen(function*() {
    const acquire = yield* contender.make(1e9, 1000)
    const n = contender.name === "bottleneck" ? bottleneckAcquiresPerRun : acquiresPerRun
    const began = performance.now()
    for (let i = 0; i < n; i++) yield* acquire
    return ((performance.now() - began) * 1000) / n
  }).pipe(Effect.scoped)

const fixed = (value: number, digits: number) => value.toFixed(digits)

export const run = Effect.gen(function*() {
  const overhead = contenders.map(() => [] as Array<number>)
  const results = contenders.map(() =>
    [] as Array<{ violations: number; busiest: number; violationsBeyondJitter: number; millis: number }>
  )
  const admissions: Array<{ violations: number; busiest: number }> = []
  for (let round = 0; round < rounds; round++) {
    for (const [index, contender] of contenders.entries()) {
      if (contender.spacesStarts !== true) overhead[index].push(yield* microsPerAcquire(contender))
      results[index].push(yield* runWaves(contender))
    }
    admissions.push(yield* oursAdmissions)
  }
  const oursMicros = median(overhead[0])
  const rows = contenders.map((contender, index) => {
    const micros = overhead[index].length > 0 ? median(overhead[index]) : undefined
    const worst = Math.max(...results[index].map((result) => result.violations))
    return {
      limiter: contender.name,
      algorithm: contender.algorithm,
      violationsPerRun: results[index].map((result) => result.violations),
      worstViolations: worst,
      worstViolationsBeyondJitter: Math.max(...results[index].map((result) => result.violationsBeyondJitter)),
      busiestWindow: Math.max(...results[index].map((result) => result.busiest)),
      medianWorkloadMillis: median(results[index].map((result) => result.millis)),
      microsPerAcquire: micros,
      overheadVsOurs: micros === undefined ? undefined : micros / oursMicros
    }
  })
  const markdown = [
    `Limit ${limit} per ${perMillis} ms; ${
      waves.reduce((sum, [, count]) => sum + count, 0)
    } requests in ${waves.length}`,
    `waves over ${
      waves[waves.length - 1][0]
    } ms, real time, ${rounds} interleaved rounds. A violation is a start \`s\``,
    `whose window \`[s, s + ${perMillis} ms)\` holds more than ${limit} starts (instants from \`Date.now()\`, logged`,
    "right after the acquire returns: a start logged 1 ms after the limiter admitted it, when the millisecond ticks in",
    `between, can show as one over; the next column counts windows of ${perMillis - 1} ms to discount that).`,
    `Overhead: sequential uncontended acquires (limit 1e9 per second), ${acquiresPerRun} per run`,
    `(${bottleneckAcquiresPerRun} for bottleneck), median µs per acquire.`,
    "",
    "| limiter | algorithm | violating windows (worst run) | beyond 1 ms of clock jitter | busiest window | workload time (median) | µs per uncontended acquire | overhead vs ours |",
    "|---|---|---:|---:|---:|---:|---:|---:|",
    ...rows.map((row) =>
      `| ${row.limiter} | ${row.algorithm} | ${row.worstViolations} | ${row.worstViolationsBeyondJitter} | ${row.busiestWindow} / ${limit} | ${
        fixed(row.medianWorkloadMillis / 1000, 2)
      } s | ${row.microsPerAcquire === undefined ? "n/a (waits per / limit)" : fixed(row.microsPerAcquire, 2)} | ${
        row.overheadVsOurs === undefined ? "—" : `${fixed(row.overheadVsOurs, 1)}×`
      } |`
    ),
    "",
    `Ours counted on the instants its store recorded as it admitted each start: ${
      Math.max(...admissions.map((result) => result.violations))
    } violating windows in the worst run, busiest window ${
      Math.max(...admissions.map((result) => result.busiest))
    } / ${limit}. Any violation in the table above is the lag between admission and the caller's next step.`
  ].join("\n")
  return {
    title: "RateLimiter: exact sliding window vs token bucket / fixed window",
    markdown,
    data: {
      limit,
      perMillis,
      waves,
      rounds,
      acquiresPerRun,
      bottleneckAcquiresPerRun,
      rows,
      oursAdmissions: admissions
    }
  }
})
