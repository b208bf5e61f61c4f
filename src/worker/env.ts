/**
 * @module
 * Bindings of the two Worker kinds, as configured in wrangler.toml (gateway) and
 * wrangler.stage.toml (stages). Both are plain interfaces so that tests and scripts can build them.
 */

/** Most stages the gateway can bind (STAGE_0 .. STAGE_7); a manifest with more is refused. */
export const MAX_STAGES = 8;

export interface GatewayEnv {
  /** The model bucket: shards/, manifests/, active.json. */
  MODELS: R2Bucket;
  STAGE_0?: Fetcher;
  STAGE_1?: Fetcher;
  STAGE_2?: Fetcher;
  STAGE_3?: Fetcher;
  STAGE_4?: Fetcher;
  STAGE_5?: Fetcher;
  STAGE_6?: Fetcher;
  STAGE_7?: Fetcher;
  /** Secret; when set, /v1/* requires `Authorization: Bearer <API_KEY>`. */
  API_KEY?: string;
  /** Request deadline in ms (default 60000); clients may ask for less with `x-deadline-ms`. */
  REQUEST_DEADLINE_MS?: string;
  /** Largest request body or fetched image in bytes (default 33554432 = 32 MiB). */
  MAX_BODY_BYTES?: string;
  /** Most images in one batch request (default 8). */
  MAX_BATCH?: string;
  /** Seconds the active pointer is reused before R2 is asked again (default 5). */
  POINTER_TTL_S?: string;
  /**
   * "true" lets URL inputs reach loopback (127/8, ::1, localhost): local development and tests.
   * Anything else (default) refuses them like every private destination.
   */
  ALLOW_LOOPBACK_FETCH?: string;
}

export interface StageEnv {
  MODELS: R2Bucket;
}

/** The STAGE_i binding, or undefined when the deployment has fewer stages. */
export function stageBinding(env: GatewayEnv, index: number): Fetcher | undefined {
  return (env as unknown as Record<string, Fetcher | undefined>)[`STAGE_${index}`];
}
