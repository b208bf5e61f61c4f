/**
 * @module
 * The shard manifest: the one contract between the converter (model-shards/) and the Worker
 * (src/classify, src/workers, src/shards, src/inference). The converter writes it with {@link serializeManifest};
 * the Worker and `npm run model -- verify` read it with {@link parseManifest}, which checks every
 * field and throws a {@link ManifestError} naming the first bad path.
 *
 * Imports nothing platform-specific: it runs in Node and in workerd.
 */

/** Schema version of manifest.json. Bump on any incompatible change. */
export const MANIFEST_SCHEMA = 1 as const;

export type Precision = "int8" | "fp32";

/** A content-addressed file next to manifest.json (and under the same name in R2). */
export interface FileRef {
  /** File name; contains the file's sha256 so that equal names mean equal bytes. */
  file: string;
  bytes: number;
  /** Lower-case hex sha256 of the file's bytes. */
  sha256: string;
}

export interface TensorSpec {
  name: string;
  /** Concrete dimensions; the batch dimension is 1 (the Worker runs one image per stage call). */
  shape: number[];
  dtype: "float32";
}

/** Number of elements of a shape (1 for a scalar `[]`). */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export interface StageSpec {
  /** 0-based position in the pipeline. */
  index: number;
  /** Encoder layers run by this stage, half open: [from, to). */
  layers: [number, number];
  /** Stage 0 also runs the patch embedding. */
  embeddings: boolean;
  /** The last stage also runs pooling, the pooler layernorm and the classifier. */
  head: boolean;
  graph: FileRef;
  /** ONNX external data; null when the graph carries its weights inline. */
  weights: FileRef | null;
  /** The `location` the graph's external tensors point at (equals weights.file). */
  externalDataPath: string | null;
  inputs: TensorSpec[];
  outputs: TensorSpec[];
  /** Sum of the stage's initializer bytes. */
  weightBytes: number;
  /** The planner's estimate of the isolate's peak (wasm heap + JS heap + transient R2 buffer). */
  estimatedPeakBytes: number;
  /**
   * The wasm heap the stage is planned to need (weights, ORT's runtime, a run's scratch). The loader
   * grows ORT's memory to it before the first run, in one step, so the heap ends at this figure
   * instead of Emscripten's next 20% growth step (src/inference/ort.ts `reserveWasmHeap`). Absent in
   * manifests written before it: no reservation, the heap grows as it did.
   */
  wasmHeapBytes?: number;
}

/** What BeitImageProcessor does, carried from preprocessor_config.json. */
export interface PreprocessSpec {
  do_resize: boolean;
  size: { height: number; width: number };
  /** PIL resample code: 0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming. */
  resample: number;
  do_center_crop: boolean;
  crop_size: { height: number; width: number };
  do_rescale: boolean;
  rescale_factor: number;
  do_normalize: boolean;
  image_mean: [number, number, number];
  image_std: [number, number, number];
  do_reduce_labels: boolean;
}

/** The architecture numbers a manifest carries from config.json (the converter's BeitConfig has them too). */
export const MODEL_SHAPE_KEYS = [
  "hidden_size",
  "num_hidden_layers",
  "num_attention_heads",
  "intermediate_size",
  "image_size",
  "patch_size",
] as const;
export type ModelShape = Record<(typeof MODEL_SHAPE_KEYS)[number], number>;

/** Just the {@link ModelShape} fields of a config or manifest model, in their manifest order. */
export function modelShape(from: ModelShape): ModelShape {
  return Object.fromEntries(MODEL_SHAPE_KEYS.map((k) => [k, from[k]])) as ModelShape;
}

/** The onnxruntime graph optimisation levels a manifest may ask for. */
export const GRAPH_OPTIMIZATIONS = ["disabled", "all"] as const;
export type GraphOptimization = (typeof GRAPH_OPTIMIZATIONS)[number];

