/**
 * task-group — `asyncio.TaskGroup`: three fetches spawned in a group; when the block exits all are done, results via handles.
 *
 * `TaskGroup.scoped` is `async with asyncio.TaskGroup() as tg`, `group.spawn` is `tg.create_task` and returns a handle
 * whose `join` gives the task's typed result (the tutorial's `task.result()`, which the block guarantees is ready).
 * Like asyncio, the first failure cancels the other tasks and the group fails with every failure: `except*` becomes
 * `catchTag("TaskGroupError", (error) => ... error.errors ...)`, each error typed (`FetchFailed` here).
 */
import type { Duration } from "effect"
import { Console, Data, Effect } from "effect"
import * as TaskGroup from "../src/TaskGroup.js"
import { fetchData } from "./gather.js"

export class FetchFailed extends Data.TaggedError("FetchFailed")<{ readonly name: string; readonly reason: string }> {
  override get message() {
    return `${this.name} failed: ${this.reason}`
  }
}

export interface Request {
  readonly name: string
  readonly delay: Duration.DurationInput
  /** The fetch fails with this reason after its delay instead of returning data. */
  readonly failure?: string
}

/** `fetch_data` that may fail, and says so when it is cancelled. */
export const fetchOne = (request: Request) =>
  Effect.gen(function*() {
    if (request.failure === undefined) return yield* fetchData(request.name, request.delay)
    yield* Effect.sleep(request.delay)
    return yield* new FetchFailed({ name: request.name, reason: request.failure })
  }).pipe(Effect.onInterrupt(() => Console.log(`Cancelled ${request.name}`)))

/** `async with TaskGroup() as tg: tasks = [tg.create_task(fetch(r)) for r in requests]`: the tasks' handles. */
export const fetchAll = (requests: ReadonlyArray<Request>) =>
  TaskGroup.scoped((group: TaskGroup.TaskGroup<FetchFailed>) =>
    Effect.forEach(requests, (request) => group.spawn(fetchOne(request)))
  )

/** The tutorial's block: API 1 (2 s), API 2 (1 s), API 3 (3 s). */
export const taskGroup = Effect.gen(function*() {
  const [task1, task2, task3] = yield* fetchAll([
    { name: "API 1", delay: "2 seconds" },
    { name: "API 2", delay: "1 second" },
    { name: "API 3", delay: "3 seconds" }
  ])
  // All tasks completed here: joining only reads their results.
  return [yield* task1.join, yield* task2.join, yield* task3.join] as const
})

/** `except* FetchFailed as eg: for exc in eg.exceptions: print(f"Caught: {exc}")`. */
export const printFailures = <A, R>(group: Effect.Effect<A, TaskGroup.TaskGroupError<FetchFailed>, R>) =>
  Effect.catchTag(
    group,
    "TaskGroupError",
    (error) => Effect.forEach(error.errors, (failure) => Console.log(`Caught: ${failure.message}`), { discard: true })
  )

export const main = Effect.gen(function*() {
  const results = yield* taskGroup
  for (const result of results) {
    yield* Console.log(result)
  }
  yield* fetchAll([
    { name: "API 1", delay: "2 seconds" },
    { name: "API 2", delay: "1 second", failure: "503 Service Unavailable" },
    { name: "API 3", delay: "3 seconds" }
  ]).pipe(printFailures)
})
