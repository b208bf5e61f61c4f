import { mkdtemp, open, readFile, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AppError } from "../../src/shared/errors.ts";
import { floatToHalf, halfToFloat } from "./dtypes.ts";
import { loadCheckpoint } from "./index.ts";
import { PickleWriter } from "./pickle.ts";
import { decodePytorchBin, readPytorchBin, writePytorchBin } from "./pytorch.ts";
import { decodeSafetensors, readSafetensors, readSafetensorsIndex, writeSafetensors } from "./safetensors.ts";
import { synthesize, writeCheckpoint } from "./synth.ts";
import type { StateDict } from "./types.ts";
import { ZipWriter } from "./zip.ts";

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "beit-readers-"));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Runs `fn`, expects an AppError with `code`, returns it. */
async function appError(fn: () => unknown, code: string): Promise<AppError> {
  let caught: unknown;
  try {
    await fn();
  } catch (e) {
    caught = e;
  }
  expect(caught, `expected AppError ${code}`).toBeInstanceOf(AppError);
  expect((caught as AppError).code).toBe(code);
  return caught as AppError;
}

/** A safetensors file from a raw header object and data bytes. */
function rawSafetensors(header: unknown, data: Uint8Array): Uint8Array {
  const json = Buffer.from(JSON.stringify(header));
  const out = Buffer.alloc(8 + json.length + data.length);
  out.writeBigUInt64LE(BigInt(json.length));
  json.copy(out, 8);
  out.set(data, 8 + json.length);
  return out;
}

/** A zip with the given entries, written with the torch-style writer. */
async function zipOf(entries: [string, Uint8Array][]): Promise<Buffer> {
  const path = join(root, `zip-${Math.random().toString(36).slice(2)}`);
  const fh = await open(path, "w");
  const z = new ZipWriter(fh);
  for (const [n, d] of entries) await z.add(n, d);
  await z.finish();
  await fh.close();
  return readFile(path);
}

function f32bytes(values: number[]): Uint8Array {
  return new Uint8Array(new Float32Array(values).buffer);
}

