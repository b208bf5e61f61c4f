/**
 * @module
 * int8 linear layers for onnxruntime-web's wasm backend.
 *
 * Weights: symmetric, per output channel, zero point 0, stored int8 as [in, out]. `weightBits` 8
 * uses [-127, 127]; 7 uses [-63, 63] ("reduce range"), which native onnxruntime on AVX2 CPUs
 * without VNNI computes exactly (its u8 x s8 pair sums saturate int16 with full-range weights);
 * onnxruntime-web is exact either way.
 *
 * Activations, quantized at run time, two schemes:
 * - "per-tensor": DynamicQuantizeLinear (asymmetric uint8, one scale and zero point per tensor),
 *   MatMulInteger, then one float multiply by activation scale x weight scale per column.
 * - "per-row": one symmetric scale per token row, max|x| / 127, built from Abs, ReduceMax, Div,
 *   Round, Add 128, Clip, Cast to uint8 with a scalar zero point 128; MatMulInteger, then multiply
 *   by the row scales and the column scales. Outlier tokens no longer coarsen every other row.
 */
import { attr, type GraphBuilder } from "./builder.ts";
import { DataType } from "./proto.ts";

export type ActivationScheme = "per-tensor" | "per-row";

/** How linear layers are quantized. */
export interface QuantOptions {
  activation: ActivationScheme;
  weightBits: 7 | 8;
  /** Keep the classifier in float32 (default false: it is the largest tensor, int8 it). */
  headFloat?: boolean;
  /**
   * Per-row activations only: which linear inputs get an asymmetric per-token range (scale
   * (max - min) / 255, zero point round(-min / scale)) instead of the symmetric max|x| / 127.
   * "gelu": the MLP output projection, whose input (GELU output, >= -0.17) is one-sided, so the
   * symmetric grid wastes half its codes; "all": every linear. Default "none".
   * MatMulInteger in onnxruntime takes only a scalar activation zero point, so the graph feeds
   * the codes with zero point 0 and subtracts zp_row x colsum(Wq) afterwards (exact in integers).
   */
  asymmetric?: "none" | "gelu" | "all";
  /**
   * Benchmarks only (per-layer error attribution): "weights" quantizes and dequantizes the
   * weights and runs a float MatMul on float activations; "activations" rounds the activations to
   * their int8 grid and keeps float weights; "both" does both (the int8 result up to float
   * accumulation order). Default: the real int8 graph.
   */
  simulate?: "weights" | "activations" | "both";
  /**
   * Bias correction: per linear layer (by prefix), the mean of its input per channel over tokens
   * and calibration images, measured on the fp32 graph ({@link calibrateInputMeans} in
   * calibrate.ts). The int8 weight error then adds no systematic shift: the bias becomes
   * b - (W_q - W) mean(x). Matters where inputs have a large common mean (after GELU).
   */
  inputMeans?: ReadonlyMap<string, Float32Array>;
  /**
   * Which layers the converter bias-corrects (it calibrates and fills `inputMeans`): "mlp-output"
   * (the MLP output projections, whose GELU inputs have a large common mean), "all", or "none".
   */
  biasCorrection?: "none" | "mlp-output" | "all";
  /** Benchmarks only: which linear layers (by prefix, e.g. "l3_fc2", "classifier") to quantize. */
  select?: (prefix: string) => boolean;
}

/** The scheme the converter ships (chosen by measurement; see the README section). */
export const DEFAULT_QUANT: QuantOptions = {
  activation: "per-row",
  weightBits: 8,
  asymmetric: "gelu",
  biasCorrection: "mlp-output",
};

/** Keeps the calibrated means of the layers `q.biasCorrection` names. */
export function selectBiasCorrection(
  q: QuantOptions,
  means: ReadonlyMap<string, Float32Array>,
): Map<string, Float32Array> {
  const which = q.biasCorrection ?? "none";
  return new Map(
    [...means].filter(([k]) => which === "all" || (which === "mlp-output" && k.endsWith("_fc2"))),
  );
}

