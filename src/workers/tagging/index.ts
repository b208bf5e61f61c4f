/**
 * @module
 * Entry of the tagging Worker (`beit-edge-tagging`, see src/topology.ts).
 *
 * - `fetch`: the CDN proxy (src/tagging/proxy.ts) for GET/HEAD under TAGGING_PREFIX in front of
 *   ORIGIN_URL or the IMAGES bucket; one KV lookup, never waits for the model, fails open.
 * - `queue`: the tagging consumer (src/tagging/consumer.ts) for `beit-edge-tagging`: the
 *   proxy's and `npm run tag`'s messages and R2 event notifications of the IMAGES bucket; it
 *   classifies through the core (src/classify) with the stage Workers bound as STAGE_i.
 */
import { defaultDecoder } from "../../classify/decoder.ts";
import { createClassifier } from "../../classify/index.ts";
import type { ClassifierEnv } from "../../edge/env.ts";
import { problemResponse } from "../../edge/problem.ts";
import { AppError } from "../../shared/errors.ts";
import {
  type TaggingConfig,
  TaggingConfigError,
  type TaggingVars,
  taggingConfigOf,
} from "../../tagging/config.ts";
import { handleTagBatch } from "../../tagging/consumer.ts";
import type { TagMessage } from "../../tagging/messages.ts";
import type { OriginBindings } from "../../tagging/origin.ts";
import { handleImageRequest, PendingSet } from "../../tagging/proxy.ts";
import { ImageStore } from "../../tagging/store.ts";
import { TAGGING_MAX_RETRIES } from "../../topology.ts";
import { tagClassifier } from "./classifier.ts";

export interface TaggingEnv extends ClassifierEnv, TaggingVars {
  /** Hot-path entries (one per image locator). */
  TAGS: KVNamespace;
  /** images + image_labels (migrations/0002_images.sql). */
  DB: D1Database;
  TAGGING_QUEUE: Queue<TagMessage>;
  /** The image bucket (the origin when ORIGIN_URL is empty). */
  IMAGES?: R2Bucket;
}

/** Burst dedupe of misses within this isolate (see PendingSet). */
const pending = new PendingSet();

function originOf(env: TaggingEnv): OriginBindings {
  return {
    fetch: (input, init) => fetch(input, init),
    bucket: env.IMAGES,
    bucketName: env.IMAGES_BUCKET ?? "",
  };
}

function configOrProblem(env: TaggingEnv): TaggingConfig | Response {
  try {
    return taggingConfigOf(env);
  } catch (e) {
    if (!(e instanceof TaggingConfigError)) throw e;
    console.error("tagging config", e.message);
    return problemResponse(
      new AppError("tagging-misconfigured", 500, `The tagging Worker is misconfigured: ${e.message}.`),
    );
  }
}

export default {
  async fetch(req, env, ctx) {
    const config = configOrProblem(env);
    if (config instanceof Response) return config;
    const res = await handleImageRequest(req, {
      config,
      origin: originOf(env),
      tags: env.TAGS,
      queue: env.TAGGING_QUEUE,
      markers: caches.default,
      pending,
      waitUntil: (p) => ctx.waitUntil(p),
    });
    return (
      res ??
      problemResponse(
        new AppError("not-found", 404, `The tagging Worker serves images under ${config.prefix} only.`),
      )
    );
  },

  async queue(batch, env, ctx) {
    const config = taggingConfigOf(env);
    const classifier = createClassifier(env, { decode: defaultDecoder, keepAlive: (p) => ctx.waitUntil(p) });
    const results = await handleTagBatch(
      batch,
      {
        config,
        origin: originOf(env),
        store: new ImageStore(env.DB),
        tags: env.TAGS,
        classifier: tagClassifier(classifier),
      },
      TAGGING_MAX_RETRIES,
    );
    console.log(JSON.stringify({ event: "tagging-batch", messages: batch.messages.length, results }));
  },
} satisfies ExportedHandler<TaggingEnv, unknown>;
