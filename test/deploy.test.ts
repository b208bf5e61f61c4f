/**
 * The real `npm run deploy` (scripts/deploy.ts, real wrangler) end to end against a local
 * stand-in for the Cloudflare API on loopback (test/helpers/fake-cloudflare.ts), which wrangler
 * reaches through CLOUDFLARE_API_BASE_URL like our own R2 existence checks do. Asserts the order
 * of the calls (bucket, uploads skipping what exists, stage Workers, gateway bound to exactly
 * those stages, pointer last), and that a failed upload or a failed stage deploy leaves the
 * active pointer untouched. Tiny synthetic model; no network.
 */
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildShards } from "../model-shards/build.ts";
import { loadCheckpoint } from "../model-shards/checkpoint/index.ts";
import { synthesize, writeCheckpoint } from "../model-shards/checkpoint/synth.ts";
import { type Manifest, manifestFiles } from "../src/shared/manifest.ts";
import { type FakeCloudflare, startFakeCloudflare } from "./helpers/fake-cloudflare.ts";

const root = resolve(import.meta.dirname, "..");
const BUCKET = "beit-edge-models";
const OLD_POINTER = JSON.stringify({ version: "f".repeat(64), publishedAt: "2026-01-01T00:00:00.000Z" });
let dir: string;
let manifest: Manifest;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "beit-edge-deploy-real-"));
  await writeCheckpoint(join(dir, "ck"), synthesize({ size: "tiny", seed: 21 }), "safetensors");
  // Fewer stages than the other tests' (each costs a wrangler bundle per deploy), still more than
  // one, so the stage order is tested.
  manifest = await buildShards(await loadCheckpoint(join(dir, "ck")), {
    outDir: join(dir, "shards"),
    precision: "int8",
    stageBudgetBytes: 33_000_000,
    // The tiny model's layers are too small for a budget to split (the relative position bias is a
    // table now), so the split is by layer count: 2 stages of 2 layers.
    maxLayersPerStage: 2,
  });
  expect(manifest.stages.length).toBeGreaterThanOrEqual(2);
  await mkdir(join(dir, "home"));
}, 120_000);

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** A stand-in account that already has the bucket and an active model. */
async function liveAccount(): Promise<FakeCloudflare> {
  const fake = await startFakeCloudflare();
  fake.buckets.add(BUCKET);
  fake.objects.set(`${BUCKET}/active.json`, new TextEncoder().encode(OLD_POINTER));
  return fake;
}

function deploy(fake: FakeCloudflare, extra: string[] = []): Promise<{ code: number; stderr: string }> {
  return new Promise((res) => {
    execFile(
      process.execPath,
      [
        join(root, "node_modules/tsx/dist/cli.mjs"),
        "scripts/deploy.ts",
        "--model",
        join(dir, "shards"),
        ...extra,
      ],
      {
        cwd: root,
        timeout: 300_000,
        maxBuffer: 64 * 1024 * 1024,
        env: {
          PATH: process.env.PATH,
          HOME: join(dir, "home"),
          TMPDIR: tmpdir(),
          CLOUDFLARE_API_BASE_URL: fake.baseUrl,
          CLOUDFLARE_API_TOKEN: "test-token",
          CLOUDFLARE_ACCOUNT_ID: fake.account,
          WRANGLER_SEND_METRICS: "false",
          // Each wrangler call of the deploy is bounded: a call the stand-in never ends fails the
          // test with that command's name within 2 minutes instead of hanging it.
          WRANGLER_TIMEOUT_MS: "120000",
          CI: "1",
        },
      },
      (err, _stdout, stderr) => res({ code: err ? Number(err.code ?? 1) : 0, stderr }),
    );
  });
}