/** Human-readable description for manifest.quantization. */
export function describeQuant(q: QuantOptions): string {
  const range = q.weightBits === 8 ? "[-127,127]" : "[-63,63] (7-bit)";
  const asym = q.asymmetric ?? "none";
  const act =
    q.activation === "per-row"
      ? asym === "all"
        ? "activations dynamic per token row (asymmetric uint8, scale (max-min)/255)"
        : asym === "gelu"
          ? "activations dynamic per token row (symmetric uint8, zero point 128, scale max|x|/127; asymmetric, scale (max-min)/255, for the MLP output projection's GELU input)"
          : "activations dynamic per token row (symmetric uint8, zero point 128, scale max|x|/127)"
      : "activations dynamic per tensor (DynamicQuantizeLinear, asymmetric uint8)";
  const bc = q.biasCorrection ?? "none";
  const corr =
    bc === "none"
      ? ""
      : `; bias correction (${bc === "all" ? "all linears" : "MLP output projections"}) from input means on calibration pictures`;
  const head = q.headFloat ? "classifier in float32" : "classifier int8 like the encoder";
  return `int8 MatMulInteger: weights symmetric per output channel ${range}; ${act}${corr}; ${head}; patch-embedding Conv, layer norms, attention score/context products, softmax and GELU in float32`;
}

/** Per-output-channel symmetric quantization of a [out, in] weight, returned transposed [in, out]. */
export function quantizeWeight(
  w: Float32Array,
  out: number,
  inp: number,
  bits: 7 | 8,
): { q: Int8Array; scales: Float32Array } {
  const qmax = bits === 8 ? 127 : 63;
  const q = new Int8Array(out * inp);
  const scales = new Float32Array(out);
  for (let o = 0; o < out; o++) {
    let m = 0;
    const row = o * inp;
    for (let i = 0; i < inp; i++) m = Math.max(m, Math.abs(w[row + i]));
    const s = m > 0 ? m / qmax : 1;
    scales[o] = s;
    for (let i = 0; i < inp; i++) {
      const v = Math.round(w[row + i] / s);
      q[i * out + o] = Math.min(qmax, Math.max(-qmax, v));
    }
  }
  return { q, scales };
}

/**
 * Emits y = x W^T + b with int8 weights; `w` is the PyTorch [out, in] weight. Returns y's name.
 * When `xq` is given (a previous call's quantized activation for the same x), it is reused.
 */
export function quantizedLinear(
  g: GraphBuilder,
  x: string,
  w: Float32Array,
  bias: Float32Array | null,
  out: number,
  inp: number,
  opts: QuantOptions,
  prefix: string,
): string {
  const { q, scales } = quantizeWeight(w, out, inp, opts.weightBits);
  const mean = opts.inputMeans?.get(prefix);
  const b = mean && opts.simulate !== "activations" ? correctBias(w, q, scales, bias, mean, out, inp) : bias;
  const asym =
    opts.activation === "per-row" &&
    (opts.asymmetric === "all" || (opts.asymmetric === "gelu" && prefix.endsWith("_fc2")));
  let y: string;
  if (opts.simulate) {
    y = simulatedLinear(g, x, w, q, scales, out, inp, opts, asym, prefix);
  } else if (opts.activation === "per-tensor") {
    const wq = g.i8(`${prefix}_wq`, q, [inp, out]);
    const [xq, xs, xzp] = g.op("DynamicQuantizeLinear", [x], {}, 3);
    const acc = g.op1("MatMulInteger", [xq, wq, xzp]);
    const accf = g.op1("Cast", [acc], { to: attr.int(DataType.FLOAT) });
    const colScale = g.f32(`${prefix}_ws`, scales, [out]);
    const scale = g.op1("Mul", [xs, colScale]);
    y = g.op1("Mul", [accf, scale]);
  } else {
    const wq = g.i8(`${prefix}_wq`, q, [inp, out]);
    const { codes, rowScale, rowZero } = rowQuantize(g, x, asym);
    const acc = g.op1("MatMulInteger", asym ? [codes, wq] : [codes, wq, g.u8("zp128", [128], [])]);
    let accf = g.op1("Cast", [acc], { to: attr.int(DataType.FLOAT) });
    if (rowZero) {
      const colSum = new Float32Array(out);
      for (let i = 0; i < inp; i++) for (let o = 0; o < out; o++) colSum[o] += q[i * out + o];
      accf = g.op1("Sub", [accf, g.op1("Mul", [rowZero, g.f32(`${prefix}_wsum`, colSum, [out])])]);
    }
    const colScaled = g.op1("Mul", [accf, g.f32(`${prefix}_ws`, scales, [out])]);
    y = g.op1("Mul", [colScaled, rowScale]);
  }
  return b ? g.op1("Add", [y, g.f32(`${prefix}_b`, b, [out])]) : y;
}

