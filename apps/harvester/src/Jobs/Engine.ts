/**
 * Engine — runs the harvest: for every running job one runner fiber (in a `FiberMap` keyed by job id) claims the
 * job's targets from the database in batches with a lease, ahead of need, and a fixed pool of worker fibers (one per
 * unit of the job's concurrency) takes them in order; each fetches through the core (`HttpFetcher` with the job's
 * per-host rate limiter and concurrency from `HostLimits` — shared by every instance when they share PostgreSQL or
 * Redis — the SSRF guard on every hop, `Paginate` for paginated targets) and hands its pages to the `PageWriter`,
 * which commits whatever accumulated in one transaction fenced on the leases. A single-page target's worker does not
 * wait for the commit (the writer reports it to the job's progress); a paginated target's worker waits for each page
 * (it must still hold the lease to go on). A fiber, a semaphore permit and a `Deferred` per target, as before, cost
 * more CPU than the request itself (0.42 against 0.09 ms of CPU a page for a plain undici script). With the limits in
 * this process a worker goes further: it runs its single-page targets one after another from the request callbacks
 * (`HttpFetcher.prepareLane`), its fiber waiting, and takes the fiber path only for what needs waiting or handling
 * (a claim, a limit, a retry, a redirect, a failure, a paginated target): no fiber work at all for a page that
 * arrives as a plain 2xx (bench/results/harvester.md: 0.52× → 0.82× the plain script on SQLite).
 * A background loop (`loop`, a `Layer.scopedDiscard`) follows the `Signals` (a job created anywhere starts here at
 * once, a job cancelled anywhere stops here at once), and, as the fallback for a lost signal, renews this instance's
 * leases, reaps expired ones (a crashed instance's work) and starts runners for running jobs nobody runs here.
 *
 * Restart semantics: a paginated target resumes after its last stored page — the stored pages are replayed to
 * `Paginate` from the database (no request), so the strategy computes the next URL exactly as it did the first time
 * and no stored page is fetched again; a target that was in flight is retried (its lease expires, or was released).
 *
 * Shutdown (the scope closing): stop claiming, let in-flight targets finish and their pages commit within the grace
 * period, interrupt the rest, release this instance's leases. Cancellation: `stop(jobId)` interrupts the job's fibers
 * (aborting their sockets) at once.
 */
import type { SqlClient } from "@effect/sql"
import * as Deadline from "@spindle/core/Deadline"
import type { Cancellable, FetchError, FetchResult, LaneOutcome } from "@spindle/core/HttpFetcher"
import { DecodeError, hostOf, HttpFetcher, layerUndiciWith } from "@spindle/core/HttpFetcher"
import * as Paginate from "@spindle/core/Paginate"
import * as Progress from "@spindle/core/Progress"
import {
  Clock,
  Config,
  ConfigError,
  Data,
  Deferred,
  Duration,
  Effect,
  Either,
  FiberMap,
  Layer,
  Option,
  Predicate,
  Queue,
  type Redacted,
  Schedule,
  Schema,
  Stream
} from "effect"
import { randomBytes } from "node:crypto"
import { hostname } from "node:os"
import { JobOptions, parseDuration, parseRate, REDACTED } from "../Domain.js"
import { SsrfGuard } from "../Fetch/SsrfGuard.js"
import type { LimitStoreError } from "../Limits/LimitStore.js"
import * as HeaderSeal from "./HeaderSeal.js"
import * as HostLimits from "./HostLimits.js"
import type { Fence, JobRow, NewPage, TargetRow } from "./JobRepo.js"
import { JobRepo } from "./JobRepo.js"
import { selectHeaders } from "./KeptHeaders.js"
import * as PageWriter from "./PageWriter.js"
import type { Signal } from "./Signals.js"
import { Signals } from "./Signals.js"

// ---------------------------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------------------------

const durationConfig = (name: string, fallback: string) =>
  Config.mapOrFail(
    Config.string(name).pipe(Config.withDefault(fallback)),
    (raw) => Either.mapLeft(parseDuration(raw), (reason) => ConfigError.InvalidData([name], reason))
  )

export interface EngineSettings {
  /** Owner written into the leases this instance takes. */
  readonly instanceId: string
  /** How long a lease lasts without renewal. */
  readonly leaseTtl: Duration.Duration
  /** How often running jobs are looked for and expired leases reaped. */
  readonly scanEvery: Duration.Duration
  /** Targets claimed per query; 0: from the job's concurrency (10–200), growing to 1000 when workers run dry. */
  readonly claimBatch: number
  /** How long in-flight targets may run on at shutdown before they are interrupted. */
  readonly shutdownGrace: Duration.Duration
  /** Where per-host limits live: `auto` (shared when instances can share a store) or `memory` (see HostLimits). */
  readonly limits: "auto" | "memory"
  /** Seals jobs' sensitive headers at rest (`HeaderSeal`); None: they live in the creating instance's memory. */
  readonly secretKey: Option.Option<Redacted.Redacted>
}

