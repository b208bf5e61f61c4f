/**
 * Model versions and shard integrity inside workerd: a pointer swap in the middle of traffic
 * (every response is entirely one version's answer, never a mix), a corrupted and a missing shard
 * (503 + Retry-After + problem+json, never cached, and the next request after the fix succeeds),
 * and each stage isolate's measured wasm heap against the plan's stage budget and the manifest's
 * reservation.
 */
import { applyD1Migrations, env, SELF } from "cloudflare:test";
import { beforeAll, describe, expect, inject, it } from "vitest";
import type { GatewayEnv } from "../src/edge/env.ts";
import { PROBLEM_BASE } from "../src/edge/problem.ts";
import { shardKey } from "../src/shards/layout.ts";
import { fromBase64 } from "./workerd/fixtures.ts";
import { activate, fileOf, seedModel } from "./workerd/seed.ts";

const fx = inject("workerdFixtures");
const bucket = (env as unknown as GatewayEnv).MODELS;

beforeAll(async () => {
  // The key table: with no API_KEY the gateway asks D1 whether any key was issued.
  const tenv = env as unknown as { DB: D1Database; TEST_MIGRATIONS: Parameters<typeof applyD1Migrations>[1] };
  await applyD1Migrations(tenv.DB, tenv.TEST_MIGRATIONS);
});
const png = fromBase64(fx.images.gradient);
const URL_BASE = "https://beit-edge.test";

const classify = () =>
  SELF.fetch(`${URL_BASE}/v1/classify`, {
    method: "POST",
    body: png,
    headers: { "content-type": "image/png", "x-deadline-ms": "20000" },
  });

describe("version swap mid-traffic", () => {
  it("answers every request wholly from the version it started on, and switches to the new one", async () => {
    await seedModel(bucket, fx.modelA);
    await seedModel(bucket, fx.modelB, { activate: false });
    expect(fx.expected.modelA.gradient.top).not.toEqual(fx.expected.modelB.gradient.top);
    expect((await classify()).status).toBe(200); // warm A

    const before = Array.from({ length: 4 }, () => classify());
    await new Promise((r) => setTimeout(r, 5));
    await activate(bucket, fx.modelB.version); // swap while those are in flight
    const after = Array.from({ length: 4 }, () => classify());
    const responses = await Promise.all([...before, ...after]);

    const seen = new Set<string>();
    for (const res of responses) {
      expect(res.status, res.status === 200 ? "" : await res.clone().text()).toBe(200);
      const version = res.headers.get("x-model-version")!;
      seen.add(version);
      const key = version === fx.modelA.version ? "modelA" : version === fx.modelB.version ? "modelB" : null;
      expect(key, `unknown version ${version}`).not.toBeNull();
      // A request mixing stages of A and B would match neither model's own answer.
      expect(await res.json()).toEqual(fx.expected[key!].gradient.top);
    }
    expect(seen.has(fx.modelB.version)).toBe(true);
    const later = await classify();
    expect(later.headers.get("x-model-version")).toBe(fx.modelB.version);
    expect(await later.json()).toEqual(fx.expected.modelB.gradient.top);
  });
});

