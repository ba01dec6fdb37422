#!/usr/bin/env node
// The `harvester` command: registers tsx in this process and runs the TypeScript entry point, so the installed
// command needs no build step and signals reach the harvester itself.
import { register } from "tsx/esm/api"

register()
await import("../src/bin.ts")
