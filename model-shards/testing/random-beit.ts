/**
 * @module
 * Test helper: a random-weight BEiT state dict with the Hugging Face key names and shapes, made in
 * memory with a seeded generator. Lets the graph, reference and planner tests run without the
 * checkpoint readers; the end-to-end tests use `synthesize` from ../checkpoint instead.
 */

import { mulberry32 } from "../../src/shared/random.ts";
import { numel } from "../checkpoint/dtypes.ts";
import { numRelativeDistance, relativePositionIndex } from "../checkpoint/layout.ts";
import type { BeitConfig, StateDict } from "../checkpoint/types.ts";

/** Deterministic uniform [0, 1) generator for `seed`. */
export const rng = mulberry32;

/** A small config (patch 16 at 224, so the token count matches the real model). */
export function tinyConfig(overrides: Partial<BeitConfig> = {}): BeitConfig {
  return {
    hidden_size: 32,
    num_hidden_layers: 4,
    num_attention_heads: 4,
    intermediate_size: 64,
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
    labels: Array.from({ length: 10 }, (_, i) => `label_${i}`),
    ...overrides,
  };
}

/** Random weights for `config`, std ~ 1/sqrt(fan_in) so activations stay O(1). */
export function randomBeit(config: BeitConfig, seed = 1): StateDict {
  const r = rng(seed);
  const sd: StateDict = new Map();
  const H = config.hidden_size;
  const I = config.intermediate_size;
  const P = config.patch_size;
  const C = config.num_channels;
  const w = config.image_size / P;
  const T = w * w + 1;
  const heads = config.num_attention_heads;
  const put = (key: string, shape: number[], scale: number, offset = 0) => {
    const n = numel(shape);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = offset + (r() * 2 - 1) * scale;
    sd.set(key, { dtype: "F32", shape, data });
  };
  const s = (fan: number) => Math.sqrt(3 / fan);
  put("beit.embeddings.cls_token", [1, 1, H], 1);
  put("beit.embeddings.patch_embeddings.projection.weight", [H, C, P, P], s(C * P * P));
  put("beit.embeddings.patch_embeddings.projection.bias", [H], 0.1);
  for (let l = 0; l < config.num_hidden_layers; l++) {
    const k = `beit.encoder.layer.${l}`;
    const a = `${k}.attention.attention`;
    put(`${k}.lambda_1`, [H], 0.3, 0.5);
    put(`${k}.lambda_2`, [H], 0.3, 0.5);
    put(`${a}.query.weight`, [H, H], s(H) * 2);
    put(`${a}.query.bias`, [H], 0.1);
    put(`${a}.key.weight`, [H, H], s(H) * 2);
    put(`${a}.value.weight`, [H, H], s(H));
    put(`${a}.value.bias`, [H], 0.1);
    put(`${a}.relative_position_bias.relative_position_bias_table`, [numRelativeDistance(w), heads], 1);
    sd.set(`${a}.relative_position_bias.relative_position_index`, {
      dtype: "I64",
      shape: [T, T],
      data: relativePositionIndex(w),
    });
    put(`${k}.attention.output.dense.weight`, [H, H], s(H));
    put(`${k}.attention.output.dense.bias`, [H], 0.1);
    put(`${k}.intermediate.dense.weight`, [I, H], s(H));
    put(`${k}.intermediate.dense.bias`, [I], 0.1);
    put(`${k}.output.dense.weight`, [H, I], s(I));
    put(`${k}.output.dense.bias`, [H], 0.1);
    put(`${k}.layernorm_before.weight`, [H], 0.2, 1);
    put(`${k}.layernorm_before.bias`, [H], 0.1);
    put(`${k}.layernorm_after.weight`, [H], 0.2, 1);
    put(`${k}.layernorm_after.bias`, [H], 0.1);
  }
  put("beit.pooler.layernorm.weight", [H], 0.2, 1);
  put("beit.pooler.layernorm.bias", [H], 0.1);
  put("classifier.weight", [config.labels.length, H], s(H) * 3);
  put("classifier.bias", [config.labels.length], 0.1);
  return sd;
}

/** Random pixel_values [1, C, S, S] roughly in the normalized range. */
export function randomPixels(config: BeitConfig, seed: number): Float32Array {
  const r = rng(seed);
  const n = config.num_channels * config.image_size * config.image_size;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = r() * 2 - 1;
  return out;
}
