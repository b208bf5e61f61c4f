/**
 * @module
 * Entry of the tagging consumer (`beit-edge-tagging-consumer`, see src/topology.ts): `queue` for
 * `beit-edge-tagging` (src/tagging/consumer.ts): the tagging Worker's misses, `npm run tag`'s
 * backfill and R2 event notifications of the IMAGES bucket. It fetches each image from the
 * configured origin only, dedupes by content hash, classifies through the core (src/classify)
 * with the stage Workers bound as STAGE_i, and writes D1 and the hot-path KV entry.
 *
 * It is its own Worker, not the proxy's `queue()`, so that decoding and classifying never run in
 * an isolate that serves images (one thread and 128 MB per isolate; a decode may take ~100 MB).
 */
import type { AccountsVars } from "../../accounts/config.ts";
import { limitsOf } from "../../accounts/limits.ts";
import { chargeKey, type QuotaNamespace } from "../../accounts/quota.ts";
import { recordUsage, TAGGING_USAGE_ID, type UsageEventsDataset } from "../../accounts/usage.ts";
import { defaultDecoder } from "../../classify/decoder.ts";
import { createClassifier } from "../../classify/index.ts";
import type { ClassifierEnv } from "../../edge/env.ts";
import { type TaggingVars, taggingConfigOf } from "../../tagging/config.ts";
import { handleTagBatch } from "../../tagging/consumer.ts";
import { originBindings } from "../../tagging/origin.ts";
import { ImageStore } from "../../tagging/store.ts";
import { TAGGING_MAX_RETRIES } from "../../topology.ts";
import { tagClassifier } from "./classifier.ts";

export interface TaggingConsumerEnv extends ClassifierEnv, TaggingVars, AccountsVars {
  /** The per-key quota objects (class KeyQuota in the gateway): backfills charge their key. */
  QUOTA?: QuotaNamespace;
  /** Hot-path entries the proxy reads (one per image locator). */
  TAGS: KVNamespace;
  /** images + image_labels (migrations/0002_images.sql). */
  DB: D1Database;
  /** The image bucket (R2 messages always read it; also the origin when ORIGIN_URL is empty). */
  IMAGES?: R2Bucket;
  /** Usage records (Analytics Engine, production). */
  USAGE_EVENTS?: UsageEventsDataset;
}

export default {
  async queue(batch, env, ctx) {
    const t0 = Date.now();
    const config = taggingConfigOf(env);
    const classifier = createClassifier(env, { decode: defaultDecoder, keepAlive: (p) => ctx.waitUntil(p) });
    const results = await handleTagBatch(
      batch,
      {
        config,
        origin: originBindings(env),
        store: new ImageStore(env.DB),
        tags: env.TAGS,
        classifier: tagClassifier(classifier),
        chargeImages: async (keyId, images) => {
          if (!env.QUOTA) return null;
          const limits = await limitsOf(env.DB, keyId, env);
          return limits ? chargeKey(env.QUOTA, keyId, { requests: 0, images, ...limits }) : null;
        },
        usage: (keyId, counts) =>
          ctx.waitUntil(recordUsage(env, keyId ?? TAGGING_USAGE_ID, "tagging", counts)),
      },
      TAGGING_MAX_RETRIES,
    );
    // One structured line per queue invocation (results carry outcomes and reasons, never bytes or URLs).
    console.log(
      JSON.stringify({
        event: "queue",
        queue: batch.queue,
        messages: batch.messages.length,
        outcomes: results,
        ms: Date.now() - t0,
      }),
    );
  },
} satisfies ExportedHandler<TaggingConsumerEnv, unknown>;