/**
 * `HARVESTER_INSTANCE_ID`, `HARVESTER_LEASE_TTL` (30s), `HARVESTER_SCAN_EVERY` (2s), `HARVESTER_CLAIM_BATCH`,
 * `HARVESTER_SHUTDOWN_GRACE` (10s), `HARVESTER_LIMITS` (auto), `HARVESTER_SECRET_KEY` (none).
 */
export const EngineSettingsConfig: Config.Config<EngineSettings> = Config.all({
  instanceId: Config.string("HARVESTER_INSTANCE_ID").pipe(
    Config.withDefault(`${hostname()}-${process.pid}-${randomBytes(4).toString("hex")}`)
  ),
  leaseTtl: durationConfig("HARVESTER_LEASE_TTL", "30s"),
  scanEvery: durationConfig("HARVESTER_SCAN_EVERY", "2s"),
  claimBatch: Config.integer("HARVESTER_CLAIM_BATCH").pipe(
    Config.validate({ message: "must be an integer from 0 to 1000", validation: (n) => n >= 0 && n <= 1000 }),
    Config.withDefault(0)
  ),
  shutdownGrace: durationConfig("HARVESTER_SHUTDOWN_GRACE", "10s"),
  limits: HostLimits.ModeConfig,
  secretKey: HeaderSeal.SecretKeyConfig
})

// ---------------------------------------------------------------------------------------------------------------
// Pages and failures as rows
// ---------------------------------------------------------------------------------------------------------------

/** A body as the engine keeps it: `value` for Paginate, `json` (JSON text) for the page row. */
interface ParsedBody {
  readonly value: unknown
  readonly json: string
}

/**
 * A JSON body (by content type) parsed, and stored as received (it parsed, so it is JSON text: no second
 * serialization); any other body as a JSON string. Malformed JSON is a `DecodeError`.
 */
const parseBody = (url: string, headers: Readonly<Record<string, string>>, text: string) => {
  const type = headers["content-type"] ?? ""
  if (!/\bjson\b|\+json/i.test(type)) return Either.right<ParsedBody>({ value: text, json: JSON.stringify(text) })
  if (text.length === 0) return Either.right<ParsedBody>({ value: null, json: "null" })
  return Either.try({
    try: (): ParsedBody => ({ value: JSON.parse(text), json: text }),
    catch: (cause) =>
      new DecodeError({ url, path: "", message: `malformed JSON: ${cause instanceof Error ? cause.message : cause}` })
  })
}

/** What the engine hands to Paginate: a page plus what it needs to store it. */
interface FetchedPage extends Paginate.PageResponse<unknown> {
  readonly pageNo: number
  /** The row to store, or None when the page was replayed from the database. */
  readonly row: Option.Option<NewPage>
}

/** Why a target failed for good: every error the engine records carries a `_tag`. */
interface TaggedFailure {
  readonly _tag: string
  readonly message?: string
}

const describeFailure = (error: TaggedFailure): string => {
  const fields = Object.entries(error).filter(([key]) => key !== "_tag" && key !== "stack" && key !== "name")
  const detail = fields.map(([key, value]) => `${key}=${typeof value === "string" ? value : JSON.stringify(value)}`)
  return `${error._tag}${detail.length > 0 ? `: ${detail.join(" ")}` : ""}`.slice(0, 2000)
}

const statusOf = (error: TaggedFailure): number | null =>
  Predicate.hasProperty(error, "status") && typeof error.status === "number" ? error.status : null

/** The lease of a target was lost (expired and reclaimed elsewhere, or the job ended): stop, store nothing. */
class LeaseLost extends Data.TaggedError("LeaseLost")<{ readonly targetId: string }> {}

// ---------------------------------------------------------------------------------------------------------------
// The engine
// ---------------------------------------------------------------------------------------------------------------

const decodeOptions = Schema.decodeUnknown(Schema.parseJson(JobOptions))

/**
 * First claim size for a job: twice its concurrency, within 10–200 (a claim costs a round trip plus ~5 µs a row on
 * SQLite; batches of 10–100 claim 10–55k targets/s on PostgreSQL: PERF-NOTES "PostgreSQL work claiming",
 * bench/scaleout). `HARVESTER_CLAIM_BATCH` fixes it.
 */
const claimSize = (settings: EngineSettings, concurrency: number) =>
  settings.claimBatch > 0 ? settings.claimBatch : Math.min(200, Math.max(10, 2 * concurrency))

/**
 * How far a claim size may grow when the workers run dry: a claim waits behind the page writer's transaction (on
 * SQLite a round trip to its thread, 5–20 ms under load), and at 10k pages/s a buffer of 100 lasts 10 ms.
 */
const MAX_CLAIM = 1000

/**
 * Claimed targets a runner may hold put aside for full hosts (Engine's per-host caps) before it stops claiming: a job
 * whose targets come host by host reaches its next host only after the full one's are put aside (~150 bytes each, all
 * renewed by the one heartbeat statement).
 */
const MAX_DEFERRED = 10_000

