/**
 * `npm run deploy -- --dry-run` works offline: it generates one config per manifest stage, bundles
 * every Worker with wrangler, each bundle stays under the 64 MiB script limit, and without --outdir
 * nothing is left in the temporary directory. (What a real deploy uploads: test/deploy.test.ts.)
 */
import { execFile } from "node:child_process";
import { mkdir, readdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildTinyModel, type TinyModel } from "./helpers/tiny-model.ts";

const root = resolve(import.meta.dirname, "..");
const LIMIT = 64 * 1024 * 1024;
let tiny: TinyModel | undefined;
let dir: string;
let stages: number;

beforeAll(async () => {
  tiny = await buildTinyModel(4);
  dir = tiny.dir;
  stages = tiny.manifest.stages.length;
}, 120_000);

afterAll(async () => {
  await tiny?.cleanup();
});

describe("npm run deploy -- --dry-run", () => {
  it("bundles the gateway and one Worker per stage offline, each under 64 MiB", async () => {
    const tmp = join(dir, "tmp");
    await mkdir(tmp);
    const { stdout, stderr } = await promisify(execFile)(
      process.execPath,
      [join(root, "node_modules/tsx/dist/cli.mjs"), "scripts/deploy.ts", "--model", tiny!.out, "--dry-run"],
      {
        cwd: root,
        timeout: 240_000,
        env: { ...process.env, TMPDIR: tmp, CLOUDFLARE_API_TOKEN: "", WRANGLER_SEND_METRICS: "false" },
      },
    );
    const report = JSON.parse(stdout.trim().split("\n").at(-1)!) as {
      stages: number;
      bundles: { worker: string; bytes: number }[];
    };
    expect(stages).toBeGreaterThanOrEqual(2);
    expect(report.stages).toBe(stages);
    expect(report.bundles.map((b) => b.worker)).toEqual([
      "beit-edge",
      ...Array.from({ length: stages }, (_, i) => `beit-edge-stage-${i}`),
      "beit-edge-tagging",
      "beit-edge-tagging-consumer",
      "beit-edge-jobs",
    ]);
    for (const b of report.bundles) {
      expect(b.bytes).toBeGreaterThan(10_000);
      expect(b.bytes).toBeLessThan(LIMIT);
    }
    // The image path carries no model code: no codec wasm, no classifier (27 KiB on 2026-12-02;
    // its consumer, which decodes and classifies, 1.7 MiB).
    const size = (w: string) => report.bundles.find((b) => b.worker === w)!.bytes;
    expect(size("beit-edge-tagging")).toBeLessThan(256 * 1024);
    expect(size("beit-edge-tagging-consumer")).toBeGreaterThan(1024 * 1024);
    expect(stderr).toContain(`would deploy ${stages} stage Worker(s), then beit-edge`);
    // What the webhook jobs need on the account, from src/topology.ts.
    for (const line of [
      "would ensure queue beit-edge-jobs: create if missing",
      "would ensure queue beit-edge-deliveries: create if missing",
      "would ensure queue beit-edge-jobs-dlq: create if missing",
      "would ensure R2 bucket beit-edge-uploads: create if missing",
      "would ensure D1 database beit-edge (binding DB)",
      "would ensure D1 migrations migrations/ --remote (only new ones apply): 0001_jobs.sql, 0002_images.sql, 0003_accounts.sql",
      // CDN image tagging: its bucket, queue + DLQ and KV namespace, from the same topology.
      "would ensure R2 bucket beit-edge-images: create if missing",
      "would ensure queue beit-edge-tagging: create if missing",
      "would ensure queue beit-edge-tagging-dlq: create if missing",
      "would ensure KV namespace beit-edge-tags (binding TAGS): create if missing",
      "would ensure cron * * * * * on beit-edge-jobs",
      "wrangler secret put WEBHOOK_SECRET --name beit-edge-jobs",
      // Keys, quotas, usage: the quota Durable Object and the usage dataset.
      "would ensure Durable Object classes KeyQuota on beit-edge: SQLite-backed, created by its deploy (migrations v1",
      "would ensure Analytics Engine dataset beit_edge_usage (written by beit-edge, beit-edge-tagging-consumer, beit-edge-jobs)",
    ])
      expect(stderr).toContain(line);
    // One D1 step and one migrations step for both features.
    expect(stderr.match(/would ensure D1 database /g)).toHaveLength(1);
    expect(stderr.match(/would ensure D1 migrations /g)).toHaveLength(1);
    // ~14 MiB per bundle: none may stay behind in the temporary directory (tsx and wrangler keep
    // their own small caches there).
    expect(stderr).toContain("bundles removed");
    expect((await readdir(tmp)).filter((n) => n.startsWith("beit-edge"))).toEqual([]);
  });

  it("fails with error[code] and a hint when the model directory has no manifest", async () => {
    const run = promisify(execFile)(
      process.execPath,
      [
        join(root, "node_modules/tsx/dist/cli.mjs"),
        "scripts/deploy.ts",
        "--model",
        join(dir, "nothing"),
        "--dry-run",
      ],
      { cwd: root, timeout: 60_000 },
    );
    await expect(run).rejects.toMatchObject({
      code: 1,
      stderr: expect.stringMatching(/^error\[[a-z-]+\]: /m),
    });
  });
});
