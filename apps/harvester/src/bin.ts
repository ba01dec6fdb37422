/**
 * The `harvester` command. Placeholder until the harvester issue lands: `serve` logs that it is not built yet.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Effect } from "effect"

NodeRuntime.runMain(Effect.logInfo("harvester: the service is not built yet"))
