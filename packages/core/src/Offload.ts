/**
 * Blocking or CPU-heavy work on a pool of worker threads, with Schema-typed requests, results and errors.
 *
 * Built on `@effect/platform`'s worker manager (the request protocol, Schema-serialized requests, span propagation)
 * and `effect/Pool`, with Node's worker threads (`NodeWorker` / `NodeWorkerRunner`). What it adds beyond
 * `Worker.makePoolSerialized`:
 *
 * - A crashed thread (`process.exit`, an uncaught error) fails the request it was serving with a typed
 *   {@link WorkerCrashed} and is replaced by a fresh thread; the next request succeeds. (The platform pool keeps the
 *   dead worker in the pool and restarts its thread after a fixed 1 s, holding requests sent meanwhile.)
 * - A thread that cannot start (a missing or broken script, or not ready within `startTimeout`) fails `make`, or the
 *   request waiting for it, with {@link WorkerStartFailed}. (The platform pool retries the spawn every second
 *   forever, and waits for it uninterruptibly: `makePoolSerialized` never returns, even under `Effect.timeout`.)
 * - A bounded queue: at most `size` requests run (one per thread) and at most `maxQueued` more wait for a thread; a
 *   request beyond that fails at once with {@link OffloadQueueFull}. Load is shed with a typed error rather than
 *   absorbed as unbounded latency; a caller that prefers to wait can retry on that tag with a Schedule.
 * - Cancellation that stops the work: interrupting a caller whose request is running terminates its thread
 *   (`Worker.terminate()` stops even a tight synchronous loop) and the caller resumes once that thread has exited;
 *   the pool starts a replacement in the background, and the next request gets it as soon as it is ready. So
 *   `Effect.timeout(offload.run(request), ...)` is a real timeout. A caller interrupted while waiting for a busy
 *   thread leaves the queue at once; one waiting for a thread that is being started leaves once that thread is ready
 *   or has failed (Effect's `Pool` awaits an allocation uninterruptibly; `startTimeout` bounds it). (The platform
 *   only posts the worker an interrupt message, which a synchronous computation never reads: the thread keeps
 *   burning CPU on a result no one wants, and the next request queues behind it — measured: a request sent after a
 *   timed-out 3 s computation waited 2.9 s.)
 * - {@link Offload.stats}: threads alive, busy, queued, started, crashed, cancelled.
 *
 * A worker script is a module that runs {@link serve} with the same request schema. A TypeScript script (`.ts`) is
 * started through `Offload/bootstrap.mjs`, which registers tsx inside the worker thread: that works the same under
 * `tsx` (`npm run example`) and under vitest, where a bare `new Worker("x.ts")` fails on Node 20.
 *
 * Answers the tutorial's "Avoid Blocking Calls": `await asyncio.to_thread(blocking_io)` becomes
 * `offload.run(new BlockingIo(...))`, with the difference that Python cannot cancel a thread (a cancelled `to_thread`
 * keeps running) and its default executor queues without bound (see examples/to-thread.ts).
 */
// Subpath imports: a worker thread loads this module, and the package indexes would triple its start-up time.
import * as NodeWorker from "@effect/platform-node/NodeWorker"
import * as NodeWorkerRunner from "@effect/platform-node/NodeWorkerRunner"
import * as Worker from "@effect/platform/Worker"
import * as WorkerError from "@effect/platform/WorkerError"
import * as WorkerRunner from "@effect/platform/WorkerRunner"
import type { Scope } from "effect"
import { Array, Cause, Data, Deferred, Duration, Effect, Exit, Layer, Option, Pool, Schema } from "effect"
import * as WorkerThreads from "node:worker_threads"

/** Bad options: `field` names the option, `reason` says what is wrong with `value`. */
export class InvalidOffloadOptions extends Data.TaggedError("InvalidOffloadOptions")<{
  readonly field: "size" | "maxQueued" | "startTimeout"
  readonly value: unknown
  readonly reason: string
}> {
  override get message() {
    return `invalid offload options: ${this.field} ${this.reason} (got ${String(this.value)})`
  }
}

