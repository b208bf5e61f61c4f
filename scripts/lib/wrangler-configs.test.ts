/**
 * The wrangler configs generated from src/topology.ts: the gateway binds exactly the manifest's
 * stages, every entry file exists, var defaults come from the topology, and a Worker added to the
 * topology with queues, D1, KV and a cron gets those bindings in its config. The committed
 * wrangler.toml is the gateway template generated from the topology (fails on drift) and is read by
 * wrangler's own config reader without errors.
 */
import { access, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { experimental_readRawConfig, unstable_readConfig } from "wrangler";
import {
  CLASSIFIER_VARS,
  GATEWAY,
  MAX_STAGES,
  resolveTopology,
  STAGE,
  varDefaults,
  WORKERS,
  type WorkerSpec,
} from "../../src/topology.ts";
import { toToml } from "./toml.ts";
import { gatewayTemplate, TEMPLATE_FILE, wranglerConfig, writeWranglerConfigs } from "./wrangler-configs.ts";

const root = resolve(import.meta.dirname, "../..");
let out: string;
beforeAll(async () => {
  out = await mkdtemp(join(tmpdir(), "beit-configs-"));
});
afterAll(() => rm(out, { recursive: true, force: true }));

interface WranglerJson {
  main: string;
  vars: Record<string, string>;
  services: unknown[];
  r2_buckets: unknown;
  queues: unknown;
  d1_databases: { migrations_dir?: string }[];
  kv_namespaces: unknown;
  triggers: unknown;
  durable_objects?: unknown;
  migrations?: unknown;
  analytics_engine_datasets?: unknown;
  observability?: unknown;
}
const read = async (p: string) => JSON.parse(await readFile(p, "utf8")) as WranglerJson;

/** A Worker with every kind of binding the topology can declare. */
const jobs: WorkerSpec = {
  kind: "jobs",
  name: "beit-edge-jobs",
  entry: GATEWAY.entry,
  bindsStages: true,
  queueProducers: { DELIVERIES: "beit-edge-deliveries" },
  queueConsumers: [
    { queue: "beit-edge-jobs", maxBatchSize: 4, maxRetries: 3, deadLetterQueue: "beit-edge-jobs-dlq" },
  ],
  d1Databases: [{ binding: "DB", databaseName: "beit-edge", migrationsDir: "migrations" }],
  kvNamespaces: { TAGS: "beit-edge-tags" },
  crons: ["*/5 * * * *"],
};

describe("writeWranglerConfigs", () => {
  it("writes the stage Workers and a gateway bound to exactly those stages, with the topology's vars", async () => {
    const c = await writeWranglerConfigs({
      root,
      outDir: join(out, "a"),
      stages: 3,
      vars: { MAX_BATCH: "2" },
    });
    expect(c.stages).toHaveLength(3);
    expect(c.workers.map((w) => w.name)).toEqual([
      "beit-edge-stage-0",
      "beit-edge-stage-1",
      "beit-edge-stage-2",
      "beit-edge-tagging",
      // The gateway defines the quota Durable Object its consumers bind by script name.
      "beit-edge",
      "beit-edge-tagging-consumer",
      "beit-edge-jobs",
    ]);
    const g = await read(c.gateway);
    // Keys, quotas, usage: the gateway defines KeyQuota (migration v1) and writes the usage
    // dataset; the jobs Worker and the tagging consumer bind the class by script name; Workers Logs on.
    expect(g.durable_objects).toEqual({ bindings: [{ name: "QUOTA", class_name: "KeyQuota" }] });
    expect(g.migrations).toEqual([{ tag: "v1", new_sqlite_classes: ["KeyQuota"] }]);
    expect(g.analytics_engine_datasets).toEqual([{ binding: "USAGE_EVENTS", dataset: "beit_edge_usage" }]);
    for (const kind of ["jobs", "tagging-consumer"]) {
      const w = await read(c.workers.find((x) => x.kind === kind)!.path);
      expect(w.durable_objects, kind).toEqual({
        bindings: [{ name: "QUOTA", class_name: "KeyQuota", script_name: "beit-edge" }],
      });
      expect(w.migrations, kind).toBeUndefined();
    }
    for (const w of c.workers) expect((await read(w.path)).observability, w.name).toEqual({ enabled: true });
    expect(g.services).toEqual([
      ...[0, 1, 2].map((i) => ({ binding: `STAGE_${i}`, service: `beit-edge-stage-${i}` })),
      { binding: "TAGGING", service: "beit-edge-tagging" },
    ]);
    expect(g.vars.MAX_BATCH).toBe("2");
    expect(g.vars.REQUEST_DEADLINE_MS).toBe(CLASSIFIER_VARS.REQUEST_DEADLINE_MS.default);
    expect(g.r2_buckets).toEqual([
      { binding: "MODELS", bucket_name: "beit-edge-models" },
      { binding: "UPLOADS", bucket_name: "beit-edge-uploads" },
      { binding: "IMAGES", bucket_name: "beit-edge-images" },
    ]);
    for (const w of c.workers) await access((await read(w.path)).main);
    await expect(writeWranglerConfigs({ root, outDir: join(out, "b"), stages: 9 })).rejects.toThrow(/1\.\.8/);
  });

  it("keeps the model off the image path: the tagging proxy binds no stage, model or D1; its consumer does", async () => {
    const c = await writeWranglerConfigs({ root, outDir: join(out, "t"), stages: 2 });
    const proxy = await read(c.workers.find((w) => w.name === "beit-edge-tagging")!.path);
    expect(proxy.services ?? []).toEqual([]);
    expect(proxy.r2_buckets).toEqual([{ binding: "IMAGES", bucket_name: "beit-edge-images" }]);
    expect(proxy.d1_databases ?? []).toEqual([]);
    expect(proxy.queues).toEqual({ producers: [{ binding: "TAGGING_QUEUE", queue: "beit-edge-tagging" }] });
    const consumer = await read(c.workers.find((w) => w.name === "beit-edge-tagging-consumer")!.path);
    const bindings = (list: unknown) => (list as { binding: string }[]).map((b) => b.binding);
    expect(bindings(consumer.services)).toEqual(["STAGE_0", "STAGE_1"]);
    const queues = consumer.queues as { consumers: unknown[]; producers?: unknown[] };
    expect(queues.consumers).toMatchObject([
      { queue: "beit-edge-tagging", dead_letter_queue: "beit-edge-tagging-dlq" },
    ]);
    expect(queues.producers ?? []).toEqual([]);
    // Both read and write the same hot-path namespace.
    expect(bindings(consumer.kv_namespaces)).toEqual(["TAGS"]);
    expect(bindings(proxy.kv_namespaces)).toEqual(["TAGS"]);
  });

  it("gives a Worker added to the topology its queues, D1, KV and cron bindings", async () => {
    const c = await writeWranglerConfigs({
      root,
      outDir: join(out, "c"),
      stages: 2,
      workers: [...WORKERS, jobs],
    });
    const j = await read(c.workers.find((w) => w.kind === "jobs")!.path);
    expect(j.services).toHaveLength(2);
    expect(j.queues).toEqual({
      producers: [{ binding: "DELIVERIES", queue: "beit-edge-deliveries" }],
      consumers: [
        {
          queue: "beit-edge-jobs",
          max_batch_size: 4,
          max_retries: 3,
          dead_letter_queue: "beit-edge-jobs-dlq",
        },
      ],
    });
    expect(j.d1_databases[0]).toMatchObject({ binding: "DB", database_name: "beit-edge" });
    expect(j.d1_databases[0].migrations_dir).toBe(join(root, "migrations"));
    expect(j.kv_namespaces).toEqual([{ binding: "TAGS", id: "beit-edge-tags" }]);
    expect(j.triggers).toEqual({ crons: ["*/5 * * * *"] });
  });
});

describe("wrangler.toml", () => {
  it("is the gateway template generated from the topology (rerun `npm run topology` when this fails)", async () => {
    const committed = await readFile(join(root, TEMPLATE_FILE), "utf8");
    expect(committed).toBe(gatewayTemplate());
    const changed = { ...GATEWAY, vars: { ...GATEWAY.vars, NEW_VAR: { default: "1", doc: "" } } };
    expect(gatewayTemplate([STAGE, changed])).not.toBe(committed);
  });

  it("is read by wrangler without errors: the gateway entry, its vars and every stage binding", () => {
    const c = unstable_readConfig({ config: join(root, TEMPLATE_FILE) }, {});
    expect(c.name).toBe(GATEWAY.name);
    expect(c.main).toBe(join(root, GATEWAY.entry));
    expect(c.vars).toEqual(varDefaults(GATEWAY));
    // Every stage binding, then the gateway's own service bindings (TAGGING).
    expect((c.services ?? []).map((s: { binding: string }) => s.binding)).toEqual([
      ...Array.from({ length: MAX_STAGES }, (_, i) => `STAGE_${i}`),
      "TAGGING",
    ]);
    expect(c.r2_buckets).toEqual([
      { binding: "MODELS", bucket_name: "beit-edge-models" },
      { binding: "UPLOADS", bucket_name: "beit-edge-uploads" },
      { binding: "IMAGES", bucket_name: "beit-edge-images" },
    ]);
  });

  it("TOML of a config with queues, D1, KV and crons reads back in wrangler as the same config", async () => {
    const w = resolveTopology(2, [...WORKERS, jobs]).find((x) => x.spec.kind === "jobs")!;
    const json = wranglerConfig(w, { root, relativePaths: true });
    const file = join(out, "jobs.toml");
    await writeFile(file, toToml(json));
    expect(experimental_readRawConfig({ config: file }).rawConfig).toEqual(json);
    expect(() => unstable_readConfig({ config: file }, {})).not.toThrow();
  });
});