describe("safetensors", () => {
  it("widens F16 and BF16 to float32 exactly and round-trips I64", async () => {
    const halfs = [0, -0, 1, -2.5, 65504, 2 ** -24, 2 ** -14, 0.333251953125];
    const bf = [1, -3.140625, 2 ** 100, 2 ** -126, 0];
    const idx = new BigInt64Array([0n, -1n, 9007199254740993n]);
    const tensors: StateDict = new Map([
      ["h", { dtype: "F16", shape: [2, 4], data: new Float32Array(halfs) }],
      ["b", { dtype: "BF16", shape: [5], data: new Float32Array(bf) }],
      ["i", { dtype: "I64", shape: [3], data: idx }],
      ["s", { dtype: "F32", shape: [], data: new Float32Array([7.25]) }],
    ]);
    const path = join(root, "dtypes.safetensors");
    await writeSafetensors(path, tensors);
    const back = await readSafetensors(path);
    expect(back.get("h")?.dtype).toBe("F16");
    expect(Array.from(back.get("h")?.data as Float32Array)).toEqual(halfs);
    expect(Object.is((back.get("h")!.data as Float32Array)[1], -0)).toBe(true);
    expect(Array.from(back.get("b")?.data as Float32Array)).toEqual(Array.from(new Float32Array(bf)));
    expect(back.get("i")?.data).toEqual(idx);
    expect(back.get("s")?.shape).toEqual([]);
    // Bytes on disk are the 16-bit encodings (header says F16 / BF16).
    const raw = await readFile(path);
    const headerLen = Number(raw.readBigUInt64LE(0));
    const header = JSON.parse(raw.subarray(8, 8 + headerLen).toString());
    expect(header.h).toEqual({ dtype: "F16", shape: [2, 4], data_offsets: [0, 16] });
    expect(header.b.data_offsets).toEqual([16, 26]);
    expect(headerLen % 8).toBe(0);
  });

  it("rounds float32 to half to nearest even, and half decodes to the float64 value", () => {
    expect(floatToHalf(1 + 2 ** -11)).toBe(0x3c00); // tie -> even
    expect(floatToHalf(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie -> even (up)
    expect(floatToHalf(70000)).toBe(0x7c00); // overflow -> inf
    expect(floatToHalf(2 ** -25)).toBe(0); // tie at the smallest subnormal -> 0
    for (let h = 0; h < 0x7c00; h += 37) expect(floatToHalf(halfToFloat(h))).toBe(h);
  });

  it("refuses a truncated file, naming the tensor that runs past the end", async () => {
    const path = join(root, "trunc.safetensors");
    await writeSafetensors(path, synthesize({ size: "tiny" }).tensors);
    const full = await readFile(path);
    await writeFile(path, full.subarray(0, full.length - 1000));
    const e = await appError(() => readSafetensors(path), "invalid-safetensors");
    expect(e.detail).toContain("trunc.safetensors");
    expect(e.detail).toMatch(
      /classifier\.weight ends at data byte \d+ but the data section has only \d+ bytes/,
    );
    await writeFile(path, full.subarray(0, 5));
    expect((await appError(() => readSafetensors(path), "invalid-safetensors")).detail).toContain(
      "fewer than the 8-byte",
    );
    await writeFile(path, full.subarray(0, 100));
    expect((await appError(() => readSafetensors(path), "invalid-safetensors")).detail).toContain(
      "truncated",
    );
  });

  it("refuses offsets out of range, overlaps, gaps, and wrong byte spans", async () => {
    const data = f32bytes([1, 2, 3, 4]);
    const cases: [unknown, RegExp][] = [
      [
        {
          a: { dtype: "F32", shape: [4], data_offsets: [0, 16] },
          b: { dtype: "F32", shape: [1], data_offsets: [16, 20] },
        },
        /b ends at data byte 20 .* only 16 bytes .*out of range/,
      ],
      [
        {
          a: { dtype: "F32", shape: [3], data_offsets: [0, 12] },
          b: { dtype: "F32", shape: [2], data_offsets: [8, 16] },
        },
        /b overlaps tensor a/,
      ],
      [
        {
          a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
          b: { dtype: "F32", shape: [1], data_offsets: [12, 16] },
        },
        /gap of 4 bytes before tensor b/,
      ],
      [{ a: { dtype: "F32", shape: [3], data_offsets: [0, 16] } }, /needs 12 bytes but data_offsets span 16/],
      [{ a: { dtype: "F32", shape: [2], data_offsets: [0, 8] } }, /8 bytes after the last tensor/],
      [{ a: { dtype: "F32", shape: [4], data_offsets: [16, 0] } }, /end before begin/],
      [{ a: { dtype: "F32", shape: [-4], data_offsets: [0, 16] } }, /not a list of non-negative integers/],
    ];
    for (const [header, re] of cases) {
      const e = await appError(
        () => decodeSafetensors(rawSafetensors(header, data), "x.safetensors"),
        "invalid-safetensors",
      );
      expect(e.detail).toMatch(re);
    }
  });

  it("refuses an unknown dtype, naming it", async () => {
    const e = await appError(
      () =>
        decodeSafetensors(
          rawSafetensors({ w: { dtype: "F64", shape: [2], data_offsets: [0, 16] } }, new Uint8Array(16)),
        ),
      "invalid-safetensors",
    );
    expect(e.detail).toContain('tensor w has dtype "F64"');
  });

  it("refuses a header that is not JSON or claims an absurd size", async () => {
    const bad = Buffer.alloc(16);
    bad.writeBigUInt64LE(8n);
    bad.write("{nope!!}", 8);
    expect((await appError(() => decodeSafetensors(bad), "invalid-safetensors")).detail).toContain(
      "not UTF-8 JSON",
    );
    const huge = Buffer.alloc(16);
    huge.writeBigUInt64LE(2n ** 40n);
    expect((await appError(() => decodeSafetensors(huge), "invalid-safetensors")).detail).toContain("limit");
  });

  it("reads a sharded checkpoint through model.safetensors.index.json", async () => {
    const dir = join(root, "sharded");
    const ck = synthesize({ size: "tiny", seed: 4 });
    await writeCheckpoint(dir, ck, "safetensors");
    await unlink(join(dir, "model.safetensors"));
    const keys = [...ck.tensors.keys()];
    const half = Math.floor(keys.length / 2);
    const parts = [keys.slice(0, half), keys.slice(half)];
    const weight_map: Record<string, string> = {};
    for (const [i, names] of parts.entries()) {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      await writeSafetensors(join(dir, file), new Map(names.map((n) => [n, ck.tensors.get(n)!])));
      for (const n of names) weight_map[n] = file;
    }
    await writeFile(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map }));
    const loaded = await loadCheckpoint(dir);
    expect(loaded.tensors.get("classifier.weight")?.data).toEqual(ck.tensors.get("classifier.weight")?.data);
    expect(loaded.files.map((f) => f.name)).toEqual([
      "config.json",
      "preprocessor_config.json",
      "model.safetensors.index.json",
      "model-00001-of-00002.safetensors",
      "model-00002-of-00002.safetensors",
    ]);
    await unlink(join(dir, "model-00002-of-00002.safetensors"));
    const e = await appError(
      () => readSafetensorsIndex(join(dir, "model.safetensors.index.json")),
      "checkpoint-incomplete",
    );
    expect(e.detail).toContain("model-00002-of-00002.safetensors");
  });
});

