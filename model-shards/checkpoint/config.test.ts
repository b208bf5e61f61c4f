import { describe, expect, it } from "vitest";
import { AppError } from "../../src/shared/errors.ts";
import { parseBeitConfig, parsePreprocessorConfig } from "./config.ts";
import { numRelativeDistance, relativePositionIndex } from "./layout.ts";
import { synthesize } from "./synth.ts";

const base = () => synthesize({ size: "tiny" }).config;

function refused(json: unknown, code: string, parse: (j: unknown) => unknown = parseBeitConfig): string {
  try {
    parse(json);
  } catch (e) {
    expect(e).toBeInstanceOf(AppError);
    expect((e as AppError).code).toBe(code);
    return (e as AppError).detail;
  }
  throw new Error("expected the config to be refused");
}

describe("parseBeitConfig", () => {
  it("reads the real checkpoint's options", () => {
    const c = parseBeitConfig({
      ...synthesize({ size: "tiny", numLabels: 3 }).config,
      hidden_size: 768,
      num_attention_heads: 12,
    });
    expect(c).toMatchObject({
      hidden_size: 768,
      num_attention_heads: 12,
      image_size: 224,
      patch_size: 16,
      num_channels: 3,
      layer_norm_eps: 1e-12,
      layer_scale_init_value: 0.1,
      use_mean_pooling: true,
      use_relative_position_bias: true,
      use_shared_relative_position_bias: false,
      use_absolute_position_embeddings: false,
      hidden_act: "gelu",
    });
    expect(c.labels).toEqual(["synthetic-lonefe-00000", "synthetic-minedu-00001", "synthetic-neneri-00002"]);
  });

  it.each([
    [{ model_type: "vit" }, 'model_type is "vit"'],
    [{ hidden_act: "relu" }, 'hidden_act "relu" is not supported'],
    [{ use_absolute_position_embeddings: true }, "use_absolute_position_embeddings true"],
    [{ use_shared_relative_position_bias: true }, "use_shared_relative_position_bias true"],
    [{ use_relative_position_bias: false }, "use_relative_position_bias is false"],
    [{ use_relative_position_bias: undefined }, "absent, which BeitConfig reads as false"],
    [{ use_mean_pooling: false }, "use_mean_pooling false (CLS-token pooling)"],
    [{ layer_scale_init_value: 0 }, "layer_scale_init_value 0"],
    [{ image_size: 225 }, "image_size 225 is not a multiple of patch_size 16"],
    [{ image_size: [224, 224] }, "given as a list"],
    [{ architectures: ["BeitForMaskedImageModeling"] }, "only BeitForImageClassification"],
  ])("refuses %j as unsupported-config, naming the option", (patch, message) => {
    const detail = refused({ ...base(), ...patch }, "unsupported-config");
    expect(detail).toContain(message);
  });

  it.each([
    [{ hidden_size: 65 }, "hidden_size 65 is not a multiple of num_attention_heads 4"],
    [{ id2label: { "01": "a" } }, 'id2label key "01" is not a class id'],
    [{ id2label: { "-1": "a" } }, 'id2label key "-1" is not a class id'],
    [{ id2label: { 0: 5 } }, 'id2label["0"] is not a string'],
    [{ layer_norm_eps: "1e-12" }, 'layer_norm_eps is "1e-12", expected a number'],
    [{ num_labels: 3 }, "num_labels is 3 but id2label has 16 entries"],
  ])("refuses malformed %j as invalid-config", (patch, message) => {
    expect(refused({ ...base(), ...patch }, "invalid-config")).toContain(message);
  });

  it("labels classes in id order when id2label has gaps, as the hub's BEiT ImageNet-22k config does", () => {
    // The hub config: the 21,843 ImageNet-22k names with ids 9205 and 15027 deleted, 21,841 classes.
    const id2label: Record<string, string> = {};
    for (let id = 0; id < 21843; id++) if (id !== 9205 && id !== 15027) id2label[id] = `name-${id}`;
    const warnings: string[] = [];
    const c = parseBeitConfig(
      { ...base(), id2label, label2id: undefined },
      { onWarning: (m) => warnings.push(m) },
    );
    expect(c.labels).toHaveLength(21841);
    expect(c.labels[9204]).toBe("name-9204");
    expect(c.labels[9205]).toBe("name-9206");
    expect(c.labels[15025]).toBe("name-15026");
    expect(c.labels[15026]).toBe("name-15028");
    expect(c.labels[21840]).toBe("name-21842");
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain("missing: 9205, 15027");
  });

  it("refuses a file that is not an object", () => {
    expect(refused([1, 2], "invalid-config")).toContain("not a JSON object");
  });

  it("falls back to LABEL_i names from num_labels without id2label, as transformers does", () => {
    const { id2label, label2id, ...rest } = base();
    expect(parseBeitConfig({ ...rest, num_labels: 3 }).labels).toEqual(["LABEL_0", "LABEL_1", "LABEL_2"]);
  });
});

