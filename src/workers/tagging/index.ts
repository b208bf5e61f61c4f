/**
 * @module
 * Entry of the tagging Worker (`beit-edge-tagging`, see src/topology.ts): the CDN proxy
 * (src/tagging/proxy.ts) for GET/HEAD under TAGGING_PREFIX in front of ORIGIN_URL or the IMAGES
 * bucket; one KV lookup, never waits for the model, fails open. A miss is sent to the tagging
 * queue, which the tagging consumer (src/workers/tagging-consumer/, a Worker of its own) drains:
 * nothing of the model runs, or is even bundled, here.
 */
import { problemResponse } from "../../edge/problem.ts";
import { AppError } from "../../shared/errors.ts";
import {
  type TaggingConfig,
  TaggingConfigError,
  type TaggingVars,
  taggingConfigOf,
} from "../../tagging/config.ts";
import type { TagMessage } from "../../tagging/messages.ts";
import { originBindings } from "../../tagging/origin.ts";
import { handleImageRequest, PendingSet } from "../../tagging/proxy.ts";

export interface TaggingEnv extends TaggingVars {
  /** Hot-path entries (one per image locator). */
  TAGS: KVNamespace;
  TAGGING_QUEUE: Queue<TagMessage>;
  /** The image bucket (the origin when ORIGIN_URL is empty). */
  IMAGES?: R2Bucket;
}

/** Burst dedupe of misses within this isolate (see PendingSet). */
const pending = new PendingSet();

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
      origin: originBindings(env),
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
} satisfies ExportedHandler<TaggingEnv, unknown>;
