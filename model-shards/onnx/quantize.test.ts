/**
 * int8 linear layers in onnxruntime-web: the asymmetric per-token path computes exactly the
 * quantized product it describes (checked against the same arithmetic in float64), beats the
 * symmetric grid on one-sided (post-GELU) inputs, and bias correction removes the weight
 * rounding's mean error.
 */
import { describe, expect, it } from "vitest";
import { createStageSession } from "../../src/inference/ort.ts";
import { mulberry32 } from "../../src/shared/random.ts";
import { GraphBuilder } from "./builder.ts";
import { DataType, serializeModel } from "./proto.ts";
import {
  correctBias,
  migrationScales,
  type QuantOptions,
  quantizedLinear,
  quantizeWeight,
} from "./quantize.ts";

const R = 6; // token rows
const IN = 96;
const OUT = 40;

function data() {
  const r = mulberry32(7);
  const normal = () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  const w = Float32Array.from({ length: OUT * IN }, () => normal() / Math.sqrt(IN));
  const b = Float32Array.from({ length: OUT }, () => 0.1 * normal());
  // GELU of a normal: one-sided, >= -0.17, like the MLP output projection's input.
  const gelu = (v: number) => 0.5 * v * (1 + Math.tanh(0.7978845608 * (v + 0.044715 * v ** 3)));
  const x = Float32Array.from({ length: R * IN }, () => gelu(1.5 * normal() + 0.3));
  return { w, b, x };
}

async function runLinear(
  x: Float32Array,
  w: Float32Array,
  b: Float32Array,
  q: QuantOptions,
  prefix = "l0_fc2",
) {
  const g = new GraphBuilder();
  const y = quantizedLinear(g, "x", w, b, OUT, IN, q, prefix);
  g.rename(y, "y");
  const graph = g.graph(
    "t",
    [{ name: "x", elemType: DataType.FLOAT, shape: [1, R, IN] }],
    [{ name: "y", elemType: DataType.FLOAT, shape: [1, R, OUT] }],
  );
  const session = await createStageSession(serializeModel(graph).model, null, {
    graphOptimizationLevel: "disabled",
  });
  const out = await session.run(
    x,
    { name: "x", shape: [1, R, IN], dtype: "float32" },
    { name: "y", shape: [1, R, OUT], dtype: "float32" },
  );
  await session.release();
  return out;
}

function exact(x: Float32Array, w: Float32Array, b: Float32Array): Float64Array {
  const y = new Float64Array(R * OUT);
  for (let r = 0; r < R; r++)
    for (let o = 0; o < OUT; o++) {
      let s = b[o];
      for (let i = 0; i < IN; i++) s += x[r * IN + i] * w[o * IN + i];
      y[r * OUT + o] = s;
    }
  return y;
}

const rms = (a: ArrayLike<number>, ref: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < ref.length; i++) s += (a[i] - ref[i]) ** 2;
  return Math.sqrt(s / ref.length);
};

