/**
 * Which response headers a stored page keeps. Plain data with no imports, so the benchmark's peer scripts do the
 * same storage work as the harvester without loading it.
 */
export const KEPT_HEADERS: ReadonlySet<string> = new Set([
  "content-type",
  "content-length",
  "content-encoding",
  "etag",
  "last-modified",
  "cache-control",
  "date",
  "link",
  "location",
  "retry-after",
  "x-ratelimit-limit",
  "x-ratelimit-remaining",
  "x-ratelimit-reset",
  "x-total-count"
])

/** The kept headers of a response, by lower-case name. */
export const selectHeaders = (headers: Readonly<Record<string, unknown>>): Record<string, string> => {
  const kept: Record<string, string> = {}
  for (const [name, value] of Object.entries(headers)) {
    if (KEPT_HEADERS.has(name) && value !== undefined) kept[name] = String(value)
  }
  return kept
}
