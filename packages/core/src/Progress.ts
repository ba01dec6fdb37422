/**
 * Counters for a batch of work — total, done, failed (by error tag), in flight — with a windowed rate, an ETA, a
 * throttled stream of snapshots and a one-line renderer (a terminal bar, or a plain line for logs).
 *
 * What it adds beyond Effect: `Metric` counters are process-wide and have no notion of "rate over the last 10 s" or
 * "ETA"; a `SubscriptionRef` of the counters would queue every update for every subscriber. Here an update is a
 * synchronous mutation of counters and a version number; a subscriber (a progress bar, a server-sent-events client)
 * looks at the version once per `interval` and emits a snapshot when it moved, and only a subscriber that found
 * nothing new and waits arms a signal (a sliding `PubSub` of capacity 1) for the next update. So an update costs no
 * effect beyond its own (the harvester makes two per page), a slow subscriber costs nothing per update, and each sees
 * at most one snapshot per `interval` — always including the latest. `track` counts an effect as in flight, then
 * done or failed (by the error's `_tag`); an interrupted tracked effect counts as neither and leaves `inFlight` where
 * it was. Time comes from `Clock` (`TestClock` in tests).
 *
 * Answers the tutorial's "HTTP Client with aiohttp", which says nothing until `gather` returns and then prints one
 * line per URL: a batch of thousands needs to show how far it is, how fast it goes and what fails while it runs
 * (the harvester's progress bar and its server-sent events read a `Progress`).
 */
import type { Exit } from "effect"
import { Cause, Clock, Data, Duration, Effect, Option, Predicate, PubSub, Schema, Stream } from "effect"

/** Bad options or arguments: `field` names the option, `reason` says what is wrong with `value`. */
export class InvalidProgressInput extends Data.TaggedError("InvalidProgressInput")<{
  readonly field: "window" | "interval" | "n"
  readonly value: unknown
  readonly reason: string
}> {
  override get message() {
    return `invalid progress input: ${this.field} ${this.reason} (got ${String(this.value)})`
  }
}

/**
 * What the counters say at one instant. `done` counts successes and `failed` failures (`failedByTag` splits them by
 * error tag); `finished = done + failed`. `ratePerSecond` is finished items per second over the recent window (or over
 * the time since the first item started, while that is shorter). `etaMillis` is `remaining / rate`, `None` while the
 * rate is 0. A Schema, so it crosses the wire as JSON (`etaMillis` encodes as `null` when unknown).
 */
export const Snapshot = Schema.Struct({
  total: Schema.Number,
  done: Schema.Number,
  failed: Schema.Number,
  inFlight: Schema.Number,
  failedByTag: Schema.Record({ key: Schema.String, value: Schema.Number }),
  ratePerSecond: Schema.Number,
  etaMillis: Schema.OptionFromNullOr(Schema.Number),
  elapsedMillis: Schema.Number
})
export type Snapshot = Schema.Schema.Type<typeof Snapshot>

export interface Options {
  /** The rate is measured over this much recent time. Default 10 seconds. */
  readonly window?: Duration.DurationInput
  /** `changes` emits at most once per interval (the latest snapshot). Default 100 millis. */
  readonly interval?: Duration.DurationInput
}

export interface Progress {
  /** Adds `n` (a non-negative integer) items to the total. */
  readonly addTotal: (n: number) => Effect.Effect<void, InvalidProgressInput>
  /** One item is now in flight. */
  readonly start: Effect.Effect<void>
  /** One in-flight item succeeded (settling an item that was never started is allowed: it was never in flight). */
  readonly succeed: Effect.Effect<void>
  /** One in-flight item failed with an error tagged `tag`. */
  readonly fail: (tag: string) => Effect.Effect<void>
  /** `start`, done at once: for callback code on a hot path (no effect to run). */
  readonly unsafeStart: () => void
  /** `succeed`, done at once: for callback code on a hot path. */
  readonly unsafeSucceed: () => void
  /**
   * Counts `effect` as one item: in flight while it runs, then done, or failed under its error's `_tag` ("Defect" for
   * a defect, "UnknownError" for an untagged failure). Interrupted: neither, and `inFlight` goes back.
   */
  readonly track: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  readonly snapshot: Effect.Effect<Snapshot>
  /**
   * The current snapshot at once, then after each change at most one snapshot per `interval`: the latest, so the
   * final state is always emitted. Each consumer subscribes separately; the stream never ends by itself.
   */
  readonly changes: Stream.Stream<Snapshot>
}

