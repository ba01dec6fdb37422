/**
 * Harvest — a one-shot harvest in this process (`harvester run`, `harvester demo`): create the job, show its
 * progress until it finishes (a live bar on a terminal, a plain line every few seconds otherwise), export the stored
 * pages as jsonl, print a summary.
 *
 * The bar is @spindle/core/Progress's `render`, fed from the engine's progress events rather than a Progress of its
 * own, so the CLI shows exactly what `GET /jobs/:id/events` streams; the plain lines are the same job view, read once
 * per line.
 */
import { FileSystem } from "@effect/platform"
import * as Progress from "@spindle/core/Progress"
import type { Duration } from "effect"
import { Clock, Console, DateTime, Effect, Fiber, Option, Schedule, Schema, Stream } from "effect"
import type { JobCounts, JobRates, JobSpec, JobView } from "../Domain.js"
import { PageRecord } from "../Domain.js"
import { Jobs } from "../Jobs/Jobs.js"

/** How progress is shown: a bar redrawn in place (`columns` wide), plain lines at most every `every`, or nothing. */
export type ProgressMode =
  | { readonly _tag: "Bar"; readonly columns: number; readonly write: (text: string) => Effect.Effect<void> }
  | { readonly _tag: "Lines"; readonly every: Duration.Duration }
  | { readonly _tag: "Quiet" }

export interface HarvestOptions {
  readonly progress: ProgressMode
  /** Write every stored page here as jsonl. */
  readonly out: Option.Option<string>
}

interface ProgressFields {
  readonly counts: JobCounts
  readonly rates: JobRates
  readonly failures: Readonly<Record<string, number>>
}

/** A progress event (or a job view) as the core's Progress snapshot, so `render` can draw it. */
export const snapshotOf = (fields: ProgressFields, elapsedMillis: number): Progress.Snapshot => ({
  total: fields.counts.total,
  done: fields.counts.done,
  failed: fields.counts.failed + fields.counts.cancelled,
  inFlight: fields.counts.inFlight,
  failedByTag: fields.failures,
  ratePerSecond: fields.rates.pagesPerSecond,
  etaMillis: Option.map(Option.fromNullable(fields.rates.etaSeconds), (seconds) => seconds * 1000),
  elapsedMillis
})

const pagesNote = (fields: ProgressFields) => ` pages=${fields.counts.pages}`

const showProgress = (jobs: Jobs, view: JobView, mode: ProgressMode) => {
  const started = DateTime.toEpochMillis(view.createdAt)
  switch (mode._tag) {
    case "Quiet":
      return Effect.void
    case "Bar":
      return jobs.events(view.id).pipe(
        Stream.runForEach((event) =>
          Effect.flatMap(Clock.currentTimeMillis, (now) => {
            const note = pagesNote(event)
            const line = Progress.render(snapshotOf(event, now - started), mode.columns - note.length - 1)
            return mode.write(`\r${line}${note}\u001b[K`)
          })
        ),
        Effect.ignore
      )
    case "Lines":
      // A line every `every`, each from one count of the job's rows: the events stream counts up to 4 times a second
      // for a live bar, which a line every few seconds does not need (on PostgreSQL, busy with the harvest, a count
      // of 20k targets is ~10 ms of the database's time).
      return jobs.get(view.id).pipe(
        Effect.flatMap((current) =>
          Effect.flatMap(
            Clock.currentTimeMillis,
            (now) => Console.error(`${Progress.renderPlain(snapshotOf(current, now - started))}${pagesNote(current)}`)
          )
        ),
        Effect.repeat(Schedule.spaced(mode.every)),
        Effect.ignore
      )
  }
}

const finalProgress = (view: JobView, mode: ProgressMode) =>
  Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const snapshot = snapshotOf(view, now - DateTime.toEpochMillis(view.createdAt))
    switch (mode._tag) {
      case "Quiet":
        return
      case "Bar": {
        const note = pagesNote(view)
        return yield* mode.write(`\r${Progress.render(snapshot, mode.columns - note.length - 1)}${note}\u001b[K\n`)
      }
      case "Lines":
        return yield* Console.error(`${Progress.renderPlain(snapshot)}${pagesNote(view)}`)
    }
  })

/** Writes every stored page of the job to `path`, one JSON object per line; returns the number of lines. */
export const exportJsonl = Effect.fn("Harvest.exportJsonl")(function*(jobs: Jobs, view: JobView, path: string) {
  const fs = yield* FileSystem.FileSystem
  let lines = 0
  yield* jobs.resultsStream(view.id, {}).pipe(
    Stream.mapEffect(Schema.encode(PageRecord)),
    Stream.map((record) => {
      lines++
      return `${JSON.stringify(record)}\n`
    }),
    Stream.encodeText,
    Stream.run(fs.sink(path))
  )
  return lines
})

/** "completed in 3.2s: 12 targets (10 done, 2 failed: HttpStatusError 1, DecodeError 1), 57 pages stored". */
export const summaryOf = (view: JobView): string => {
  const { counts } = view
  const elapsed = view.finishedAt === null
    ? ""
    : ` in ${(DateTime.distance(view.createdAt, view.finishedAt) / 1000).toFixed(1)}s`
  const tags = Object.entries(view.failures).sort(([, a], [, b]) => b - a).map(([tag, n]) => `${tag} ${n}`).join(", ")
  const failed = counts.failed === 0 ? "" : `, ${counts.failed} failed${tags === "" ? "" : `: ${tags}`}`
  const cancelled = counts.cancelled === 0 ? "" : `, ${counts.cancelled} cancelled`
  return `job ${view.id} ${view.status}${elapsed}: ${counts.total} targets (${counts.done} done${failed}${cancelled}), ` +
    `${counts.pages} pages stored`
}

/** Runs the job to its end; the exit code is 0 when every target succeeded, else 1. */
export const harvest = Effect.fn("Harvest.harvest")(function*(spec: JobSpec, options: HarvestOptions) {
  const jobs = yield* Jobs
  const created = yield* jobs.create(spec)
  const display = yield* Effect.fork(showProgress(jobs, created, options.progress))
  yield* jobs.awaitJob(created.id)
  const view = yield* jobs.get(created.id)
  yield* Fiber.interrupt(display)
  yield* finalProgress(view, options.progress)
  yield* Console.log(summaryOf(view))
  if (Option.isSome(options.out)) {
    const lines = yield* exportJsonl(jobs, view, options.out.value)
    yield* Console.log(`results: ${options.out.value} (${lines} pages)`)
  }
  return view
})

/** 0 when the job completed with every target done, else 1. */
export const exitCodeOfJob = (view: JobView): number =>
  view.status === "completed" && view.counts.failed === 0 && view.counts.cancelled === 0 ? 0 : 1
