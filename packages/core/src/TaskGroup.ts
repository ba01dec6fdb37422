/**
 * `asyncio.TaskGroup` for Effect: a block that spawns tasks while it runs (a crawler adding the pages it discovers),
 * waits for all of them, and fails with every failure.
 *
 * ```ts
 * TaskGroup.scoped((group: TaskGroup.TaskGroup<FetchError>) =>
 *   Effect.gen(function*() {
 *     const page = yield* group.spawn(fetch(url))          // a handle, the task runs concurrently
 *     // tasks may spawn more tasks into `group` while the block waits
 *     return page
 *   })
 * ) // Effect<Task<Page, FetchError>, TaskGroupError<FetchError>>; every task has finished here
 * ```
 *
 * What it adds beyond Effect's `FiberSet` / `Effect.forEach`:
 * - late spawning while waiting for all: the block returns once the body AND every task have finished, including
 *   tasks spawned by tasks after the body returned (`FiberSet.awaitEmpty` only sees fibers added so far, and
 *   `forEach` needs the whole list up front);
 * - every failure, typed: the first failure interrupts the body and the other tasks (and waiting ones never start),
 *   then the group keeps collecting until all have stopped, so failures raised at the same moment (tasks woken by the
 *   same event) or while a sibling was being interrupted (an uninterruptible step that failed, a finalizer that
 *   died) are reported too.
 *   `FiberSet.join` reports the first one only. The group fails with one `TaskGroupError<E>` whose `errors` holds
 *   every typed failure (`Cause.failures` of all collected causes, in completion order) and whose `cause` is the
 *   whole parallel `Cause`. Defects are collected too: they stay in the group's own cause, in parallel with the
 *   `TaskGroupError` (as `Effect.all` would report them; a group that only had defects dies with them), and they are
 *   in `TaskGroupError.cause`, so a `catchTag("TaskGroupError")` handler still sees them. Tasks that were merely
 *   interrupted (by the group, or cancelled through their handle) are not failures, as in asyncio. When neither the
 *   body nor the tasks can fail, the error type is `never`;
 * - per-task handles with typed results: `spawn` returns a `Task<A, E>` to `join` (its value or its error) or `await`
 *   (its `Exit`) on its own, during or after the block. A handle keeps the task's `Exit`, not its fiber: a finished
 *   task costs a few bytes even if its handle is held, and the group itself keeps only running fibers;
 * - structured lifetime: interrupting the caller interrupts the body and every task and waits for them; no task
 *   outlives the block. A spawn on a group that is failing or closed returns an interrupted task that never ran.
 * - an optional `concurrency` bound: beyond it, spawned tasks wait in FIFO order without a fiber (spawn never blocks,
 *   so a task spawning children cannot deadlock the group).
 *
 * It does not wrap a `FiberSet` but uses the same mechanism (`forkDaemon` + `addObserver`, a fiber dropped as soon as
 * it completes) with its own bookkeeping: `FiberSet.run` adds effects per spawn, and its `join`/`awaitEmpty` cannot
 * express "all, including late ones, with every failure".
 *
 * Cost: one fiber per task (`Effect.forkDaemon` + an observer), no `Deferred` or extra fiber per task, O(1) per spawn
 * and per completion; one extra fiber for the body. The group's fibers share one scheduler runner (see
 * `makeGroupScheduler`) unless the caller set a scheduler of its own. Spawning and joining 100k tiny tasks took 0.5–0.7×
 * the wall time of `asyncio.TaskGroup` and under a third of `FiberSet`'s, at 235 MiB peak RSS, 83 MiB above an idle
 * Node (bench/parts/TaskGroup.ts).
 *
 * Like asyncio's deferred done-callbacks, a failure aborts the group only once the fibers already scheduled have run,
 * so tasks woken by the same event still report their failure (under `TestClock`, sleeps ending at the same instant
 * are woken one after another, so only the first of them fails). Unlike asyncio, joining a task that was interrupted
 * interrupts the joiner (use `await` to inspect its `Exit`).
 *
 * Answers the tutorial's "TaskGroup (Python 3.11+)" section, and its `except*` error-group handling.
 */
