import { FileSystem, HttpServer } from "@effect/platform"
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import { assert, describe, layer } from "@effect/vitest"
import { Context, Duration, Effect, Layer, Option, Redacted } from "effect"
import * as SimulatedApi from "../src/Demo/SimulatedApi.js"
import { JobDefaults, JobOptions, JobSpec } from "../src/Domain.js"
import { SsrfGuard } from "../src/Fetch/SsrfGuard.js"
import * as Server from "../src/Http/Server.js"
import { Jobs } from "../src/Jobs/Jobs.js"
import * as Databases from "./support/Databases.js"
import { harvester } from "./support/Harvester.js"

class Upstream extends Context.Tag("test/Upstream")<Upstream, SimulatedApi.SimulatedApi>() {}

const UpstreamLive = Layer.scoped(
  Upstream,
  SimulatedApi.start({
    routes: {
      "/items": { collection: { items: 25, pageSize: 10, style: "page" } },
      "/cursor": { collection: { items: 7, pageSize: 3, style: "cursor" } },
      "/one": { json: { one: 1 } },
      "/missing": { json: { error: "nope" }, status: 404 },
      "/slow": { json: { ok: true }, delayMillis: 30_000 }
    }
  })
)

class TempDir extends Context.Tag("test/TempDir")<TempDir, string>() {}

const TempDirLive = Layer.scoped(
  TempDir,
  Effect.flatMap(FileSystem.FileSystem, (fs) => fs.makeTempDirectoryScoped({ prefix: "harvester-cli-" }))
)

const Env = Layer.mergeAll(UpstreamLive, TempDirLive).pipe(Layer.provideMerge(NodeContext.layer))

const lines = (text: string) => text.split("\n").filter((line) => line.trim().length > 0)

const readJsonl = (path: string) =>
  Effect.flatMap(FileSystem.FileSystem, (fs) => fs.readFileString(path)).pipe(
    Effect.map((text) => lines(text).map((line) => JSON.parse(line) as Record<string, unknown>))
  )

