import { describe, expect, it } from "vitest";
import { erf } from "./reference.ts";

describe("erf (float64 reference GELU)", () => {
  // Values from the defining integral, to 16 digits.
  const known: [number, number][] = [
    [0, 0],
    [0.1, 0.1124629160182849],
    [0.5, 0.5204998778130465],
    [1, 0.8427007929497149],
    [2, 0.9953222650189527],
    [2.9, 0.9999589021219005],
    [3.5, 0.9999992569016276],
    [5, 0.9999999999984626],
  ];
  it.each(known)("erf(%f) within 1e-13", (x, v) => {
    expect(Math.abs(erf(x) - v)).toBeLessThan(1e-13);
    expect(Math.abs(erf(-x) + v)).toBeLessThan(1e-13);
  });
});
