/**
 * Config — everything the harvester reads from its environment, through Effect `Config`, validated in one pass.
 *
 * Effect already collects every failing key of a `Config.all` into one `ConfigError`; this module adds the checks the
 * harvester needs (ports, postgres URLs, host lists, the Domain's rate and duration syntax) and `formatConfigError`,
 * which turns that error into one clear line per problem (the CLI prints them and exits 2). Flags reach the same
 * keys through a `ConfigProvider` layered over the environment (see src/Cli).
 */
import type { Option } from "effect"
import { Config, ConfigError, Duration, Effect, Either, Redacted } from "effect"
import { JobDefaults, parseDuration, parseRate } from "./Domain.js"

const check = <A, B>(
  config: Config.Config<A>,
  parse: (value: A) => Either.Either<B, string>
): Config.Config<B> =>
  Config.mapOrFail(config, (value) => Either.mapLeft(parse(value), (reason) => ConfigError.InvalidData([], reason)))

const integerIn = (name: string, min: number, max: number) =>
  check(Config.string(name), (raw) => {
    const value = Number(raw.trim())
    return /^\s*\d+\s*$/.test(raw) && Number.isSafeInteger(value) && value >= min && value <= max
      ? Either.right(value)
      : Either.left(`expected an integer from ${min} to ${max}, got "${raw}"`)
  })

const durationAt = (name: string) => check(Config.string(name), (raw) => Either.map(parseDuration(raw), () => raw))

const rateAt = (name: string) => check(Config.string(name), (raw) => Either.map(parseRate(raw), () => raw))

const HOST_SYNTAX = /^(\[[0-9a-fA-F:.]+\]|[0-9a-fA-F:]*:[0-9a-fA-F:.]+|[A-Za-z0-9.-]+)$/
const ALLOW_SYNTAX = /^([0-9a-fA-F:]*:[0-9a-fA-F:.]+|[A-Za-z0-9.-]+)(\/\d{1,3})?$/

/** Parses "api.example,127.0.0.1,10.0.0.0/8,::1" into trimmed entries; empty entries are ignored. */
export const parseHostList = (raw: string): Either.Either<ReadonlyArray<string>, string> => {
  const hosts = raw.split(",").map((host) => host.trim()).filter((host) => host.length > 0)
  const bad = hosts.find((host) => !ALLOW_SYNTAX.test(host))
  return bad === undefined
    ? Either.right(hosts)
    : Either.left(`expected a comma-separated list of host names, IP addresses or CIDR ranges, got "${bad}"`)
}

/** The limits a job gets when it does not say otherwise (JobOptions' encoded form). */
export interface DefaultLimits {
  readonly concurrency: number
  readonly perHostConcurrency: number
  readonly rate: string
  readonly timeout: string
  readonly retries: number
  readonly maxPages: number
  readonly maxBytes: number
}

export const port = integerIn("PORT", 0, 65535).pipe(Config.withDefault(8080))
export const host = check(
  Config.string("HOST"),
  (raw) =>
    HOST_SYNTAX.test(raw.trim()) ? Either.right(raw.trim()) : Either.left(`expected a host name or IP, got "${raw}"`)
).pipe(Config.withDefault("127.0.0.1"))

/** PostgreSQL connection URL; when absent the embedded SQLite file is used. */
export const databaseUrl: Config.Config<Option.Option<Redacted.Redacted>> = Config.option(
  check(
    Config.string("DATABASE_URL"),
    (url) =>
      /^postgres(ql)?:\/\/\S+$/.test(url.trim())
        ? Either.right(Redacted.make(url.trim()))
        : Either.left("expected a postgres:// or postgresql:// URL")
  )
)

export const dbPath = check(
  Config.string("HARVESTER_DB_PATH"),
  (raw) => raw.trim().length > 0 ? Either.right(raw) : Either.left("must not be empty")
).pipe(Config.withDefault("./data/harvester.db"))

