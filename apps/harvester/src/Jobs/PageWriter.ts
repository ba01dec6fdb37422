/**
 * PageWriter — the engine's one writer of pages: whatever accumulated while the previous transaction ran goes into
 * the next one (`JobRepo.storePages`: two statements per transaction, fenced on each target's lease), so a page costs
 * a share of a transaction instead of one of its own (a transaction per page made the commits the bottleneck: 8,000
 * commits for 8,000 pages on SQLite, 2.2× slower).
 *
 * Two ways in: `write` queues and returns at once (a single-page target's worker goes on to its next target while the
 * page waits for the next commit; the write's `sink` hears the outcome), `store` queues and waits for the commit (a
 * paginated target needs to know it still holds its lease before it fetches the next page). `flush` waits until
 * everything queued before it has committed: a runner flushes before it asks whether its job is finished. At most
 * `maxQueued` pages wait (default 4096): a `write` beyond that waits for the queue's commit, so workers fetching
 * faster than the database stores slow down to its pace instead of filling the memory.
 *
 * What it adds beyond Effect: a `Queue` plus a `Deferred` per write cost more than the write's share of the
 * transaction (PERF-NOTES "Concurrency": ~1 µs per queue message, a Deferred and a fiber wake-up per page); here the
 * writes of a transaction share one `Deferred`, and the writer is woken once per transaction, not once per page.
 *
 * A transaction that fails (the database failing is a defect) fails its `Deferred`: `flush` and `store` callers die
 * with it, and every `sink` of the transaction hears `broken`, so its runner stops instead of fetching on into a
 * database that stores nothing. Interrupting the writer (the engine's scope closing) rolls back the transaction in
 * progress; the writes it held were never stored, so their targets, still leased, go back to pending with the leases.
 */
import type { Cause, Scope } from "effect"
import { Deferred, Duration, Effect, Exit, Queue } from "effect"
import type { Fence, JobRepo, NewPage } from "./JobRepo.js"

/** Who hears how a queued write ended. */
export interface WriteSink {
  /** After the commit: `owned` false when the target's lease was lost (the page was not stored). */
  readonly stored: (fence: Fence, owned: boolean) => Effect.Effect<void>
  /** When present, hears an owned page's commit at once instead of `stored` (a counter: no effect per page). */
  readonly ownedNow?: (() => void) | undefined
  /** The write's transaction failed. */
  readonly broken: (cause: Cause.Cause<never>) => Effect.Effect<void>
}

interface QueuedWrite {
  readonly fence: Fence
  readonly page: NewPage
  readonly done: boolean
  readonly sink: WriteSink
}

export interface PageWriter {
  /** Queues a page (`done`: the target's last); returns at once; `sink` hears the outcome after the commit. */
  readonly write: (fence: Fence, page: NewPage, done: boolean, sink: WriteSink) => Effect.Effect<void>
  /** `write` from plain code (the engine's callback lane): `false` when the queue is full (nothing queued). */
  readonly unsafeWrite: (fence: Fence, page: NewPage, done: boolean, sink: WriteSink) => boolean
  /** Queues a page and waits for its commit: `false` when the lease was lost (nothing stored). */
  readonly store: (fence: Fence, page: NewPage, done: boolean) => Effect.Effect<boolean>
  /** Waits until every write queued before the call has committed. */
  readonly flush: Effect.Effect<void>
}

/** Pages per transaction at most (JobRepo.storePages splits them into statements). */
const WRITE_BATCH = 1024
/**
 * How long the writer lets pages accumulate after it is woken (SQLite answers synchronously: without a moment's wait
 * every transaction would hold the one page that woke it). 5 ms measured best on SQLite at 20k pages (2 ms: 11% slower,
 * a commit per ~45 pages; 10 ms no better); a paginated target waits this long per page (at most 200 pages/s each).
 */
const WRITE_LINGER = Duration.millis(5)

