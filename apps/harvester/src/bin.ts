/**
 * The `harvester` command's entry point (`npm start` = `harvester serve`). SIGINT/SIGTERM interrupt the main fiber;
 * the layers' finalizers then drain the server, stop the engine, release leases and close the database, and the
 * process exits 0.
 */
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Effect } from "effect"
import { main } from "./Cli/Cli.js"
import { exitCodeOf } from "./Cli/Exit.js"

NodeRuntime.runMain(main(process.argv).pipe(Effect.provide(NodeContext.layer)), {
  teardown: (exit) => process.exit(exitCodeOf(exit))
})
