/**
 * @module
 * config.json and preprocessor_config.json of a Hugging Face BEiT checkpoint, validated. Every
 * option that changes the forward pass is either one the graph builder implements or refused
 * with an AppError ("unsupported-config") that names it; malformed files fail with
 * "invalid-config". Defaults are those of transformers' BeitConfig and BeitImageProcessor.
 */
import { AppError } from "../../src/shared/errors.ts";
import type { PreprocessSpec } from "../../src/shared/manifest.ts";
import type { BeitConfig } from "./types.ts";

type Obj = Record<string, unknown>;

function invalid(file: string, what: string): AppError {
  return new AppError(
    "invalid-config",
    422,
    `${file}: ${what}. Fix the file or re-download the checkpoint.`,
    { file },
  );
}

function unsupported(what: string): AppError {
  return new AppError(
    "unsupported-config",
    422,
    `config.json: ${what}. beit-edge implements BEiT image classification with per-layer relative position bias, layer scale, mean pooling and exact GELU (as microsoft/beit-base-patch16-224-pt22k-ft22k); pick a checkpoint with that architecture.`,
    { file: "config.json" },
  );
}

function field<T>(o: Obj, key: string, file: string, kind: "number" | "boolean" | "string", dflt: T): T {
  const v = o[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== kind) throw invalid(file, `${key} is ${JSON.stringify(v)}, expected a ${kind}`);
  return v as T;
}

function posInt(o: Obj, key: string, file: string, dflt: number): number {
  const v = field(o, key, file, "number", dflt);
  if (!Number.isInteger(v) || v < 1) throw invalid(file, `${key} is ${v}, expected a positive integer`);
  return v;
}

function object(json: unknown, file: string): Obj {
  if (typeof json !== "object" || json === null || Array.isArray(json))
    throw invalid(file, "the file is not a JSON object");
  return json as Obj;
}

/**
 * Validates a parsed config.json of a BeitForImageClassification checkpoint. `onWarning` hears about
 * accepted oddities (id2label with gaps).
 *
 * @example
 * const config = parseBeitConfig(JSON.parse(await readFile("ckpt/config.json", "utf8")));
 */