/** `size` requests are running and `maxQueued` are waiting: this one was refused. */
export class OffloadQueueFull extends Data.TaggedError("OffloadQueueFull")<{
  readonly request: string
  readonly size: number
  readonly maxQueued: number
}> {
  override get message() {
    return `offload queue full: ${this.size} running and ${this.maxQueued} waiting, ${this.request} refused`
  }
}

/** The thread serving `request` died (it exited or threw an uncaught error); it has been replaced. */
export class WorkerCrashed extends Data.TaggedError("WorkerCrashed")<{
  readonly request: string
  readonly threadId: number
  readonly reason: string
}> {
  override get message() {
    return `worker thread ${this.threadId} crashed while serving ${this.request}: ${this.reason}`
  }
}

/** A worker thread for `script` exited or failed before it was ready. */
export class WorkerStartFailed extends Data.TaggedError("WorkerStartFailed")<{
  readonly script: string
  readonly reason: string
}> {
  override get message() {
    return `worker thread for ${this.script} failed to start: ${this.reason}`
  }
}

/** What `run` may fail with besides the request's own failure schema. */
export type OffloadError = OffloadQueueFull | WorkerCrashed | WorkerStartFailed

export interface Options<I extends Schema.TaggedRequest.All, IE> {
  /** The union of the requests the script serves: the same schema the script passes to {@link serve}. */
  readonly requests: Schema.Schema<I, IE>
  /** The worker script, e.g. `new URL("./primes.worker.ts", import.meta.url)`. */
  readonly script: URL
  /** Worker threads, each running one request at a time. A positive integer. */
  readonly size: number
  /** Requests allowed to wait for a thread when all are busy. A non-negative integer. */
  readonly maxQueued: number
  /** A thread not ready this long after it was started counts as failed to start. Default 30 seconds. */
  readonly startTimeout?: Duration.DurationInput
}

export interface Stats {
  readonly size: number
  readonly maxQueued: number
  /** Worker threads alive now (started and not yet exited). */
  readonly threads: number
  /** Requests running on a thread. */
  readonly busy: number
  /** Requests admitted and waiting for a thread. */
  readonly queued: number
  /** Threads started so far, replacements included. */
  readonly started: number
  /** Requests that failed with {@link WorkerCrashed}. */
  readonly crashed: number
  /** Threads terminated (and exited) because their caller was interrupted. */
  readonly cancelled: number
}

export interface Offload<I extends Schema.TaggedRequest.All> {
  /** Runs `request` on a worker thread: its success, its typed failure, or an {@link OffloadError}. */
  readonly run: <Req extends I>(
    request: Req
  ) => Effect.Effect<
    Schema.WithResult.Success<Req>,
    Schema.WithResult.Failure<Req> | OffloadError,
    Schema.WithResult.Context<Req>
  >
  readonly stats: Effect.Effect<Stats>
}

interface Thread {
  readonly thread: WorkerThreads.Worker
  // Captured at start: `Worker.threadId` reads -1 once the thread has exited.
  readonly threadId: number
}

interface Slot<I> {
  readonly worker: Worker.Worker<I, unknown, unknown>
  readonly current: () => Thread
}

const bootstrap = new URL("./Offload/bootstrap.mjs", import.meta.url)

const tsxPath = /[\\/]tsx[\\/]|^tsx$/

/**
 * The parent's Node flags minus tsx's (`--require …/tsx/dist/preflight.cjs --import …/tsx/dist/loader.mjs` under the
 * `tsx` CLI): inherited by a worker thread they do not make TypeScript loadable there, and they slow its start-up.
 */
const withoutTsx = (flags: ReadonlyArray<string>) => {
  const kept: Array<string> = []
  for (let index = 0; index < flags.length; index++) {
    const flag = flags[index]
    const next = flags[index + 1]
    if ((flag === "--require" || flag === "--import") && next !== undefined && tsxPath.test(next)) {
      index++
    } else if (!/^--(require|import)=/.test(flag) || !tsxPath.test(flag)) {
      kept.push(flag)
    }
  }
  return kept
}