/** b - (W_q - W) mean: removes the weight rounding's mean effect on y (bias correction). */
export function correctBias(
  w: Float32Array,
  q: Int8Array,
  scales: Float32Array,
  b: Float32Array | null,
  mean: Float32Array,
  out: number,
  inp: number,
): Float32Array {
  if (mean.length !== inp) throw new Error(`input means have ${mean.length} channels, the layer ${inp}`);
  const corrected = new Float32Array(out);
  for (let o = 0; o < out; o++) {
    let shift = 0;
    for (let i = 0; i < inp; i++) shift += (q[i * out + o] * scales[o] - w[o * inp + i]) * mean[i];
    corrected[o] = (b ? b[o] : 0) - shift;
  }
  return corrected;
}

/**
 * Per-token-row activation codes: symmetric (uint8 = round(x / s) + 128, s = max|x| / 127) or
 * asymmetric (uint8 = round(x / s) + zp, s = (max - min) / 255, zp = round(-min / s), returned as
 * a float [rows, 1] tensor so the caller can subtract zp x colsum(Wq)).
 */
function rowQuantize(
  g: GraphBuilder,
  x: string,
  asym: boolean,
  wantFloat = false,
): { codes: string; rowScale: string; rowZero: string | null; float: string | null } {
  const axes = { axes: attr.ints([-1]), keepdims: attr.int(1) };
  let rowScale: string;
  let offset: string;
  let rowZero: string | null = null;
  if (asym) {
    const hi = g.op1("Max", [g.op1("ReduceMax", [x], axes), g.scalar("zero", 0)]);
    const lo = g.op1("Min", [g.op1("ReduceMin", [x], axes), g.scalar("zero", 0)]);
    const range = g.op1("Div", [g.op1("Sub", [hi, lo]), g.scalar("c255", 255)]);
    rowScale = g.op1("Max", [range, g.scalar("tiny", 1e-30)]);
    rowZero = g.op1("Round", [g.op1("Div", [g.op1("Neg", [lo]), rowScale])]);
    offset = rowZero;
  } else {
    const rowMax = g.op1("ReduceMax", [g.op1("Abs", [x])], axes);
    rowScale = g.op1("Max", [g.op1("Div", [rowMax, g.scalar("c127", 127)]), g.scalar("tiny", 1e-30)]);
    offset = g.scalar("c128", 128);
  }
  const shifted = g.op1("Add", [g.op1("Round", [g.op1("Div", [x, rowScale])]), offset]);
  const clipped = g.op1("Clip", [shifted, g.scalar("lo", 0), g.scalar("hi", 255)]);
  if (wantFloat) {
    // The dequantized activation, for the float simulation: (code - offset) x scale.
    const float = g.op1("Mul", [g.op1("Sub", [clipped, offset]), rowScale]);
    return { codes: "", rowScale, rowZero, float };
  }
  const codes = g.op1("Cast", [clipped], { to: attr.int(DataType.UINT8) });
  return { codes, rowScale, rowZero, float: null };
}

/** Float graph that applies only the weight or only the activation rounding (see `simulate`). */
function simulatedLinear(
  g: GraphBuilder,
  x: string,
  w: Float32Array,
  q: Int8Array,
  scales: Float32Array,
  out: number,
  inp: number,
  opts: QuantOptions,
  asym: boolean,
  prefix: string,
): string {
  const wt = new Float32Array(inp * out);
  if (opts.simulate !== "activations") for (let i = 0; i < inp * out; i++) wt[i] = q[i] * scales[i % out];
  else for (let o = 0; o < out; o++) for (let i = 0; i < inp; i++) wt[i * out + o] = w[o * inp + i];
  let xin = x;
  if (opts.simulate !== "weights") {
    if (opts.activation === "per-row") xin = rowQuantize(g, x, asym, true).float as string;
    else xin = g.op1("DequantizeLinear", g.op("DynamicQuantizeLinear", [x], {}, 3));
  }
  return g.op1("MatMul", [xin, g.f32(`${prefix}_wf`, wt, [inp, out])]);
}
