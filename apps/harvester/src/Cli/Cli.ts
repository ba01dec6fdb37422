/**
 * Cli — the `harvester` command: `serve`, `run`, `jobs list|show|cancel|results`, `demo`, and the exit code each
 * ends with (0 success, 1 failure, 2 bad usage; see Exit.ts).
 */
import { Command } from "@effect/cli"
import { demo } from "./Demo.js"
import { toExitCode } from "./Exit.js"
import { jobs } from "./JobsCommand.js"
import { run } from "./Run.js"
import { serve } from "./Serve.js"

export const harvester = Command.make("harvester").pipe(
  Command.withDescription("Rate-limited, resumable API harvester"),
  Command.withSubcommands([serve, run, jobs, demo])
)

const cli = Command.run(harvester, { name: "harvester", version: "0.1.0" })

/** Runs the command line (`process.argv` shape) and yields the process exit code. */
export const main = (argv: ReadonlyArray<string>) => toExitCode(cli(argv))
