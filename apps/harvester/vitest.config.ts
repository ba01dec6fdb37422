import { defineProject } from "vitest/config"

export default defineProject({
  test: {
    name: "harvester",
    include: ["test/**/*.test.ts"]
  }
})
