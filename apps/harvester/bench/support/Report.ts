/**
 * Report — how a contender's child process hands its numbers to the driver: one stdout line
 * `BENCH_RESULT {json}`, with the process's peak RSS (`process.resourceUsage().maxRSS`, KiB on Linux) and CPU time
 * read at the end.
 */
import { writeSync } from "node:fs"

export const RESULT_MARKER = "BENCH_RESULT "

/** What each contender reports (the harvester's run times come from its database instead). */
export interface ChildReport {
  readonly maxRssKiB: number
  /** User + system CPU time of the whole process (start-up included), in µs. */
  readonly cpuMicros: number
  /** Pages fetched and handed to the store, per the contender itself. */
  readonly pages?: number
  readonly failures?: number
  /** First request to last row stored, in ms. */
  readonly elapsedMillis?: number
  readonly exitCode?: number
}

/** Writes the report synchronously (it also runs inside `process.on("exit")`). */
export const report = (fields: Omit<ChildReport, "maxRssKiB" | "cpuMicros">): void => {
  const usage = process.resourceUsage()
  const line: ChildReport = { ...fields, maxRssKiB: usage.maxRSS, cpuMicros: usage.userCPUTime + usage.systemCPUTime }
  writeSync(1, `${RESULT_MARKER}${JSON.stringify(line)}\n`)
}

/** The last report line in a child's stdout, if any. */
export const parseReport = (stdout: string): ChildReport | undefined => {
  const line = stdout.split("\n").reverse().find((text) => text.startsWith(RESULT_MARKER))
  return line === undefined ? undefined : JSON.parse(line.slice(RESULT_MARKER.length)) as ChildReport
}