export interface Manifest {
  schema: typeof MANIFEST_SCHEMA;
  /** Content id of this model build: sha256 over the stage and label file hashes (hex, 64). */
  version: string;
  model: {
    /** Hub id or local directory name the build came from. */
    id: string;
    /** Hub revision (commit sha or branch), or "local". */
    revision: string;
    /** True for random-weight checkpoints made by `model synth`: shown wherever the model is named. */
    synthetic: boolean;
    architecture: "BeitForImageClassification";
    num_labels: number;
  } & ModelShape;
  precision: Precision;
  /** Human-readable description of the quantization scheme (empty for fp32). */
  quantization: string;
  preprocess: PreprocessSpec;
  /** JSON array of label strings, index = class id (from config.json id2label). */
  labels: FileRef & { count: number };
  stages: StageSpec[];
  /**
   * onnxruntime's graph optimisation level for opening the stage graphs: "disabled" for graphs the
   * converter emits already fused (every build since 2026-12-02), "all" for older manifests, which
   * lack the field.
   */
  graphOptimization: GraphOptimization;
  budget: { stageBudgetBytes: number; marginBytes: number };
  /**
   * int8 builds: how closely the shards follow the fp32 graph of the same checkpoint, measured by
   * the converter on held-out inputs. Absent for fp32 builds and manifests written before it.
   */
  fidelity?: Fidelity;
  createdAt: string;
  converter: string;
}

/** int8 against fp32 logits, as measured at build time (Manifest.fidelity). */
export interface Fidelity {
  /** What the int8 logits were compared with. */
  reference: string;
  /** How many held-out inputs (none of them calibration pictures). */
  inputs: number;
  /** Mean and worst ||int8 - fp32|| / ||fp32|| over the inputs, all logits. */
  relL2Mean: number;
  relL2Max: number;
  /** Inputs whose top-1 class is the same. */
  top1Agreement: number;
  /** Mean number of shared classes among the top 5 (0..5). */
  top5OverlapMean: number;
  /** The --max-rel-l2 target the build had to meet, or null. */
  target: number | null;
  /** Linear layers with outlier channels split off, and those channels in all. */
  outlierLayers: number;
  outlierChannels: number;
  /** Linear layers kept in float32 to meet the target. */
  floatLayers: string[];
}

export class ManifestError extends Error {
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(`manifest.json: ${path}: ${message}`);
    this.name = "ManifestError";
  }
}

const HEX64 = /^[0-9a-f]{64}$/;
/** File names we accept: no separators, no traversal, must contain the sha256 they claim. */
const SAFE_NAME = /^[A-Za-z0-9._-]{1,200}$/;

type Obj = Record<string, unknown>;

function obj(v: unknown, path: string): Obj {
  if (typeof v !== "object" || v === null || Array.isArray(v))
    throw new ManifestError(path, "expected an object");
  return v as Obj;
}
function str(v: unknown, path: string): string {
  if (typeof v !== "string") throw new ManifestError(path, "expected a string");
  return v;
}
function bool(v: unknown, path: string): boolean {
  if (typeof v !== "boolean") throw new ManifestError(path, "expected a boolean");
  return v;
}
function num(v: unknown, path: string): number {
  if (typeof v !== "number" || !Number.isFinite(v)) throw new ManifestError(path, "expected a finite number");
  return v;
}
function int(v: unknown, path: string, min = 0): number {
  const n = num(v, path);
  if (!Number.isInteger(n) || n < min) throw new ManifestError(path, `expected an integer >= ${min}`);
  return n;
}
function arr(v: unknown, path: string): unknown[] {
  if (!Array.isArray(v)) throw new ManifestError(path, "expected an array");
  return v;
}

function fileRef(v: unknown, path: string): FileRef {
  const o = obj(v, path);
  const file = str(o.file, `${path}.file`);
  const sha256 = str(o.sha256, `${path}.sha256`);
  if (!SAFE_NAME.test(file) || file.includes(".."))
    throw new ManifestError(`${path}.file`, `unsafe file name ${JSON.stringify(file)}`);
  if (!HEX64.test(sha256)) throw new ManifestError(`${path}.sha256`, "expected 64 lower-case hex digits");
  if (!file.includes(sha256.slice(0, 16)))
    throw new ManifestError(`${path}.file`, "file name must contain the first 16 hex digits of its sha256");
  return { file, bytes: int(o.bytes, `${path}.bytes`), sha256 };
}