import type { FiberId } from "effect"
import { Array as Arr, Cause, Chunk, Data, Effect, Exit, Fiber, FiberRef, Option, Runtime, Scheduler } from "effect"

/** One or more tasks (or the body) failed: every typed failure, and the whole cause. */
export class TaskGroupError<E> extends Data.TaggedError("TaskGroupError")<{
  readonly errors: Arr.NonEmptyReadonlyArray<E>
  readonly cause: Cause.Cause<E>
}> {
  override get message() {
    const shown = this.errors.slice(0, 3).map((error) => error instanceof Error ? error.message : String(error))
    return `${this.errors.length} task(s) failed: ${shown.join("; ")}${this.errors.length > 3 ? "; ..." : ""}`
  }
}

/** The group's error: `TaskGroupError<E>`, or `never` when neither the body nor the tasks can fail (defects only). */
export type GroupError<E> = [E] extends [never] ? never : TaskGroupError<E>

/** Bad options: `field` names the option, `reason` says what is wrong with `value`. */
export class InvalidTaskGroupOptions extends Data.TaggedError("InvalidTaskGroupOptions")<{
  readonly field: "concurrency"
  readonly value: unknown
  readonly reason: string
}> {
  override get message() {
    return `invalid task group options: ${this.field} ${this.reason} (got ${String(this.value)})`
  }
}

export interface Options {
  /** Tasks running at once: a positive integer, or "unbounded" (the default). Beyond it, spawned tasks wait. */
  readonly concurrency?: number | "unbounded" | undefined
}

/** The handle of a spawned task. */
export interface Task<A, E> {
  /** Waits for the task; its value or its error (interrupted task: the joiner is interrupted). */
  readonly join: Effect.Effect<A, E>
  /** Waits for the task; its `Exit`. */
  readonly await: Effect.Effect<Exit.Exit<A, E>>
  /** The task's `Exit` if it has finished. */
  readonly poll: Effect.Effect<Option.Option<Exit.Exit<A, E>>>
  /** Cancels the task and waits for it to stop; not a failure of the group (asyncio's `task.cancel()`). */
  readonly interrupt: Effect.Effect<void>
}

/** A running group: spawn tasks into it (from the body or from its tasks). */
export interface TaskGroup<E> {
  /** Starts `effect` as a task of the group (or queues it past the concurrency bound) and returns its handle. */
  readonly spawn: <A, E2 extends E, R>(effect: Effect.Effect<A, E2, R>) => Effect.Effect<Task<A, E2>, never, R>
  /** Tasks spawned and not finished yet (running or waiting). */
  readonly size: Effect.Effect<number>
}

type Waiter<A, E> = (exit: Exit.Exit<A, E>) => void

/** A task waiting for a concurrency slot, as the group's queue sees it. */
interface Waiting {
  readonly exit: unknown
  /** Starts the task; unset once started or cancelled. */
  launch: (() => void) | undefined
  settleInterrupted(by: FiberId.FiberId): void
}

interface TaskOwner {
  cancelledWhileWaiting(): void
}

class TaskImpl<A, E> implements Task<A, E>, Waiting {
  exit: Exit.Exit<A, E> | undefined = undefined
  fiber: Fiber.RuntimeFiber<A, E> | undefined = undefined
  launch: (() => void) | undefined = undefined
  waiters: Array<Waiter<A, E>> | undefined = undefined

  constructor(readonly owner: TaskOwner) {}

  settleInterrupted(by: FiberId.FiberId) {
    this.settle(Exit.interrupt(by))
  }

  settle(exit: Exit.Exit<A, E>) {
    this.exit = exit
    this.fiber = undefined
    this.launch = undefined
    const waiters = this.waiters
    if (waiters !== undefined) {
      this.waiters = undefined
      for (const waiter of waiters) waiter(exit)
    }
  }