export function parseBeitConfig(
  json: unknown,
  opts: { onWarning?: (message: string) => void } = {},
): BeitConfig {
  const file = "config.json";
  const o = object(json, file);
  if (o.model_type !== "beit")
    throw unsupported(`model_type is ${JSON.stringify(o.model_type)}, only "beit" is supported`);
  if (o.architectures !== undefined) {
    if (!Array.isArray(o.architectures)) throw invalid(file, "architectures is not a list");
    if (!o.architectures.includes("BeitForImageClassification"))
      throw unsupported(
        `architectures is ${JSON.stringify(o.architectures)}; only BeitForImageClassification (a classifier head) is supported`,
      );
  }
  const hidden_act = field(o, "hidden_act", file, "string", "gelu");
  if (hidden_act !== "gelu")
    throw unsupported(`hidden_act "${hidden_act}" is not supported; only "gelu" (exact erf GELU) is`);
  const use_absolute_position_embeddings = field(
    o,
    "use_absolute_position_embeddings",
    file,
    "boolean",
    false,
  );
  if (use_absolute_position_embeddings)
    throw unsupported("use_absolute_position_embeddings true is not supported");
  const use_shared_relative_position_bias = field(
    o,
    "use_shared_relative_position_bias",
    file,
    "boolean",
    false,
  );
  if (use_shared_relative_position_bias)
    throw unsupported(
      "use_shared_relative_position_bias true (one bias table for all layers) is not supported; per-layer tables are",
    );
  const use_relative_position_bias = field(o, "use_relative_position_bias", file, "boolean", false);
  if (!use_relative_position_bias)
    throw unsupported(
      "use_relative_position_bias is false (or absent, which BeitConfig reads as false); per-layer relative position bias is required",
    );
  const use_mean_pooling = field(o, "use_mean_pooling", file, "boolean", true);
  if (!use_mean_pooling)
    throw unsupported("use_mean_pooling false (CLS-token pooling) is not supported; mean pooling is");
  const layer_scale_init_value = field(o, "layer_scale_init_value", file, "number", 0.1);
  if (!(layer_scale_init_value > 0))
    throw unsupported(
      `layer_scale_init_value ${layer_scale_init_value} (no layer scale) is not supported; lambda_1/lambda_2 are required`,
    );
  const layer_norm_eps = field(o, "layer_norm_eps", file, "number", 1e-12);
  if (!(layer_norm_eps > 0) || !Number.isFinite(layer_norm_eps))
    throw invalid(file, `layer_norm_eps ${layer_norm_eps} is not a positive number`);
  if (Array.isArray(o.image_size) || Array.isArray(o.patch_size))
    throw unsupported(
      "image_size / patch_size given as a list; only square sizes given as one integer are supported",
    );
  const image_size = posInt(o, "image_size", file, 224);
  const patch_size = posInt(o, "patch_size", file, 16);
  if (image_size % patch_size !== 0)
    throw unsupported(`image_size ${image_size} is not a multiple of patch_size ${patch_size}`);
  const hidden_size = posInt(o, "hidden_size", file, 768);
  const num_attention_heads = posInt(o, "num_attention_heads", file, 12);
  if (hidden_size % num_attention_heads !== 0)
    throw invalid(
      file,
      `hidden_size ${hidden_size} is not a multiple of num_attention_heads ${num_attention_heads}`,
    );
  return {
    hidden_size,
    num_hidden_layers: posInt(o, "num_hidden_layers", file, 12),
    num_attention_heads,
    intermediate_size: posInt(o, "intermediate_size", file, 3072),
    image_size,
    patch_size,
    num_channels: posInt(o, "num_channels", file, 3),
    layer_norm_eps,
    layer_scale_init_value,
    use_mean_pooling,
    use_relative_position_bias,
    use_shared_relative_position_bias,
    use_absolute_position_embeddings,
    hidden_act: "gelu",
    labels: parseLabels(o, file, opts.onWarning ?? (() => {})),
  };
}

/**
 * Labels from id2label, index = class id; without id2label, num_labels LABEL_i names.
 *
 * Keys are class ids ("0", "1", ...). They are normally dense, 0..n-1. The hub's
 * microsoft/beit-base-patch16-224-pt22k-ft22k is not: its converter took the 21,843 ImageNet-22k
 * names and deleted ids 9205 and 15027, because the model was trained on the 21,841 remaining
 * classes. Its classifier output i is the i-th remaining class, so labels are taken in ascending key
 * order (transformers' own `id2label[i]` lookup is off by one past 9205 and fails on 9205 itself);
 * the gaps are reported through `warn`.
 */
function parseLabels(o: Obj, file: string, warn: (message: string) => void): string[] {
  const map = o.id2label;
  if (map === undefined || map === null) {
    const n = posInt(o, "num_labels", file, 2);
    return Array.from({ length: n }, (_, i) => `LABEL_${i}`);
  }
  if (typeof map !== "object" || Array.isArray(map)) throw invalid(file, "id2label is not an object");
  const entries = Object.entries(map as Obj);
  if (entries.length === 0) throw invalid(file, "id2label is empty");
  const ids: [number, string][] = [];
  for (const [k, v] of entries) {
    if (!/^(0|[1-9][0-9]{0,8})$/.test(k))
      throw invalid(file, `id2label key ${JSON.stringify(k)} is not a class id (a non-negative integer)`);
    if (typeof v !== "string") throw invalid(file, `id2label["${k}"] is not a string`);
    ids.push([Number(k), v]);
  }
  ids.sort((a, b) => a[0] - b[0]);
  const labels = ids.map(([, v]) => v);
  const last = ids[ids.length - 1][0];
  if (last !== labels.length - 1) {
    const present = new Set(ids.map(([id]) => id));
    const gaps: number[] = [];
    for (let id = 0; id <= last && gaps.length <= 10; id++) if (!present.has(id)) gaps.push(id);
    const shown = gaps.length > 10 ? `${gaps.slice(0, 10).join(", ")}, ...` : gaps.join(", ");
    warn(
      `${file}: id2label has ${labels.length} entries with ids up to ${last} (missing: ${shown}); ` +
        "class i is labelled with the i-th entry in id order.",
    );
  }
  if (o.num_labels !== undefined && o.num_labels !== labels.length)
    throw invalid(file, `num_labels is ${o.num_labels} but id2label has ${labels.length} entries`);
  return labels;
}

