/**
 * `decodeJobSpec` takes plain targets without decoding each through Schema: for every spec it must answer exactly what
 * Schema alone answers (the same spec, or the same field and message).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Either, ParseResult, Predicate, Schema } from "effect"
import { InvalidJobSpec, JobDefaults, JobSpec } from "../src/Domain.js"
import { decodeJobSpec } from "../src/Http/Handlers.js"

const defaults = { ...JobDefaults, rate: "50/1s" }

/** What the decoding answered before the plain-target path: Schema over the whole spec. */
const bySchema = (input: unknown): Either.Either<JobSpec, InvalidJobSpec> => {
  const isRecord = (value: unknown): value is Record<string, unknown> =>
    Predicate.isRecord(value) && !Array.isArray(value)
  const withDefaults = isRecord(input) && (input.options === undefined || isRecord(input.options))
    ? { ...input, options: { ...defaults, ...input.options } }
    : input
  return Schema.decodeUnknownEither(JobSpec)(withDefaults, { errors: "first", onExcessProperty: "error" }).pipe(
    Either.mapLeft((error) => {
      const issue = ParseResult.ArrayFormatter.formatErrorSync(error)[0]
      const path = issue?.path ?? []
      return InvalidJobSpec.of(path.length === 0 ? "body" : path.map(String).join("."), issue?.message ?? "invalid")
    })
  )
}

const url = (i: number) => `http://127.0.0.1:1/items/${i}`

const specs: ReadonlyArray<readonly [string, unknown]> = [
  ["plain targets", { targets: [{ url: url(0) }, { url: "https://127.0.0.1:1/x?q=1" }] }],
  ["with paginate", { targets: [{ url: url(0), paginate: "page:p" }, { url: url(1) }] }],
  ["paginate undefined", { targets: [{ url: url(0), paginate: undefined }] }],
  ["options", { targets: [{ url: url(0) }], options: { concurrency: 3, rate: "2/1s", headers: { a: "b" } } }],
  ["an uppercase scheme (left to Schema)", { targets: [{ url: url(0) }, { url: "HTTP://127.0.0.1:1/Y" }] }],
  ["a URL with leading spaces (left to Schema)", { targets: [{ url: `  ${url(0)}` }] }],
  ["a URL that does not parse", { targets: [{ url: url(0) }, { url: "http://[::1" }] }],
  ["an unsupported scheme", { targets: [{ url: url(0) }, { url: "ftp://127.0.0.1/x" }] }],
  ["a prefix that is not a URL", { targets: [{ url: "http://" }] }],
  ["an unknown key in a target", { targets: [{ url: url(0) }, { url: url(1), extra: 1 }] }],
  ["an unknown key and paginate", { targets: [{ url: url(0), paginate: "link", extra: 1 }] }],
  ["paginate not a string", { targets: [{ url: url(0), paginate: 3 }] }],
  ["paginate null", { targets: [{ url: url(0), paginate: null }] }],
  ["a target not an object", { targets: [{ url: url(0) }, url(1)] }],
  ["a target an array", { targets: [[url(0)]] }],
  ["no targets", { targets: [] }],
  ["targets not an array", { targets: { url: url(0) } }],
  ["an unknown key in the spec, plain targets", { targets: [{ url: url(0) }], extra: true }],
  ["bad options, plain targets", { targets: [{ url: url(0) }, { url: url(1) }], options: { rate: "fast" } }],
  ["options not an object", { targets: [{ url: url(0) }], options: 3 }],
  ["not an object", [url(0)]]
]

describe("decodeJobSpec", () => {
  it.effect("answers what Schema alone answers: the same spec, or the same field and message", () =>
    Effect.gen(function*() {
      for (const [name, input] of specs) {
        const expected = bySchema(input)
        const actual = yield* Effect.either(decodeJobSpec(input, defaults))
        if (Either.isRight(expected)) {
          assert.isTrue(Either.isRight(actual), `${name}: decoded`)
          if (Either.isRight(actual)) {
            assert.deepStrictEqual(actual.right.targets, expected.right.targets, `${name}: targets`)
            assert.deepStrictEqual(actual.right.options, expected.right.options, `${name}: options`)
            assert.instanceOf(actual.right, JobSpec, name)
          }
        } else {
          assert.isTrue(Either.isLeft(actual), `${name}: refused`)
          if (Either.isLeft(actual)) {
            assert.deepStrictEqual([actual.left.field, actual.left.message], [
              expected.left.field,
              expected.left.message
            ], name)
          }
        }
      }
    }))

  it.effect("a large spec of plain targets keeps every target in order", () =>
    Effect.gen(function*() {
      const targets = Array.from({ length: 5000 }, (_, i) =>
        i % 3 === 0 ? { url: url(i), paginate: "link" } : { url: url(i) })
      const spec = yield* decodeJobSpec({ targets }, defaults)
      assert.deepStrictEqual<ReadonlyArray<unknown>>(spec.targets, targets)
    }))
})