describe("parsePreprocessorConfig", () => {
  it("reads the old feature-extractor style of the hub repo", () => {
    expect(parsePreprocessorConfig(synthesize({ size: "tiny" }).preprocessor)).toEqual({
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
  });

  it("reads the new image-processor style and fills BeitImageProcessor's defaults", () => {
    expect(
      parsePreprocessorConfig({
        image_processor_type: "BeitImageProcessor",
        size: { height: 384, width: 320 },
        do_rescale: false,
        do_reduce_labels: true,
      }),
    ).toEqual({
      do_resize: true,
      size: { height: 384, width: 320 },
      resample: 3,
      do_center_crop: true,
      crop_size: { height: 224, width: 224 },
      do_rescale: false,
      rescale_factor: 1 / 255,
      do_normalize: true,
      image_mean: [0.5, 0.5, 0.5],
      image_std: [0.5, 0.5, 0.5],
      do_reduce_labels: true,
    });
    expect(parsePreprocessorConfig({}).size).toEqual({ height: 256, width: 256 });
  });

  it("refuses shortest_edge resizing, zero std and bad resample codes", () => {
    expect(
      refused({ size: { shortest_edge: 224 } }, "unsupported-config", parsePreprocessorConfig),
    ).toContain("shortest_edge");
    expect(refused({ image_std: [0.5, 0, 0.5] }, "invalid-config", parsePreprocessorConfig)).toContain(
      "image_std",
    );
    expect(refused({ resample: 9 }, "invalid-config", parsePreprocessorConfig)).toContain("resample is 9");
    expect(refused({ size: "big" }, "invalid-config", parsePreprocessorConfig)).toContain('size is "big"');
  });
});

describe("relativePositionIndex", () => {
  it("matches BEiT's definition on a 2x2 grid (checked by hand)", () => {
    // 2x2 grid: offsets (dy, dx) in -1..1 -> (dy+1)*3 + (dx+1); extra rows 9 (cls row), 10 (cls col), 11 (cls-cls).
    expect(numRelativeDistance(2)).toBe(12);
    expect(Array.from(relativePositionIndex(2), Number)).toEqual([
      11, 9, 9, 9, 9, 10, 4, 3, 1, 0, 10, 5, 4, 2, 1, 10, 7, 6, 4, 3, 10, 8, 7, 5, 4,
    ]);
  });

  it("has 732 table rows and stays in range for the 14x14 grid of 224/16", () => {
    expect(numRelativeDistance(14)).toBe(732);
    const idx = relativePositionIndex(14);
    expect(idx.length).toBe(197 * 197);
    let max = 0n;
    for (const v of idx) if (v > max) max = v;
    expect(max).toBe(731n);
    expect(idx[0]).toBe(731n);
    expect(idx[1]).toBe(729n);
    expect(idx[197]).toBe(730n);
    expect(idx[198]).toBe(BigInt(13 * 27 + 13)); // token 0 to itself: (0+13)*27 + (0+13)
  });
});
