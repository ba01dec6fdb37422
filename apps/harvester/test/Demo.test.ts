import { FileSystem } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { assert, describe, layer } from "@effect/vitest"
import { Effect } from "effect"
import { harvester } from "./support/Harvester.js"

describe("harvester demo (child process)", () => {
  layer(NodeContext.layer, { excludeTestServices: true })((it) => {
    it.scoped("harvests the simulated API end to end, offline, and exits 0", () =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const dir = yield* fs.makeTempDirectoryScoped({ prefix: "harvester-demo-" })
        const result = yield* harvester(["demo", "--out", `${dir}/demo.jsonl`])
        assert.strictEqual(result.code, 0, `${result.stdout}\n${result.stderr}`)
        assert.match(result.stdout, /simulated API on http:\/\/127\.0\.0\.1:\d+/)
        assert.match(
          result.stdout,
          /job \S+ completed in [\d.]+s: 8 targets \(6 done, 2 failed: (DecodeError 1, HttpStatusError 1|HttpStatusError 1, DecodeError 1)\), 72 pages stored/,
          result.stdout
        )
        const seen =
          /upstream saw (\d+) requests \(at most (\d+) at once\): (\d+) answered 429 with Retry-After \((\d+) for going too fast\), (\d+) answered 500, 1 answered 404, 1 malformed JSON/
            .exec(result.stdout)
        assert.isNotNull(seen, result.stdout)
        const [, requests, atOnce, throttled, tooFast, failures] = seen!.map(Number)
        assert.isAtLeast(requests, 75, "every page once, plus the retries")
        assert.isAtMost(atOnce, 6, "never above the per-host concurrency")
        assert.strictEqual(tooFast, 0, "the harvester kept to its 15/s: the upstream's 40/s limit never answered")
        assert.strictEqual(throttled, 1, "the one deterministic 429, retried after its Retry-After")
        assert.isAtLeast(failures, 3, "the 500s the upstream sent were retried")
        assert.isAtLeast(result.stderr.split("\n").filter((line) => line.startsWith("progress ")).length, 2)
        const exported = (yield* fs.readFileString(`${dir}/demo.jsonl`)).trim().split("\n")
        assert.strictEqual(exported.length, 74, "72 pages and the 2 permanent failures, one JSON object per line")
      }), 90_000)
  })
})