function sizeDict(v: unknown, key: string, file: string, dflt: { height: number; width: number }) {
  if (v === undefined || v === null) return dflt;
  const ok = (n: unknown): n is number => typeof n === "number" && Number.isInteger(n) && n > 0;
  if (ok(v)) return { height: v, width: v };
  if (Array.isArray(v) && v.length === 2 && ok(v[0]) && ok(v[1])) return { height: v[0], width: v[1] };
  if (typeof v === "object") {
    const d = v as Obj;
    if (ok(d.height) && ok(d.width)) return { height: d.height, width: d.width };
    if (d.shortest_edge !== undefined || d.longest_edge !== undefined)
      throw new AppError(
        "unsupported-config",
        422,
        `preprocessor_config.json: ${key} ${JSON.stringify(v)} resizes by shortest/longest edge; BeitImageProcessor needs {"height", "width"}, and so does beit-edge.`,
        { file },
      );
  }
  throw invalid(file, `${key} is ${JSON.stringify(v)}, expected an integer or {"height", "width"}`);
}

function triple(
  v: unknown,
  key: string,
  file: string,
  dflt: [number, number, number],
): [number, number, number] {
  if (v === undefined || v === null) return dflt;
  if (typeof v === "number" && Number.isFinite(v)) return [v, v, v];
  if (Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === "number" && Number.isFinite(x)))
    return v as [number, number, number];
  throw invalid(file, `${key} is ${JSON.stringify(v)}, expected three numbers`);
}

/**
 * Validates preprocessor_config.json, old feature-extractor style (`size: 224`, `reduce_labels`)
 * or new image-processor style (`size: {height, width}`, `do_rescale`, `rescale_factor`), filling
 * absent fields with BeitImageProcessor's defaults (resize 256x256 bicubic, center crop 224,
 * rescale 1/255, normalize with mean = std = 0.5).
 */
export function parsePreprocessorConfig(json: unknown): PreprocessSpec {
  const file = "preprocessor_config.json";
  const o = object(json, file);
  const bool = (k: string, d: boolean) => field(o, k, file, "boolean", d);
  const resample = field(o, "resample", file, "number", 3);
  if (!Number.isInteger(resample) || resample < 0 || resample > 5)
    throw invalid(file, `resample is ${resample}, expected a PIL resample code 0..5`);
  const rescale_factor = field(o, "rescale_factor", file, "number", 1 / 255);
  if (!Number.isFinite(rescale_factor) || rescale_factor <= 0)
    throw invalid(file, `rescale_factor ${rescale_factor} is not positive`);
  const image_std = triple(o.image_std, "image_std", file, [0.5, 0.5, 0.5]);
  if (image_std.some((s) => s === 0)) throw invalid(file, "image_std has a zero entry");
  return {
    do_resize: bool("do_resize", true),
    size: sizeDict(o.size, "size", file, { height: 256, width: 256 }),
    resample,
    do_center_crop: bool("do_center_crop", true),
    crop_size: sizeDict(o.crop_size, "crop_size", file, { height: 224, width: 224 }),
    do_rescale: bool("do_rescale", true),
    rescale_factor,
    do_normalize: bool("do_normalize", true),
    image_mean: triple(o.image_mean, "image_mean", file, [0.5, 0.5, 0.5]),
    image_std,
    do_reduce_labels: field(
      o,
      "do_reduce_labels",
      file,
      "boolean",
      field(o, "reduce_labels", file, "boolean", false),
    ),
  };
}
