import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseBeitConfig } from "./config.ts";
import { loadCheckpoint } from "./index.ts";
import { expectedTensorShapes } from "./layout.ts";
import { synthesize, syntheticLabel, writeCheckpoint } from "./synth.ts";
import type { StateDict } from "./types.ts";

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "beit-synth-"));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

function expectSameTensors(a: StateDict, b: StateDict) {
  expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
  for (const [k, t] of a) {
    const u = b.get(k);
    expect(u, k).toBeDefined();
    expect(u?.shape, k).toEqual(t.shape);
    expect(u?.dtype, k).toBe(t.dtype);
    // Bit-exact: compare the raw bytes.
    const x = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    const y = new Uint8Array(u!.data.buffer, u!.data.byteOffset, u!.data.byteLength);
    expect(Buffer.compare(Buffer.from(x), Buffer.from(y)), k).toBe(0);
  }
}

describe("synthesize", () => {
  it("makes tiny with exactly the BeitForImageClassification keys and shapes", () => {
    const ck = synthesize({ size: "tiny", seed: 3 });
    const config = parseBeitConfig(ck.config);
    expect(config.hidden_size).toBe(64);
    expect(config.labels).toHaveLength(16);
    const expected = expectedTensorShapes(config);
    expect([...ck.tensors.keys()]).toEqual([...expected.keys()]);
    for (const [k, shape] of expected) expect(ck.tensors.get(k)?.shape, k).toEqual(shape);
    expect(ck.tensors.has("beit.encoder.layer.0.attention.attention.key.bias")).toBe(false);
    expect(ck.tensors.has("beit.embeddings.mask_token")).toBe(false);
    expect(ck.config.beit_edge_synthetic).toBe(true);
  });

  it("is deterministic in the seed", () => {
    const a = synthesize({ size: "tiny", seed: 7 });
    const b = synthesize({ size: "tiny", seed: 7 });
    const c = synthesize({ size: "tiny", seed: 8 });
    expectSameTensors(a.tensors, b.tensors);
    const k = "classifier.weight";
    expect(a.tensors.get(k)?.data).not.toEqual(c.tensors.get(k)?.data);
  });

  it("gives base the real checkpoint's config and shapes without allocating it twice", () => {
    // Only the config is checked here: the weights are exercised in bench/ (410 MB).
    const ck = synthesize({ size: "tiny", numLabels: 21841 });
    expect(parseBeitConfig(ck.config).labels[42]).toBe(syntheticLabel(42));
    expect(new Set(parseBeitConfig(ck.config).labels).size).toBe(21841);
  });
});

describe("writeCheckpoint + loadCheckpoint", () => {
  it("round-trips tiny bit-exactly through pytorch_model.bin and model.safetensors", async () => {
    const ck = synthesize({ size: "tiny", seed: 1 });
    const binDir = join(root, "bin");
    const stDir = join(root, "st");
    await writeCheckpoint(binDir, ck, "bin");
    await writeCheckpoint(stDir, ck, "safetensors");
    const fromBin = await loadCheckpoint(binDir);
    const fromSt = await loadCheckpoint(stDir);
    expectSameTensors(ck.tensors, fromBin.tensors);
    expectSameTensors(fromBin.tensors, fromSt.tensors);
    expect(fromBin.synthetic).toBe(true);
    expect(fromBin.revision).toBe("local");
    expect(fromBin.id).toBe("bin");
    expect(fromBin.config).toEqual(fromSt.config);
    expect(fromBin.preprocess).toEqual({
      do_resize: true,
      size: { height: 224, width: 224 },
      resample: 2,
      do_center_crop: false,
      crop_size: { height: 224, width: 224 },
      do_rescale: true,
      rescale_factor: 1 / 255,
      do_normalize: true,
      image_mean: [0.5, 0.5, 0.5],
      image_std: [0.5, 0.5, 0.5],
      do_reduce_labels: false,
    });
    expect(fromBin.files.map((f) => f.name)).toEqual([
      "config.json",
      "preprocessor_config.json",
      "pytorch_model.bin",
    ]);
    for (const f of fromBin.files) expect(f.sha256).toMatch(/^[0-9a-f]{64}$/);
  });

  it("prefers model.safetensors when both formats are present", async () => {
    const dir = join(root, "both");
    await writeCheckpoint(dir, synthesize({ size: "tiny", seed: 2 }), "both");
    const ck = await loadCheckpoint(dir);
    expect(ck.files.map((f) => f.name)).toContain("model.safetensors");
    expect(ck.files.map((f) => f.name)).not.toContain("pytorch_model.bin");
  });
});