/** data.pkl for {name: tensor} with an explicit storage, offset, size and stride. */
function tensorPickle(
  name: string,
  storage: { cls: string; key: string; numel: number },
  offset: number,
  size: number[],
  stride: number[],
  opts: { parameter?: boolean; metadata?: boolean } = {},
): Uint8Array {
  const w = new PickleWriter();
  w.global("collections", "OrderedDict").bytes(0x29, 0x52);
  w.string(name);
  if (opts.parameter) w.global("torch._utils", "_rebuild_parameter").mark();
  w.global("torch._utils", "_rebuild_tensor_v2").mark();
  w.mark()
    .string("storage")
    .global("torch", storage.cls)
    .string(storage.key)
    .string("cpu")
    .int(storage.numel)
    .bytes(0x74, 0x51);
  w.int(offset).intTuple(size).intTuple(stride).bytes(0x89);
  w.global("collections", "OrderedDict").bytes(0x29, 0x52, 0x74, 0x52);
  if (opts.parameter) w.bytes(0x88).global("collections", "OrderedDict").bytes(0x29, 0x52, 0x74, 0x52);
  w.bytes(0x73); // SETITEM
  if (opts.metadata) {
    // state_dict()'s _metadata attribute: BUILD with {"_metadata": OrderedDict()}
    w.bytes(0x7d).string("_metadata").global("collections", "OrderedDict").bytes(0x29, 0x52, 0x73, 0x62);
  }
  return w.finish();
}

