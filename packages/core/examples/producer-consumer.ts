/**
 * producer-consumer — `asyncio.Queue(maxsize=5)`: one producer of 10 items, two consumers, an end without a sentinel.
 *
 * A bounded `Mailbox` carries its own end: `offer` suspends the producer while five items wait, `Mailbox.into` ends
 * the mailbox when the producer returns (or fails it if the producer fails), the consumers drain what is left and
 * then `take` reports the end — no `None` to re-post for the next consumer, and interrupting the pipeline interrupts
 * every fiber in it.
 */
import type { Duration } from "effect"
import { Console, Data, Effect, Mailbox, Option, Ref } from "effect"

export interface PipelineOptions {
  readonly items: number
  readonly capacity: number
  readonly consumers: number
  readonly produceEvery: Duration.DurationInput
  readonly processFor: Duration.DurationInput
}

export const tutorialOptions: PipelineOptions = {
  items: 10,
  capacity: 5,
  consumers: 2,
  produceEvery: "500 millis",
  processFor: "1 second"
}

export class InvalidPipelineOptions extends Data.TaggedError("InvalidPipelineOptions")<{
  readonly field: "items" | "capacity" | "consumers"
  readonly reason: string
}> {}

const validate = (options: PipelineOptions) => {
  if (!Number.isInteger(options.items) || options.items < 0) {
    return Effect.fail(new InvalidPipelineOptions({ field: "items", reason: "must be a whole number, 0 or more" }))
  }
  if (!Number.isInteger(options.capacity) || options.capacity < 1) {
    return Effect.fail(new InvalidPipelineOptions({ field: "capacity", reason: "must be a whole number, 1 or more" }))
  }
  if (!Number.isInteger(options.consumers) || options.consumers < 1) {
    return Effect.fail(new InvalidPipelineOptions({ field: "consumers", reason: "must be a whole number, 1 or more" }))
  }
  return Effect.void
}

export interface Consumed {
  readonly consumer: string
  readonly item: string
}

/**
 * A pipeline ready to run, with its mailbox and progress exposed so a test can watch it mid-flight. `run` returns
 * every item consumed, in the order the consumers finished them.
 */
export const makePipeline = (options: PipelineOptions = tutorialOptions) =>
  Effect.gen(function*() {
    yield* validate(options)
    const mailbox = yield* Mailbox.make<string>(options.capacity)
    const produced = yield* Ref.make(0)
    const consumed = yield* Ref.make<ReadonlyArray<Consumed>>([])

    const producer = Effect.gen(function*() {
      for (let i = 0; i < options.items; i++) {
        const item = `item-${i}`
        yield* mailbox.offer(item)
        yield* Ref.update(produced, (n) => n + 1)
        yield* Console.log(`Produced ${item}`)
        yield* Effect.sleep(options.produceEvery)
      }
    })

    const consumer = (name: string) =>
      Effect.gen(function*() {
        for (;;) {
          const next = yield* Effect.option(mailbox.take)
          if (Option.isNone(next)) return
          yield* Console.log(`${name} processing ${next.value}`)
          yield* Effect.sleep(options.processFor)
          yield* Ref.update(consumed, (all) => [...all, { consumer: name, item: next.value }])
        }
      })

    const consumers = Array.from({ length: options.consumers }, (_, i) => consumer(`Consumer ${i + 1}`))
    const run = Effect.all([Mailbox.into(producer, mailbox), ...consumers], {
      concurrency: "unbounded",
      discard: true
    }).pipe(Effect.zipRight(Ref.get(consumed)))

    return { mailbox, produced: Ref.get(produced), consumed: Ref.get(consumed), run } as const
  })

export const main = Effect.gen(function*() {
  const pipeline = yield* makePipeline()
  const consumed = yield* pipeline.run
  yield* Console.log(`Consumed ${consumed.length} items; the mailbox ended, so both consumers stopped`)
})