const stop = (current: Thread | undefined) =>
  current === undefined ? Effect.void : Effect.promise(() => current.thread.terminate())

const describeCause = (cause: unknown) => cause instanceof Error ? cause.message : String(cause)

const validate = (field: "size" | "maxQueued", value: number, minimum: 0 | 1) =>
  Number.isSafeInteger(value) && value >= minimum
    ? Effect.void
    : Effect.fail(
      new InvalidOffloadOptions({
        field,
        value,
        reason: minimum === 1 ? "must be a positive integer" : "must be a non-negative integer"
      })
    )

const validateTimeout = (input: Duration.DurationInput) =>
  Option.match(Option.filter(Duration.decodeUnknown(input), (duration) => Duration.toMillis(duration) > 0), {
    onNone: () =>
      Effect.fail(
        new InvalidOffloadOptions({ field: "startTimeout", value: input, reason: "must be a positive duration" })
      ),
    onSome: Effect.succeed
  })

/**
 * Starts `size` worker threads running `script` and returns once all of them are ready. Closing the scope waits for
 * the requests still running (interrupt their callers to cancel them), then stops every thread.
 */
export const make = Effect.fn("Offload.make")(function*<I extends Schema.TaggedRequest.All, IE>(
  options: Options<I, IE>
): Effect.fn.Return<Offload<I>, InvalidOffloadOptions | WorkerStartFailed, Scope.Scope> {
  const { maxQueued, script, size } = options
  yield* validate("size", size, 1)
  yield* validate("maxQueued", maxQueued, 0)
  const startTimeout = yield* validateTimeout(options.startTimeout ?? "30 seconds")
  const manager = yield* Worker.makeManager.pipe(Effect.provide(NodeWorker.layerWorker))
  const encodeRequest = Schema.encode(options.requests)
  const typeScript = /\.m?ts$/.test(script.pathname)

  const threads = new Set<WorkerThreads.Worker>()
  let started = 0
  let admitted = 0
  let busy = 0
  let crashed = 0
  let cancelled = 0

  const startThread = () => {
    const thread = typeScript
      ? new WorkerThreads.Worker(bootstrap, {
        workerData: { entry: script.href },
        execArgv: withoutTsx(process.execArgv)
      })
      : new WorkerThreads.Worker(script)
    started++
    threads.add(thread)
    thread.once("exit", () => threads.delete(thread))
    return thread
  }

  const acquire: Effect.Effect<Slot<I>, WorkerStartFailed, Scope.Scope> = Effect.gen(function*() {
    const failedToStart = yield* Deferred.make<never, WorkerStartFailed>()
    const fail = (reason: string) =>
      Deferred.unsafeDone(failedToStart, Exit.fail(new WorkerStartFailed({ script: script.href, reason })))
    let current: Thread | undefined
    const spawn = () => {
      const thread = startThread()
      thread.once("error", (cause) => fail(describeCause(cause)))
      thread.once("exit", (code) => fail(`exited with code ${code}`))
      current = { thread, threadId: thread.threadId }
      return thread
    }
    const worker = yield* manager.spawn<I, unknown, unknown>({
      encode: (request) =>
        Effect.mapError(encodeRequest(request), (cause) => new WorkerError.WorkerError({ reason: "encode", cause }))
    }).pipe(
      Effect.provideService(Worker.Spawner, spawn),
      Effect.catchAll((cause) =>
        Effect.fail(new WorkerStartFailed({ script: script.href, reason: describeCause(cause) }))
      ),
      Effect.raceFirst(Deferred.await(failedToStart)),
      Effect.timeoutFail({
        duration: startTimeout,
        onTimeout: () =>
          new WorkerStartFailed({ script: script.href, reason: `not ready after ${Duration.format(startTimeout)}` })
      }),
      // Left to the manager, a thread that never got ready would be asked to close, then killed 5 s later.
      Effect.onError(() => Effect.suspend(() => stop(current)))
    )
    const first = current
    if (first === undefined) return yield* Effect.dieMessage("the worker manager started no thread")
    return { worker, current: () => current ?? first }
  })

  const pool = yield* Pool.make({ acquire, size, concurrency: 1 })
  yield* Effect.scoped(
    Effect.forEach(Array.range(1, size), () => pool.get, { concurrency: "unbounded", discard: true })
  )

  const admit = (request: string) =>
    Effect.suspend(() => {
      if (admitted >= size + maxQueued) return Effect.fail(new OffloadQueueFull({ request, size, maxQueued }))
      admitted++
      return Effect.void
    })
  const leave = Effect.sync(() => {
    admitted--
  })

  const terminate = (slot: Slot<I>) =>
    pool.invalidate(slot).pipe(
      Effect.zipRight(Effect.suspend(() => stop(slot.current()))),
      Effect.zipRight(Effect.sync(() => cancelled++))
    )

  const crash = (slot: Slot<I>, request: string, error: WorkerError.WorkerError) =>
    Effect.zipRight(
      pool.invalidate(slot),
      Effect.suspend(() => {
        crashed++
        return Effect.fail(
          new WorkerCrashed({ request, threadId: slot.current().threadId, reason: describeCause(error.cause) })
        )
      })
    )

  const settle = <Req extends I>(
    slot: Slot<I>,
    request: Req,
    exit: Exit.Exit<unknown, unknown>
  ): Effect.Effect<
    Schema.WithResult.Success<Req>,
    Schema.WithResult.Failure<Req> | WorkerCrashed,
    Schema.WithResult.Context<Req>
  > => {
    const withResult = Schema.asWithResult(request)
    if (Exit.isSuccess(exit)) return Effect.orDie(Schema.deserializeSuccess(withResult, exit.value))
    const failure = Cause.failureOption(exit.cause)
    if (Option.isNone(failure)) return Effect.orDie(Effect.failCause(exit.cause))
    const error = failure.value
    if (!WorkerError.isWorkerError(error)) {
      return Effect.flatMap(Effect.orDie(Schema.deserializeFailure(withResult, error)), Effect.fail)
    }
    return error.reason === "unknown" ? crash(slot, request._tag, error) : Effect.die(error)
  }

  const execute = <Req extends I>(request: Req) =>
    Effect.gen(function*() {
      const slot = yield* pool.get
      yield* Effect.acquireRelease(Effect.sync(() => busy++), () => Effect.sync(() => busy--))
      const exit = yield* Effect.exit(Effect.onInterrupt(slot.worker.executeEffect(request), () => terminate(slot)))
      return yield* settle(slot, request, exit)
    })

  const run = <Req extends I>(request: Req) =>
    Effect.acquireUseRelease(admit(request._tag), () => Effect.scoped(execute(request)), () => leave).pipe(
      Effect.withSpan("Offload.run", { attributes: { request: request._tag } })
    )

  const stats = Effect.sync((): Stats => ({
    size,
    maxQueued,
    threads: threads.size,
    busy,
    queued: admitted - busy,
    started,
    crashed,
    cancelled
  }))

  return { run, stats }
})

/**
 * The body of a worker script: serves the requests of `schema` with `handlers` (one per `_tag`) until the pool
 * closes. Run it with `NodeRuntime.runMain(Offload.serve(Requests, { ... }))`.
 */
export const serve = <
  A extends Schema.TaggedRequest.All,
  I,
  R,
  const Handlers extends WorkerRunner.SerializedRunner.Handlers<A>
>(
  schema: Schema.Schema<A, I, R>,
  handlers: Handlers
) => WorkerRunner.launch(Layer.provide(WorkerRunner.layerSerialized(schema, handlers), NodeWorkerRunner.layer))