describe("pytorch_model.bin", () => {
  it("honours storage offsets and strides (a transposed view), Parameter wrappers and _metadata", async () => {
    const storage = f32bytes([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    // size [2,3], stride [1,2], offset 1: element (i,j) = storage[1 + i + 2j]
    const pkl = tensorPickle("w", { cls: "FloatStorage", key: "0", numel: 12 }, 1, [2, 3], [1, 2], {
      parameter: true,
      metadata: true,
    });
    const bytes = await zipOf([
      ["m/data.pkl", pkl],
      ["m/byteorder", new TextEncoder().encode("little")],
      ["m/data/0", storage],
      ["m/version", new TextEncoder().encode("3\n")],
    ]);
    const sd = decodePytorchBin(bytes);
    expect(sd.get("w")?.shape).toEqual([2, 3]);
    expect(Array.from(sd.get("w")?.data as Float32Array)).toEqual([1, 3, 5, 2, 4, 6]);
  });

  it("reads Half, BFloat16 and Long storages, with a contiguous offset view", async () => {
    const half = new Uint16Array([0x3c00, 0xc000, 0x3800, 0x7bff]); // 1, -2, 0.5, 65504
    const pkl = tensorPickle("h", { cls: "HalfStorage", key: "k", numel: 4 }, 1, [3], [1]);
    const sd = decodePytorchBin(
      await zipOf([
        ["archive/data.pkl", pkl],
        ["archive/data/k", new Uint8Array(half.buffer)],
      ]),
    );
    expect(sd.get("h")?.dtype).toBe("F16");
    expect(Array.from(sd.get("h")?.data as Float32Array)).toEqual([-2, 0.5, 65504]);

    const bf = new Uint16Array([0x3f80, 0xc040]); // 1, -3
    const pkl2 = tensorPickle("b", { cls: "BFloat16Storage", key: "0", numel: 2 }, 0, [2], [1]);
    const sd2 = decodePytorchBin(
      await zipOf([
        ["archive/data.pkl", pkl2],
        ["archive/data/0", new Uint8Array(bf.buffer)],
      ]),
    );
    expect(Array.from(sd2.get("b")?.data as Float32Array)).toEqual([1, -3]);

    const longs = new BigInt64Array([5n, -6n, 7n, 8n]);
    const pkl3 = tensorPickle("i", { cls: "LongStorage", key: "0", numel: 4 }, 0, [2, 2], [1, 2]);
    const sd3 = decodePytorchBin(
      await zipOf([
        ["archive/data.pkl", pkl3],
        ["archive/data/0", new Uint8Array(longs.buffer)],
      ]),
    );
    expect(sd3.get("i")?.data).toEqual(new BigInt64Array([5n, 7n, -6n, 8n]));
  });

  it("gives tensors that share a storage (tied weights) their own arrays", async () => {
    const w = new PickleWriter();
    w.global("collections", "OrderedDict").bytes(0x29, 0x52).mark();
    for (const name of ["a", "b"]) {
      w.string(name).global("torch._utils", "_rebuild_tensor_v2").mark();
      w.mark()
        .string("storage", true)
        .global("torch", "FloatStorage")
        .string("0", true)
        .string("cpu", true)
        .int(2)
        .bytes(0x74, 0x51);
      w.int(0)
        .intTuple([2])
        .intTuple([1])
        .bytes(0x89)
        .global("collections", "OrderedDict")
        .bytes(0x29, 0x52, 0x74, 0x52);
    }
    w.bytes(0x75);
    const sd = decodePytorchBin(
      await zipOf([
        ["archive/data.pkl", w.finish()],
        ["archive/data/0", f32bytes([3, 4])],
      ]),
    );
    const a = sd.get("a")?.data as Float32Array;
    a[0] = 99;
    expect(Array.from(sd.get("b")?.data as Float32Array)).toEqual([3, 4]);
  });

  it("writes what it reads, in each stored dtype", async () => {
    const tensors: StateDict = new Map([
      ["a", { dtype: "F16", shape: [2], data: new Float32Array([1.5, -0.25]) }],
      ["b", { dtype: "BF16", shape: [1, 1], data: new Float32Array([-3]) }],
      ["c", { dtype: "I64", shape: [2], data: new BigInt64Array([1n, 2n]) }],
    ]);
    const path = join(root, "dtypes.bin");
    await writePytorchBin(path, tensors, { archiveName: "pytorch_model" });
    const back = await readPytorchBin(path);
    expect(back).toEqual(tensors);
  });

  it("refuses a pickle naming a foreign global (os.system), naming it", async () => {
    const w = new PickleWriter();
    w.global("os", "system").string("echo pwned").bytes(0x85, 0x52);
    const bytes = await zipOf([["archive/data.pkl", w.finish()]]);
    const e = await appError(() => decodePytorchBin(bytes), "unsafe-pickle");
    expect(e.detail).toContain("pickle global os.system is not allowed");
    expect(e.detail).toContain("Nothing was executed");
    // STACK_GLOBAL (protocol 4) is checked the same way.
    const w4 = new PickleWriter();
    w4.string("builtins").string("eval").bytes(0x93);
    const e5 = await appError(
      async () => decodePytorchBin(await zipOf([["archive/data.pkl", w4.finish()]])),
      "unsafe-pickle",
    );
    expect(e5.detail).toContain("builtins.eval");
  });

  it("refuses unknown and unsupported opcodes, naming them", async () => {
    const inst = new PickleWriter().bytes(0x69).finish(); // INST
    const e = await appError(
      async () => decodePytorchBin(await zipOf([["archive/data.pkl", inst]])),
      "unsupported-pickle",
    );
    expect(e.detail).toContain("INST (0x69)");
    const junk = new PickleWriter().bytes(0xff).finish();
    const e2 = await appError(
      async () => decodePytorchBin(await zipOf([["archive/data.pkl", junk]])),
      "unsupported-pickle",
    );
    expect(e2.detail).toContain("(unknown) (0xff) at byte 2");
  });

  it("refuses the legacy pre-1.6 format with a clear message", async () => {
    // Legacy torch.save: a bare pickle starting with the magic number, not a zip.
    const legacy = new Uint8Array([
      0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e,
    ]);
    const e = await appError(() => decodePytorchBin(legacy), "unsupported-checkpoint-format");
    expect(e.detail).toContain("legacy torch.save format of PyTorch < 1.6");
  });

  it("refuses a corrupt zip: bad CRC, truncated archive, not a zip, no data.pkl", async () => {
    const good = await zipOf([
      ["archive/data.pkl", tensorPickle("w", { cls: "FloatStorage", key: "0", numel: 1 }, 0, [1], [1])],
      ["archive/data/0", f32bytes([1])],
    ]);
    const flipped = Buffer.from(good);
    flipped[200] ^= 0xff; // inside data.pkl's bytes
    expect((await appError(() => decodePytorchBin(flipped), "invalid-pytorch-bin")).detail).toContain(
      "CRC-32",
    );
    expect(
      (await appError(() => decodePytorchBin(good.subarray(0, good.length - 30)), "invalid-pytorch-bin"))
        .detail,
    ).toContain("end-of-central-directory");
    expect(
      (await appError(() => decodePytorchBin(Buffer.from("hello world")), "invalid-pytorch-bin")).detail,
    ).toContain("neither");
    const noPkl = await zipOf([["x/other", new Uint8Array(4)]]);
    expect((await appError(() => decodePytorchBin(noPkl), "invalid-pytorch-bin")).detail).toContain(
      "data.pkl",
    );
  });

  it("refuses a view that reaches past its storage", async () => {
    const pkl = tensorPickle("w", { cls: "FloatStorage", key: "0", numel: 4 }, 2, [2, 2], [2, 1]);
    const e = await appError(
      async () =>
        decodePytorchBin(
          await zipOf([
            ["a/data.pkl", pkl],
            ["a/data/0", f32bytes([1, 2, 3, 4])],
          ]),
        ),
      "invalid-pytorch-bin",
    );
    expect(e.detail).toContain("tensor w");
  });
});

describe("loadCheckpoint errors", () => {
  it("names what is missing and what was found", async () => {
    const dir = join(root, "incomplete");
    await writeCheckpoint(dir, synthesize({ size: "tiny" }), "bin");
    await unlink(join(dir, "pytorch_model.bin"));
    const e = await appError(() => loadCheckpoint(dir), "checkpoint-incomplete");
    expect(e.detail).toContain(
      "missing weights (model.safetensors or model.safetensors.index.json or pytorch_model.bin)",
    );
    expect(e.detail).toContain("it holds config.json, preprocessor_config.json");
  });

  it("refuses something that is neither a directory nor a hub id", async () => {
    const e = await appError(() => loadCheckpoint("./no/such/dir"), "checkpoint-not-found");
    expect(e.detail).toContain("./no/such/dir");
  });

  it("names the first missing or mis-shaped tensor, and warns about extra ones", async () => {
    const ck = synthesize({ size: "tiny" });
    const dir = join(root, "mismatch");
    const missing = new Map(ck.tensors);
    missing.delete("beit.encoder.layer.2.lambda_1");
    await writeCheckpoint(dir, { ...ck, tensors: missing }, "safetensors");
    const e = await appError(() => loadCheckpoint(dir), "checkpoint-mismatch");
    expect(e.detail).toContain("no tensor beit.encoder.layer.2.lambda_1 (expected shape [64])");

    const reshaped = new Map(ck.tensors);
    reshaped.set("classifier.bias", { dtype: "F32", shape: [15], data: new Float32Array(15) });
    await writeCheckpoint(dir, { ...ck, tensors: reshaped }, "safetensors");
    const e2 = await appError(() => loadCheckpoint(dir), "checkpoint-mismatch");
    expect(e2.detail).toContain("classifier.bias has shape [15] but config.json implies [16]");

    const extra = new Map(ck.tensors);
    extra.set("beit.embeddings.mask_token", { dtype: "F32", shape: [1, 1, 64], data: new Float32Array(64) });
    // transformers >= 4.3x does not save relative_position_index: it is rebuilt from its definition.
    const idxKey = "beit.encoder.layer.0.attention.attention.relative_position_bias.relative_position_index";
    extra.delete(idxKey);
    await writeCheckpoint(dir, { ...ck, tensors: extra }, "safetensors");
    const warnings: string[] = [];
    const loaded = await loadCheckpoint(dir, { onWarning: (m) => warnings.push(m) });
    expect(warnings.join("\n")).toContain("beit.embeddings.mask_token");
    expect(loaded.tensors.has("beit.embeddings.mask_token")).toBe(false);
    expect(loaded.tensors.get(idxKey)?.data).toEqual(ck.tensors.get(idxKey)?.data);
  });
});