  get await(): Effect.Effect<Exit.Exit<A, E>> {
    return Effect.suspend(() => this.exit !== undefined ? Effect.succeed(this.exit) : this.awaitPending())
  }

  get join(): Effect.Effect<A, E> {
    return Effect.suspend(() => this.exit ?? Effect.flatten(this.awaitPending()))
  }

  get poll(): Effect.Effect<Option.Option<Exit.Exit<A, E>>> {
    return Effect.sync(() => Option.fromNullable(this.exit))
  }

  get interrupt(): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (this.fiber !== undefined) return Fiber.interrupt(this.fiber)
      if (this.launch === undefined) return Effect.void
      return Effect.fiberIdWith((id) =>
        Effect.sync(() => {
          if (this.launch === undefined) return
          this.settleInterrupted(id)
          this.owner.cancelledWhileWaiting()
        })
      )
    })
  }

  private awaitPending(): Effect.Effect<Exit.Exit<A, E>> {
    return Effect.async<Exit.Exit<A, E>>((resume) => {
      const waiter: Waiter<A, E> = (exit) => resume(Effect.succeed(exit))
      const waiters = this.waiters ?? (this.waiters = [])
      waiters.push(waiter)
      return Effect.sync(() => {
        const index = this.waiters?.indexOf(waiter) ?? -1
        if (index >= 0) this.waiters?.splice(index, 1)
      })
    })
  }
}

/**
 * The group's state, driven by fiber observers (synchronous, no fiber of its own); the caller's fiber coordinates:
 * it sleeps until the group is idle or needs aborting.
 */
class Group<E> implements TaskGroup<E>, TaskOwner {
  state: "open" | "aborting" | "closed" = "open"
  abortSent = false
  /** Tasks spawned and not finished (running or waiting). */
  pending = 0
  /** Tasks holding a concurrency slot. */
  active = 0
  bodyExit: Exit.Exit<unknown, unknown> | undefined = undefined
  body: Fiber.RuntimeFiber<unknown, unknown> | undefined = undefined
  readonly running = new Set<Fiber.RuntimeFiber<unknown, unknown>>()
  readonly failures: Array<Cause.Cause<E>> = []
  waiting: Array<Waiting> = []
  waitingHead = 0
  wake: (() => void) | undefined = undefined

  constructor(readonly limit: number, readonly interruptor: FiberId.FiberId) {}

  readonly spawn = <A, E2 extends E, R>(effect: Effect.Effect<A, E2, R>): Effect.Effect<Task<A, E2>, never, R> =>
    Effect.suspend(() => {
      const task = new TaskImpl<A, E2>(this)
      if (this.state !== "open") {
        task.settle(Exit.interrupt(this.interruptor))
        return Effect.succeed(task)
      }
      this.pending++
      if (this.active < this.limit) {
        this.active++
        return Effect.map(Effect.forkDaemon(effect), (fiber) => this.attach(task, fiber))
      }
      return Effect.map(Effect.runtime<R>(), (runtime) => {
        task.launch = () => {
          this.active++
          this.attach(task, Runtime.runFork(runtime, effect, { immediate: false }))
        }
        this.waiting.push(task)
        return task
      })
    })

  readonly size: Effect.Effect<number> = Effect.sync(() => this.pending)

  attach<A, E2 extends E>(task: TaskImpl<A, E2>, fiber: Fiber.RuntimeFiber<A, E2>): TaskImpl<A, E2> {
    task.fiber = fiber
    this.running.add(fiber)
    // The group may have started aborting while this fiber was being forked.
    if (this.abortSent) fiber.unsafeInterruptAsFork(this.interruptor)
    fiber.addObserver((exit) => this.onTaskExit(task, fiber, exit))
    return task
  }

