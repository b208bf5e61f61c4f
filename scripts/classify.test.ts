import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildShards } from "../model-shards/build.ts";
import { loadCheckpoint } from "../model-shards/checkpoint/index.ts";
import { synthesize, writeCheckpoint } from "../model-shards/checkpoint/synth.ts";
import { loadLocalModel } from "../model-shards/runner.ts";
import { initNodeCodecs } from "../src/image/codecs-node.ts";
import { imageToPixelValues } from "../src/image/index.ts";
import { FIXTURES } from "../test/helpers/image-fixtures.ts";
import { main } from "./classify.ts";

let root: string;
let modelDir: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "beit-classify-"));
  modelDir = join(root, "tiny");
  await writeCheckpoint(join(root, "ck"), synthesize({ size: "tiny", seed: 5 }), "safetensors");
  await buildShards(await loadCheckpoint(join(root, "ck")), { outDir: modelDir, precision: "int8" });
  await initNodeCodecs();
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function run(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(argv, { out: (t) => out.push(t), err: (t) => err.push(t) });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

const photo = join(FIXTURES, "photo-odd-size.jpeg");
const png = join(FIXTURES, "rgb-8bit.png");

describe("npm run classify", () => {
  it("prints [{label, score}] for one image, equal to the runner on the same pixel_values", async () => {
    const r = await run("--model", modelDir, photo, "--top", "3");
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    const preds = JSON.parse(r.out) as { label: string; score: number }[];
    expect(preds).toHaveLength(3);
    expect(Object.keys(preds[0]).sort()).toEqual(["label", "score"]);
    expect(preds[0].score).toBeGreaterThanOrEqual(preds[1].score);

    const model = await loadLocalModel(modelDir);
    const px = await imageToPixelValues(new Uint8Array(await readFile(photo)), model.manifest.preprocess);
    const direct = await model.classify(px.pixels, 3);
    await model.release();
    expect(preds.map((p) => p.label)).toEqual(direct.map((p) => p.label));
    preds.forEach((p, i) => {
      expect(p.score).toBeCloseTo(direct[i].score, 6);
    });
  });

  it("prints one array per image for several images", async () => {
    const r = await run("--model", modelDir, photo, png, "--top", "2");
    expect(r.code).toBe(0);
    const all = JSON.parse(r.out) as unknown[][];
    expect(all).toHaveLength(2);
    expect(all[1]).toHaveLength(2);
  });

  it("--dump-pixels writes little-endian float32 [1,3,224,224] equal to imageToPixelValues", async () => {
    const file = join(root, "pixels.f32");
    const r = await run("--model", modelDir, png, "--dump-pixels", file, "--no-exif-transpose");
    expect(r.code).toBe(0);
    const raw = await readFile(file);
    expect(raw.length).toBe(3 * 224 * 224 * 4);
    const model = await loadLocalModel(modelDir);
    const px = await imageToPixelValues(new Uint8Array(await readFile(png)), model.manifest.preprocess);
    await model.release();
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    for (let i = 0; i < px.pixels.length; i += 997) expect(view.getFloat32(i * 4, true)).toBe(px.pixels[i]);
  });

  it("errors are printed as error[code]: detail with a non-zero exit", async () => {
    const cut = join(root, "truncated.jpeg");
    await writeFile(cut, (await readFile(photo)).subarray(0, 3000));
    const truncated = await run("--model", modelDir, cut);
    expect(truncated.code).toBe(1);
    expect(truncated.err).toMatch(
      /^error\[undecodable-image\]: The JPEG image could not be decoded \(the file is truncated/,
    );
    const tiff = await run("--model", modelDir, join(FIXTURES, "expected.json"));
    expect(tiff.err).toMatch(/^error\[unsupported-format\]: .*no known image format/);
    const noModel = await run(photo);
    expect(noModel.code).toBe(2);
    expect(noModel.err).toMatch(/^error\[usage\]: --model DIR is required/);
    const missing = await run("--model", modelDir, join(root, "nope.jpeg"));
    expect(missing.err).toMatch(/^error\[file-not-found\]/);
    const bad = await run("--model", modelDir, photo, "--top", "zero");
    expect(bad.err).toMatch(/^error\[usage\]: --top must be a positive integer/);
  });
});
