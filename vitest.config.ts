import { defineConfig } from "vitest/config";

// Node-side tests: converter, readers, image path, CLI. Files named *.workerd.test.ts run inside
// workerd through @cloudflare/vitest-pool-workers (see the "workerd" project).
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "node",
          include: ["{src,model-shards,test,scripts}/**/*.test.ts"],
          exclude: ["**/*.workerd.test.ts", "**/node_modules/**"],
          testTimeout: 120_000,
          hookTimeout: 300_000,
        },
      },
    ],
  },
});
