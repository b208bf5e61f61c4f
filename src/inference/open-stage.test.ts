/**
 * The one stage loader over both model sources: a tiny model opened from its shard directory and
 * from the R2 shard store (in-memory R2 + Cache API) runs to the same logits and labels, reports
 * where its bytes came from (disk, r2, then cache), refuses a stage the manifest does not have,
 * a directory refuses another model version, and a heap reservation (#19) leaves the heap at the
 * reserved size with outputs bit-identical to an unreserved session's.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { localModelSource } from "../../model-shards/local-source.ts";
import { bucketWithModel, buildTinyModel, type TinyModel } from "../../test/helpers/fake-classifier.ts";
import { MemoryCache } from "../../test/helpers/memory-r2.ts";
import { shardKey } from "../shards/layout.ts";
import { readLabels } from "../shards/source.ts";
import { ShardStore } from "../shards/store.ts";
import { AppError } from "../shared/errors.ts";
import { numel } from "../shared/manifest.ts";
import { openStage, openStages } from "./open-stage.ts";
import { wasmHeapBytes } from "./ort.ts";
import { runPipeline } from "./pipeline.ts";

let tiny: TinyModel;
beforeAll(async () => {
  tiny = await buildTinyModel(15);
}, 120_000);
afterAll(() => tiny.cleanup());

const pixels = (n: number) => new Float32Array(n).map((_, i) => Math.sin(i * 0.01));

describe("openStage", () => {
  it("opens the same model from a directory and from R2: equal logits and labels, origins reported", async () => {
    const disk = localModelSource(tiny.out);
    const r2 = new ShardStore((await bucketWithModel(tiny)).asBinding(), {
      cache: new MemoryCache() as unknown as Cache,
    });
    const manifest = await disk.manifest();
    expect((await r2.manifest()).version).toBe(manifest.version);
    expect(await readLabels(r2, manifest)).toEqual(await readLabels(disk, manifest));
    expect(await readLabels(disk, manifest)).toEqual(tiny.labels);

    const fromDisk = await openStages(disk, manifest);
    const fromR2 = await openStages(r2, manifest, { prime: true });
    expect(fromDisk.map((s) => s.origin)).toEqual(manifest.stages.map(() => "disk"));
    expect(fromR2.map((s) => s.origin)).toEqual(manifest.stages.map(() => "r2"));
    expect(fromR2.map((s) => s.spec.index)).toEqual(manifest.stages.map((s) => s.index));
    const x = pixels(numel(manifest.stages[0].inputs[0].shape));
    const a = await runPipeline(fromDisk, x);
    const b = await runPipeline(fromR2, x);
    expect(a.length).toBe(manifest.labels.count);
    expect(Array.from(b)).toEqual(Array.from(a));
    for (const s of [...fromDisk, ...fromR2]) await s.release();

    const again = await openStage(r2, manifest, 0);
    expect(again.origin).toBe("cache");
    await again.release();
  });

  it("refuses a stage the manifest does not have (400) and a directory refuses another version (422)", async () => {
    const disk = localModelSource(tiny.out);
    const manifest = await disk.manifest();
    const err = await openStage(disk, manifest, manifest.stages.length).catch((e) => e);
    expect(err).toBeInstanceOf(AppError);
    expect(err).toMatchObject({ status: 400, code: "bad-stage-request" });
    await expect(disk.manifest("0".repeat(64))).rejects.toMatchObject({
      status: 422,
      code: "model-version-mismatch",
    });
  });

  it("grows the wasm heap to the reservation before the first run, in one step, with identical outputs", async () => {
    const disk = localModelSource(tiny.out);
    const manifest = await disk.manifest();
    const x = pixels(numel(manifest.stages[0].inputs[0].shape));
    const plain = await openStage(disk, manifest, 0, { reserveHeapBytes: 0 });
    const a = await plain.session.run(x, plain.input, plain.output);
    await plain.release();
    // Memory never shrinks, so reserve above whatever this process's heap is now.
    const target = wasmHeapBytes() + 24 * 65536 * 16;
    const reserved = await openStage(disk, manifest, 0, { reserveHeapBytes: target });
    expect(wasmHeapBytes()).toBe(target);
    const b = await reserved.session.run(x, reserved.input, reserved.output);
    const c = await reserved.session.run(x, reserved.input, reserved.output);
    expect(wasmHeapBytes()).toBe(target);
    await reserved.release();
    expect(Array.from(b)).toEqual(Array.from(a));
    expect(Array.from(c)).toEqual(Array.from(a));
  });

  it("a truncated or corrupted weights file in R2 is a 503 with Retry-After, and the stage opens once it is fixed", async () => {
    const disk = localModelSource(tiny.out);
    const manifest = await disk.manifest();
    const spec = manifest.stages[1];
    const ref = spec.weights!;
    const good = (await disk.file(ref)).bytes;
    const flipped = good.slice();
    flipped[flipped.length >> 1] ^= 0xff;
    for (const bad of [good.slice(0, good.length >> 1), flipped]) {
      const r2 = await bucketWithModel(tiny);
      await r2.put(shardKey(ref.file), bad);
      const store = new ShardStore(r2.asBinding(), { cache: new MemoryCache() as unknown as Cache });
      const err = await openStage(store, manifest, 1).catch((e) => e);
      expect(err).toBeInstanceOf(AppError);
      expect(err).toMatchObject({ status: 503, code: "model-unavailable" });
      expect((err as AppError).extra.retryAfter).toBeGreaterThan(0);
      await r2.put(shardKey(ref.file), good);
      const ok = await openStage(store, manifest, 1, { prime: true });
      expect(ok.origin).toBe("r2");
      await ok.release();
    }
  });
});