  onTaskExit<A, E2 extends E>(task: TaskImpl<A, E2>, fiber: Fiber.RuntimeFiber<A, E2>, exit: Exit.Exit<A, E2>) {
    this.running.delete(fiber)
    this.active--
    task.settle(exit)
    if (Exit.isFailure(exit) && !Cause.isInterruptedOnly(exit.cause)) this.fail(exit.cause)
    if (this.state === "open") this.launchWaiting()
    this.pending--
    this.checkIdle()
  }

  onBodyExit(exit: Exit.Exit<unknown, E>) {
    this.bodyExit = exit
    if (Exit.isFailure(exit)) {
      if (!Cause.isInterruptedOnly(exit.cause)) this.fail(exit.cause)
      else if (this.state === "open") this.startAborting()
    }
    this.checkIdle()
  }

  fail(cause: Cause.Cause<E>) {
    this.failures.push(cause)
    if (this.state === "open") this.startAborting()
  }

  /** Spawns stop at once; the interrupts are sent by the coordinating fiber when it next runs. */
  startAborting() {
    this.state = "aborting"
    this.signal()
  }

  /** Interrupts the body and every running task; waiting tasks never start. */
  abort() {
    this.abortSent = true
    if (this.state === "closed") return
    this.state = "aborting"
    if (this.bodyExit === undefined) this.body?.unsafeInterruptAsFork(this.interruptor)
    for (const fiber of Array.from(this.running)) fiber.unsafeInterruptAsFork(this.interruptor)
    const waiting = this.waiting
    const head = this.waitingHead
    this.waiting = []
    this.waitingHead = 0
    for (let index = head; index < waiting.length; index++) {
      const task = waiting[index]
      if (task.exit === undefined) {
        task.settleInterrupted(this.interruptor)
        this.pending--
      }
    }
    this.checkIdle()
  }

  cancelledWhileWaiting() {
    this.pending--
    this.checkIdle()
  }

  launchWaiting() {
    while (this.active < this.limit && this.waitingHead < this.waiting.length) {
      const task = this.waiting[this.waitingHead++]
      if (this.waitingHead > 1024 && this.waitingHead * 2 > this.waiting.length) {
        this.waiting = this.waiting.slice(this.waitingHead)
        this.waitingHead = 0
      }
      const launch = task.launch
      if (launch === undefined) continue
      task.launch = undefined
      launch()
    }
  }

  checkIdle() {
    if (this.bodyExit !== undefined && this.pending === 0 && this.state !== "closed") {
      this.state = "closed"
      this.body = undefined
      this.signal()
    }
  }

  signal() {
    const wake = this.wake
    if (wake !== undefined) {
      this.wake = undefined
      wake()
    }
  }

  /** Resumes when the group is closed or has to be aborted. */
  readonly signalled: Effect.Effect<void> = Effect.async<void>((resume) => {
    if (this.state === "closed" || (this.state === "aborting" && !this.abortSent)) return resume(Effect.void)
    this.wake = () => resume(Effect.void)
    return Effect.sync(() => {
      this.wake = undefined
    })
  })
}

const validate = (options: Options | undefined): Effect.Effect<number, InvalidTaskGroupOptions> => {
  const concurrency = options?.concurrency ?? "unbounded"
  if (concurrency === "unbounded") return Effect.succeed(Number.POSITIVE_INFINITY)
  if (Number.isInteger(concurrency) && concurrency > 0) return Effect.succeed(concurrency)
  return Effect.fail(
    new InvalidTaskGroupOptions({ field: "concurrency", value: concurrency, reason: "must be a positive integer" })
  )
}

const groupFailure = <E>(failures: ReadonlyArray<Cause.Cause<E>>): Cause.Cause<TaskGroupError<E>> | undefined => {
  if (failures.length === 0) return undefined
  const cause = failures.reduce((all, next) => Cause.parallel(all, next))
  const errors = Chunk.toReadonlyArray(Cause.failures(cause))
  const defects = Chunk.toReadonlyArray(Cause.defects(cause)).map((defect) => Cause.die(defect))
  const parts: Array<Cause.Cause<TaskGroupError<E>>> = Arr.isNonEmptyReadonlyArray(errors)
    ? [Cause.fail(new TaskGroupError({ errors, cause })), ...defects]
    : defects
  return parts.reduce((all, next) => Cause.parallel(all, next))
}

