/**
 * create-task — `asyncio.create_task()` as `Effect.fork`: the tasks run while the main fiber keeps working.
 *
 * A forked fiber is a child of the fiber that forked it: `Fiber.join` returns its typed result (or re-raises its typed
 * error), and if the parent is interrupted before joining, the children are interrupted too, where Python leaves a
 * forgotten task running (or garbage-collected mid-flight).
 */
import { Console, Effect, Fiber } from "effect"
import { fetchData } from "./gather.js"

export const createTasks = Effect.gen(function*() {
  const task1 = yield* Effect.fork(fetchData("API 1", "2 seconds"))
  const task2 = yield* Effect.fork(fetchData("API 2", "1 second"))

  yield* Console.log("Tasks are running...")

  const result1 = yield* Fiber.join(task1)
  const result2 = yield* Fiber.join(task2)
  return [result1, result2] as const
})

export const main = Effect.gen(function*() {
  const [result1, result2] = yield* createTasks
  yield* Console.log(result1, result2)
})