/** The state-changing calls, as short names: bucket, put <key>, script <name>. */
function writes(fake: FakeCloudflare): string[] {
  const out: string[] = [];
  for (const c of fake.calls) {
    const rest = c.path.replace(`/accounts/${fake.account}`, "");
    if (c.method === "POST" && rest === "/r2/buckets") out.push("bucket");
    if (c.method === "POST" && rest === "/queues") out.push("queue");
    if (c.method === "POST" && /^\/d1\/database\/[^/]+\/(query|raw)$/.test(rest)) out.push("d1 sql");
    const obj = new RegExp(`^/r2/buckets/${BUCKET}/objects/(.+)$`).exec(rest);
    if (c.method === "PUT" && obj) out.push(`put ${decodeURIComponent(obj[1])}`);
    const script = /^\/workers\/scripts\/([^/]+)$/.exec(rest);
    if (c.method === "PUT" && script) out.push(`script ${script[1]}`);
    // A redeploy of an existing Worker: the deployment that makes the uploaded version live.
    const redeploy = /^\/workers\/scripts\/([^/]+)\/deployments$/.exec(rest);
    if (c.method === "POST" && redeploy) out.push(`script ${redeploy[1]}`);
  }
  return out;
}

const pointer = (fake: FakeCloudflare) =>
  new TextDecoder().decode(fake.objects.get(`${BUCKET}/active.json`) ?? new Uint8Array());