const positiveDuration = (field: "window" | "interval", input: Duration.DurationInput) =>
  Option.match(Duration.decodeUnknown(input), {
    onNone: () => Effect.fail(new InvalidProgressInput({ field, value: input, reason: "is not a duration" })),
    onSome: (duration) =>
      Duration.toMillis(duration) > 0 && Duration.isFinite(duration)
        ? Effect.succeed(duration)
        : Effect.fail(new InvalidProgressInput({ field, value: input, reason: "must be positive and finite" }))
  })

const tagOf = (error: unknown) =>
  Predicate.hasProperty(error, "_tag") && Predicate.isString(error._tag) ? error._tag : "UnknownError"

/** Creates a progress tracker whose rate is taken over `window` and whose `changes` emit once per `interval`. */
export const make = Effect.fn("Progress.make")(function*(options: Options = {}) {
  const windowMillis = Duration.toMillis(yield* positiveDuration("window", options.window ?? "10 seconds"))
  const interval = yield* positiveDuration("interval", options.interval ?? "100 millis")
  const signal = yield* PubSub.sliding<void>(1)
  const clock = yield* Effect.clock
  /** Moves on every update; a subscriber emits when it differs from the one it last saw. */
  let version = 0
  /** A subscriber waits for the next update: signal it. */
  let armed = false

  let total = 0
  let done = 0
  let failed = 0
  let inFlight = 0
  const failedByTag = new Map<string, number>()
  let firstActivityAt: number | undefined
  // Completions per millisecond, oldest first; entries before `head` have left the window.
  const completedAt: Array<number> = []
  const completedCount: Array<number> = []
  let head = 0
  let inWindow = 0

  const prune = (now: number) => {
    while (head < completedAt.length && completedAt[head] <= now - windowMillis) {
      inWindow -= completedCount[head]
      head++
    }
    if (head > 1024 && head * 2 > completedAt.length) {
      completedAt.splice(0, head)
      completedCount.splice(0, head)
      head = 0
    }
  }

  const touch = (now: number) => {
    if (firstActivityAt === undefined) firstActivityAt = now
  }

  const recordCompletion = (now: number) => {
    touch(now)
    const last = completedAt.length - 1
    if (last >= head && completedAt[last] === now) {
      completedCount[last]++
    } else {
      completedAt.push(now)
      completedCount.push(1)
    }
    inWindow++
    prune(now)
    if (inFlight > 0) inFlight--
  }

  const bump = (): Effect.Effect<void> => {
    version++
    if (!armed) return Effect.void
    armed = false
    return Effect.asVoid(PubSub.publish(signal, undefined))
  }
  const changed = Effect.suspend(bump)

  const update = (mutate: (now: number) => void) =>
    Effect.suspend(() => {
      mutate(clock.unsafeCurrentTimeMillis())
      return bump()
    })
  /** `update` done at once: a waiting subscriber is signalled without an effect. */
  const unsafeUpdate = (mutate: (now: number) => void) => () => {
    mutate(clock.unsafeCurrentTimeMillis())
    version++
    if (armed) {
      armed = false
      signal.unsafeOffer(undefined)
    }
  }

  const onStart = (now: number) => {
    touch(now)
    inFlight++
  }
  const onSuccess = (now: number) => {
    recordCompletion(now)
    done++
  }
  const start = update(onStart)
  const succeed = update(onSuccess)

  const fail = (tag: string) =>
    update((now) => {
      recordCompletion(now)
      failed++
      failedByTag.set(tag, (failedByTag.get(tag) ?? 0) + 1)
    })

  const cancel = update(() => {
    if (inFlight > 0) inFlight--
  })

  const addTotal = Effect.fn("Progress.addTotal")(function*(n: number) {
    if (!Number.isSafeInteger(n) || n < 0) {
      return yield* new InvalidProgressInput({ field: "n", value: n, reason: "must be a non-negative integer" })
    }
    total += n
    yield* changed
  })

  const settle = <A, E>(exit: Exit.Exit<A, E>) => {
    if (exit._tag === "Success") return succeed
    if (Cause.isInterruptedOnly(exit.cause)) return cancel
    return fail(Option.match(Cause.failureOption(exit.cause), { onNone: () => "Defect", onSome: tagOf }))
  }

  const track = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.acquireUseRelease(start, () => effect, (_, exit) => settle(exit))

  const snapshot = Effect.map(Clock.currentTimeMillis, (now): Snapshot => {
    prune(now)
    const spanMillis = firstActivityAt === undefined ? 0 : Math.min(windowMillis, now - firstActivityAt)
    const ratePerSecond = spanMillis > 0 ? (inWindow * 1000) / spanMillis : 0
    const remaining = Math.max(total - done - failed, 0)
    return {
      total,
      done,
      failed,
      inFlight,
      failedByTag: Object.fromEntries(failedByTag),
      ratePerSecond,
      etaMillis: remaining === 0
        ? Option.some(0)
        : ratePerSecond > 0
        ? Option.some(Math.round((remaining * 1000) / ratePerSecond))
        : Option.none(),
      elapsedMillis: firstActivityAt === undefined ? 0 : now - firstActivityAt
    }
  })

  const changes = Stream.unwrapScoped(Effect.map(PubSub.subscribe(signal), (dirty) => {
    let seen = version
    /** The next snapshot once something changed since the last one. */
    const next = (): Effect.Effect<Snapshot> => {
      if (version !== seen) {
        seen = version
        return snapshot
      }
      armed = true
      return Effect.zipRight(dirty.take, Effect.suspend(next))
    }
    return Stream.concat(
      Stream.fromEffect(snapshot),
      Stream.repeatEffect(Effect.zipRight(Effect.sleep(interval), Effect.suspend(next)))
    )
  }))

  return {
    addTotal,
    start,
    succeed,
    fail,
    unsafeStart: unsafeUpdate(onStart),
    unsafeSucceed: unsafeUpdate(onSuccess),
    track,
    snapshot,
    changes
  } satisfies Progress
})