function tensorSpec(v: unknown, path: string): TensorSpec {
  const o = obj(v, path);
  const shape = arr(o.shape, `${path}.shape`).map((d, i) => int(d, `${path}.shape[${i}]`, 1));
  if (o.dtype !== "float32") throw new ManifestError(`${path}.dtype`, 'expected "float32"');
  return { name: str(o.name, `${path}.name`), shape, dtype: "float32" };
}

function size(v: unknown, path: string): { height: number; width: number } {
  const o = obj(v, path);
  return { height: int(o.height, `${path}.height`, 1), width: int(o.width, `${path}.width`, 1) };
}

function triple(v: unknown, path: string): [number, number, number] {
  const a = arr(v, path);
  if (a.length !== 3) throw new ManifestError(path, "expected 3 numbers");
  return [num(a[0], `${path}[0]`), num(a[1], `${path}[1]`), num(a[2], `${path}[2]`)];
}

function preprocess(v: unknown, path: string): PreprocessSpec {
  const o = obj(v, path);
  const resample = int(o.resample, `${path}.resample`);
  if (resample > 5) throw new ManifestError(`${path}.resample`, "expected a PIL resample code 0..5");
  const std = triple(o.image_std, `${path}.image_std`);
  if (std.some((s) => s === 0)) throw new ManifestError(`${path}.image_std`, "std must be non-zero");
  return {
    do_resize: bool(o.do_resize, `${path}.do_resize`),
    size: size(o.size, `${path}.size`),
    resample,
    do_center_crop: bool(o.do_center_crop, `${path}.do_center_crop`),
    crop_size: size(o.crop_size, `${path}.crop_size`),
    do_rescale: bool(o.do_rescale, `${path}.do_rescale`),
    rescale_factor: num(o.rescale_factor, `${path}.rescale_factor`),
    do_normalize: bool(o.do_normalize, `${path}.do_normalize`),
    image_mean: triple(o.image_mean, `${path}.image_mean`),
    image_std: std,
    do_reduce_labels: bool(o.do_reduce_labels, `${path}.do_reduce_labels`),
  };
}

function stage(v: unknown, path: string, index: number): StageSpec {
  const o = obj(v, path);
  if (int(o.index, `${path}.index`) !== index) throw new ManifestError(`${path}.index`, `expected ${index}`);
  const layers = arr(o.layers, `${path}.layers`);
  if (layers.length !== 2) throw new ManifestError(`${path}.layers`, "expected [from, to)");
  const from = int(layers[0], `${path}.layers[0]`);
  const to = int(layers[1], `${path}.layers[1]`);
  if (to < from) throw new ManifestError(`${path}.layers`, "to < from");
  const weights = o.weights === null ? null : fileRef(o.weights, `${path}.weights`);
  const externalDataPath =
    o.externalDataPath === null ? null : str(o.externalDataPath, `${path}.externalDataPath`);
  if ((weights === null) !== (externalDataPath === null))
    throw new ManifestError(`${path}.externalDataPath`, "must be set exactly when weights is set");
  if (weights && externalDataPath !== weights.file)
    throw new ManifestError(`${path}.externalDataPath`, "must equal weights.file");
  const inputs = arr(o.inputs, `${path}.inputs`).map((t, i) => tensorSpec(t, `${path}.inputs[${i}]`));
  const outputs = arr(o.outputs, `${path}.outputs`).map((t, i) => tensorSpec(t, `${path}.outputs[${i}]`));
  if (inputs.length !== 1 || outputs.length !== 1)
    throw new ManifestError(path, "a stage has exactly one input and one output");
  return {
    index,
    layers: [from, to],
    embeddings: bool(o.embeddings, `${path}.embeddings`),
    head: bool(o.head, `${path}.head`),
    graph: fileRef(o.graph, `${path}.graph`),
    weights,
    externalDataPath,
    inputs,
    outputs,
    weightBytes: int(o.weightBytes, `${path}.weightBytes`),
    estimatedPeakBytes: int(o.estimatedPeakBytes, `${path}.estimatedPeakBytes`),
    ...(o.wasmHeapBytes === undefined
      ? {}
      : { wasmHeapBytes: int(o.wasmHeapBytes, `${path}.wasmHeapBytes`, 1) }),
  };
}

