import { assert, describe, it } from "@effect/vitest"
import { Effect, Either, Option, Redacted } from "effect"
import * as HeaderSeal from "../src/Jobs/HeaderSeal.js"

const key = HeaderSeal.keyOf(Redacted.make("correct horse battery staple, 32+ chars"))
const otherKey = HeaderSeal.keyOf(Redacted.make("another secret of at least 32 characters"))
const headers = { authorization: "Bearer s3cret", "x-api-key": "k-123", "x-trace": "visible" }

describe("HeaderSeal", () => {
  it.effect("seals the sensitive headers only, unreadable at rest, and opens them for the same job and key", () =>
    Effect.sync(() => {
      const sealed = Option.getOrThrow(HeaderSeal.seal(key, "job_a", headers))
      assert.match(sealed, /^v1\.[A-Za-z0-9_-]+$/)
      for (const clear of ["s3cret", "k-123", "authorization", "visible"]) assert.notInclude(sealed, clear)
      assert.deepStrictEqual(
        HeaderSeal.open(key, "job_a", sealed),
        Either.right({ authorization: "Bearer s3cret", "x-api-key": "k-123" })
      )
      // A fresh IV each time: the same headers never seal to the same text.
      assert.notStrictEqual(Option.getOrThrow(HeaderSeal.seal(key, "job_a", headers)), sealed)
    }))

  it.effect("nothing to seal without sensitive headers", () =>
    Effect.sync(() => {
      assert.isTrue(Option.isNone(HeaderSeal.seal(key, "job_a", { "x-trace": "visible", accept: "application/json" })))
    }))

  it.effect("does not open with another key, for another job, altered, or in another format", () =>
    Effect.sync(() => {
      const sealed = Option.getOrThrow(HeaderSeal.seal(key, "job_a", headers))
      assert.isTrue(Either.isLeft(HeaderSeal.open(otherKey, "job_a", sealed)))
      assert.isTrue(Either.isLeft(HeaderSeal.open(key, "job_b", sealed)))
      const bytes = Buffer.from(sealed.slice(3), "base64url")
      bytes[20] = bytes[20]! ^ 1
      assert.isTrue(Either.isLeft(HeaderSeal.open(key, "job_a", `v1.${bytes.toString("base64url")}`)))
      assert.isTrue(Either.isLeft(HeaderSeal.open(key, "job_a", `v1.${bytes.subarray(0, 20).toString("base64url")}`)))
      assert.deepStrictEqual(
        HeaderSeal.open(key, "job_a", `v2.${sealed.slice(3)}`),
        Either.left("unknown format (expected v1.<base64url>)")
      )
    }))
})
