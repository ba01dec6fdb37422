/** The test projects: each package or app with a `vitest.config.ts` of its own. */
export default ["packages/*", "apps/*"]
