/**
 * The classification core without a runtime or HTTP: createClassifier over an in-memory R2 holding
 * a published tiny model, a fake decoder and fake stage Workers (service-binding fetchers that
 * speak the stage protocol). What a queue consumer or a proxy relies on: predictions per image in
 * input order, the model identity, per-stage timings, one version pinned for the whole call, and
 * AppErrors with the statuses /v1/classify answers with (503 retryable with Retry-After, 504, 4xx).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  buildTinyModel,
  fakeDecoder,
  fakeEnv,
  fakeStages,
  type TinyModel,
} from "../../test/helpers/fake-classifier.ts";
import { MemoryR2 } from "../../test/helpers/memory-r2.ts";
import type { ClassifierEnv } from "../edge/env.ts";
import { Deadline } from "../edge/limits.ts";
import { AppError } from "../shared/errors.ts";
import type { Manifest } from "../shared/manifest.ts";
import { createClassifier } from "./index.ts";

let tiny: TinyModel;
let manifest: Manifest;
let labels: string[];

beforeAll(async () => {
  tiny = await buildTinyModel(11);
  ({ manifest, labels } = tiny);
}, 120_000);
afterAll(() => tiny.cleanup());

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
    const c = createClassifier(await fakeEnv(tiny, fakeStages(manifest, { seen })), { decode: fakeDecoder });
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
    const c = createClassifier(await fakeEnv(tiny, fakeStages(manifest), { MAX_BATCH: "2" }), {
      decode: fakeDecoder,
    });
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
    const failing = createClassifier(await fakeEnv(tiny, fakeStages(manifest, { failStage: 1 })), {
      decode: fakeDecoder,
    });
    expect((await statusOf(failing.classify(img)))[1]).toBe(503);

    const partial = fakeStages(manifest);
    delete partial[`STAGE_${manifest.stages.length - 1}`];
    const unbound = createClassifier(await fakeEnv(tiny, partial), { decode: fakeDecoder });
    expect(await statusOf(unbound.classify(img))).toEqual(["model-unavailable", 503, 30]);

    const slow = createClassifier(await fakeEnv(tiny, fakeStages(manifest, { delayMs: 200 })), {
      decode: fakeDecoder,
    });
    expect(await statusOf(slow.classify(img, { deadline: new Deadline(50) }))).toEqual([
      "deadline-exceeded",
      504,
      undefined,
    ]);
  });

  it("runs concurrent classifications one pipeline at a time, in arrival order, and reports the wait", async () => {
    // Stage calls of concurrent requests must not interleave: on one thread that only made every
    // request wait for all the others (and starved workerd's sockets).
    const stages = fakeStages(manifest, { delayMs: 5 });
    const runs: string[] = [];
    for (const [name, f] of Object.entries(stages))
      stages[name] = {
        async fetch(req: Request) {
          if (new URL(req.url).pathname === "/run")
            runs.push(
              `${req.headers.get("x-stage-index")}:${new Float32Array(await req.clone().arrayBuffer())[0]}`,
            );
          return f.fetch(req);
        },
      } as unknown as Fetcher;
    const c = createClassifier(await fakeEnv(tiny, stages), { decode: fakeDecoder });
    await c.classify([new Uint8Array([0])]); // warm-up, not counted
    runs.length = 0;
    const done: number[] = [];
    const outs = await Promise.all(
      [1, 2, 3, 4].map((v) =>
        c.classify([new Uint8Array([v])]).then((o) => {
          done.push(v);
          return o;
        }),
      ),
    );
    const n = manifest.stages.length;
    // Each request's image value flows through the stages (stage 0 gets the pixels, later stages
    // the previous output, which the fake fills with the same value).
    expect(runs).toEqual([1, 2, 3, 4].flatMap((v) => Array.from({ length: n }, (_, i) => `${i}:${v}`)));
    expect(done).toEqual([1, 2, 3, 4]);
    expect(outs.map((o) => o.predictions[0][0].label)).toEqual([1, 2, 3, 4].map((v) => labels[v]));
    // The last one waited for the three before it, each ~n stage calls of 5 ms.
    expect(outs[3].timings.queueMs).toBeGreaterThanOrEqual(3 * n * 4);
    expect(outs[0].timings.queueMs).toBeLessThan(outs[3].timings.queueMs);
  });

  it("answers 504 without calling a stage when a request's deadline passes while it waits its turn", async () => {
    const seen: string[] = [];
    const c = createClassifier(await fakeEnv(tiny, fakeStages(manifest, { seen, delayMs: 40 })), {
      decode: fakeDecoder,
    });
    await c.classify([new Uint8Array([0])]);
    seen.length = 0;
    const first = c.classify([new Uint8Array([1])]);
    const late = c.classify([new Uint8Array([2])], { deadline: new Deadline(60) });
    expect(await statusOf(late)).toEqual(["deadline-exceeded", 504, undefined]);
    await first;
    await new Promise((r) => setTimeout(r, 20));
    // Only the first request's stage calls happened.
    expect(seen.filter((s) => s.startsWith("/run"))).toHaveLength(manifest.stages.length);
  });

  it("answers 503 with Retry-After when no model is published", async () => {
    const c = createClassifier(
      { MODELS: new MemoryR2().asBinding(), ...fakeStages(manifest) } as ClassifierEnv,
      {
        decode: fakeDecoder,
      },
    );
    expect(await statusOf(c.classify([new Uint8Array([1])]))).toEqual(["model-unavailable", 503, 5]);
  });
});
