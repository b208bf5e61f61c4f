import { join } from "node:path";
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";
import { type OriginFile, originResponse } from "./scripts/lib/image-origin.ts";
import { useLocalWorkerdFlags } from "./scripts/lib/workerd-wrapper.ts";
import {
  DATABASE,
  GATEWAY,
  QUEUES,
  resolveTopology,
  stageBindingName,
  TAGGING,
  TAGGING_QUEUE,
} from "./src/topology.ts";
import { testPng } from "./test/helpers/png.ts";
import { miniflareWorker, miniflareWorkers, sharedOptions } from "./test/workerd/miniflare-workers.ts";

// Every workerd of the run (the workerd project's pool, each `new Miniflare` of the tests, the
// wrangler dev of the e2e tests) gets --single-threaded-gc: without it local workerd can livelock
// on a 2-core machine such as CI's (README, webhook section, "the local stall").
await useLocalWorkerdFlags(import.meta.dirname);

/** Outbound fetches of the gateway under test (URL inputs): a fake image host, no network. */
// It also answers as 127.0.0.1 (for the gateway that allows loopback); every other host is a 502,
// which a gateway refusing a private URL never gets to see (it answers 422 url-not-allowed).
async function fakeImageHost(req: Request): Promise<Response> {
  const url = new URL(req.url);
  if (url.hostname !== "images.test" && url.hostname !== "127.0.0.1")
    return new Response("no network in tests", { status: 502 });
  switch (url.pathname) {
    case "/gradient.png":
      return new Response(testPng(40, 30, 1), { headers: { "content-type": "image/png" } });
    case "/redirect":
      return new Response(null, { status: 302, headers: { location: "/gradient.png" } });
    case "/loop":
      return new Response(null, { status: 302, headers: { location: "/loop" } });
    case "/to-metadata":
      return new Response(null, {
        status: 302,
        headers: { location: "http://169.254.169.254/latest/meta-data/" },
      });
    case "/to-loopback":
      return new Response(null, { status: 302, headers: { location: "http://0x7f000001/gradient.png" } });
    case "/bad-location":
      return new Response(null, { status: 302, headers: { location: "http://[" } });
    case "/page.html":
      return new Response("<html></html>", { headers: { "content-type": "text/html" } });
    case "/huge.png":
      return new Response(new Uint8Array(2 * 1024 * 1024), { headers: { "content-type": "image/png" } });
    default:
      return new Response("not found", { status: 404 });
  }
}

/** The HTTP origin behind the tagging Worker variant `beit-edge-tagging-http` (a static origin). */
const originFiles = new Map<string, OriginFile>([
  [
    "photo.png",
    {
      bytes: testPng(80, 60, 4),
      contentType: "image/png",
      headers: { "x-origin": "static", "cache-control": "public, max-age=31536000, immutable" },
    },
  ],
]);
async function fakeOrigin(req: Request): Promise<Response> {
  const url = new URL(req.url);
  if (url.hostname !== "origin.test") return new Response("no network in tests", { status: 502 });
  return originResponse(originFiles, req);
}

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
      {
        // The gateway and the stage Workers run as auxiliary Workers from the bundles wrangler
        // builds in global setup (exactly what deploys; each Worker its own isolate). The test
        // Worker is a proxy to the gateway, so SELF.fetch reaches it. (Vite 8 would wrap static
        // .wasm imports in ESM-integration glue if the gateway ran as the test Worker itself.)
        plugins: [
          cloudflareTest(async ({ inject }) => {
            const migrations = await readD1Migrations(join(import.meta.dirname, DATABASE.migrationsDir!));
            const bundles = inject("workerBundles");
            // Every Worker of src/topology.ts for the test models' stage count (all three share
            // one plan), plus a second gateway configured with an API_KEY.
            const stages = inject("workerdFixtures").modelA.stages;
            const overrides = {
              vars: { gateway: { POINTER_TTL_S: "0", MAX_BODY_BYTES: String(1024 * 1024), MAX_BATCH: "4" } },
              outbound: { gateway: fakeImageHost },
            };
            const workers = miniflareWorkers(stages, bundles, overrides);
            const gateway = resolveTopology(stages).find((w) => w.spec === GATEWAY)!;
            // Also the gateway of local development: URL inputs may reach loopback.
            const keyed = miniflareWorker(
              gateway,
              bundles,
              {
                vars: {
                  gateway: { ...overrides.vars.gateway, API_KEY: "s3cret-key", ALLOW_LOOPBACK_FETCH: "true" },
                },
                outbound: overrides.outbound,
              },
              "beit-edge-keyed",
            );
            const stageBindings = Object.fromEntries(
              Array.from({ length: stages }, (_, i) => [
                stageBindingName(i),
                gateway.services[stageBindingName(i)],
              ]),
            );
            // A second tagging Worker (the proxy) in front of an HTTP origin, beside the real one.
            const tagging = resolveTopology(stages).find((w) => w.spec === TAGGING)!;
            const taggingHttp = miniflareWorker(
              tagging,
              bundles,
              { vars: { tagging: { ORIGIN_URL: "http://origin.test/" } }, outbound: { tagging: fakeOrigin } },
              "beit-edge-tagging-http",
            );
            return {
              main: "./test/workerd/proxy-main.ts",
              miniflare: {
                ...sharedOptions,
                compatibilityFlags: ["nodejs_compat"],
                // The jobs and tagging tests apply migrations/ and send messages through the same D1
                // and queues.
                d1Databases: { [DATABASE.binding]: DATABASE.databaseName },
                queueProducers: { JOBS_QUEUE: QUEUES.JOBS, TAGGING_QUEUE },
                bindings: { TEST_MIGRATIONS: migrations },
                serviceBindings: {
                  GATEWAY: GATEWAY.name,
                  GATEWAY_KEYED: "beit-edge-keyed",
                  TAGGING_HTTP: "beit-edge-tagging-http",
                  ...stageBindings,
                },
                workers: [...workers, keyed, taggingHttp],
              },
            };
          }),
        ],
        test: {
          name: "workerd",
          include: ["{src,test}/**/*.workerd.test.ts"],
          globalSetup: ["test/workerd/global-setup.ts"],
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 300_000,
        },
      },
    ],
  },
});
