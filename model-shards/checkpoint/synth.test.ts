import { spawnSync } from "node:child_process";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AppError } from "../../src/shared/errors.ts";
import { referenceForward } from "../reference.ts";
import { parseBeitConfig } from "./config.ts";
import { loadCheckpoint } from "./index.ts";
import { expectedTensorShapes } from "./layout.ts";
import { Prng, synthCommand, synthConfig, synthesize, syntheticLabel, writeCheckpoint } from "./synth.ts";
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

  it("gives base the real checkpoint's config, keys and parameter count", () => {
    const raw = synthConfig({ size: "base" });
    const config = parseBeitConfig(raw);
    expect(config).toMatchObject({
      hidden_size: 768,
      num_hidden_layers: 12,
      num_attention_heads: 12,
      intermediate_size: 3072,
      image_size: 224,
      patch_size: 16,
      layer_norm_eps: 1e-12,
      layer_scale_init_value: 0.1,
      use_mean_pooling: true,
    });
    expect(raw).toMatchObject({
      model_type: "beit",
      architectures: ["BeitForImageClassification"],
      beit_edge_synthetic: true,
    });
    expect(config.labels).toHaveLength(21841);
    expect(new Set(config.labels).size).toBe(21841);
    expect(config.labels[42]).toBe(syntheticLabel(42));
    expect(config.labels.every((l) => l.startsWith("synthetic-"))).toBe(true);
    const shapes = expectedTensorShapes(config);
    let params = 0;
    for (const [k, shape] of shapes)
      if (!k.endsWith("relative_position_index")) params += shape.reduce((a, b) => a * b, 1);
    expect(shapes.size).toBe(3 + 12 * 19 + 4);
    // 12 x 7,097,424 per layer + 591,360 embeddings + 1,536 pooler + 16,795,729 classifier
    expect(params).toBe(102_557_713);
    expect(
      shapes.get(
        "beit.encoder.layer.11.attention.attention.relative_position_bias.relative_position_bias_table",
      ),
    ).toEqual([732, 12]);
    expect(
      shapes.get("beit.encoder.layer.0.attention.attention.relative_position_bias.relative_position_index"),
    ).toEqual([197, 197]);
    expect(shapes.get("classifier.weight")).toEqual([21841, 768]);
  });
});

