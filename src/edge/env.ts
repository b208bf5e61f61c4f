/**
 * @module
 * Binding types of the Workers described in src/topology.ts. Plain interfaces so that tests and
 * scripts can build them. Raw var strings are read only by src/edge/config.ts; everything else
 * takes the typed {@link Config} it returns.
 */
import type { AccountsVars } from "../accounts/config.ts";
import type { QuotaNamespace } from "../accounts/quota.ts";
import type { UsageEventsDataset } from "../accounts/usage.ts";
import type { JobsVars } from "../jobs/config.ts";
import type { DeliveryMessage, JobMessage } from "../jobs/consumers.ts";
import { MAX_STAGES, stageBindingName } from "../topology.ts";

export { MAX_STAGES };

/** STAGE_0 .. STAGE_7: service bindings to the stage Workers (as many as the manifest has stages). */
export interface StageBindings {
  STAGE_0?: Fetcher;
  STAGE_1?: Fetcher;
  STAGE_2?: Fetcher;
  STAGE_3?: Fetcher;
  STAGE_4?: Fetcher;
  STAGE_5?: Fetcher;
  STAGE_6?: Fetcher;
  STAGE_7?: Fetcher;
}

/** Vars of every Worker that classifies (defaults and meaning in src/topology.ts CLASSIFIER_VARS). */
export interface ClassifierVars {
  REQUEST_DEADLINE_MS?: string;
  MAX_BODY_BYTES?: string;
  MAX_BATCH?: string;
  POINTER_TTL_S?: string;
  /**
   * "true" lets URL inputs reach loopback (127/8, ::1, localhost): local development and tests.
   * Anything else (default) refuses them like every private destination.
   */
  ALLOW_LOOPBACK_FETCH?: string;
}

/** What the classification core needs: the model bucket, the stage bindings and the vars. */
export interface ClassifierEnv extends StageBindings, ClassifierVars {
  /** The model bucket: shards/, manifests/, active.json. */
  MODELS: R2Bucket;
}

/**
 * Bindings of webhook jobs (issue #9): the gateway submits, reads and redelivers; the jobs Worker
 * consumes. Optional on the gateway so a deployment without them answers /v1/jobs with a 503.
 */
export interface JobsBindings extends JobsVars {
  /** D1: jobs, deliveries (migrations/). */
  DB?: D1Database;
  /** R2: the images of queued jobs (uploads/<job id>/<i>). */
  UPLOADS?: R2Bucket;
  /** Producer of beit-edge-jobs. */
  JOBS_QUEUE?: Queue<JobMessage>;
  /** Producer of beit-edge-deliveries. */
  DELIVERY_QUEUE?: Queue<DeliveryMessage>;
}

/** Keys, quotas and usage (issue #20): all optional, so a deployment without them still serves. */
export interface AccountsBindings extends AccountsVars {
  /** Durable Object namespace of the per-key quota counters (class KeyQuota, in the gateway). */
  QUOTA?: QuotaNamespace;
  /** Workers Analytics Engine dataset of usage records (production). */
  USAGE_EVENTS?: UsageEventsDataset;
}

export interface GatewayEnv extends ClassifierEnv, JobsBindings, AccountsBindings {
  /** Secret; when set, /v1/* requires `Authorization: Bearer <API_KEY>` (several keys: space-separated). */
  API_KEY?: string;
  /** The tagging Worker: /images/* is forwarded to it (issue #10). */
  TAGGING?: Fetcher;
  /** D1 (images, image_labels, ...) for /v1/images. */
  DB?: D1Database;
  /** The image bucket /v1/images/backfill lists, and its name. */
  IMAGES?: R2Bucket;
  IMAGES_BUCKET?: string;
  /** The tagging queue /v1/images/backfill fills. */
  TAGGING_QUEUE?: Queue<unknown>;
}

/** The jobs Worker (src/workers/jobs): every jobs binding is required. */
export interface JobsEnv
  extends ClassifierEnv,
    Required<Omit<JobsBindings, keyof JobsVars>>,
    JobsVars,
    AccountsBindings {}

export interface StageEnv {
  MODELS: R2Bucket;
  /** "always" (default) or "on-request": when a load runs the priming run (src/topology.ts STAGE_VARS). */
  STAGE_PRIME?: string;
}

/** The STAGE_i binding, or undefined when the deployment has fewer stages. */
export function stageBinding(env: StageBindings, index: number): Fetcher | undefined {
  return (env as unknown as Record<string, Fetcher | undefined>)[stageBindingName(index)];
}
