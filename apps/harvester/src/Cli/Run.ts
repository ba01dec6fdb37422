/**
 * `harvester run <url...> | --file targets.jsonl [flags]` — a one-shot harvest in this process, on the configured
 * database (or `--db <path>`, a SQLite file), with a live progress bar; exit 0 when every target succeeded, 1 when
 * some failed permanently, 2 for bad usage.
 */
import { Args, Command, Options } from "@effect/cli"
import { FileSystem } from "@effect/platform"
import * as Paginate from "@spindle/core/Paginate"
import { Array as Arr, Duration, Effect, Either, Option } from "effect"
import { parseDuration, parseRate } from "../Domain.js"
import { decodeJobSpec } from "../Http/Handlers.js"
import { configuration, engineLayer } from "../main.js"
import { usage } from "./Exit.js"
import { exitCodeOfJob, harvest } from "./Harvest.js"
import type { ProgressMode } from "./Harvest.js"
import { failWith, integerFlag, progressMode, withConfigOverrides } from "./Shared.js"

const flags = {
  urls: Args.text({ name: "url" }).pipe(Args.withDescription("Target URLs"), Args.repeated),
  file: Options.text("file").pipe(
    Options.withDescription("Targets, one JSON object per line: {\"url\": ..., \"paginate\": ...}"),
    Options.optional
  ),
  concurrency: integerFlag("concurrency", "Requests in flight", 1).pipe(Options.optional),
  perHostConcurrency: integerFlag("per-host-concurrency", "Requests in flight per host", 1).pipe(Options.optional),
  rate: Options.text("rate").pipe(Options.withDescription("Request starts per host, e.g. 5/1s"), Options.optional),
  timeout: Options.text("timeout").pipe(Options.withDescription("Per-request timeout, e.g. 10s"), Options.optional),
  deadline: Options.text("deadline").pipe(
    Options.withDescription("Budget of the whole job, e.g. 5m"),
    Options.optional
  ),
  retries: integerFlag("retries", "Retries of a transient failure", 0).pipe(Options.optional),
  paginate: Options.text("paginate").pipe(
    Options.withDescription("link | page:<param> | offset:<param> | cursor:<json-field>:<param>"),
    Options.optional
  ),
  maxPages: integerFlag("max-pages", "Pages per target at most", 1).pipe(Options.optional),
  maxBytes: integerFlag("max-bytes", "Response size limit in bytes", 1).pipe(Options.optional),
  header: Options.text("header").pipe(Options.withDescription("Request header \"Name: value\""), Options.repeated),
  allowHost: Options.text("allow-host").pipe(
    Options.withDescription("Allow this host, IP or CIDR range past the SSRF guard"),
    Options.repeated
  ),
  db: Options.text("db").pipe(
    Options.withDescription("SQLite file to use (default HARVESTER_DB_PATH)"),
    Options.optional
  ),
  out: Options.text("out").pipe(Options.withDescription("Write every stored page here as jsonl"), Options.optional)
}

type Flags = Command.Command.ParseConfig<typeof flags>

/** Checks the flags' syntax; every problem is one line. */
const flagProblems = (flags: Flags): ReadonlyArray<string> => {
  const problems: Array<string> = []
  const syntax = (name: string, value: Option.Option<string>, parse: (s: string) => Either.Either<unknown, string>) => {
    if (Option.isSome(value)) Either.mapLeft(parse(value.value), (reason) => problems.push(`--${name}: ${reason}`))
  }
  syntax("rate", flags.rate, parseRate)
  syntax("timeout", flags.timeout, parseDuration)
  syntax("deadline", flags.deadline, parseDuration)
  for (const header of flags.header) {
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+:/.test(header)) {
      problems.push(`--header: expected "Name: value", got "${header}"`)
    }
  }
  if (flags.urls.length === 0 && Option.isNone(flags.file)) {
    problems.push("give at least one URL or --file targets.jsonl")
  }
  return problems
}

