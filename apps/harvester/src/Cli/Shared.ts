/**
 * Shared — what several commands need: flags layered over the configuration, the progress mode for this stderr,
 * ending with an exit code.
 */
import { HelpDoc, Options, ValidationError } from "@effect/cli"
import type { Duration } from "effect"
import { ConfigProvider, Effect } from "effect"
import * as AppConfig from "../Config.js"
import { CliExit } from "./Exit.js"
import type { ProgressMode } from "./Harvest.js"

/**
 * Runs `effect` with `overrides` (config keys set by flags) in front of the current configuration; `allowHosts` are
 * added to HARVESTER_ALLOW_HOSTS rather than replacing it.
 */
export const withConfigOverrides =
  (allowHosts: ReadonlyArray<string>, overrides: Readonly<Record<string, string>> = {}) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>) =>
    Effect.configProviderWith((current) =>
      Effect.gen(function*() {
        const keys = new Map(Object.entries(overrides))
        if (allowHosts.length > 0) {
          const configured = yield* AppConfig.allowHosts
          keys.set("HARVESTER_ALLOW_HOSTS", [...configured, ...allowHosts].join(","))
        }
        const provider = ConfigProvider.fromMap(keys).pipe(ConfigProvider.orElse(() => current))
        return yield* Effect.withConfigProvider(effect, provider)
      })
    )

/** A live bar when stderr is a terminal, else a plain line at most every `every`. */
export const progressMode = (every: Duration.Duration): ProgressMode =>
  process.stderr.isTTY
    ? {
      _tag: "Bar",
      columns: process.stderr.columns ?? 80,
      write: (text) => Effect.sync(() => void process.stderr.write(text))
    }
    : { _tag: "Lines", every }

/** Ends the command with `code` and nothing more to print. */
export const failWith = (code: number) => new CliExit({ code, lines: [] })

/** An integer flag at least `min`; anything else is a usage error naming the flag. */
export const integerFlag = (name: string, description: string, min: number) =>
  Options.text(name).pipe(
    Options.withDescription(description),
    Options.withPseudoName("integer"),
    Options.mapEffect((raw) => {
      const value = Number(raw)
      return /^\d+$/.test(raw.trim()) && Number.isSafeInteger(value) && value >= min
        ? Effect.succeed(value)
        : Effect.fail(
          ValidationError.invalidValue(HelpDoc.p(`--${name}: expected an integer of at least ${min}, got "${raw}"`))
        )
    })
  )
