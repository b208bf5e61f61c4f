/**
 * The classification core without a runtime or HTTP: createClassifier over an in-memory R2 holding
 * a published tiny model, a fake decoder and fake stage Workers (service-binding fetchers that
 * speak the stage protocol). What a queue consumer or a proxy relies on: predictions per image in
 * input order, the model identity, per-stage timings, one version pinned for the whole call, and
 * AppErrors with the statuses /v1/classify answers with (503 retryable with Retry-After, 504, 4xx).
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildShards } from "../../model-shards/build.ts";
import { loadCheckpoint } from "../../model-shards/checkpoint/index.ts";
import { synthesize, writeCheckpoint } from "../../model-shards/checkpoint/synth.ts";
import { MemoryR2 } from "../../test/helpers/memory-r2.ts";
import type { ClassifierEnv } from "../edge/env.ts";
import { Deadline } from "../edge/limits.ts";
import { HEADER_STAGE, HEADER_VERSION, type WarmReport } from "../edge/stage-protocol.ts";
import { publishModel, r2Target } from "../shards/publish.ts";
import { AppError } from "../shared/errors.ts";
import type { Manifest } from "../shared/manifest.ts";
import { createClassifier, type PixelDecoder } from "./index.ts";

let dir: string;
let manifest: Manifest;
let labels: string[];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "beit-classify-core-"));
  await writeCheckpoint(join(dir, "ck"), synthesize({ size: "tiny", seed: 11 }), "safetensors");
  // A small stage budget, so the tiny model has several stages.
  manifest = await buildShards(await loadCheckpoint(join(dir, "ck")), {
    outDir: join(dir, "out"),
    precision: "int8",
    stageBudgetBytes: 32_000_000,
  });
  labels = JSON.parse(await readFile(join(dir, "out", manifest.labels.file), "utf8")) as string[];
}, 120_000);
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function bucketWithModel(): Promise<MemoryR2> {
  const r2 = new MemoryR2();
  await publishModel(
    manifest,
    async (f) => new Uint8Array(await readFile(join(dir, "out", f))),
    r2Target(r2.asBinding()),
  );
  return r2;
}

const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/**
 * Fake stage Workers: each passes the first input value on; the last one answers logits that peak
 * at label `value` (so the top label tells which image went through).
 */
function fakeStages(opts: { failStage?: number; delayMs?: number; seen?: string[] } = {}) {
  return Object.fromEntries(
    manifest.stages.map((s, i) => [
      `STAGE_${i}`,
      {
        async fetch(req: Request): Promise<Response> {
          const path = new URL(req.url).pathname;
          opts.seen?.push(`${path} ${req.headers.get(HEADER_STAGE)} ${req.headers.get(HEADER_VERSION)}`);
          if (opts.delayMs) await new Promise((r) => setTimeout(r, opts.delayMs));
          if (path === "/warm") {
            const r: WarmReport = {
              stage: i,
              version: manifest.version,
              loadMs: 3,
              origin: "r2",
              wasmHeapBytes: 0,
            };
            return Response.json(r);
          }
          if (path === "/status")
            return Response.json({
              stage: i,
              version: manifest.version,
              warm: true,
              wasmHeapBytes: 1,
              jsHeapBytes: null,
              peakWasmHeapBytes: 1,
            });
          if (i === opts.failStage)
            return Response.json(
              {
                type: "x",
                title: "Service Unavailable",
                status: 503,
                detail: "stage down",
                code: "model-unavailable",
              },
              { status: 503, headers: { "content-type": "application/problem+json" } },
            );
          const x = new Float32Array(await req.arrayBuffer());
          const out = new Float32Array(size(s.outputs[0].shape));
          if (i === manifest.stages.length - 1) {
            out.fill(-10);
            out[x[0]] = 10;
            out[(x[0] + 1) % out.length] = 5;
          } else out.fill(x[0]);
          return new Response(new Uint8Array(out.buffer));
        },
      } as unknown as Fetcher,
    ]),
  );
}

/** Decodes to pixels filled with the image's first byte; reports a fake size and format. */
const fakeDecoder: PixelDecoder = async (bytes, spec) => {
  if (bytes[0] === 255) throw new AppError("undecodable-image", 400, "not an image");
  const pixels = new Float32Array(3 * spec.size.height * spec.size.width).fill(bytes[0]);
  return { pixels, width: 10 + bytes[0], height: 20, format: "png" };
};