describe("synthetic weights", () => {
  it("give spread, input-dependent logits (float64 reference forward, tiny, 8 inputs)", () => {
    const ck = synthesize({ size: "tiny", seed: 0 });
    const config = parseBeitConfig(ck.config);
    const rng = new Prng(99);
    const tops = new Set<number>();
    for (let n = 0; n < 8; n++) {
      const px = new Float64Array(3 * 224 * 224);
      if (n % 2 === 0) for (let i = 0; i < px.length; i++) px[i] = rng.next() * 2 - 1;
      else {
        // Smooth colour gradients, closer to photographs than noise.
        const [fx, fy, ph] = [rng.next() * 0.1, rng.next() * 0.1, rng.next() * 6];
        for (let c = 0; c < 3; c++)
          for (let y = 0; y < 224; y++)
            for (let x = 0; x < 224; x++)
              px[(c * 224 + y) * 224 + x] = Math.sin(fx * x + fy * y * (c + 1) + ph);
      }
      const logits = referenceForward(config, ck.tensors, px);
      const mean = logits.reduce((a, b) => a + b, 0) / logits.length;
      const std = Math.sqrt(logits.reduce((a, b) => a + (b - mean) ** 2, 0) / logits.length);
      expect(std).toBeGreaterThan(2);
      tops.add(logits.indexOf(Math.max(...logits)));
    }
    expect(tops.size).toBeGreaterThanOrEqual(4);
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

describe("synthCommand", () => {
  it("writes the requested format and says what it wrote", async () => {
    const out = join(root, "cmd");
    const lines: string[] = [];
    const write = process.stdout.write;
    process.stdout.write = ((s: string) => lines.push(String(s)) > 0) as typeof process.stdout.write;
    try {
      await synthCommand(["--size", "tiny", "--out", out, "--seed", "9", "--format=safetensors"]);
    } finally {
      process.stdout.write = write;
    }
    expect(lines.join("")).toMatch(
      /synthetic tiny checkpoint \(synth init, seed 9, .* 16 labels\) written to .*: model\.safetensors/,
    );
    expect((await readdir(out)).sort()).toEqual([
      "config.json",
      "model.safetensors",
      "preprocessor_config.json",
    ]);
    const ck = await loadCheckpoint(out);
    expectSameTensors(ck.tensors, synthesize({ size: "tiny", seed: 9 }).tensors);
  });

  it.each([
    [["--size", "huge", "--out", "x"], "--size must be tiny or base"],
    [["--size", "tiny"], "--out DIR is required"],
    [["--size", "tiny", "--out", "x", "--seed", "-1"], "--seed must be an integer"],
    [["--size", "tiny", "--out", "x", "--format", "onnx"], "--format must be bin, safetensors or both"],
    [["--size", "tiny", "--out", "x", "--bogus"], 'unexpected argument "--bogus"'],
    [["--size"], "--size needs a value"],
    [
      ["--size", "tiny", "--out", "x", "--init", "trained"],
      "--init must be one of synth, torch, outlier, massive",
    ],
    [
      ["--size", "tiny", "--out", "x", "--init", "outlier", "--strength", "0"],
      "--strength must be a number in (0, 10]",
    ],
    [
      ["--size", "tiny", "--out", "x", "--strength", "2"],
      "--strength applies to --init outlier or massive only",
    ],
  ])("refuses %j with usage", async (argv, message) => {
    const err = await synthCommand(argv).catch((e) => e);
    expect(err).toBeInstanceOf(AppError);
    expect(err.code).toBe("invalid-arguments");
    expect(err.detail).toContain(message);
    expect(err.detail).toContain("Usage: npm run model -- synth");
  });
});

const hasPython = spawnSync("python3", ["-c", "import pickle, zipfile"]).status === 0;

describe.skipIf(!hasPython)("torch.save compatibility (checked with Python's own pickle and zipfile)", () => {
  it("produces an archive Python's unpickler reads as an OrderedDict of _rebuild_tensor_v2 calls", async () => {
    const dir = join(root, "py");
    await writeCheckpoint(dir, synthesize({ size: "tiny", seed: 1 }), "bin");
    // Stand-ins for torch: record what the pickle asks for, run nothing.
    const script = `
import collections, json, pickle, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
assert z.testzip() is None
raw = open(sys.argv[1], "rb").read()
names = z.namelist()
for info in z.infolist():
    off = info.header_offset
    n = int.from_bytes(raw[off + 26:off + 28], "little"); e = int.from_bytes(raw[off + 28:off + 30], "little")
    assert (off + 30 + n + e) % 64 == 0, info.filename
class U(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"): return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda storage, offset, size, stride, grad, hooks: {"storage": storage, "offset": offset, "size": list(size), "stride": list(stride)}
        if module == "torch": return name
        raise pickle.UnpicklingError(module + "." + name)
    def persistent_load(self, pid): return list(pid)
sd = U(z.open("archive/data.pkl")).load()
first = next(iter(sd.items()))
print(json.dumps({"names": names[:2] + names[-1:], "type": type(sd).__name__, "count": len(sd), "first": first,
  "version": z.read("archive/version").decode(), "byteorder": z.read("archive/byteorder").decode()}))
`;
    const r = spawnSync("python3", ["-c", script, join(dir, "pytorch_model.bin")], { encoding: "utf8" });
    expect(r.stderr).toBe("");
    const out = JSON.parse(r.stdout);
    expect(out.names).toEqual(["archive/data.pkl", "archive/byteorder", "archive/version"]);
    expect(out.type).toBe("OrderedDict");
    expect(out.count).toBe(83);
    expect(out.first).toEqual([
      "beit.embeddings.cls_token",
      {
        storage: ["storage", "FloatStorage", "0", "cpu", 64],
        offset: 0,
        size: [1, 1, 64],
        stride: [64, 64, 1],
      },
    ]);
    expect(out.version).toBe("3\n");
    expect(out.byteorder).toBe("little");
  });
});

describe("torch init family", () => {
  it("follows PyTorch's defaults: uniform +-1/sqrt(fan_in), LayerNorm 1/0, layer scale from config, zero CLS and bias tables", () => {
    const ck = synthesize({ size: "tiny", seed: 2, init: "torch" });
    const config = parseBeitConfig(ck.config);
    expect(ck.config.beit_edge_init).toBe("torch");
    const t = (k: string) => ck.tensors.get(k)?.data as Float32Array;
    const l = "beit.encoder.layer.1";
    expect(t(`${l}.layernorm_before.weight`).every((v) => v === 1)).toBe(true);
    expect(t(`${l}.layernorm_after.bias`).every((v) => v === 0)).toBe(true);
    expect(t(`${l}.lambda_2`).every((v) => Math.abs(v - config.layer_scale_init_value) < 1e-7)).toBe(true);
    expect(t("beit.embeddings.cls_token").every((v) => v === 0)).toBe(true);
    expect(
      t(`${l}.attention.attention.relative_position_bias.relative_position_bias_table`).every((v) => v === 0),
    ).toBe(true);
    const bounds: [string, number][] = [
      ["beit.embeddings.patch_embeddings.projection.weight", 1 / Math.sqrt(3 * 16 * 16)],
      [`${l}.attention.attention.query.weight`, 1 / Math.sqrt(64)],
      [`${l}.output.dense.weight`, 1 / Math.sqrt(128)],
      [`${l}.output.dense.bias`, 1 / Math.sqrt(128)],
      ["classifier.weight", 1 / Math.sqrt(64)],
    ];
    for (const [k, bound] of bounds) {
      const d = t(k);
      const max = d.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      expect(max).toBeLessThanOrEqual(bound);
      expect(max).toBeGreaterThan(0.9 * bound);
      // Uniform on [-b, b] has variance b^2 / 3.
      const variance = d.reduce((s, v) => s + v * v, 0) / d.length;
      expect(variance / ((bound * bound) / 3)).toBeGreaterThan(0.8);
      expect(variance / ((bound * bound) / 3)).toBeLessThan(1.2);
    }
  });
});

describe("outlier and massive families", () => {
  const ln = (ck: ReturnType<typeof synthesize>, key: string) => ck.tensors.get(key)?.data as Float32Array;
  const gains = (ck: ReturnType<typeof synthesize>) =>
    Array.from(ln(ck, "beit.encoder.layer.2.layernorm_before.weight"), Math.abs).sort((a, b) => b - a);

  it("outlier: the synth weights plus a few LayerNorm channels 15-40x, residual offsets and hot MLP channels", () => {
    const base = synthesize({ size: "tiny", seed: 4 });
    const ck = synthesize({ size: "tiny", seed: 4, init: "outlier" });
    expect(ck.config.beit_edge_init).toBe("outlier");
    expect(ck.config.beit_edge_strength).toBe(1);
    const g = gains(ck);
    const median = g[g.length >> 1];
    // max(2, 64/128) residual channels + max(2, 64/96) others: 4 channels far above the rest.
    expect(g[3] / median).toBeGreaterThan(10);
    expect(g[4] / median).toBeLessThan(2);
    const offsets = Array.from(ln(ck, "beit.embeddings.patch_embeddings.projection.bias"), Math.abs);
    expect(offsets.filter((v) => v > 7).length).toBe(2);
    // Untouched tensors are the synth family's, bit for bit.
    for (const key of ["beit.encoder.layer.0.attention.output.dense.weight", "beit.encoder.layer.3.lambda_1"])
      expect(ln(ck, key)).toEqual(ln(base, key));
    // Strength 2 doubles the departures: the gains roughly double.
    const g2 = gains(synthesize({ size: "tiny", seed: 4, init: "outlier", strength: 2 }));
    expect(g2[0] / g[0]).toBeGreaterThan(1.5);
  });

  it("outlier: the model still gives finite logits that depend on the input (float64 reference)", () => {
    const ck = synthesize({ size: "tiny", seed: 4, init: "outlier" });
    const config = parseBeitConfig(ck.config);
    const a = referenceForward(
      config,
      ck.tensors,
      Float64Array.from({ length: 3 * 224 * 224 }, (_, i) => Math.sin(i)),
    );
    const b = referenceForward(
      config,
      ck.tensors,
      Float64Array.from({ length: 3 * 224 * 224 }, (_, i) => Math.cos(i / 7)),
    );
    expect(a.every(Number.isFinite)).toBe(true);
    expect(a.some((v, i) => Math.abs(v - b[i]) > 1e-3)).toBe(true);
  });

  it("massive: a CLS token with two huge channels, larger layer scale and classifier", () => {
    const base = synthesize({ size: "tiny", seed: 5 });
    const ck = synthesize({ size: "tiny", seed: 5, init: "massive" });
    const cls = Array.from(ln(ck, "beit.embeddings.cls_token"), Math.abs).sort((x, y) => y - x);
    expect(cls[1]).toBeGreaterThan(35);
    expect(cls[2]).toBeLessThan(5);
    const lam = ln(ck, "beit.encoder.layer.1.lambda_1");
    expect(Math.min(...lam)).toBeGreaterThanOrEqual(0.5);
    expect(Math.max(...lam)).toBeLessThan(1.5);
    const c = ln(ck, "classifier.weight");
    expect(c[7] / ln(base, "classifier.weight")[7]).toBeCloseTo(6, 4);
  });

  it("refuses a strength outside (0, 10] and an unknown family", () => {
    expect(() => synthesize({ size: "tiny", init: "outlier", strength: 0 })).toThrow(
      /strength must be a number/,
    );
    expect(() => synthesize({ size: "tiny", init: "bogus" as never })).toThrow(/unknown init "bogus"/);
  });
});
