/**
 * @module
 * Named model shapes for `plan --config base|tiny` and the benchmarks. They are the configs
 * `model synth` writes (the real microsoft/beit-base-patch16-224-pt22k-ft22k shape, and the tiny
 * test shape), read back through the same validator as any checkpoint's config.json.
 */
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