/**
 * Validates an untrusted value (parsed manifest.json) and returns it typed.
 * Checks shapes and types of every field and the pipeline's consistency: stages cover the
 * layers in order, each stage's input is the previous stage's output, the first takes
 * pixel_values and the last yields logits over `labels.count` classes.
 *
 * @example
 * const manifest = parseManifest(JSON.parse(await readFile("out/manifest.json", "utf8")));
 */
export function parseManifest(value: unknown): Manifest {
  const o = obj(value, "$");
  if (o.schema !== MANIFEST_SCHEMA) throw new ManifestError("$.schema", `expected ${MANIFEST_SCHEMA}`);
  const version = str(o.version, "$.version");
  if (!HEX64.test(version)) throw new ManifestError("$.version", "expected 64 lower-case hex digits");
  const m = obj(o.model, "$.model");
  if (m.architecture !== "BeitForImageClassification")
    throw new ManifestError("$.model.architecture", 'expected "BeitForImageClassification"');
  const model: Manifest["model"] = {
    id: str(m.id, "$.model.id"),
    revision: str(m.revision, "$.model.revision"),
    synthetic: bool(m.synthetic, "$.model.synthetic"),
    architecture: "BeitForImageClassification",
    ...(Object.fromEntries(MODEL_SHAPE_KEYS.map((k) => [k, int(m[k], `$.model.${k}`, 1)])) as ModelShape),
    num_labels: int(m.num_labels, "$.model.num_labels", 1),
  };
  const precision = o.precision;
  if (precision !== "int8" && precision !== "fp32")
    throw new ManifestError("$.precision", 'expected "int8" or "fp32"');
  const labelsObj = obj(o.labels, "$.labels");
  const labels = { ...fileRef(labelsObj, "$.labels"), count: int(labelsObj.count, "$.labels.count", 1) };
  if (labels.count !== model.num_labels)
    throw new ManifestError("$.labels.count", "must equal model.num_labels");
  const stages = arr(o.stages, "$.stages").map((s, i) => stage(s, `$.stages[${i}]`, i));
  if (stages.length === 0) throw new ManifestError("$.stages", "expected at least one stage");
  let layer = 0;
  stages.forEach((s, i) => {
    const p = `$.stages[${i}]`;
    if (s.layers[0] !== layer) throw new ManifestError(`${p}.layers`, `expected to start at layer ${layer}`);
    layer = s.layers[1];
    if (s.embeddings !== (i === 0)) throw new ManifestError(`${p}.embeddings`, "only the first stage embeds");
    if (s.head !== (i === stages.length - 1))
      throw new ManifestError(`${p}.head`, "only the last stage has the head");
    if (i > 0) {
      const prev = stages[i - 1].outputs[0];
      const cur = s.inputs[0];
      if (prev.shape.join("x") !== cur.shape.join("x"))
        throw new ManifestError(`${p}.inputs[0].shape`, "must equal the previous stage's output shape");
    }
  });
  if (layer !== model.num_hidden_layers)
    throw new ManifestError("$.stages", `stages cover ${layer} of ${model.num_hidden_layers} layers`);
  const last = stages[stages.length - 1].outputs[0];
  if (last.shape.join("x") !== `1x${model.num_labels}`)
    throw new ManifestError(
      `$.stages[${stages.length - 1}].outputs[0].shape`,
      `expected [1, ${model.num_labels}]`,
    );
  const budget = obj(o.budget, "$.budget");
  return {
    schema: MANIFEST_SCHEMA,
    version,
    model,
    precision,
    quantization: str(o.quantization, "$.quantization"),
    preprocess: preprocess(o.preprocess, "$.preprocess"),
    labels,
    stages,
    graphOptimization: graphOptimization(o.graphOptimization),
    budget: {
      stageBudgetBytes: int(budget.stageBudgetBytes, "$.budget.stageBudgetBytes", 1),
      marginBytes: int(budget.marginBytes, "$.budget.marginBytes"),
    },
    ...(o.fidelity === undefined ? {} : { fidelity: fidelity(o.fidelity, "$.fidelity") }),
    createdAt: str(o.createdAt, "$.createdAt"),
    converter: str(o.converter, "$.converter"),
  };
}