export class Engine extends Effect.Service<Engine>()("spindle/Engine", {
  scoped: Effect.gen(function*() {
    const settings = yield* Effect.orDie(EngineSettingsConfig)
    const repo = yield* JobRepo
    const fetcher = yield* HttpFetcher
    const { guard, guardNow } = yield* SsrfGuard
    const limits = yield* HostLimits.HostLimits
    const signals = yield* Signals
    const owner = settings.instanceId
    const leaseTtlMillis = Duration.toMillis(settings.leaseTtl)

    /** Real values of the headers of jobs created by this instance (the database holds them redacted, or sealed). */
    const headerSecrets = new Map<string, Readonly<Record<string, string>>>()
    const sealKey = Option.map(settings.secretKey, HeaderSeal.keyOf)
    /** Jobs whose sealed headers this instance cannot open (warned once each). */
    const unopened = new Set<string>()

    /**
     * The headers a job's requests carry here: the creator's own copy, else the options with the sealed sensitive
     * values opened, else the options without the redacted ones. None: the sealed values do not open here (no key,
     * another key), so the job is not run here (its requests would go out without their credentials).
     */
    const headersOf = (row: JobRow, options: JobOptions) =>
      Effect.gen(function*() {
        const own = headerSecrets.get(row.id)
        if (own !== undefined) return Option.some(own)
        const clear = Object.fromEntries(Object.entries(options.headers).filter(([, value]) => value !== REDACTED))
        const redacted = Object.keys(options.headers).filter((name) => options.headers[name] === REDACTED)
        if (redacted.length === 0) return Option.some(clear)
        const sealed = yield* repo.jobSecrets(row.id)
        if (Option.isNone(sealed)) {
          yield* Effect.logWarning(
            `job ${row.id}: its ${redacted.join(", ")} header(s) were kept by the instance that created it only ` +
              "(no HARVESTER_SECRET_KEY then): sent without them here"
          )
          return Option.some(clear)
        }
        const opened = Option.match(sealKey, {
          onNone: () => Either.left("this instance has no HARVESTER_SECRET_KEY"),
          onSome: (key) => HeaderSeal.open(key, row.id, sealed.value)
        })
        if (Either.isLeft(opened)) {
          if (!unopened.has(row.id)) {
            unopened.add(row.id)
            yield* Effect.logWarning(
              `job ${row.id}: its sealed ${redacted.join(", ")} header(s) do not open here (${opened.left}): ` +
                "not running it on this instance (set the HARVESTER_SECRET_KEY it was created with)"
            )
          }
          return Option.none()
        }
        return Option.some({ ...clear, ...opened.right })
      })
    /** Progress of the jobs this instance runs right now. */
    const trackers = new Map<string, Progress.Progress>()
    let draining = false
    /** Targets being worked on by this instance. */
    let busy = 0

    yield* Effect.addFinalizer(() =>
      repo.release(owner).pipe(
        Effect.tap((released) => Effect.logInfo(`engine stopped; released ${released} lease(s)`)),
        Effect.catchAllCause((cause) => Effect.logWarning("releasing leases failed", cause))
      )
    )

    // Forked before the runners exist, so it is stopped after them.
    const writer = yield* PageWriter.make(repo)

    const runners = yield* FiberMap.make<string>()
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        draining = true
        // Finalizers run uninterruptibly: the wait must be interruptible for the timeout to cut it short. The pages
        // of the targets that finished are committed before the leases go back.
        const idle = Effect.sync(() => busy).pipe(
          Effect.repeat({ until: (n) => n === 0, schedule: Schedule.spaced("20 millis") }),
          Effect.zipRight(writer.flush)
        )
        const finished = yield* idle.pipe(Effect.interruptible, Effect.timeoutOption(settings.shutdownGrace))
        if (Option.isNone(finished)) {
          yield* Effect.logWarning(`shutdown grace (${Duration.format(settings.shutdownGrace)}) over: interrupting`)
        }
      })
    )

    const runJob = (row: JobRow) =>
      Effect.gen(function*() {
        const options = yield* Effect.orDie(decodeOptions(row.options))
        const rate = yield* Effect.orDie(parseRate(options.rate))
        const timeout = yield* Effect.orDie(parseDuration(options.timeout))
        const found = yield* headersOf(row, options)
        if (Option.isNone(found)) return
        const headers = found.value
        // Keyed by host: every job and every instance fetching from a host shares its window and its slots.
        const limiter = yield* Effect.orDie(limits.rateLimiter({ limit: rate.limit, per: rate.per }))
        const hosts = yield* Effect.orDie(
          limits.concurrency({
            perKey: options.perHostConcurrency,
            global: options.concurrency,
            lease: settings.leaseTtl
          })
        )
        const progress = yield* Effect.orDie(Progress.make({ interval: "250 millis" }))
        trackers.set(row.id, progress)
        yield* Effect.addFinalizer(() => Effect.sync(() => trackers.delete(row.id)))
        const open = yield* repo.openTargets(row.id)
        yield* Effect.orDie(progress.addTotal(open.pending + open.leased))

        // Once the engine drains, no new request starts: the target stops here and its lease is handed back.
        const notDraining = Effect.suspend(() => draining ? Effect.interrupt : Effect.void)
        // The fetcher takes the rate slot inside the concurrency permit, right before the request (and pauses the
        // host through `pauseUntil` on Retry-After); a target that got its permit while draining stops there.
        // Options validated once per job: the per-page call has no validation and no span of its own.
        // The lane (HttpFetcher.prepareLane) starts a request from plain code when the limits answer at once: the
        // permits implied by the pool, or taken at once when free (a lingering shared slot); a rate start on the spot
        // or reserved (a shared store's block). The draining check is the lane's own (`takeNext`).
        const lane = yield* fetcher.prepareLane<string, string>({
          retries: options.retries,
          timeout,
          maxBytes: options.maxBytes,
          headers,
          responseType: "text",
          rateLimiter: limiter,
          concurrency: {
            withPermit: (host: string) => <A, E, R>(request: Effect.Effect<A, E, R>) =>
              hosts.withPermit(host)(Effect.zipRight(notDraining, request)),
            tryAcquireNow: hosts.tryAcquireNow
          },
          guard,
          guardNow
        }).pipe(Effect.orDie)
        const fetchUrl = lane.get
        const clock = yield* Effect.clock

        /** One page: the fetcher's result as a row (a JSON body stored as received, once it parsed). */
        const rowOf = (url: string, pageNo: number, result: FetchResult<string>) =>
          Either.map(parseBody(result.finalUrl, result.headers, result.body), (parsed) => ({
            value: parsed.value,
            row: {
              page_no: pageNo,
              url,
              status: result.status,
              headers: JSON.stringify(selectHeaders(result.headers)),
              body: parsed.json,
              bytes: result.bytes,
              duration_ms: result.durationMillis,
              attempts: result.attempts,
              error: null,
              error_message: null,
              fetched_at: clock.unsafeCurrentTimeMillis()
            } satisfies NewPage
          }))
        const pageOf = (url: string, pageNo: number, result: FetchResult<string>) =>
          Either.map(rowOf(url, pageNo, result), ({ row, value }): FetchedPage => ({
            url,
            finalUrl: result.finalUrl,
            headers: result.headers,
            body: value,
            pageNo,
            row: Option.some(row)
          }))
        const fetchPage = (url: string, pageNo: number): Effect.Effect<FetchedPage, FetchError | DecodeError> =>
          Effect.flatMap(fetchUrl(url), (result) => pageOf(url, pageNo, result))

        const failureRow = (pageNo: number, url: string, error: TaggedFailure, attempts: number): NewPage => ({
          page_no: pageNo,
          url,
          status: statusOf(error),
          headers: "{}",
          body: null,
          bytes: 0,
          duration_ms: 0,
          attempts,
          error: error._tag,
          error_message: describeFailure(error),
          fetched_at: clock.unsafeCurrentTimeMillis()
        })

        const attemptsOf = (error: TaggedFailure) =>
          Predicate.hasProperty(error, "attempts") && typeof error.attempts === "number"
            ? error.attempts
            : error._tag === "FetchTimeout" || error._tag === "TransportError" ||
                (error._tag === "HttpStatusError" && (statusOf(error) === 408 || (statusOf(error) ?? 0) >= 500))
            ? options.retries + 1
            : 1

        const timeoutMillis = Duration.toMillis(timeout)
        /**
         * Records a permanent failure. A timeout shortened by the job's deadline is the deadline passing, not the
         * target failing: it waits for the deadline to end the job (and record `DeadlineExceeded`).
         */
        const fail = (fence: Fence, pageNo: number, url: string, error: TaggedFailure) =>
          error._tag === "FetchTimeout" && Predicate.hasProperty(error, "timeoutMillis") &&
            typeof error.timeoutMillis === "number" && error.timeoutMillis < timeoutMillis && row.deadline_at !== null
            ? Effect.never
            : Effect.suspend(() => repo.failTarget(fence, failureRow(pageNo, url, error, attemptsOf(error)))).pipe(
              Effect.zipRight(progress.fail(error._tag))
            )

        /** The writer's transaction failed (a defect): the runner stops with it and hands its leases back. */
        const broken = yield* Deferred.make<never>()
        /** The runner ended (cancelled, stopped): its queued pages find their leases gone, as they should. */
        let ended = false
        yield* Effect.addFinalizer(() => Effect.sync(() => (ended = true)))
        /** Hears the commits of the single-page targets' pages. */
        const sink: PageWriter.WriteSink = {
          stored: (fence, owned) =>
            owned
              ? progress.succeed
              : ended
              ? Effect.void
              : Effect.logWarning(`lease lost on ${fence.targetId}; page not stored`),
          ownedNow: progress.unsafeSucceed,
          broken: (cause) => Deferred.failCause(broken, cause)
        }

        /** A single-page target's page, fetched by `fetched`: queued for the writer, or its failure recorded. */
        const storeSingle = (
          target: TargetRow,
          fence: Fence,
          fetched: Effect.Effect<FetchedPage, FetchError | DecodeError>
        ) =>
          Effect.matchEffect(fetched, {
            onFailure: (error) => fail(fence, 1, target.url, error),
            onSuccess: (page) =>
              Option.match(page.row, {
                onNone: () => Effect.void,
                onSome: (row) => writer.write(fence, row, true, sink)
              })
          })

        const single = (target: TargetRow, fence: Fence) => storeSingle(target, fence, fetchPage(target.url, 1))

        const paginated = (target: TargetRow, fence: Fence, spec: string) =>
          Effect.gen(function*() {
            const strategy = yield* Paginate.parseStrategy(spec)
            let pageNo = 0
            let lastUrl = target.url
            const next = (url: string): Effect.Effect<FetchedPage, FetchError | DecodeError> =>
              Effect.suspend(() => {
                pageNo++
                lastUrl = url
                const current = pageNo
                if (current >= target.next_page) return fetchPage(url, current)
                return Effect.flatMap(repo.storedPage(target.id, current), (stored) =>
                  Option.isSome(stored) && stored.value.url === url
                    ? Effect.succeed<FetchedPage>({
                      url,
                      headers: JSON.parse(stored.value.headers),
                      body: stored.value.body === null ? null : JSON.parse(stored.value.body),
                      pageNo: current,
                      row: Option.none()
                    })
                    : fetchPage(url, current))
              })
            const pages = Paginate.stream(next, strategy, { url: target.url, maxPages: options.maxPages })
            const outcome = yield* pages.pipe(
              Stream.runForEach((page) =>
                Option.match((page as FetchedPage).row, {
                  onNone: () => Effect.void,
                  onSome: (row) =>
                    Effect.flatMap(
                      writer.store(fence, row, false),
                      (owned) => owned ? Effect.void : Effect.fail(new LeaseLost({ targetId: target.id }))
                    )
                })
              ),
              Effect.either
            )
            if (Either.isRight(outcome)) {
              const owned = yield* repo.completeTarget(fence)
              return yield* owned ? progress.succeed : Effect.fail(new LeaseLost({ targetId: target.id }))
            }
            const error = outcome.left
            if (error._tag === "LeaseLost") return yield* error
            const failedAt = error._tag === "MaxPagesExceeded" ? pageNo + 1 : Math.max(pageNo, 1)
            yield* fail(fence, failedAt, error._tag === "MaxPagesExceeded" ? error.url : lastUrl, error)
          }).pipe(
            Effect.catchTags({
              InvalidPaginateSpec: (error) => fail(fence, 1, target.url, error),
              LeaseLost: (lost) => Effect.logWarning(`lease lost on ${lost.targetId}; skipped`)
            })
          )

        const fenceOf = (target: TargetRow): Fence => ({
          targetId: target.id,
          jobId: row.id,
          owner,
          attempt: target.attempt
        })

        const processTarget = (target: TargetRow): Effect.Effect<void> => {
          const fence = fenceOf(target)
          return Effect.zipRight(
            progress.start,
            target.paginate === null ? single(target, fence) : paginated(target, fence, target.paginate)
          )
        }

        // A fixed pool of workers, one per unit of the job's concurrency, takes the claimed targets in order (a
        // fiber, a semaphore permit and a Deferred per target cost more CPU than a request: PERF-NOTES
        // "Concurrency"). Requests in flight are bounded by `hosts` (global = the job's concurrency) and by the pool.
        // A single-page target's worker queues the page for the writer and goes on; a paginated target's worker
        // waits for each page's commit (it must know it still holds the lease before it fetches the next page).
        const workers = options.concurrency
        /**
         * Claim size, and how few claimed targets left start the next claim. Both double (to MAX_CLAIM) each time a
         * worker finds nothing left while a claim is under way: a fast host outruns the claims, a slow or
         * rate-limited one never does and keeps small claims (the other instances get their share of the targets).
         */
        let batch = claimSize(settings, options.concurrency)
        let ahead = workers
        /** Whether the claim under way already grew the sizes (once per claim, however many workers wait). */
        let grown = false
        const ranDry = () => {
          if (grown || settings.claimBatch > 0 || batch >= MAX_CLAIM) return
          grown = true
          batch = Math.min(MAX_CLAIM, batch * 2)
          ahead = Math.max(workers, Math.floor(batch / 2))
        }
        /** Claimed (leased here), not yet started; handed back with the leases if the runner stops. */
        const claimed: Array<TargetRow> = []
        let next = 0
        let exhausted = false
        const claimLock = yield* Effect.makeSemaphore(1)
        /** Claims the next batch once the buffer runs low (one claim at a time; the others go on meanwhile). */
        const refill = claimLock.withPermits(1)(Effect.suspend(() =>
          exhausted || draining || claimed.length - next > ahead || deferredCount >= MAX_DEFERRED
            ? Effect.void
            : Effect.map(repo.claim(row.id, owner, leaseTtlMillis, batch), (targets) => {
              grown = false
              if (targets.length === 0) exhausted = true
              claimed.splice(0, next)
              next = 0
              claimed.push(...targets)
            })
        ))
        let claiming = false

        // Per-host caps: a host never has more of the job's workers than its per-host concurrency (in flight, or
        // waiting for its slots, its rate window or a Retry-After pause). A claimed target whose host is full is put
        // aside and the worker takes the next one, so a slow or paused host holds its share of the workers, not all of
        // them (head-of-line blocking: a job's fast hosts went at the pace of its slowest one). Put-aside targets stay
        // leased here (renewed with the others) and are taken first once their host has room; at most MAX_DEFERRED of
        // them, beyond which the workers wait for a host to free up rather than claim on.
        const cap = options.perHostConcurrency
        const capped = cap < workers
        /** Workers per host (targets started and not finished); only when `capped`. */
        const assigned = new Map<string, number>()
        /** Targets put aside per host, in claim order. */
        const deferred = new Map<string, Array<TargetRow>>()
        let deferredCount = 0
        /** Workers waiting for a host to free up (one is woken per finished target). */
        const waiters: Array<(resume: Effect.Effect<void>) => void> = []
        /** The target's host as its limits are keyed (`HttpFetcher.hostOf`); "" for a URL that does not parse. */
        const hostKey = (target: TargetRow): string => {
          try {
            return hostOf(new URL(target.url))
          } catch {
            return ""
          }
        }
        /** The host of the target `pick` returned last. */
        let pickedHost = ""
        /**
         * The next target to start: a put-aside one whose host has room, else the next claimed one (those of full hosts
         * go aside). `lane`: only a single-page target, and none while a claim is due (the worker's `loop` does those).
         */
        const pick = (lane: boolean): TargetRow | undefined => {
          if (deferredCount > 0) {
            for (const [host, queue] of deferred) {
              if ((assigned.get(host) ?? 0) >= cap) {
                continue
              }
              const target = queue[0]!
              if (lane && target.paginate !== null) {
                return undefined
              }
              queue.shift()
              if (queue.length === 0) {
                deferred.delete(host)
              }
              deferredCount--
              pickedHost = host
              return target
            }
          }
          while (next < claimed.length) {
            const target = claimed[next]!
            if (lane && (target.paginate !== null || (claimed.length - next <= ahead && !exhausted && !claiming))) {
              return undefined
            }
            next++
            if (!capped) {
              return target
            }
            const host = hostKey(target)
            if ((assigned.get(host) ?? 0) < cap) {
              pickedHost = host
              return target
            }
            const queue = deferred.get(host)
            if (queue === undefined) {
              deferred.set(host, [target])
            } else queue.push(target)
            deferredCount++
          }
          return undefined
        }
        const wakeAll = () => {
          for (const resume of waiters.splice(0)) {
            resume(Effect.void)
          }
        }
        /** Until a worker finishes a target (a host may have room again). */
        const hostFreed = Effect.async<void>((resume) => {
          waiters.push(resume)
          return Effect.sync(() => {
            const at = waiters.indexOf(resume)
            if (at >= 0) {
              waiters.splice(at, 1)
            }
          })
        })

        const deadlineAt = row.deadline_at ?? undefined
        const worker = Effect.suspend(() => {
          /** Whether this worker counts in `busy` (a worker interrupted mid-target stops counting). */
          let holding = false
          /** The host of the target held (when `capped`). */
          let holdingHost = ""
          const hold = () => {
            holding = true
            busy++
            if (capped) {
              holdingHost = pickedHost
              assigned.set(holdingHost, (assigned.get(holdingHost) ?? 0) + 1)
            }
          }
          const letGo = () => {
            if (holding) {
              holding = false
              busy--
              if (capped) {
                const left = (assigned.get(holdingHost) ?? 1) - 1
                if (left === 0) {
                  assigned.delete(holdingHost)
                } else assigned.set(holdingHost, left)
                waiters.shift()?.(Effect.void)
              }
            }
          }
          /** The next target when the lane may take it as `loop` would (no claim to start, single-page, not draining). */
          const takeNext = (): TargetRow | undefined => {
            if (draining) {
              return undefined
            }
            const target = pick(true)
            if (target !== undefined) {
              hold()
            }
            return target
          }

          /**
           * The callback lane: single-page targets one after another from the request callbacks, the fiber waiting
           * (HttpFetcher.prepareLane: a fiber's work per request costs more CPU than the request). The fiber goes on
           * with whatever needs it: a claim, a paginated target, a request that could not start at once or did not
           * end as a plain 2xx, a full writer, the end. Interrupted: the request in flight is aborted.
           */
          const fast = (first: TargetRow): Effect.Effect<void> =>
            Effect.async<void>((resume) => {
              let current: Cancellable | undefined
              let over = false
              const finish = (then: Effect.Effect<void>) => {
                over = true
                current = undefined
                resume(Effect.zipRight(then, Effect.suspend(loop)))
              }
              const begin = (target: TargetRow): void => {
                const fence = fenceOf(target)
                progress.unsafeStart()
                let ended = false
                const onDone = (outcome: LaneOutcome<string>) => {
                  ended = true
                  done(target, fence, outcome)
                }
                const request = lane.start(target.url, onDone, deadlineAt)
                if (request === undefined) {
                  return finish(single(target, fence))
                }
                // Unless it ended already (a request that failed to start answers at once, and the next one began).
                if (!ended) {
                  current = request
                }
              }
              const done = (target: TargetRow, fence: Fence, outcome: LaneOutcome<string>): void => {
                current = undefined
                if (over) {
                  return
                }
                try {
                  if (outcome._tag === "Continue") {
                    return finish(
                      storeSingle(
                        target,
                        fence,
                        Effect.flatMap(outcome.effect, (result) =>
                          pageOf(target.url, 1, result))
                      )
                    )
                  }
                  const page = rowOf(target.url, 1, outcome.result)
                  if (Either.isLeft(page)) return finish(fail(fence, 1, target.url, page.left))
                  if (!writer.unsafeWrite(fence, page.right.row, true, sink)) {
                    return finish(writer.write(fence, page.right.row, true, sink))
                  }
                  letGo()
                  const following = takeNext()
                  if (following === undefined) return finish(Effect.void)
                  begin(following)
                } catch (defect) {
                  over = true
                  resume(Effect.die(defect))
                }
              }
              begin(first)
              return Effect.sync(() => {
                over = true
                current?.cancel()
              })
            })

          const loop = (): Effect.Effect<void> => {
            letGo()
            if (draining) {
              wakeAll()
              return Effect.void
            }
            const target = pick(false)
            if (target === undefined) {
              if (!exhausted && deferredCount < MAX_DEFERRED) {
                if (claiming) {
                  ranDry()
                }
                return Effect.zipRight(refill, Effect.suspend(loop))
              }
              // Every target left is put aside for a full host: wait for room. None left: this worker ends, and so do
              // those waiting (they would wait for a target that will not come).
              if (deferredCount > 0) return Effect.zipRight(hostFreed, Effect.suspend(loop))
              wakeAll()
              return Effect.void
            }
            const left = claimed.length - next
            hold()
            const work = target.paginate === null
              ? fast(target)
              : Effect.zipRight(processTarget(target), Effect.suspend(loop))
            if (left > ahead || exhausted || claiming || deferredCount >= MAX_DEFERRED) {
              return work
            }
            // Running low: this worker claims the next batch before it starts its target (none of the others waits).
            claiming = true
            return Effect.zipRight(Effect.ensuring(refill, Effect.sync(() => (claiming = false))), work)
          }
          return Effect.ensuring(loop(), Effect.sync(letGo))
        })

        /** Works through every pending target of the job, then waits for the pages to be committed. */
        const dispatch = Effect.suspend(() => {
          exhausted = false
          return Effect.all(
            Array.from({ length: workers }, () => worker),
            {
              concurrency: "unbounded",
              discard: true
            }
          ).pipe(Effect.zipRight(writer.flush))
        })

        const work: Effect.Effect<void> = Effect.gen(function*() {
          yield* dispatch
          if (draining) return
          const left = yield* repo.openTargets(row.id)
          if (left.pending > 0) return yield* work
          if (left.leased > 0) {
            // Held by another instance (or a crashed one, until the reaper hands them back).
            yield* Effect.sleep(settings.scanEvery)
            return yield* work
          }
          const finishedAt = yield* Clock.currentTimeMillis
          if (yield* repo.finishIfDone(row.id, finishedAt)) yield* Effect.logInfo(`job ${row.id} completed`)
        })

        /** Ends the runner when the job stops running elsewhere (cancelled through another instance). */
        const watch = repo.jobStatus(row.id).pipe(
          Effect.repeat({
            schedule: Schedule.spaced("500 millis"),
            while: (status) => Option.getOrElse(status, () => "gone") === "running"
          }),
          Effect.asVoid
        )

        const bounded = row.deadline_at === null
          ? work
          : work.pipe(
            Deadline.at("job", row.deadline_at),
            Effect.catchTags({
              DeadlineExceeded: () =>
                Effect.flatMap(Clock.currentTimeMillis, (now) => repo.endJob(row.id, "deadline_exceeded", now)).pipe(
                  Effect.zipRight(Effect.logInfo(`job ${row.id}: deadline exceeded`))
                ),
              InvalidDeadline: Effect.die
            })
          )
        yield* Effect.raceFirst(bounded, Effect.raceFirst(watch, Deferred.await(broken)))
      }).pipe(
        Effect.scoped,
        // Whatever ended the runner, the job's targets it still holds go back (a new runner or instance takes them).
        Effect.ensuring(Effect.ignore(repo.release(owner, row.id))),
        Effect.catchAllCause((cause) => Effect.logError(`runner of job ${row.id} failed`, cause)),
        // A span per request and per statement would cost more CPU than the request (PERF-NOTES "HTTP client").
        Effect.withTracerEnabled(false),
        Effect.annotateLogs("job", row.id)
      )

    /** Runs the job here unless it already runs here (or the engine is stopping). */
    const start = (row: JobRow) =>
      Effect.suspend(() =>
        draining ? Effect.void : Effect.asVoid(FiberMap.run(runners, row.id, runJob(row), { onlyIfMissing: true }))
      )

    /** Interrupts the job's runner (its in-flight requests are aborted) and waits until it has stopped. */
    const stop = (jobId: string) => FiberMap.remove(runners, jobId)

    /** Looks for running jobs to run here and hands expired leases back. */
    const scan = Effect.gen(function*() {
      const reaped = yield* repo.reap
      if (reaped > 0) yield* Effect.logInfo(`reaped ${reaped} expired lease(s)`)
      for (const row of yield* repo.runningJobs) yield* start(row)
    })

    /** A job created anywhere is started here at once; a job cancelled anywhere stops here at once. */
    const onSignal = (signal: Signal): Effect.Effect<void> =>
      signal._tag === "JobCancelled"
        ? stop(signal.jobId)
        : Effect.flatMap(repo.findJob(signal.jobId), (found) =>
          Option.match(
            Option.filter(found, (row) => row.status === "running"),
            {
              onNone: () => Effect.void,
              onSome: start
            }
          ))

    return {
      owner,
      settings,
      start,
      stop,
      scan,
      /** Tells every instance (this one included) about a job: created, or cancelled. */
      signal: signals.publish,
      /** The signals from now on (the loop follows them). */
      signals: signals.subscribe,
      onSignal,
      heartbeat: repo.heartbeat(owner, leaseTtlMillis),
      /** Keeps the job's real header values for the runner (the database stores them redacted, or sealed). */
      rememberHeaders: (jobId: string, headers: Readonly<Record<string, string>>) =>
        Effect.sync(() => headerSecrets.set(jobId, headers)),
      /** The job's sensitive headers sealed under `HARVESTER_SECRET_KEY`; None without a key or such headers. */
      sealHeaders: (jobId: string, headers: Readonly<Record<string, string>>): Option.Option<string> =>
        Option.flatMap(sealKey, (key) => HeaderSeal.seal(key, jobId, headers)),
      /** Whether sensitive headers survive this instance (sealed under a key). */
      sealsHeaders: Option.isSome(sealKey),
      /** The progress of the job if it runs here. */
      progress: (jobId: string) => Effect.sync(() => Option.fromNullable(trackers.get(jobId))),
      /** Jobs running here (tests, diagnostics). */
      running: FiberMap.size(runners),
      /** Targets being worked on here. */
      busy: Effect.sync(() => busy)
    } as const
  })
}) {}

