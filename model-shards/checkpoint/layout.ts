/**
 * @module
 * The state-dict layout of transformers' BeitForImageClassification for a validated config:
 * every key and its shape, and BEiT's relative position index (a fixed function of the patch
 * grid). Shared by the loader (validation), the synthesizer (generation) and the graph builder.
 */
import type { BeitConfig } from "./types.ts";

/** Patch grid side (14 for 224 / 16). */
export function gridSide(config: Pick<BeitConfig, "image_size" | "patch_size">): number {
  return config.image_size / config.patch_size;
}

/** Rows of a relative position bias table: (2h-1)(2w-1) + 3 (cls->token, token->cls, cls->cls). */
export function numRelativeDistance(h: number, w = h): number {
  return (2 * h - 1) * (2 * w - 1) + 3;
}

/**
 * BEiT's relative position index for an h x w patch grid plus the CLS token: an
 * [(hw+1), (hw+1)] row-major table of rows into the bias table. Token pairs map to their
 * shifted (dy, dx) offset; the CLS row, CLS column and CLS-CLS cell use the three extra rows.
 */
export function relativePositionIndex(h: number, w = h): BigInt64Array {
  const n = h * w + 1;
  const out = new BigInt64Array(n * n);
  const extra = numRelativeDistance(h, w) - 3;
  for (let i = 0; i < h * w; i++) {
    const yi = Math.floor(i / w);
    const xi = i % w;
    for (let j = 0; j < h * w; j++) {
      const yj = Math.floor(j / w);
      const xj = j % w;
      out[(i + 1) * n + (j + 1)] = BigInt((yi - yj + h - 1) * (2 * w - 1) + (xi - xj + w - 1));
    }
  }
  for (let j = 0; j < n; j++) out[j] = BigInt(extra); // CLS row: cls -> token
  for (let i = 0; i < n; i++) out[i * n] = BigInt(extra + 1); // CLS column: token -> cls
  out[0] = BigInt(extra + 2);
  return out;
}

/** Expected shape of every state-dict key, in the order transformers registers them. */
export function expectedTensorShapes(config: BeitConfig): Map<string, number[]> {
  const H = config.hidden_size;
  const I = config.intermediate_size;
  const P = config.patch_size;
  const g = gridSide(config);
  const tokens = g * g + 1;
  const m = new Map<string, number[]>();
  m.set("beit.embeddings.cls_token", [1, 1, H]);
  m.set("beit.embeddings.patch_embeddings.projection.weight", [H, config.num_channels, P, P]);
  m.set("beit.embeddings.patch_embeddings.projection.bias", [H]);
  for (let l = 0; l < config.num_hidden_layers; l++) {
    const p = `beit.encoder.layer.${l}`;
    if (config.layer_scale_init_value > 0) {
      m.set(`${p}.lambda_1`, [H]);
      m.set(`${p}.lambda_2`, [H]);
    }
    const a = `${p}.attention.attention`;
    m.set(`${a}.query.weight`, [H, H]);
    m.set(`${a}.query.bias`, [H]);
    m.set(`${a}.key.weight`, [H, H]);
    m.set(`${a}.value.weight`, [H, H]);
    m.set(`${a}.value.bias`, [H]);
    if (config.use_relative_position_bias) {
      m.set(`${a}.relative_position_bias.relative_position_bias_table`, [
        numRelativeDistance(g),
        config.num_attention_heads,
      ]);
      m.set(`${a}.relative_position_bias.relative_position_index`, [tokens, tokens]);
    }
    m.set(`${p}.attention.output.dense.weight`, [H, H]);
    m.set(`${p}.attention.output.dense.bias`, [H]);
    m.set(`${p}.intermediate.dense.weight`, [I, H]);
    m.set(`${p}.intermediate.dense.bias`, [I]);
    m.set(`${p}.output.dense.weight`, [H, I]);
    m.set(`${p}.output.dense.bias`, [H]);
    m.set(`${p}.layernorm_before.weight`, [H]);
    m.set(`${p}.layernorm_before.bias`, [H]);
    m.set(`${p}.layernorm_after.weight`, [H]);
    m.set(`${p}.layernorm_after.bias`, [H]);
  }
  m.set("beit.pooler.layernorm.weight", [H]);
  m.set("beit.pooler.layernorm.bias", [H]);
  m.set("classifier.weight", [config.labels.length, H]);
  m.set("classifier.bias", [config.labels.length]);
  return m;
}

/** Keys that are integer buffers (I64) rather than float parameters. */
export function isIndexKey(key: string): boolean {
  return key.endsWith(".relative_position_index");
}
