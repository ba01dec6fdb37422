/**
 * hello — async/await basics: print "Hello", sleep 1 s without blocking, print "World".
 *
 * `Effect.sleep` suspends only this fiber (the thread stays free for others, like `await asyncio.sleep`), and since the
 * program is a value rather than a running coroutine, a test can run it on a virtual clock and watch the second pass.
 */
import { Console, Effect } from "effect"

export const hello = Effect.gen(function*() {
  yield* Console.log("Hello")
  yield* Effect.sleep("1 second")
  yield* Console.log("World")
})

export const main = hello
