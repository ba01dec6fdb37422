/**
 * Preloaded into the real harvester CLI (`node --import ./exit-report.mjs bin/harvester.mjs run ...`): reports the
 * process's peak RSS, CPU time and exit code when it exits, in Report.ts's format (`BENCH_RESULT {json}`). Plain
 * JavaScript, so that the harvester runs without tsx loaded, exactly as a user runs it: loaded through tsx, the
 * bundle (4 MB with Effect, and its source map) doubled the process's peak RSS.
 */
import { writeSync } from "node:fs"

process.on("exit", (exitCode) => {
  const usage = process.resourceUsage()
  const line = { exitCode, maxRssKiB: usage.maxRSS, cpuMicros: usage.userCPUTime + usage.systemCPUTime }
  writeSync(1, `BENCH_RESULT ${JSON.stringify(line)}\n`)
})