describe("harvester CLI (child processes)", () => {
  layer(Env, { timeout: "60 seconds", excludeTestServices: true })((it) => {
    it.effect(
      "run: every target succeeds -> exit 0; --out has one JSON object per page; each page fetched once",
      () =>
        Effect.gen(function*() {
          const upstream = yield* Upstream
          const dir = yield* TempDir
          const out = `${dir}/ok.jsonl`
          const result = yield* harvester([
            "run",
            `${upstream.baseUrl}/items`,
            "--paginate",
            "page:page",
            "--rate",
            "50/1s",
            "--allow-host",
            "127.0.0.1",
            "--db",
            `${dir}/ok.db`,
            "--out",
            out
          ])
          assert.strictEqual(result.code, 0, result.stderr)
          assert.match(
            result.stdout,
            /job \S+ completed in [\d.]+s: 1 targets \(1 done\), 3 pages stored/,
            result.stdout
          )
          assert.include(result.stdout, `results: ${out}`)
          const records = yield* readJsonl(out)
          for (const record of records) {
            for (const key of ["url", "status", "attempts", "error", "body"]) assert.property(record, key)
          }
          assert.deepStrictEqual(records.map((record) => [record["url"], record["status"], record["attempts"]]), [
            [`${upstream.baseUrl}/items?page=1`, 200, 1],
            [`${upstream.baseUrl}/items?page=2`, 200, 1],
            [`${upstream.baseUrl}/items?page=3`, 200, 1]
          ])
          const seen = (yield* upstream.requests).filter((request) => request.path === "/items").map((r) => r.url)
          assert.strictEqual(new Set(seen).size, seen.length, "no page fetched twice")
          assert.isTrue(records.every((record) => record["error"] === null))
        }),
      60_000
    )

    it.effect(
      "run --file targets.jsonl with its own paginate per line; a permanent failure -> exit 1",
      () =>
        Effect.gen(function*() {
          const upstream = yield* Upstream
          const dir = yield* TempDir
          const fs = yield* FileSystem.FileSystem
          yield* fs.writeFileString(
            `${dir}/targets.jsonl`,
            [
              JSON.stringify({ url: `${upstream.baseUrl}/cursor`, paginate: "cursor:next_cursor:cursor" }),
              "",
              JSON.stringify({ url: `${upstream.baseUrl}/missing` })
            ].join("\n")
          )
          const result = yield* harvester([
            "run",
            "--file",
            `${dir}/targets.jsonl`,
            "--retries",
            "1",
            "--allow-host",
            "127.0.0.1",
            "--db",
            `${dir}/file.db`,
            "--out",
            `${dir}/file.jsonl`
          ])
          assert.strictEqual(result.code, 1, result.stderr)
          assert.match(result.stdout, /2 targets \(1 done, 1 failed: HttpStatusError 1\), 3 pages stored/)
          const records = yield* readJsonl(`${dir}/file.jsonl`)
          const failed = records.filter((record) => record["error"] !== null)
          assert.deepStrictEqual(failed.map((record) => [record["url"], record["error"], record["status"]]), [
            [`${upstream.baseUrl}/missing`, "HttpStatusError", 404]
          ])
          assert.isAtLeast(lines(result.stderr).filter((line) => line.startsWith("progress ")).length, 1)
          assert.notInclude(result.stderr, "\r", "plain lines, not a redrawn bar, when stderr is not a terminal")
        }),
      60_000
    )

    it.effect("bad usage -> exit 2 with one clear line, no stack trace", () =>
      Effect.gen(function*() {
        const dir = yield* TempDir
        const fs = yield* FileSystem.FileSystem
        yield* fs.writeFileString(`${dir}/bad.jsonl`, "{\"url\": \"http://127.0.0.1:1/\"}\n{not json}\n")
        const cases: ReadonlyArray<readonly [ReadonlyArray<string>, string]> = [
          [["run", "http://127.0.0.1:1/", "--rate", "fast"], "harvester run: --rate: expected \"<limit>/<interval>\""],
          [["run", "http://127.0.0.1:1/", "--concurrency", "abc"], "--concurrency: expected an integer of at least 1"],
          [["run", "http://127.0.0.1:1/", "--paginate", "sideways"], "harvester run: --paginate: unknown strategy"],
          [["run"], "harvester run: give at least one URL or --file targets.jsonl"],
          [["run", "--file", `${dir}/bad.jsonl`], `harvester run: ${dir}/bad.jsonl:2: not valid JSON`],
          [["run", "ftp://127.0.0.1/x", "--db", `${dir}/usage.db`], "harvester: targets.0.url: unsupported scheme"],
          [["frobnicate"], "Invalid subcommand"]
        ]
        yield* Effect.forEach(cases, ([args, expected]) =>
          Effect.gen(function*() {
            const result = yield* harvester(args)
            assert.strictEqual(result.code, 2, `${args.join(" ")}: ${result.stderr}`)
            assert.include(result.stderr, expected, args.join(" "))
            assert.notInclude(result.stderr, "    at ", `${args.join(" ")}: no stack trace`)
            assert.isAtMost(lines(result.stderr).length, 2, `${args.join(" ")}: ${result.stderr}`)
          }), { concurrency: 2 })
      }), 120_000)

    it.effect("invalid configuration -> exit 2, one line per problem", () =>
      Effect.gen(function*() {
        const result = yield* harvester(["serve"], {
          PORT: "http",
          HARVESTER_RATE: "fast",
          DATABASE_URL: "mysql://nope",
          HARVESTER_LEASE_TTL: "forever"
        })
        assert.strictEqual(result.code, 2, result.stderr)
        assert.deepStrictEqual(lines(result.stderr).sort(), [
          "harvester: invalid config: DATABASE_URL: expected a postgres:// or postgresql:// URL",
          "harvester: invalid config: HARVESTER_LEASE_TTL: expected a duration such as \"10s\", \"500ms\" or \"10 seconds\", got \"forever\"",
          "harvester: invalid config: HARVESTER_RATE: expected \"<limit>/<interval>\" such as \"5/1s\", got \"fast\"",
          "harvester: invalid config: PORT: expected an integer from 0 to 65535, got \"http\""
        ])
      }), 60_000)
  })
})

const TOKEN = "cli-token"

