/**
 * End to end over real HTTP: builds the tiny synthetic int8 model (several stages), publishes it into a
 * temporary local R2, starts the real `wrangler dev` (gateway + every stage Worker in one process, as
 * `npm start` does) on a free port, and calls it with plain fetch: a classification equal to what
 * onnxruntime-web in Node computes, and a problem+json error. Everything is bounded by timeouts
 * and the server is always stopped.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildShards } from "../model-shards/build.ts";
import { loadCheckpoint } from "../model-shards/checkpoint/index.ts";
import { synthesize, writeCheckpoint } from "../model-shards/checkpoint/synth.ts";
import { loadLocalModel } from "../model-shards/runner.ts";
import { publishLocal } from "../scripts/lib/local-r2.ts";
import { freePort, type RunningService, serveLocal } from "../scripts/lib/serve.ts";
import { initNodeCodecs } from "../src/image/codecs-node.ts";
import { imageToPixelValues } from "../src/image/index.ts";
import type { Manifest } from "../src/shared/manifest.ts";
import { testPng } from "./helpers/png.ts";

const root = resolve(import.meta.dirname, "..");
let dir: string;
let manifest: Manifest;
let svc: RunningService | null = null;
const png = testPng(64, 48, 5);

async function expectedTop(k: number): Promise<{ label: string; score: number }[]> {
  await initNodeCodecs();
  const model = await loadLocalModel(join(dir, "shards"));
  try {
    const { pixels } = await imageToPixelValues(png, model.manifest.preprocess);
    return (await model.classify(pixels, k)).map((p) => ({ label: p.label, score: p.score }));
  } finally {
    await model.release();
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "beit-edge-e2e-"));
  await writeCheckpoint(join(dir, "ck"), synthesize({ size: "tiny", seed: 11 }), "safetensors");
  manifest = await buildShards(await loadCheckpoint(join(dir, "ck")), {
    outDir: join(dir, "shards"),
    precision: "int8",
    stageBudgetBytes: 32_000_000,
  });
  await publishLocal(join(dir, "shards"), join(dir, "state"));
  svc = await serveLocal({
    root,
    stages: manifest.stages.length,
    persistTo: join(dir, "state"),
    port: await freePort(),
    configDir: join(dir, "configs"),
    prebundle: true,
    readyTimeoutMs: 150_000,
  });
}, 240_000);

afterAll(async () => {
  await svc?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
}, 30_000);

describe("wrangler dev end to end", () => {
  it("serves a classification over HTTP equal to onnxruntime-web in Node, labelled synthetic", async () => {
    expect(manifest.stages.length).toBeGreaterThanOrEqual(2);
    const res = await fetch(`${svc!.url}/v1/classify?top_k=3`, {
      method: "POST",
      body: png,
      headers: { "content-type": "image/png" },
      signal: AbortSignal.timeout(60_000),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-model-synthetic")).toBe("true");
    expect(res.headers.get("x-model-version")).toBe(manifest.version);
    expect(await res.json()).toEqual(await expectedTop(3));
  });

  it("answers bad input with application/problem+json", async () => {
    const res = await fetch(`${svc!.url}/v1/classify`, {
      method: "POST",
      body: "not an image",
      headers: { "content-type": "text/plain" },
      signal: AbortSignal.timeout(30_000),
    });
    expect(res.status).toBe(415);
    expect(res.headers.get("content-type")).toBe("application/problem+json");
    expect(await res.json()).toMatchObject({
      type: "https://beit-edge.dev/problems/unsupported-media-type",
      status: 415,
    });
  });
});
