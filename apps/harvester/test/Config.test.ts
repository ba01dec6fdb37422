import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Duration, Effect, Either, Option, Redacted } from "effect"
import * as AppConfig from "../src/Config.js"
import { EngineSettingsConfig } from "../src/Jobs/Engine.js"

const load = (env: Record<string, string>) =>
  AppConfig.all.pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)))), Effect.either)

describe("Config", () => {
  it.effect("defaults: port 8080 on 127.0.0.1, SQLite at ./data/harvester.db, no token, the Domain's limits", () =>
    Effect.gen(function*() {
      const config = yield* Effect.flatten(load({}))
      assert.strictEqual(config.server.port, 8080)
      assert.strictEqual(config.server.host, "127.0.0.1")
      assert.strictEqual(config.dbPath, "./data/harvester.db")
      assert.isTrue(Option.isNone(config.server.token))
      assert.isTrue(Option.isNone(config.databaseUrl))
      assert.deepStrictEqual(config.allowHosts, [])
      assert.strictEqual(config.server.defaultLimits.rate, "10/1s")
      assert.strictEqual(config.server.maxBodyBytes, 1024 * 1024)
      assert.isTrue(Duration.equals(config.server.shutdownGrace, Duration.seconds(10)))
    }))

  it.effect("reads every key; the token and the database URL stay redacted", () =>
    Effect.gen(function*() {
      const config = yield* Effect.flatten(load({
        PORT: "9000",
        HOST: "0.0.0.0",
        DATABASE_URL: "postgres://postgres@127.0.0.1:5432/test",
        HARVESTER_DB_PATH: "/tmp/x.db",
        HARVESTER_TOKEN: "s3cret",
        HARVESTER_ALLOW_HOSTS: "127.0.0.1, api.internal ,::1,10.0.0.0/8",
        HARVESTER_RATE: "5/1s",
        HARVESTER_SHUTDOWN_GRACE: "2s"
      }))
      assert.strictEqual(config.server.port, 9000)
      assert.strictEqual(config.server.host, "0.0.0.0")
      assert.deepStrictEqual(config.allowHosts, ["127.0.0.1", "api.internal", "::1", "10.0.0.0/8"])
      assert.strictEqual(config.server.defaultLimits.rate, "5/1s")
      assert.strictEqual(Option.map(config.server.token, Redacted.value).pipe(Option.getOrNull), "s3cret")
      assert.notInclude(String(config.server.token), "s3cret")
      assert.notInclude(String(config.databaseUrl), "postgres://")
      assert.isTrue(Duration.equals(config.server.shutdownGrace, Duration.seconds(2)))
    }))

  it.effect("reports every invalid key at once, one clear line each", () =>
    Effect.gen(function*() {
      const result = yield* load({
        PORT: "http",
        DATABASE_URL: "mysql://x",
        HARVESTER_ALLOW_HOSTS: "ok.host,http://bad",
        HARVESTER_RATE: "fast",
        HARVESTER_TOKEN: "  "
      })
      assert.isTrue(Either.isLeft(result))
      if (Either.isRight(result)) return
      const lines = AppConfig.formatConfigError(result.left)
      assert.deepStrictEqual([...lines].sort(), [
        "DATABASE_URL: expected a postgres:// or postgresql:// URL",
        "HARVESTER_ALLOW_HOSTS: expected a comma-separated list of host names, IP addresses or CIDR ranges, got \"http://bad\"",
        "HARVESTER_RATE: expected \"<limit>/<interval>\" such as \"5/1s\", got \"fast\"",
        "HARVESTER_TOKEN: must not be empty",
        "PORT: expected an integer from 0 to 65535, got \"http\""
      ])
    }))

  it.effect("a bad value of a key with a default is one line, without \"expected ... to exist\" besides", () =>
    Effect.gen(function*() {
      const result = yield* EngineSettingsConfig.pipe(
        Effect.withConfigProvider(
          ConfigProvider.fromMap(
            new Map([["HARVESTER_LIMITS", "foo"], ["HARVESTER_CLAIM_BATCH", "abc"], ["HARVESTER_SECRET_KEY", "short"]])
          )
        ),
        Effect.either
      )
      assert.isTrue(Either.isLeft(result))
      if (Either.isRight(result)) return
      assert.deepStrictEqual([...AppConfig.formatConfigError(result.left)].sort(), [
        "HARVESTER_CLAIM_BATCH: Expected an integer value but received \"abc\"",
        "HARVESTER_LIMITS: Expected one of (auto, memory) but received \"foo\"",
        "HARVESTER_SECRET_KEY: expected at least 32 characters (for example the output of openssl rand -base64 32)"
      ])
    }))
})
