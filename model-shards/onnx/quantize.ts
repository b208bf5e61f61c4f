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
}

/** The scheme the converter ships (chosen by measurement; see the README section). */
export const DEFAULT_QUANT: QuantOptions = { activation: "per-row", weightBits: 8 };

/** Human-readable description for manifest.quantization. */
export function describeQuant(q: QuantOptions): string {
  const range = q.weightBits === 8 ? "[-127,127]" : "[-63,63] (7-bit)";
  const act =
    q.activation === "per-row"
      ? "activations dynamic per token row (symmetric uint8, zero point 128, scale max|x|/127)"
      : "activations dynamic per tensor (DynamicQuantizeLinear, asymmetric uint8)";
  const head = q.headFloat ? "classifier in float32" : "classifier int8 like the encoder";
  return `int8 MatMulInteger: weights symmetric per output channel ${range}; ${act}; ${head}; patch-embedding Conv, layer norms, attention score/context products, softmax and GELU in float32`;
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
  b: Float32Array | null,
  out: number,
  inp: number,
  opts: QuantOptions,
  prefix: string,
): string {
  const { q, scales } = quantizeWeight(w, out, inp, opts.weightBits);
  const wq = g.i8(`${prefix}_wq`, q, [inp, out]);
  let y: string;
  if (opts.activation === "per-tensor") {
    const [xq, xs, xzp] = g.op("DynamicQuantizeLinear", [x], {}, 3);
    const acc = g.op1("MatMulInteger", [xq, wq, xzp]);
    const accf = g.op1("Cast", [acc], { to: attr.int(DataType.FLOAT) });
    const colScale = g.f32(`${prefix}_ws`, scales, [out]);
    const scale = g.op1("Mul", [xs, colScale]);
    y = g.op1("Mul", [accf, scale]);
  } else {
    const absx = g.op1("Abs", [x]);
    const rowMax = g.op1("ReduceMax", [absx], { axes: attr.ints([-1]), keepdims: attr.int(1) });
    const rowScale0 = g.op1("Div", [rowMax, g.scalar("c127", 127)]);
    const rowScale = g.op1("Max", [rowScale0, g.scalar("tiny", 1e-30)]);
    const xs = g.op1("Div", [x, rowScale]);
    const shifted = g.op1("Add", [g.op1("Round", [xs]), g.scalar("c128", 128)]);
    const clipped = g.op1("Clip", [shifted, g.scalar("lo", 0), g.scalar("hi", 255)]);
    const xq = g.op1("Cast", [clipped], { to: attr.int(DataType.UINT8) });
    const zp = g.u8("zp128", [128], []);
    const acc = g.op1("MatMulInteger", [xq, wq, zp]);
    const accf = g.op1("Cast", [acc], { to: attr.int(DataType.FLOAT) });
    const colScaled = g.op1("Mul", [accf, g.f32(`${prefix}_ws`, scales, [out])]);
    y = g.op1("Mul", [colScaled, rowScale]);
  }
  return b ? g.op1("Add", [y, g.f32(`${prefix}_b`, b, [out])]) : y;
}
