/**
 * Preloaded into the real harvester CLI (`node --import tsx --import ./exit-report.ts src/bin.ts run ...`): reports
 * the process's peak RSS and exit code when it exits, so the harvester runs exactly as a user runs it.
 */
import { report } from "./Report.js"

process.on("exit", (exitCode) => report({ exitCode }))