/**
 * The background loop: follow the signals (new jobs start at once, cancelled jobs stop at once), and, as the fallback
 * for a signal lost, every `scanEvery`: reap expired leases and start runners for running jobs; renew this instance's
 * leases.
 */
export const loop: Layer.Layer<never, never, Engine> = Layer.scopedDiscard(
  Effect.gen(function*() {
    const engine = yield* Engine
    const inbox = yield* engine.signals
    yield* Effect.forkScoped(Effect.forever(
      Effect.flatMap(Queue.take(inbox), (signal) =>
        engine.onSignal(signal).pipe(
          Effect.catchAllCause((cause) => Effect.logWarning(`handling ${signal._tag} ${signal.jobId} failed`, cause))
        ))
    ))
    const every = engine.settings.scanEvery
    const heartbeatEvery = Duration.millis(Math.max(50, Duration.toMillis(engine.settings.leaseTtl) / 3))
    const guarded = <A>(name: string, effect: Effect.Effect<A>) =>
      effect.pipe(Effect.catchAllCause((cause) => Effect.logWarning(`${name} failed`, cause)))
    yield* Effect.forkScoped(Effect.repeat(guarded("scan", engine.scan), Schedule.spaced(every)))
    yield* Effect.forkScoped(
      Effect.repeat(guarded("heartbeat", engine.heartbeat), Schedule.spaced(heartbeatEvery))
    )
  })
)

/**
 * The HTTP client the engine fetches with: `HttpFetcher` over a keep-alive undici agent whose sockets connect only
 * to addresses the SSRF guard accepts (the guard hook checks each URL; this closes the DNS-rebinding window).
 */
export const httpLayer: Layer.Layer<HttpFetcher, never, SsrfGuard> = Layer.unwrapEffect(
  Effect.map(SsrfGuard, (guard) =>
    HttpFetcher.DefaultWithoutDependencies.pipe(
      Layer.provide(layerUndiciWith({ connections: 64, connect: { lookup: guard.lookup } }))
    ))
)

/** The engine with its loop, its HTTP client and its repository; needs a `SqlClient` and the `SsrfGuard`. */
export const layer: Layer.Layer<Engine, LimitStoreError, SqlClient.SqlClient | SsrfGuard> = loop.pipe(
  Layer.provideMerge(Engine.Default),
  Layer.provide([JobRepo.Default, httpLayer, HostLimits.layer, Signals.Default])
)