/** Reads a targets file: one JSON object per line, blank lines skipped; a bad line is a usage error naming it. */
const readTargets = (path: string) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const text = yield* fs.readFileString(path).pipe(
      Effect.mapError((error) => usage(`harvester run: --file ${path}: ${error.message}`))
    )
    const targets: Array<unknown> = []
    const lines = text.split(/\r?\n/)
    for (let index = 0; index < lines.length; index++) {
      const line = lines[index].trim()
      if (line.length === 0) continue
      const parsed = Either.try(() => JSON.parse(line) as unknown)
      if (Either.isLeft(parsed)) return yield* usage(`harvester run: ${path}:${index + 1}: not valid JSON`)
      targets.push(parsed.right)
    }
    if (targets.length === 0) return yield* usage(`harvester run: ${path}: no targets`)
    return targets
  })

const withDefaultPaginate = (target: unknown, paginate: Option.Option<string>) =>
  Option.isSome(paginate) && typeof target === "object" && target !== null && !("paginate" in target)
    ? { ...target, paginate: paginate.value }
    : target

/** The spec's options from the flags given (the configured defaults fill the rest). */
const optionsOf = (flags: Flags) => {
  const options: Record<string, unknown> = {}
  const set = (key: string, value: Option.Option<unknown>) => {
    if (Option.isSome(value)) options[key] = value.value
  }
  set("concurrency", flags.concurrency)
  set("perHostConcurrency", flags.perHostConcurrency)
  set("rate", flags.rate)
  set("timeout", flags.timeout)
  set("deadline", flags.deadline)
  set("retries", flags.retries)
  set("maxPages", flags.maxPages)
  set("maxBytes", flags.maxBytes)
  if (flags.header.length > 0) {
    options["headers"] = Object.fromEntries(flags.header.map((header) => {
      const colon = header.indexOf(":")
      return [header.slice(0, colon).trim(), header.slice(colon + 1).trim()]
    }))
  }
  return options
}

/** Runs a spec (its JSON form) to the end in this process: the shared core of `run` and `demo`. */
export const runSpec = (
  input: { readonly targets: ReadonlyArray<unknown>; readonly options: Record<string, unknown> },
  settings: {
    readonly db: Option.Option<string>
    readonly out: Option.Option<string>
    readonly progress: ProgressMode
    readonly allowHosts: ReadonlyArray<string>
  }
) =>
  Effect.gen(function*() {
    const configured = yield* configuration
    const spec = yield* decodeJobSpec(input, configured.app.server.defaultLimits).pipe(
      Effect.mapError((error) => usage(`harvester: ${error.field}: ${error.reason}`))
    )
    return yield* harvest(spec, { progress: settings.progress, out: settings.out }).pipe(
      Effect.provide(engineLayer(settings.db)),
      Effect.catchTag("InvalidJobSpec", (error) => usage(`harvester: ${error.field}: ${error.reason}`))
    )
  }).pipe(withConfigOverrides(settings.allowHosts))

export const run = Command.make("run", flags, (flags) =>
  Effect.gen(function*() {
    const problems = flagProblems(flags)
    if (problems.length > 0) return yield* usage(...problems.map((problem) => `harvester run: ${problem}`))
    if (Option.isSome(flags.paginate)) {
      yield* Paginate.parseStrategy(flags.paginate.value).pipe(
        Effect.mapError((error) => usage(`harvester run: --paginate: ${error.reason}`))
      )
    }
    const fromFile = Option.isSome(flags.file) ? yield* readTargets(flags.file.value) : []
    const targets = Arr.appendAll(flags.urls.map((url) => ({ url })), fromFile).map((target) =>
      withDefaultPaginate(target, flags.paginate)
    )
    const view = yield* runSpec({ targets, options: optionsOf(flags) }, {
      db: flags.db,
      out: flags.out,
      progress: progressMode(Duration.seconds(2)),
      allowHosts: flags.allowHost
    })
    const code = exitCodeOfJob(view)
    if (code !== 0) return yield* failWith(code)
  })).pipe(Command.withDescription("Harvest URLs once, in this process, with a live progress bar"))