/**
 * One scheduler runner for the whole group. Effect's default scheduler keeps a runner per fiber (isolating
 * `AsyncLocalStorage` contexts between unrelated fibers), which costs a runner, a `WeakMap` entry and a microtask per
 * fiber start: about a third of the cost of a short task. A group's tasks share one context, so they share one
 * runner, drained like the default scheduler's (microtasks, then a macrotask every 2048 rounds so I/O and timers run).
 */
const makeGroupScheduler = (): Scheduler.Scheduler => {
  const runner = new Scheduler.SchedulerRunner((depth, drain) => {
    if (depth >= 2048) setTimeout(() => drain(0), 0)
    else queueMicrotask(() => drain(depth + 1))
  })
  return Scheduler.make((task, priority) => runner.scheduleTask(task, priority))
}

/** The body runs on a group scheduler, inherited by every task, unless the caller chose a scheduler of its own. */
const onGroupScheduler = <A, E, R>(body: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.flatMap(
    FiberRef.get(FiberRef.currentScheduler),
    (scheduler) => scheduler === Scheduler.defaultScheduler ? Effect.withScheduler(body, makeGroupScheduler()) : body
  )

const run = <A, E, E1, R>(
  body: (group: TaskGroup<E>) => Effect.Effect<A, E1, R>,
  limit: number
): Effect.Effect<A, TaskGroupError<E | E1>, R> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.gen(function*() {
      const group = new Group<E | E1>(limit, yield* Effect.fiberId)
      const bodyFiber = yield* Effect.fork(restore(onGroupScheduler(body(group))))
      group.body = bodyFiber
      bodyFiber.addObserver((exit) => group.onBodyExit(exit))
      let interrupted: Cause.Cause<never> | undefined = undefined
      while (group.state !== "closed") {
        const waited = yield* Effect.exit(group.abortSent ? group.signalled : restore(group.signalled))
        if (Exit.isFailure(waited)) interrupted = waited.cause
        if (!group.abortSent && (interrupted !== undefined || group.state === "aborting")) group.abort()
      }
      const failure = groupFailure(group.failures)
      if (failure !== undefined) {
        return yield* Effect.failCause(interrupted === undefined ? failure : Cause.parallel(interrupted, failure))
      }
      if (interrupted !== undefined) return yield* Effect.failCause(interrupted)
      const bodyExit = yield* Fiber.await(bodyFiber)
      if (Exit.isFailure(bodyExit)) return yield* Effect.failCause(Cause.stripFailures(bodyExit.cause))
      yield* Fiber.inheritAll(bodyFiber)
      return bodyExit.value
    })
  )

/**
 * Runs `body` with a fresh group and returns its value once the body and every task spawned into the group have
 * finished. Annotate the group to declare the tasks' error type: `(group: TaskGroup<FetchError>) => ...` (unannotated,
 * only infallible tasks can be spawned). Fails with `TaskGroupError` carrying every failure of the body and the tasks.
 */
export function scoped<A, E1, R, E = never>(
  body: (group: TaskGroup<E>) => Effect.Effect<A, E1, R>
): Effect.Effect<A, GroupError<E | E1>, R>
export function scoped<A, E1, R, E = never>(
  body: (group: TaskGroup<E>) => Effect.Effect<A, E1, R>,
  options: Options
): Effect.Effect<A, GroupError<E | E1> | InvalidTaskGroupOptions, R>
export function scoped<A, E1, R, E = never>(
  body: (group: TaskGroup<E>) => Effect.Effect<A, E1, R>,
  options?: Options
): Effect.Effect<A, TaskGroupError<E | E1> | InvalidTaskGroupOptions, R> {
  return options === undefined
    ? run(body, Number.POSITIVE_INFINITY)
    : Effect.flatMap(validate(options), (limit) => run(body, limit))
}