const ServerEnv = Server.layer({
  port: 0,
  host: "127.0.0.1",
  token: Option.some(Redacted.make(TOKEN)),
  maxBodyBytes: 1024 * 1024,
  defaultLimits: { ...JobDefaults, rate: "50/1s" },
  shutdownGrace: Duration.seconds(1)
}).pipe(
  Layer.provideMerge(Jobs.layerWithGuard(SsrfGuard.layer(["127.0.0.1"]))),
  Layer.provide(Databases.sqliteTemp),
  Layer.provideMerge(UpstreamLive),
  Layer.provideMerge(NodeHttpClient.layerUndici),
  Layer.provideMerge(NodeContext.layer)
)

describe("harvester jobs (against a running server, through the derived client)", () => {
  layer(ServerEnv, { timeout: "60 seconds", excludeTestServices: true })((it) => {
    it.effect(
      "list, show, results, cancel; 404, 409 and 401 end in exit 1 with one line",
      () =>
        Effect.gen(function*() {
          const server = yield* HttpServer.HttpServer
          const upstream = yield* Upstream
          const jobs = yield* Jobs
          const url = server.address._tag === "TcpAddress" ? `http://127.0.0.1:${server.address.port}` : ""
          const created = yield* jobs.create(
            new JobSpec({
              targets: [{ url: `${upstream.baseUrl}/items`, paginate: "page:page" }, {
                url: `${upstream.baseUrl}/one`
              }],
              options: new JobOptions({ rate: "50/1s" })
            })
          )
          yield* jobs.awaitJob(created.id)
          const connection = ["--server", url, "--token", TOKEN]

          const running = yield* jobs.create(
            new JobSpec({ targets: [{ url: `${upstream.baseUrl}/slow` }], options: new JobOptions({}) })
          )
          const [list, show, results, fromEnv, cancel, conflict, missing, refused, unreachable] = yield* Effect.all([
            harvester(["jobs", "list", ...connection]),
            harvester(["jobs", "show", created.id, ...connection]),
            harvester(["jobs", "results", created.id, ...connection]),
            harvester(["jobs", "show", created.id, "--server", url], { HARVESTER_TOKEN: TOKEN }),
            harvester(["jobs", "cancel", running.id, ...connection]),
            harvester(["jobs", "cancel", created.id, ...connection]),
            harvester(["jobs", "show", "job_nope", ...connection]),
            harvester(["jobs", "list", "--server", url, "--token", "wrong"]),
            harvester(["jobs", "list", "--server", "http://127.0.0.1:9", "--token", TOKEN])
          ], { concurrency: 3 })

          assert.strictEqual(list.code, 0, list.stderr)
          assert.include(list.stdout, created.id)
          assert.include(list.stdout, "completed")

          assert.strictEqual(show.code, 0, show.stderr)
          const view = JSON.parse(show.stdout) as { id: string; status: string; counts: { done: number } }
          assert.deepStrictEqual([view.id, view.status, view.counts.done], [created.id, "completed", 2])

          assert.strictEqual(results.code, 0, results.stderr)
          const records = lines(results.stdout).map((line) => JSON.parse(line) as Record<string, unknown>)
          assert.strictEqual(records.length, 4, "3 pages of /items and /one")
          assert.isTrue(records.every((record) => record["jobId"] === created.id && "body" in record))

          assert.strictEqual(fromEnv.code, 0, "the token comes from HARVESTER_TOKEN when --token is absent")

          assert.strictEqual(cancel.code, 0, cancel.stderr)
          assert.include(cancel.stdout, `job ${running.id} cancelled`)
          assert.strictEqual((yield* jobs.get(running.id)).status, "cancelled")

          assert.strictEqual(conflict.code, 1)
          assert.include(conflict.stderr, "JobAlreadyFinished")
          assert.strictEqual(missing.code, 1)
          assert.include(missing.stderr, "JobNotFound: job job_nope not found")
          assert.strictEqual(refused.code, 1)
          assert.include(refused.stderr, "Unauthorized")
          assert.strictEqual(unreachable.code, 1)
          assert.include(unreachable.stderr, "cannot reach http://127.0.0.1:9")
          for (const failed of [conflict, missing, refused, unreachable]) {
            assert.strictEqual(lines(failed.stderr).length, 1, failed.stderr)
          }
        }),
      120_000
    )
  })
})
