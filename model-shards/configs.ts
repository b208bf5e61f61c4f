/**
 * @module
 * Named model shapes for `plan --config base|tiny` and the benchmarks: the real
 * microsoft/beit-base-patch16-224-pt22k-ft22k shape, and the tiny test shape.
 */
import type { BeitConfig } from "./checkpoint/types.ts";

/** The shape of microsoft/beit-base-patch16-224-pt22k-ft22k (21,841 labels, placeholder names). */
export function baseConfig(): BeitConfig {
  return {
    hidden_size: 768,
    num_hidden_layers: 12,
    num_attention_heads: 12,
    intermediate_size: 3072,
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
    labels: Array.from({ length: 21841 }, (_, i) => `LABEL_${i}`),
  };
}
