/**
 * @module
 * THE one description of the Worker topology: which Workers exist, their entry files, compatibility
 * date and flags, vars with their defaults, and bindings (R2, service bindings, and the queues, D1
 * databases, KV namespaces and cron triggers that later Workers add). Plain data, no platform
 * imports, so that everything can read it:
 *
 * - scripts/lib/wrangler-configs.ts turns it into the wrangler configs of `npm start`,
 *   `npm run deploy`, the e2e test and the benchmarks;
 * - test/workerd/global-setup.ts bundles every entry listed here and vitest.config.ts builds the
 *   miniflare Workers of the workerd tests from it;
 * - src/edge/config.ts takes the var defaults from it when it parses env into the typed config.
 *
 * Adding a Worker = one more entry in {@link WORKERS} plus its folder under src/workers/.
 */

/** Compatibility date of every Worker. */
export const COMPATIBILITY_DATE = "2026-04-20";
/** Most stages the gateway can bind (STAGE_0 .. STAGE_7); a manifest with more is refused. */
export const MAX_STAGES = 8;
/** Memory of one Workers isolate (the platform limit every stage plan is sized against). */
export const ISOLATE_LIMIT_BYTES = 128 * 1024 * 1024;

/** R2 buckets by binding name. */
export const BUCKETS = {
  MODELS: "beit-edge-models",
} as const;

/** Name of the gateway Worker; stage Workers are `<gateway>-stage-<i>`. */
export const GATEWAY_NAME = "beit-edge";

/** Worker name of stage `i`. */
export function stageWorkerName(i: number): string {
  return `${GATEWAY_NAME}-stage-${i}`;
}

/** The service binding name through which other Workers reach stage `i`. */
export function stageBindingName(i: number): string {
  return `STAGE_${i}`;
}

/** A plain-text var: its default (as wrangler stores vars, a string) and what it means. */
export interface VarSpec {
  default: string;
  doc: string;
}

export interface QueueConsumerSpec {
  queue: string;
  maxBatchSize?: number;
  maxBatchTimeoutS?: number;
  maxRetries?: number;
  deadLetterQueue?: string;
}

export interface D1Spec {
  binding: string;
  databaseName: string;
  /** Relative to the repository root. */
  migrationsDir?: string;
}

export interface WorkerSpec {
  /** Key used by scripts and tests ("gateway", "stage", ...). */
  kind: string;
  /** Deployed name; for per-stage Workers, the name of stage 0 (see {@link stageWorkerName}). */
  name: string;
  /** Entry module, relative to the repository root. */
  entry: string;
  compatibilityFlags?: string[];
  vars?: Record<string, VarSpec>;
  /** Secrets the Worker reads (never given defaults; set with `wrangler secret put`). */
  secrets?: string[];
  /** R2 bindings: binding name -> bucket name. */
  r2Buckets?: Record<string, string>;
  /** Other service bindings: binding name -> Worker name. */
  services?: Record<string, string>;
  /** True: binds STAGE_i to stage Worker i for every stage of the served manifest. */
  bindsStages?: boolean;
  /** True: deployed once per manifest stage (names from {@link stageWorkerName}). */
  perStage?: boolean;
  /** Queue producers: binding name -> queue name. */
  queueProducers?: Record<string, string>;
  queueConsumers?: QueueConsumerSpec[];
  d1Databases?: D1Spec[];
  /** KV bindings: binding name -> namespace title. */
  kvNamespaces?: Record<string, string>;
  crons?: string[];
}

/** The vars every Worker that classifies reads (parsed by src/edge/config.ts). */
export const CLASSIFIER_VARS = {
  REQUEST_DEADLINE_MS: {
    default: "60000",
    doc: "Request deadline in ms; clients may ask for less with x-deadline-ms.",
  },
  MAX_BODY_BYTES: { default: "33554432", doc: "Largest request body or fetched image in bytes (32 MiB)." },
  MAX_BATCH: { default: "8", doc: "Most images in one batch request." },
  POINTER_TTL_S: {
    default: "5",
    doc: "Seconds the active-model pointer is reused before R2 is asked again.",
  },
  ALLOW_LOOPBACK_FETCH: {
    default: "false",
    doc: '"true" lets URL inputs reach loopback hosts (npm start sets it); deployed Workers keep "false".',
  },
} satisfies Record<string, VarSpec>;

export const GATEWAY: WorkerSpec = {
  kind: "gateway",
  name: GATEWAY_NAME,
  entry: "src/workers/gateway/index.ts",
  vars: CLASSIFIER_VARS,
  secrets: ["API_KEY"],
  r2Buckets: { MODELS: BUCKETS.MODELS },
  bindsStages: true,
};

export const STAGE: WorkerSpec = {
  kind: "stage",
  name: stageWorkerName(0),
  entry: "src/workers/stage/index.ts",
  r2Buckets: { MODELS: BUCKETS.MODELS },
  perStage: true,
};

/** Every Worker of the deployment. Order: per-stage Workers are deployed before their callers. */
export const WORKERS: WorkerSpec[] = [STAGE, GATEWAY];

/** One concrete Worker of a deployment serving a model with a given number of stages. */
export interface ResolvedWorker {
  spec: WorkerSpec;
  name: string;
  /** For per-stage Workers, which stage. */
  stage?: number;
  /** All service bindings, STAGE_i included. */
  services: Record<string, string>;
}

/** The concrete Workers of a deployment whose model has `stages` stages (1..MAX_STAGES). */
export function resolveTopology(stages: number, workers: WorkerSpec[] = WORKERS): ResolvedWorker[] {
  if (!Number.isInteger(stages) || stages < 1 || stages > MAX_STAGES)
    throw new Error(`a model must have 1..${MAX_STAGES} stages to be served, this one has ${stages}`);
  const stageServices = Object.fromEntries(
    Array.from({ length: stages }, (_, i) => [stageBindingName(i), stageWorkerName(i)]),
  );
  const out: ResolvedWorker[] = [];
  for (const spec of workers) {
    const services = { ...(spec.bindsStages ? stageServices : {}), ...spec.services };
    if (spec.perStage)
      for (let i = 0; i < stages; i++) out.push({ spec, name: stageWorkerName(i), stage: i, services });
    else out.push({ spec, name: spec.name, services });
  }
  return out;
}

/** Var defaults of a Worker, as strings. */
export function varDefaults(spec: WorkerSpec): Record<string, string> {
  return Object.fromEntries(Object.entries(spec.vars ?? {}).map(([k, v]) => [k, v.default]));
}