function fidelity(v: unknown, path: string): Fidelity {
  const o = obj(v, path);
  const inputs = int(o.inputs, `${path}.inputs`, 1);
  const top1 = int(o.top1Agreement, `${path}.top1Agreement`);
  if (top1 > inputs) throw new ManifestError(`${path}.top1Agreement`, "exceeds inputs");
  const overlap = num(o.top5OverlapMean, `${path}.top5OverlapMean`);
  if (overlap < 0 || overlap > 5) throw new ManifestError(`${path}.top5OverlapMean`, "expected 0..5");
  const nonNegative = (key: string) => {
    const x = num(o[key], `${path}.${key}`);
    if (x < 0) throw new ManifestError(`${path}.${key}`, "must be >= 0");
    return x;
  };
  return {
    reference: str(o.reference, `${path}.reference`),
    inputs,
    relL2Mean: nonNegative("relL2Mean"),
    relL2Max: nonNegative("relL2Max"),
    top1Agreement: top1,
    top5OverlapMean: overlap,
    target: o.target === null ? null : nonNegative("target"),
    outlierLayers: int(o.outlierLayers, `${path}.outlierLayers`),
    outlierChannels: int(o.outlierChannels, `${path}.outlierChannels`),
    floatLayers: arr(o.floatLayers, `${path}.floatLayers`).map((x, i) => str(x, `${path}.floatLayers[${i}]`)),
  };
}

function graphOptimization(v: unknown): GraphOptimization {
  if (v === undefined) return "all";
  if (typeof v === "string" && (GRAPH_OPTIMIZATIONS as readonly string[]).includes(v))
    return v as GraphOptimization;
  throw new ManifestError("$.graphOptimization", `must be one of ${GRAPH_OPTIMIZATIONS.join(", ")}`);
}

/** Every file a manifest refers to (labels, then each stage's graph and weights). */
export function manifestFiles(manifest: Manifest): FileRef[] {
  const files: FileRef[] = [manifest.labels];
  for (const s of manifest.stages) {
    files.push(s.graph);
    if (s.weights) files.push(s.weights);
  }
  return files;
}

/** Stable JSON text for manifest.json (2-space indent, trailing newline). */
export function serializeManifest(manifest: Manifest): string {
  return `${JSON.stringify(manifest, null, 2)}\n`;
}

/** The labels file is not what its manifest entry says (see {@link parseLabels}). */
export class LabelFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LabelFileError";
  }
}

/**
 * The one reader of a labels file (index = class id): a JSON array of exactly
 * `manifest.labels.count` strings. Throws a {@link LabelFileError} saying what is wrong; callers
 * choose the status (the converter's verify: 422, a Worker reading R2: 503).
 *
 * @example
 * const labels = parseLabels((await source.file(manifest.labels)).bytes, manifest.labels);
 */
export function parseLabels(content: Uint8Array | string, ref: Manifest["labels"]): string[] {
  const want = `${ref.file} must be a JSON array of ${ref.count} strings`;
  let value: unknown;
  try {
    value = JSON.parse(typeof content === "string" ? content : new TextDecoder().decode(content));
  } catch {
    throw new LabelFileError(`${want}; it is not JSON.`);
  }
  if (!Array.isArray(value)) throw new LabelFileError(`${want}; it is not an array.`);
  if (value.length !== ref.count) throw new LabelFileError(`${want}; it has ${value.length} entries.`);
  const bad = value.findIndex((l) => typeof l !== "string");
  if (bad >= 0) throw new LabelFileError(`${want}; entry ${bad} is not a string.`);
  return value as string[];
}
