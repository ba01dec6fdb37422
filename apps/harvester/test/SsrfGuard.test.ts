import { assert, describe, it, layer } from "@effect/vitest"
import { HttpFetcher } from "@spindle/core/HttpFetcher"
import { Effect, Option } from "effect"
import * as SimulatedApi from "../src/Demo/SimulatedApi.js"
import * as SsrfGuard from "../src/Fetch/SsrfGuard.js"

// The classifier and the allow-list are tested on strings only: no resolution, no socket.
describe("SsrfGuard.classifyAddress", () => {
  const cases: ReadonlyArray<readonly [string, SsrfGuard.AddressCategory | null]> = [
    ["127.0.0.1", "loopback"],
    ["127.255.255.254", "loopback"],
    ["::1", "loopback"],
    ["[::1]", "loopback"],
    ["10.20.30.40", "private"],
    ["172.16.0.1", "private"],
    ["172.31.255.255", "private"],
    ["192.168.1.1", "private"],
    ["100.64.0.1", "private"],
    ["fc00::1", "private"],
    ["fd12:3456::1", "private"],
    ["169.254.10.10", "link-local"],
    ["fe80::1", "link-local"],
    ["fe80::1%eth0", "link-local"],
    ["169.254.169.254", "metadata"],
    ["fd00:ec2::254", "metadata"],
    ["0.0.0.0", "unspecified"],
    ["::", "unspecified"],
    ["::ffff:10.0.0.1", "private"],
    ["::ffff:7f00:1", "loopback"],
    ["::ffff:169.254.169.254", "metadata"],
    // documentation ranges (RFC 5737, RFC 3849) stand in for public addresses
    ["172.32.0.1", null],
    ["192.0.2.10", null],
    ["203.0.113.7", null],
    ["2001:db8::1", null],
    ["not-an-ip", null]
  ]
  for (const [address, expected] of cases) {
    it(`${address} -> ${expected ?? "allowed"}`, () => {
      assert.deepStrictEqual(SsrfGuard.classifyAddress(address), Option.fromNullable(expected))
    })
  }

  it("the allow-list admits exact addresses, CIDR ranges and host names, nothing more", () => {
    const exact = SsrfGuard.makeAllowList(["127.0.0.1", " Api.Internal ", ""])
    assert.isTrue(Option.isNone(SsrfGuard.refusal(exact, "127.0.0.1", "127.0.0.1")))
    assert.deepStrictEqual(
      SsrfGuard.refusal(exact, "127.0.0.2", "127.0.0.2"),
      Option.some("127.0.0.2 is a loopback address")
    )
    assert.deepStrictEqual(
      SsrfGuard.refusal(exact, "intranet.example", "10.1.1.1"),
      Option.some("intranet.example resolves to 10.1.1.1, a private address")
    )
    assert.isTrue(exact.hosts.has("api.internal"))
    const range = SsrfGuard.makeAllowList(["127.0.0.0/8", "fd00::/8"])
    assert.isTrue(Option.isNone(SsrfGuard.refusal(range, "127.0.0.2", "127.0.0.2")))
    assert.isTrue(Option.isNone(SsrfGuard.refusal(range, "x", "fd00::5")))
    assert.isTrue(Option.isSome(SsrfGuard.refusal(range, "x", "10.0.0.1")))
  })
})