async function envWith(stages: Record<string, Fetcher>, vars: Partial<ClassifierEnv> = {}) {
  return {
    MODELS: (await bucketWithModel()).asBinding(),
    POINTER_TTL_S: "0",
    ...stages,
    ...vars,
  } as ClassifierEnv;
}

async function statusOf(p: Promise<unknown>): Promise<[string, number, unknown]> {
  try {
    await p;
  } catch (e) {
    if (e instanceof AppError) return [e.code, e.status, e.extra.retryAfter];
    throw e;
  }
  throw new Error("expected an AppError");
}

describe("createClassifier", () => {
  it("classifies a batch in input order with the model identity, per-stage timings and the warm-up report", async () => {
    const seen: string[] = [];
    const c = createClassifier(await envWith(fakeStages({ seen })), { decode: fakeDecoder });
    const out = await c.classify([new Uint8Array([3]), new Uint8Array([7])], { topK: 2 });
    expect(out.predictions.map((p) => p.map((x) => x.label))).toEqual([
      [labels[3], labels[4]],
      [labels[7], labels[8]],
    ]);
    for (const p of out.predictions) expect(p[0].score).toBeGreaterThan(p[1].score);
    expect(out.images).toEqual([
      { width: 13, height: 20, format: "png" },
      { width: 17, height: 20, format: "png" },
    ]);
    expect(out.model).toEqual({
      id: manifest.model.id,
      version: manifest.version,
      synthetic: true,
      precision: manifest.precision,
    });
    expect(out.timings.stageMs).toHaveLength(manifest.stages.length);
    expect(out.timings.warm).toBe(manifest.stages.map((_, i) => `${i}:r2:3ms`).join(" "));
    // Every stage call carries the one version; each stage is warmed once, run once per image.
    expect(seen.every((s) => s.endsWith(manifest.version))).toBe(true);
    expect(seen.filter((s) => s.startsWith("/warm"))).toHaveLength(manifest.stages.length);
    expect(seen.filter((s) => s.startsWith("/run"))).toHaveLength(2 * manifest.stages.length);

    // The isolate already warmed this version: no second warm-up, no warm report.
    const again = await c.classify([new Uint8Array([1])]);
    expect(again.timings.warm).toBeUndefined();
    expect(again.predictions[0]).toHaveLength(Math.min(5, labels.length));
    expect((await c.model()).labels).toEqual(labels);
    expect((await c.status()).map((s) => s.reachable)).toEqual(manifest.stages.map(() => true));
  });

  it("refuses bad top_k, empty and oversized batches and undecodable images with 4xx", async () => {
    const c = createClassifier(await envWith(fakeStages(), { MAX_BATCH: "2" }), { decode: fakeDecoder });
    const one = [new Uint8Array([1])];
    for (const topK of [0, labels.length + 1, 2.5])
      expect(await statusOf(c.classify(one, { topK }))).toEqual(["invalid-parameter", 422, undefined]);
    expect(await statusOf(c.classify([]))).toEqual(["no-image", 400, undefined]);
    expect(await statusOf(c.classify([one[0], one[0], one[0]]))).toEqual(["too-many-images", 422, undefined]);
    expect(await statusOf(c.classify([new Uint8Array([255])]))).toEqual([
      "undecodable-image",
      400,
      undefined,
    ]);
  });

  it("answers 503 with Retry-After when a stage fails or is not bound, and 504 past the deadline", async () => {
    const img = [new Uint8Array([2])];
    const failing = createClassifier(await envWith(fakeStages({ failStage: 1 })), { decode: fakeDecoder });
    expect((await statusOf(failing.classify(img)))[1]).toBe(503);

    const partial = fakeStages();
    delete partial[`STAGE_${manifest.stages.length - 1}`];
    const unbound = createClassifier(await envWith(partial), { decode: fakeDecoder });
    expect(await statusOf(unbound.classify(img))).toEqual(["model-unavailable", 503, 30]);

    const slow = createClassifier(await envWith(fakeStages({ delayMs: 200 })), { decode: fakeDecoder });
    expect(await statusOf(slow.classify(img, { deadline: new Deadline(50) }))).toEqual([
      "deadline-exceeded",
      504,
      undefined,
    ]);
  });

  it("answers 503 with Retry-After when no model is published", async () => {
    const c = createClassifier({ MODELS: new MemoryR2().asBinding(), ...fakeStages() } as ClassifierEnv, {
      decode: fakeDecoder,
    });
    expect(await statusOf(c.classify([new Uint8Array([1])]))).toEqual(["model-unavailable", 503, 5]);
  });
});