describe("quantizedLinear", () => {
  it("asymmetric per-token codes give the quantized product they describe, and a smaller error on post-GELU inputs", async () => {
    const { w, b, x } = data();
    const asym = await runLinear(x, w, b, { activation: "per-row", weightBits: 8, asymmetric: "gelu" });
    const sym = await runLinear(x, w, b, { activation: "per-row", weightBits: 8 });
    // The same arithmetic in float64: codes round(x / s) + zp, s = (max - min) / 255 per row.
    const { q, scales } = quantizeWeight(w, OUT, IN, 8);
    const expected = new Float64Array(R * OUT);
    for (let r = 0; r < R; r++) {
      const row = x.subarray(r * IN, (r + 1) * IN);
      const hi = Math.max(0, ...row);
      const lo = Math.min(0, ...row);
      const s = Math.fround(Math.fround(hi - lo) / 255);
      const zp = Math.round(-lo / s);
      for (let o = 0; o < OUT; o++) {
        let acc = 0;
        for (let i = 0; i < IN; i++) {
          const code = Math.min(255, Math.max(0, Math.round(Math.fround(row[i] / s)) + zp));
          acc += (code - zp) * q[i * OUT + o];
        }
        expected[r * OUT + o] = acc * scales[o] * s + b[o];
      }
    }
    expect(rms(asym, expected)).toBeLessThan(1e-5);
    // Against float activations times the same int8 weights, so only activation rounding counts.
    const wDeq = Float32Array.from(
      w,
      (_, k) => q[(k % IN) * OUT + Math.floor(k / IN)] * scales[Math.floor(k / IN)],
    );
    const ref = exact(x, wDeq, b);
    expect(rms(asym, ref)).toBeLessThan(0.75 * rms(sym, ref));
  });

  it("outlier channels: the 16-bit product gives the arithmetic it describes, and beats one int8 product", async () => {
    const { w, b } = data();
    const r = mulberry32(11);
    // Two channels 40x and 25x wider than the rest, as after a LayerNorm with large gains.
    const x = Float32Array.from({ length: R * IN }, (_, k) => {
      const c = k % IN;
      return (r() - 0.5) * (c === 3 ? 40 : c === 17 ? 25 : 1);
    });
    const absMax = new Float32Array(IN);
    const meanSquare = new Float32Array(IN);
    for (let k = 0; k < x.length; k++) {
      absMax[k % IN] = Math.max(absMax[k % IN], Math.abs(x[k]));
      meanSquare[k % IN] += (x[k] * x[k]) / R;
    }
    const stats = new Map([["l0_fc1", { absMax, meanSquare }]]);
    const seen: number[][] = [];
    const quant: QuantOptions = {
      activation: "per-row",
      weightBits: 8,
      inputStats: stats,
      onLayer: (l) => seen.push([...l.outliers]),
    };
    const split = await runLinear(x, w, b, quant, "l0_fc1");
    const plain = await runLinear(x, w, b, { activation: "per-row", weightBits: 8 }, "l0_fc1");
    expect(seen[0]).toEqual([3, 17]);
    // The same arithmetic in float64: ordinary channels as one symmetric int8 product, the two
    // outlier channels migrated, their weights int8 per column, activations 16-bit per row.
    const normal = Array.from({ length: IN }, (_, i) => i).filter((i) => i !== 3 && i !== 17);
    const outl = [3, 17];
    const cols = (idx: number[]) =>
      Float32Array.from(
        { length: OUT * idx.length },
        (_, k) => w[Math.floor(k / idx.length) * IN + idx[k % idx.length]],
      );
    const qn = quantizeWeight(cols(normal), OUT, normal.length, 8);
    const sm = migrationScales(
      cols(outl),
      OUT,
      2,
      outl.map((c) => absMax[c]),
      outl.map((c) => meanSquare[c]),
      8,
    );
    const wo = cols(outl).map((v, k) => v * sm[k % 2]);
    const qo = quantizeWeight(wo, OUT, 2, 8);
    const expected = new Float64Array(R * OUT);
    for (let row = 0; row < R; row++) {
      const xn = normal.map((c) => x[row * IN + c]);
      const sN = Math.fround(Math.max(...xn.map(Math.abs)) / 127);
      const xo = outl.map((c, k) => Math.fround(x[row * IN + c] * Math.fround(1 / sm[k])));
      const sO = Math.fround(Math.max(...xo.map(Math.abs)) / 32767);
      for (let o = 0; o < OUT; o++) {
        let accN = 0;
        for (const [k, v] of xn.entries())
          accN += Math.min(127, Math.max(-128, Math.round(Math.fround(v / sN)))) * qn.q[k * OUT + o];
        let accO = 0;
        for (const [k, v] of xo.entries()) accO += Math.round(Math.fround(v / sO)) * qo.q[k * OUT + o];
        expected[row * OUT + o] = accN * qn.scales[o] * sN + accO * qo.scales[o] * sO + b[o];
      }
    }
    expect(rms(split, expected)).toBeLessThan(1e-4);
    const ref = exact(x, w, b);
    expect(rms(split, ref)).toBeLessThan(0.2 * rms(plain, ref));
  });

  it("bias correction cancels the weight rounding's effect on the input mean", () => {
    const { w, b } = data();
    const mean = Float32Array.from({ length: IN }, (_, i) => 0.5 + (i % 7) * 0.1);
    const { q, scales } = quantizeWeight(w, OUT, IN, 8);
    const corrected = correctBias(w, q, scales, b, mean, OUT, IN);
    for (let o = 0; o < OUT; o++) {
      let yq = corrected[o];
      let yf = b[o];
      for (let i = 0; i < IN; i++) {
        yq += q[i * OUT + o] * scales[o] * mean[i];
        yf += w[o * IN + i] * mean[i];
      }
      expect(Math.abs(yq - yf)).toBeLessThan(1e-5);
    }
    expect(() => correctBias(w, q, scales, b, new Float32Array(3), OUT, IN)).toThrow(/3 channels/);
  });
});
