/**
 * @module
 * Named model shapes for `plan --config base|tiny` and the benchmarks. They are the configs
 * `model synth` writes (the real microsoft/beit-base-patch16-224-pt22k-ft22k shape, and the tiny
 * test shape), read back through the same validator as any checkpoint's config.json; and how the
 * tiny model is built wherever it stands in for the real one (npm start --size tiny, tests, benches).
 */
import type { BuildOptions } from "./build.ts";
import { parseBeitConfig } from "./checkpoint/config.ts";
import { synthConfig } from "./checkpoint/synth.ts";
import type { BeitConfig } from "./checkpoint/types.ts";

/** The shape of microsoft/beit-base-patch16-224-pt22k-ft22k (21,841 labels, synthetic names). */
export function baseConfig(): BeitConfig {
  return parseBeitConfig(synthConfig({ size: "base" }));
}

/** The shape of `model synth --size tiny`. */
export function tinySynthConfig(): BeitConfig {
  return parseBeitConfig(synthConfig({ size: "tiny" }));
}

/**
 * Build options of the tiny synthetic model in development, tests and benches: int8, one layer per
 * stage (4 stages) under a proportionally small stage budget, so it runs through several stage
 * Workers as the full-size model does.
 */
export const TINY_BUILD = {
  precision: "int8",
  stageBudgetBytes: 32_000_000,
  maxLayersPerStage: 1,
} as const satisfies Partial<BuildOptions>;