const ignore: WriteSink = { stored: () => Effect.void, broken: () => Effect.void }

/** The writer over `repo`, its fiber in the scope. */
export const make = (
  repo: JobRepo,
  options: { readonly maxQueued?: number } = {}
): Effect.Effect<PageWriter, never, Scope.Scope> =>
  Effect.gen(function*() {
    const maxQueued = Math.max(1, options.maxQueued ?? 4096)
    const wake = yield* Queue.sliding<void>(1)
    let queued: Array<QueuedWrite> = []
    /** Completes when the writes in `queued` have committed. */
    let queuedCommitted = yield* Deferred.make<void>()
    /** Completes when the transaction in progress has committed; undefined when none is. */
    let inProgress: Deferred.Deferred<void> | undefined
    let awake = false

    /** Queues the write and wakes the writer if it sleeps (from plain code too: no effect needed). */
    const push = (write: QueuedWrite) => {
      queued.push(write)
      if (!awake) {
        awake = true
        Queue.unsafeOffer(wake, undefined)
      }
    }
    const enqueue = (write: QueuedWrite): Effect.Effect<void> => Effect.sync(() => push(write))

    const commit = (writes: ReadonlyArray<QueuedWrite>) =>
      Effect.gen(function*() {
        for (let start = 0; start < writes.length; start += WRITE_BATCH) {
          const chunk = writes.slice(start, start + WRITE_BATCH)
          const exit = yield* Effect.exit(repo.storePages(chunk))
          if (Exit.isFailure(exit)) {
            // This transaction's pages and every later one's: none of them is stored.
            const rest = writes.slice(start)
            for (const sink of new Set(rest.map((write) => write.sink))) yield* sink.broken(exit.cause)
            return yield* Effect.failCause(exit.cause)
          }
          for (const write of chunk) {
            const owned = exit.value.has(write.fence.targetId)
            const now = write.sink.ownedNow
            if (owned && now !== undefined) now()
            else yield* write.sink.stored(write.fence, owned)
          }
        }
      })

    yield* Effect.forkScoped(Effect.forever(
      Effect.gen(function*() {
        yield* Queue.take(wake)
        yield* Effect.sleep(WRITE_LINGER)
        awake = false
        const writes = queued
        const committed = queuedCommitted
        queued = []
        queuedCommitted = yield* Deferred.make<void>()
        inProgress = committed
        const exit = yield* Effect.exit(commit(writes))
        inProgress = undefined
        yield* Deferred.done(committed, exit)
      }).pipe(Effect.withTracerEnabled(false))
    ))

    const flush: Effect.Effect<void> = Effect.suspend(() =>
      queued.length > 0
        ? Deferred.await(queuedCommitted)
        : inProgress !== undefined
        ? Deferred.await(inProgress)
        : Effect.void
    )

    return {
      write: (fence, page, done, sink) =>
        Effect.suspend(function write(): Effect.Effect<void> {
          if (queued.length < maxQueued) return enqueue({ fence, page, done, sink })
          // Full: wait until the queue (this page not in it) has committed, then try again.
          return Effect.zipRight(Deferred.await(queuedCommitted), Effect.suspend(write))
        }),
      unsafeWrite: (fence, page, done, sink) => {
        if (queued.length >= maxQueued) return false
        push({ fence, page, done, sink })
        return true
      },
      store: (fence, page, done) =>
        Effect.suspend(() => {
          let owned = false
          const sink: WriteSink = {
            ...ignore,
            stored: (_, isOwned) =>
              Effect.sync(() => {
                owned = isOwned
              })
          }
          // The transaction this write joins, taken now: the writer may start the next one before we wait.
          const committed = queuedCommitted
          return enqueue({ fence, page, done, sink }).pipe(
            Effect.zipRight(Deferred.await(committed)),
            Effect.map(() => owned)
          )
        }),
      flush
    } satisfies PageWriter
  })
