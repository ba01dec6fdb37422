/** The worker thread of examples/to-thread.ts: serves `CountPrimes` off the main thread. */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Effect } from "effect"
import * as Offload from "../../src/Offload.js"
import { checkLimit, CountPrimes, countPrimes } from "../to-thread.js"

NodeRuntime.runMain(Offload.serve(CountPrimes, {
  CountPrimes: ({ limit }) => Effect.map(checkLimit(limit), countPrimes)
}))
