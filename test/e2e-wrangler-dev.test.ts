/**
 * End to end over real HTTP: builds the tiny synthetic int8 model (several stages), publishes it into a
 * temporary local R2, starts the real `wrangler dev` (gateway + every stage Worker in one process, as
 * `npm start` does) on a free port, and calls it with plain fetch: a classification equal to what
 * onnxruntime-web in Node computes, and a problem+json error. The API key goes in the way `npm start`
 * passes secrets (scripts/lib/dev-secrets.ts: `.dev.vars` beside the generated configs), so the
 * test fails if wrangler stops reading it there. Everything is bounded by timeouts and the server
 * is always stopped.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadLocalModel } from "../model-shards/runner.ts";
import { initNodeCodecs } from "../src/image/codecs-node.ts";
import { imageToPixelValues } from "../src/image/index.ts";
import type { Manifest } from "../src/shared/manifest.ts";
import { testPng } from "./helpers/png.ts";
import { startTinyService, type TinyService } from "./helpers/tiny-service.ts";

let manifest: Manifest;
let svc: TinyService | null = null;
const png = testPng(64, 48, 5);
const API_KEY = "e2e-secret-key";
const bearer = { authorization: `Bearer ${API_KEY}` };

async function expectedTop(k: number): Promise<{ label: string; score: number }[]> {
  await initNodeCodecs();
  const model = await loadLocalModel(svc!.shards);
  try {
    const { pixels } = await imageToPixelValues(png, model.manifest.preprocess);
    return (await model.classify(pixels, k)).map((p) => ({ label: p.label, score: p.score }));
  } finally {
    await model.release();
  }
}

beforeAll(async () => {
  svc = await startTinyService({ seed: 11, secrets: { API_KEY } });
  manifest = svc.manifest;
}, 240_000);

afterAll(async () => {
  await svc?.stop();
}, 30_000);

describe("wrangler dev end to end", () => {
  it("serves a classification over HTTP equal to onnxruntime-web in Node, labelled synthetic", async () => {
    expect(manifest.stages.length).toBeGreaterThanOrEqual(2);
    const res = await fetch(`${svc!.url}/v1/classify?top_k=3`, {
      method: "POST",
      body: png,
      headers: { "content-type": "image/png", ...bearer },
      signal: AbortSignal.timeout(60_000),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-model-synthetic")).toBe("true");
    expect(res.headers.get("x-model-version")).toBe(manifest.version);
    expect(await res.json()).toEqual(await expectedTop(3));
  });

  it("turns auth on from the secrets npm start writes: 401 without the key, open /healthz", async () => {
    const res = await fetch(`${svc!.url}/v1/model`, { signal: AbortSignal.timeout(30_000) });
    expect(res.status).toBe(401);
    expect(((await res.json()) as { code: string }).code).toBe("unauthorized");
    const health = await fetch(`${svc!.url}/healthz`, { signal: AbortSignal.timeout(30_000) });
    expect(health.status).toBe(200);
    await health.body?.cancel();
  });

  it("answers bad input with application/problem+json", async () => {
    const res = await fetch(`${svc!.url}/v1/classify`, {
      method: "POST",
      body: "not an image",
      headers: { "content-type": "text/plain", ...bearer },
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