describe("npm run deploy against a local Cloudflare API stand-in", () => {
  it("creates the bucket, uploads only missing files, deploys stages then the gateway, and swaps the pointer last", async () => {
    // With the tagging options: the R2 notification rule and the tagging Worker's route.
    const fake = await liveAccount();
    try {
      const files = manifestFiles(manifest).map((f) => `shards/${f.file}`);
      // One shard is already there from an earlier deploy (content-addressed: same name, same bytes).
      const present = files[1];
      fake.objects.set(
        `${BUCKET}/${present}`,
        new Uint8Array(await readFile(join(dir, "shards", present.slice(7)))),
      );
      const route = "cdn.example.test/images/*";
      const { code, stderr } = await deploy(fake, [
        "--tagging-notify",
        "--tagging-notify-prefix",
        "photos/",
        "--tagging-route",
        route,
      ]);
      expect(code, stderr).toBe(0);
      const n = manifest.stages.length;
      // Account resources first (buckets, queues, D1 + its migrations), then the model files,
      // the Workers in topology order, the pointer last. Repeated "already exists" answers and
      // the migration bookkeeping statements collapse to one entry each.
      const collapsed = writes(fake).filter((w, i, all) => w !== all[i - 1]);
      expect(collapsed).toEqual([
        "bucket",
        "queue",
        "d1 sql",
        ...files.filter((f) => f !== present).map((f) => `put ${f}`),
        `put manifests/${manifest.version}.json`,
        ...Array.from({ length: n }, (_, i) => `script beit-edge-stage-${i}`),
        // The tagging Worker before the gateway that binds it; its consumer (a Worker of its own)
        // after the gateway, whose quota Durable Object it binds.
        "script beit-edge-tagging",
        "script beit-edge",
        "script beit-edge-tagging-consumer",
        "script beit-edge-jobs",
        "put active.json",
      ]);
      expect([...fake.buckets].sort()).toEqual(["beit-edge-images", "beit-edge-models", "beit-edge-uploads"]);
      expect([...fake.queues.keys()].sort()).toEqual([
        "beit-edge-deliveries",
        "beit-edge-jobs",
        "beit-edge-jobs-dlq",
        "beit-edge-tagging",
        "beit-edge-tagging-dlq",
      ]);
      // The jobs Worker consumes its two queues and the dead-letter queue; the tagging consumer
      // the tagging queue (its DLQ has no consumer: failed entries are recorded before it).
      for (const [name, q] of fake.queues)
        expect(q.consumers, name).toEqual(
          name === "beit-edge-tagging"
            ? ["beit-edge-tagging-consumer"]
            : name.startsWith("beit-edge-tagging")
              ? []
              : ["beit-edge-jobs"],
        );
      // The tagging KV namespace exists and its id is the TAGS binding of both the deployed tagging
      // Worker and its consumer; the consumer shares the one D1 database.
      const kvId = fake.kv.get("beit-edge-tags");
      expect(kvId).toBeDefined();
      type Binding = { name: string; type: string; id?: string; namespace_id?: string };
      const bindingsOf = (script: string) =>
        fake.scripts.get(script)!.metadata.bindings as unknown as Binding[];
      const taggingBindings = bindingsOf("beit-edge-tagging-consumer");
      expect(taggingBindings.find((b) => b.name === "TAGS")?.namespace_id).toBe(kvId);
      expect(bindingsOf("beit-edge-tagging").find((b) => b.name === "TAGS")?.namespace_id).toBe(kvId);
      // The notification rule: object-create on the IMAGES bucket -> the tagging queue, under photos/.
      expect(fake.notifications.get("beit-edge-images")).toMatchObject([
        { queueName: "beit-edge-tagging", prefix: "photos/" },
      ]);
      expect(fake.routes.get(route)).toBe("beit-edge-tagging");
      const db = fake.databases.get("beit-edge")!;
      // One database, both migrations applied to it.
      expect([...fake.databases.keys()]).toEqual(["beit-edge"]);
      for (const file of ["0001_jobs.sql", "0002_images.sql"]) {
        const migration = await readFile(join(root, "migrations", file), "utf8");
        const firstTable = /CREATE TABLE[^(]+/i.exec(migration)![0];
        expect(
          db.sql.some((q) => q.includes(firstTable)),
          file,
        ).toBe(true);
      }
      // The D1 id the account gave goes into the deployed jobs Worker's binding.
      const jobsBindings = fake.scripts.get("beit-edge-jobs")!.metadata.bindings as unknown as {
        type: string;
        id?: string;
      }[];
      expect(jobsBindings.find((b) => b.type === "d1")?.id).toBe(db.uuid);
      expect(taggingBindings.find((b) => b.type === "d1")?.id).toBe(db.uuid);
      expect(JSON.parse(pointer(fake))).toMatchObject({ version: manifest.version });
      // What was uploaded: the gateway binds exactly the manifest's stages; stages carry ORT's wasm.
      const gateway = fake.scripts.get("beit-edge")!;
      expect(
        gateway.metadata.bindings!.filter((b) => b.type === "service").map((b) => [b.name, b.service]),
      ).toEqual([
        ...Array.from({ length: n }, (_, i) => [`STAGE_${i}`, `beit-edge-stage-${i}`]),
        ["TAGGING", "beit-edge-tagging"],
      ]);
      expect(fake.scripts.get("beit-edge-stage-0")!.parts.some((p) => p.endsWith(".wasm"))).toBe(true);
      // Keys, quotas, usage (issue #20): the gateway defines the quota Durable Object (migration v1),
      // the jobs Worker binds it by script name, both write the usage dataset; migrations/ 0003.
      type DoBinding = {
        name: string;
        type: string;
        class_name?: string;
        script_name?: string;
        dataset?: string;
      };
      const gb = gateway.metadata.bindings as unknown as DoBinding[];
      expect(gb.find((b) => b.name === "QUOTA")).toMatchObject({
        type: "durable_object_namespace",
        class_name: "KeyQuota",
      });
      expect(gb.find((b) => b.name === "USAGE_EVENTS")).toMatchObject({
        type: "analytics_engine",
        dataset: "beit_edge_usage",
      });
      expect(gateway.metadata.migrations).toMatchObject({
        new_tag: "v1",
        steps: [{ new_sqlite_classes: ["KeyQuota"] }],
      });
      expect((jobsBindings as DoBinding[]).find((b) => b.name === "QUOTA")).toMatchObject({
        class_name: "KeyQuota",
        script_name: "beit-edge",
      });
      const accounts = await readFile(join(root, "migrations", "0003_accounts.sql"), "utf8");
      expect(db.sql.some((q) => q.includes(/CREATE TABLE[^(]+/i.exec(accounts)![0]))).toBe(true);
      for (const f of files)
        expect(fake.objects.get(`${BUCKET}/${f}`), f).toEqual(
          new Uint8Array(await readFile(join(dir, "shards", f.slice(7)))),
        );
    } finally {
      await fake.close();
    }
  }, 300_000);

  it("deploys a second time into the same account: every resource reused, nothing duplicated or re-uploaded", async () => {
    const fake = await liveAccount();
    try {
      const opts = ["--tagging-notify", "--tagging-route", "cdn.example.test/images/*"];
      const first = await deploy(fake, opts);
      expect(first.code, first.stderr).toBe(0);
      const snapshot = () => ({
        buckets: [...fake.buckets].sort(),
        queues: structuredClone([...fake.queues].sort()),
        databases: [...fake.databases].map(([name, d]) => [name, d.uuid]),
        kv: [...fake.kv],
        notifications: structuredClone([...fake.notifications]),
        routes: [...fake.routes],
        objects: [...fake.objects.keys()].sort(),
      });
      const before = snapshot();
      const callsBefore = fake.calls.length;
      const second = await deploy(fake, opts);
      expect(second.code, second.stderr).toBe(0);
      // Same buckets, queues (same ids, each consumer once), one D1 database with the same id, the
      // same KV namespace id, one notification rule, one route, the same objects.
      expect(snapshot()).toEqual(before);
      expect(fake.notifications.get("beit-edge-images")).toHaveLength(1);
      // The second run uploads no model file again (content-addressed, all present) and
      // redeploys the Workers, which bind the resources the first run made.
      const secondWrites = writes({ ...fake, calls: fake.calls.slice(callsBefore) });
      expect(secondWrites.filter((w) => w.startsWith("put shards/"))).toEqual([]);
      expect(secondWrites).toContain("script beit-edge");
      type Binding = { name: string; type: string; id?: string; namespace_id?: string };
      const consumer = fake.scripts.get("beit-edge-tagging-consumer")!.metadata
        .bindings as unknown as Binding[];
      expect(consumer.find((b) => b.name === "TAGS")?.namespace_id).toBe(fake.kv.get("beit-edge-tags"));
      expect(consumer.find((b) => b.type === "d1")?.id).toBe(fake.databases.get("beit-edge")!.uuid);
      // The quota class exists since the first deploy: the second sends no new migration step.
      const migrations = fake.scripts.get("beit-edge")!.metadata.migrations;
      expect(migrations?.steps ?? []).toEqual([]);
      expect(JSON.parse(pointer(fake))).toMatchObject({ version: manifest.version });
    } finally {
      await fake.close();
    }
  }, 600_000);

  it("leaves the active model untouched when an upload fails midway", async () => {
    const fake = await liveAccount();
    try {
      const victim = manifestFiles(manifest)[2].file;
      fake.failOn = new RegExp(`^PUT .*/objects/shards/${victim}$`);
      const { code, stderr } = await deploy(fake);
      expect(code).not.toBe(0);
      expect(stderr).toMatch(/^error\[[a-z-]+\]: /m);
      expect(pointer(fake)).toBe(OLD_POINTER);
      expect(writes(fake).filter((w) => w.startsWith("script "))).toEqual([]);
    } finally {
      await fake.close();
    }
  }, 300_000);

  it("leaves the active model untouched when a stage Worker fails to deploy", async () => {
    const fake = await liveAccount();
    try {
      fake.failOn = /^PUT .*\/workers\/scripts\/beit-edge-stage-1$/;
      const { code } = await deploy(fake);
      expect(code).not.toBe(0);
      expect(pointer(fake)).toBe(OLD_POINTER);
      const w = writes(fake);
      expect(w).toContain("script beit-edge-stage-0");
      expect(w).not.toContain("script beit-edge");
      expect(w).not.toContain("put active.json");
    } finally {
      await fake.close();
    }
  }, 300_000);
});
