/**
 * The entry of every worker thread whose script is TypeScript (`Offload.make` picks it for a `.ts` / `.mts` script).
 *
 * Node 20 worker threads do not get the main thread's tsx hooks: under `tsx` the worker inherits
 * `--import tsx/dist/loader.mjs` in its execArgv and under vitest nothing, and in both cases importing a `.ts` file
 * fails with ERR_UNKNOWN_FILE_EXTENSION. So this plain ES module registers tsx's ESM hooks inside the worker thread
 * (`register()` from `tsx/esm/api`, Node >= 20.6) and then imports the script named by `workerData.entry`.
 *
 * Every module imported after `register()` goes through the hooks, which made loading effect and the worker runner
 * take about 5 times longer; so the JavaScript modules every worker script needs are imported first, natively.
 */
import { workerData } from "node:worker_threads"

await Promise.all([
  import("effect"),
  import("@effect/platform/Worker"),
  import("@effect/platform/WorkerRunner"),
  import("@effect/platform-node/NodeRuntime"),
  import("@effect/platform-node/NodeWorker"),
  import("@effect/platform-node/NodeWorkerRunner")
])
const { register } = await import("tsx/esm/api")
register()
await import(workerData.entry)
