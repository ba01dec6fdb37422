/**
 * Whether the test machine's PostgreSQL and Redis answer on their loopback ports. Tests that need one skip with a
 * printed reason when it does not, except under `CI=true`, where they must run (and fail if it is down).
 */
import { connect } from "node:net"

/** `null` when 127.0.0.1:`port` accepts a TCP connection within a second, else why not. */
export const probe = (port: number): Promise<string | null> =>
  new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port })
    const done = (reason: string | null) => {
      socket.destroy()
      resolve(reason)
    }
    socket.setTimeout(1000, () => done(`connection to 127.0.0.1:${port} timed out`))
    socket.once("connect", () => done(null))
    socket.once("error", (error) => done(`127.0.0.1:${port} unreachable (${error.message})`))
  })

/** Under `CI=true` the services must be there: nothing skips. */
export const required = process.env["CI"] === "true"

export const PG_PORT = 5432
export const REDIS_PORT = 6379