describe("SsrfGuard.check", () => {
  it.effect("refuses cloud metadata host names before any resolution", () =>
    Effect.gen(function*() {
      const guard = SsrfGuard.make([])
      const error = yield* Effect.flip(guard.guard(new URL("http://metadata.google.internal/computeMetadata/v1/")))
      assert.strictEqual(error._tag, "RequestBlocked")
      assert.strictEqual(error.reason, "metadata.google.internal is a cloud metadata host")
    }))

  it.live("checks every address a name resolves to (localhost -> loopback) unless the name is allowed", () =>
    Effect.gen(function*() {
      const refused = yield* Effect.flip(SsrfGuard.make([]).guard(new URL("http://localhost:9/")))
      assert.match(refused.reason, /^localhost resolves to (127\.0\.0\.1|::1), a loopback address$/)
      yield* SsrfGuard.make(["localhost"]).guard(new URL("http://localhost:9/"))
      yield* SsrfGuard.make(["127.0.0.1", "::1"]).guard(new URL("http://localhost:9/"))
    }))

  it.live("the socket lookup refuses blocked addresses too (no DNS-rebinding window)", () =>
    Effect.gen(function*() {
      const resolve = (entries: ReadonlyArray<string>) =>
        Effect.async<string, string>((resume) => {
          SsrfGuard.make(entries).lookup("localhost", {}, (error, address) => {
            resume(error === null ? Effect.succeed(String(address)) : Effect.fail(String(error.code)))
          })
        })
      assert.strictEqual(yield* Effect.flip(resolve([])), "EBLOCKED")
      assert.match(yield* resolve(["localhost"]), /^(127\.0\.0\.1|::1)$/)
    }))
})

describe("SsrfGuard.guardNow", () => {
  it.live("answers at once for allowed hosts and IP literals; a host name only once the guard let it through", () =>
    Effect.gen(function*() {
      const guard = SsrfGuard.make(["127.0.0.1", "::1", "allowed.example"])
      assert.isTrue(guard.guardNow(new URL("http://allowed.example/x")), "an allowed name, never resolved")
      assert.isTrue(guard.guardNow(new URL("http://127.0.0.1:9/x")))
      assert.isFalse(guard.guardNow(new URL("http://127.0.0.2:9/x")), "a loopback address not allowed")
      assert.isFalse(guard.guardNow(new URL("http://[fc00::1]:9/x")), "a private IPv6 address")
      // localhost resolves to an allowed address: unknown until the guard (with its DNS lookup) let it through.
      assert.isFalse(guard.guardNow(new URL("http://localhost:9/x")))
      yield* guard.guard(new URL("http://localhost:9/x"))
      assert.isTrue(guard.guardNow(new URL("http://localhost:9/other")))
      // A refused name is never remembered as passed.
      const strict = SsrfGuard.make([])
      yield* Effect.flip(strict.guard(new URL("http://localhost:9/x")))
      assert.isFalse(strict.guardNow(new URL("http://localhost:9/x")))
      assert.isFalse(strict.guardNow(new URL("http://metadata.google.internal/x")))
    }))
})

// End to end through HttpFetcher's guard hook, on loopback only: 127.0.0.1 is allowed, 127.0.0.2 is not.
layer(HttpFetcher.Default, { excludeTestServices: true })("SsrfGuard in HttpFetcher", (it) => {
  it.scoped("allows 127.0.0.1, refuses 127.0.0.2 directly and after a redirect, without contacting it", () =>
    Effect.gen(function*() {
      const fetcher = yield* HttpFetcher
      const api = yield* SimulatedApi.start({
        routes: {
          "/ok": { json: { ok: true } },
          "/hop": { redirect: { location: "/ok" } },
          "/escape": { redirect: { location: "http://127.0.0.2:9/secret" } }
        }
      })
      const { guard } = SsrfGuard.make(["127.0.0.1"])
      const options = { guard, retries: 0 }

      const ok = yield* fetcher.get(`${api.baseUrl}/ok`, options)
      assert.deepStrictEqual(ok.body, { ok: true })
      const hop = yield* fetcher.get(`${api.baseUrl}/hop`, options)
      assert.strictEqual(hop.finalUrl, `${api.baseUrl}/ok`)

      const direct = yield* Effect.flip(fetcher.get(`http://127.0.0.2:${api.port}/ok`, options))
      assert.strictEqual(direct._tag, "RequestBlocked")
      const redirected = yield* Effect.flip(fetcher.get(`${api.baseUrl}/escape`, options))
      assert.strictEqual(redirected._tag, "RequestBlocked")
      assert.deepStrictEqual(
        redirected._tag === "RequestBlocked" ? [redirected.url, redirected.reason] : [],
        ["http://127.0.0.2:9/secret", "127.0.0.2 is a loopback address"]
      )
      const seen = (yield* api.requests).map((r) => r.path)
      assert.deepStrictEqual(seen, ["/ok", "/hop", "/ok", "/escape"])
    }))
})
