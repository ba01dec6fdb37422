/**
 * The `harvester` command as a child process (`node --import tsx src/bin.ts ...` in apps/harvester), for the CLI,
 * shutdown and demo tests: run it to its end, or start `serve` and learn its port from its first log line.
 */
import { Command } from "@effect/platform"
import type { CommandExecutor } from "@effect/platform"
import type { PlatformError } from "@effect/platform/Error"
import { Deferred, Effect, Fiber, Ref, Stream } from "effect"
import type { Scope } from "effect"
import { fileURLToPath } from "node:url"

export const appDir = fileURLToPath(new URL("../..", import.meta.url))

export interface Finished {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

const command = (args: ReadonlyArray<string>, env: Record<string, string>) =>
  Command.make(process.execPath, "--import", "tsx", "src/bin.ts", ...args).pipe(
    Command.workingDirectory(appDir),
    Command.env(env)
  )

const text = (stream: Stream.Stream<Uint8Array, PlatformError>) => stream.pipe(Stream.decodeText(), Stream.mkString)

/** Runs `harvester <args>` to its end. */
export const harvester = (
  args: ReadonlyArray<string>,
  env: Record<string, string> = {}
): Effect.Effect<Finished, PlatformError, CommandExecutor.CommandExecutor> =>
  Effect.scoped(
    Effect.gen(function*() {
      const process = yield* Command.start(command(args, env))
      const [stdout, stderr, code] = yield* Effect.all([text(process.stdout), text(process.stderr), process.exitCode], {
        concurrency: "unbounded"
      })
      return { code, stdout, stderr }
    })
  )

export interface Serving {
  readonly baseUrl: string
  readonly process: CommandExecutor.Process
  /** Everything written so far to stdout and stderr. */
  readonly output: Effect.Effect<string>
  /** Waits for the exit code. */
  readonly exitCode: Effect.Effect<number, PlatformError>
}

/** Starts `harvester serve` with PORT=0 and waits for its "listening on" line; killed when the scope closes. */
export const serve = (
  env: Record<string, string>
): Effect.Effect<Serving, PlatformError, CommandExecutor.CommandExecutor | Scope.Scope> =>
  Effect.gen(function*() {
    const process = yield* Command.start(command(["serve"], { PORT: "0", ...env }))
    const output = yield* Ref.make("")
    const listening = yield* Deferred.make<string>()
    const follow = (stream: Stream.Stream<Uint8Array, PlatformError>) =>
      stream.pipe(
        Stream.decodeText(),
        Stream.runForEach((chunk) =>
          Effect.flatMap(Ref.updateAndGet(output, (all) => all + chunk), (all) => {
            const match = /listening on (http:\/\/[\d.]+:\d+)/.exec(all)
            return match === null ? Effect.void : Deferred.succeed(listening, match[1])
          })
        ),
        Effect.ignore
      )
    yield* Effect.forkScoped(follow(process.stdout))
    yield* Effect.forkScoped(follow(process.stderr))
    const exited = yield* Effect.forkScoped(process.exitCode)
    const exitCode = Fiber.join(exited)
    const baseUrl = yield* Deferred.await(listening).pipe(
      Effect.raceFirst(Effect.flatMap(exitCode, (code) => Effect.dieMessage(`serve exited ${code} before listening`))),
      Effect.timeout("30 seconds"),
      Effect.orDie
    )
    return { baseUrl, process, output: Ref.get(output), exitCode }
  })
