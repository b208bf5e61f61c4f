import { describe, expect, it } from "vitest";
import { softmax, topK } from "./pipeline.ts";

describe("softmax", () => {
  it("matches exp(x)/sum exp(x) and survives huge logits", () => {
    const p = softmax([1, 2, 3]);
    const z = Math.exp(1) + Math.exp(2) + Math.exp(3);
    expect(p[2]).toBeCloseTo(Math.exp(3) / z, 14);
    const big = softmax([1000, 1000]);
    expect(Array.from(big)).toEqual([0.5, 0.5]);
  });
});

describe("topK", () => {
  const labels = ["cat", "dog", "eel", "fox"];
  it("returns labels with softmax scores sorted descending", () => {
    const top = topK(new Float32Array([0, 3, 1, 2]), labels, 3);
    expect(top.map((t) => t.label)).toEqual(["dog", "fox", "eel"]);
    expect(top[0].index).toBe(1);
    const all = topK(new Float32Array([0, 3, 1, 2]), labels, 4);
    expect(all.reduce((s, t) => s + t.score, 0)).toBeCloseTo(1, 12);
  });
  it("breaks ties by the lower class index", () => {
    const top = topK([5, 1, 5, 5], labels, 3);
    expect(top.map((t) => t.index)).toEqual([0, 2, 3]);
  });
  it("clamps k to the number of classes and to zero", () => {
    expect(topK([1, 2], ["a", "b"], 10)).toHaveLength(2);
    expect(topK([1, 2], ["a", "b"], 0)).toEqual([]);
  });
});