const formatRate = (perSecond: number) => `${perSecond.toFixed(perSecond >= 100 ? 0 : 1)}/s`

/** "4s", "1m05s", "2h03m"; "--" when unknown. */
export const formatEta = (etaMillis: Option.Option<number>) =>
  Option.match(etaMillis, {
    onNone: () => "--",
    onSome: (millis) => {
      const seconds = Math.ceil(millis / 1000)
      if (seconds < 60) return `${seconds}s`
      const minutes = Math.floor(seconds / 60)
      if (minutes < 60) return `${minutes}m${String(seconds % 60).padStart(2, "0")}s`
      return `${Math.floor(minutes / 60)}h${String(minutes % 60).padStart(2, "0")}m`
    }
  })

/** Failure tags, most frequent first (ties by name). */
const tagsByCount = (snapshot: Snapshot) =>
  Object.entries(snapshot.failedByTag).sort(([a, x], [b, y]) => y - x || (a < b ? -1 : a > b ? 1 : 0))

const minimumBar = 5

/**
 * One terminal line at most `width` columns wide:
 * `[#####.....] 50/100 12.3/s ETA 4s failed: 3 (HttpStatusError 2, FetchTimeout 1)`, where 50 counts finished items
 * (done and failed). The bar takes the columns the text leaves; with fewer than 5 left the per-tag breakdown goes,
 * then the bar; the line is cut at `width`.
 */
export const render = (snapshot: Snapshot, width: number): string => {
  const finished = snapshot.done + snapshot.failed
  const counts = `${finished}/${snapshot.total} ${formatRate(snapshot.ratePerSecond)} ETA ${
    formatEta(snapshot.etaMillis)
  }`
  const tags = tagsByCount(snapshot).map(([tag, count]) => `${tag} ${count}`).join(", ")
  const failures = snapshot.failed === 0 ? "" : ` failed: ${snapshot.failed}`
  const detailed = `${counts}${failures}${tags === "" ? "" : ` (${tags})`}`
  const columns = Math.max(Math.floor(width), 0)
  const text = columns - detailed.length - 3 >= minimumBar ? detailed : `${counts}${failures}`
  const barWidth = columns - text.length - 3
  if (barWidth < minimumBar) return text.slice(0, columns)
  const filled = snapshot.total === 0 ? 0 : Math.min(Math.floor((barWidth * finished) / snapshot.total), barWidth)
  return `[${"#".repeat(filled)}${".".repeat(barWidth - filled)}] ${text}`
}

/**
 * A plain line for logs and non-TTY output:
 * `progress 50/100 done=47 failed=3 inFlight=4 rate=12.3/s eta=4s failedByTag=HttpStatusError:2,FetchTimeout:1`.
 */
export const renderPlain = (snapshot: Snapshot): string => {
  const tags = tagsByCount(snapshot).map(([tag, count]) => `${tag}:${count}`).join(",")
  return [
    `progress ${snapshot.done + snapshot.failed}/${snapshot.total}`,
    `done=${snapshot.done}`,
    `failed=${snapshot.failed}`,
    `inFlight=${snapshot.inFlight}`,
    `rate=${formatRate(snapshot.ratePerSecond)}`,
    `eta=${formatEta(snapshot.etaMillis)}`,
    ...(tags === "" ? [] : [`failedByTag=${tags}`])
  ].join(" ")
}