/** Bearer token every endpoint but /healthz requires; without it the server binds 127.0.0.1 only. */
export const token: Config.Config<Option.Option<Redacted.Redacted>> = Config.option(
  check(
    Config.string("HARVESTER_TOKEN"),
    (value) => value.trim().length > 0 ? Either.right(Redacted.make(value)) : Either.left("must not be empty")
  )
)

export const allowHosts = check(Config.string("HARVESTER_ALLOW_HOSTS"), parseHostList).pipe(
  Config.withDefault([] as ReadonlyArray<string>)
)

export const defaultLimits: Config.Config<DefaultLimits> = Config.all({
  concurrency: integerIn("HARVESTER_CONCURRENCY", 1, 10_000).pipe(Config.withDefault(JobDefaults.concurrency)),
  perHostConcurrency: integerIn("HARVESTER_PER_HOST_CONCURRENCY", 1, 10_000).pipe(
    Config.withDefault(JobDefaults.perHostConcurrency)
  ),
  rate: rateAt("HARVESTER_RATE").pipe(Config.withDefault<string>(JobDefaults.rate)),
  timeout: durationAt("HARVESTER_TIMEOUT").pipe(Config.withDefault<string>(JobDefaults.timeout)),
  retries: integerIn("HARVESTER_RETRIES", 0, 100).pipe(Config.withDefault(JobDefaults.retries)),
  maxPages: integerIn("HARVESTER_MAX_PAGES", 1, 10_000_000).pipe(Config.withDefault(JobDefaults.maxPages)),
  maxBytes: integerIn("HARVESTER_MAX_BYTES", 1, 1024 * 1024 * 1024).pipe(Config.withDefault(JobDefaults.maxBytes))
})

/** Largest accepted `POST /jobs` body. */
export const maxBodyBytes = integerIn("HARVESTER_MAX_BODY_BYTES", 1, 1024 * 1024 * 1024).pipe(
  Config.withDefault(1024 * 1024)
)

/** How long in-flight requests may run on after SIGINT/SIGTERM before they are interrupted. */
export const shutdownGrace: Config.Config<Duration.Duration> = check(
  Config.string("HARVESTER_SHUTDOWN_GRACE"),
  parseDuration
).pipe(Config.withDefault(Duration.seconds(10)))

export interface ServerSettings {
  readonly port: number
  readonly host: string
  readonly token: Option.Option<Redacted.Redacted>
  readonly maxBodyBytes: number
  readonly defaultLimits: DefaultLimits
  readonly shutdownGrace: Duration.Duration
}

/** What the HTTP server reads: validated together so every problem is reported at once. */
export const serverSettings: Config.Config<ServerSettings> = Config.all({
  port,
  host,
  token,
  maxBodyBytes,
  defaultLimits,
  shutdownGrace
})

/** Every key the harvester reads, validated together (used at start to report all problems at once). */
export const all = Config.all({
  server: serverSettings,
  databaseUrl,
  dbPath,
  allowHosts
})

/** One line per problem: `PORT: expected an integer from 0 to 65535, got "http"`. */
export const formatConfigError = (error: ConfigError.ConfigError): ReadonlyArray<string> => {
  type Line = { readonly missing: boolean; readonly text: string }
  const line = (missing: boolean) => (_: unknown, path: ReadonlyArray<string>, message: string) => [
    { missing, text: `${path.join("_")}: ${message}` }
  ]
  const lines = ConfigError.reduceWithContext<undefined, ReadonlyArray<Line>>(error, undefined, {
    andCase: (_, left, right) => [...left, ...right],
    // `withDefault` reports a bad value as "bad value OR missing": the key is there, so only the bad value counts.
    orCase: (_, left, right) => {
      const both = [...left, ...right]
      const present = both.filter((l) => !l.missing)
      return present.length > 0 ? present : both
    },
    invalidDataCase: line(false),
    missingDataCase: line(true),
    sourceUnavailableCase: line(false),
    unsupportedCase: line(false)
  })
  return Array.from(new Set(lines.map((l) => l.text)))
}

/** Loads and validates every key; fails with the formatted lines. */
export const validateAll: Effect.Effect<void, ConfigError.ConfigError> = Effect.asVoid(all)