describe("corrupted or missing shards", () => {
  it("answers 503 problem+json with Retry-After, never caches bad bytes, and recovers once the shard is fixed", async () => {
    const corrupted = fileOf(fx.modelC, "stage1-", ".weights");
    const missing = fileOf(fx.modelC, "stage2-", ".onnx");
    await seedModel(bucket, fx.modelC, { corrupt: (f) => f === corrupted, omit: (f) => f === missing });

    for (let attempt = 0; attempt < 2; attempt++) {
      const res = await classify();
      expect(res.status).toBe(503);
      expect(res.headers.get("content-type")).toBe("application/problem+json");
      expect(Number(res.headers.get("retry-after"))).toBeGreaterThan(0);
      const body = (await res.json()) as { type: string; detail: string };
      expect(body.type).toBe(`${PROBLEM_BASE}model-unavailable`);
      expect(body.detail).toMatch(/integrity|missing/);
    }
    // /healthz says so too (it said ok while every classify was a 503).
    const health = await SELF.fetch(`${URL_BASE}/healthz`);
    expect(health.status).toBe(503);
    expect(Number(health.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(((await health.json()) as { code: string }).code).toBe("model-unavailable");

    // Fix the corrupted one only: still unavailable, now because of the missing graph.
    await bucket.put(shardKey(corrupted), fromBase64(fx.modelC.files[corrupted]));
    const still = await classify();
    expect(still.status).toBe(503);
    expect(((await still.json()) as { detail: string }).detail).toContain("missing");

    await bucket.put(shardKey(missing), fromBase64(fx.modelC.files[missing]));
    const ok = await classify();
    expect(ok.status).toBe(200);
    expect(ok.headers.get("x-model-version")).toBe(fx.modelC.version);
    expect(await ok.json()).toEqual(fx.expected.modelC.gradient.top);
    expect((await SELF.fetch(`${URL_BASE}/healthz`)).status).toBe(200);
  });
});

describe("stage isolate memory", () => {
  it("keeps every stage isolate's measured wasm heap within the plan's stage budget", async () => {
    await seedModel(bucket, fx.modelA);
    expect((await classify()).status).toBe(200);
    const status = (await (await SELF.fetch(`${URL_BASE}/v1/status`)).json()) as {
      stageBudgetBytes: number;
      stages: {
        index: number;
        warm: boolean;
        wasmHeapBytes: number;
        peakWasmHeapBytes: number;
        estimatedPeakBytes: number;
        lastLoad: Record<string, number | string> | null;
      }[];
    };
    // The tiny model is planned against a 32 MB stage budget (the full-size one against 128 MB).
    expect(status.stageBudgetBytes).toBe(32_000_000);
    expect(status.stages).toHaveLength(fx.modelA.stages);
    for (const s of status.stages) {
      expect(s.warm).toBe(true);
      expect(s.wasmHeapBytes).toBeGreaterThan(0);
      console.log(
        `stage ${s.index}: wasm heap ${s.wasmHeapBytes} B (peak ${s.peakWasmHeapBytes} B), planned estimate ${s.estimatedPeakBytes} B, budget ${status.stageBudgetBytes} B`,
      );
      expect(s.peakWasmHeapBytes).toBeLessThanOrEqual(status.stageBudgetBytes);
      expect(s.peakWasmHeapBytes).toBeLessThanOrEqual(s.estimatedPeakBytes);
      // The loader grew the heap to the manifest's wasmHeapBytes before the first run, in one step,
      // and the runs fit in it (#19): the heap is exactly the largest reservation this isolate has
      // made (every fixture model has been resident in it by now), not an Emscripten growth step.
      const planned = [fx.modelA, fx.modelB, fx.modelC].map(
        (m) =>
          (JSON.parse(m.manifest) as { stages: { wasmHeapBytes?: number }[] }).stages[s.index]
            ?.wasmHeapBytes ?? 0,
      );
      expect(Math.min(...planned)).toBeGreaterThan(16 * 1024 * 1024);
      expect(s.peakWasmHeapBytes).toBe(Math.max(...planned));
      // The load breakdown measured inside the stage isolate adds up to no more than its total.
      const l = s.lastLoad as Record<string, number>;
      expect(["r2", "cache"]).toContain(s.lastLoad?.origin);
      const parts = l.manifestMs + l.fetchMs + l.verifyMs + l.createMs + l.primeMs;
      for (const k of ["manifestMs", "fetchMs", "verifyMs", "createMs", "primeMs"])
        expect(l[k]).toBeGreaterThanOrEqual(0);
      expect(parts).toBeLessThanOrEqual(l.totalMs);
      // STAGE_PRIME=always (default): a classification's cold start primes every stage too.
      expect(s.lastLoad?.primed).toBe(true);
    }
  });

  it("primes every stage when /healthz warms them (a warm-up before traffic)", async () => {
    await seedModel(bucket, fx.modelB); // not resident in any stage after the test above
    expect((await SELF.fetch(`${URL_BASE}/healthz`)).status).toBe(200);
    const status = (await (await SELF.fetch(`${URL_BASE}/v1/status`)).json()) as {
      stages: { version: string; warm: boolean; lastLoad: { primed: boolean } | null }[];
    };
    for (const s of status.stages) {
      expect(s.version).toBe(fx.modelB.version);
      expect(s.warm).toBe(true);
      expect(s.lastLoad?.primed).toBe(true);
    }
    // The primed sessions answer as before.
    const res = await classify();
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual(fx.expected.modelB.gradient.top);
  });
});
