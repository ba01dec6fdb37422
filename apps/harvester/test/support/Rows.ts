/** Rows for repository-level tests. */
import type { NewPage } from "../../src/Jobs/JobRepo.js"

/** A stored page of a target (a 200 with a small JSON body); `overrides` change any column. */
export const pageRow = (pageNo: number, overrides: Partial<NewPage> = {}): NewPage => ({
  page_no: pageNo,
  url: `http://127.0.0.1:1/items?page=${pageNo}`,
  status: 200,
  headers: "{}",
  body: JSON.stringify({ page: pageNo }),
  bytes: 12,
  duration_ms: 1.5,
  attempts: 1,
  error: null,
  error_message: null,
  fetched_at: 1_700_000_000_000,
  ...overrides
})
