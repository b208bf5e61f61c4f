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
  /** Images the tagging Worker serves and tags (issue #10). */
  IMAGES: "beit-edge-images",
  /** Image bytes of webhook jobs (uploads/<job id>/<i>), deleted once the job is final (#9). */
  UPLOADS: "beit-edge-uploads",
} as const;

/** Queues by role (issue #9: webhook jobs). */
export const QUEUES = {
  /** One message per job: classify it. */
  JOBS: "beit-edge-jobs",
  /** One message per delivery attempt: POST the signed event. */
  DELIVERIES: "beit-edge-deliveries",
  /** What exhausted its retries on either queue; its consumer marks the job or delivery failed. */
  JOBS_DLQ: "beit-edge-jobs-dlq",
} as const;

/** The one D1 database (binding DB); migrations/ holds every table's migration (0001 jobs, 0002 images). */
export const DATABASE: D1Spec = { binding: "DB", databaseName: "beit-edge", migrationsDir: "migrations" };

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
  /**
   * Durable Object bindings: binding name -> class, and the script that defines it when it is
   * another Worker (its name). A Worker defining classes lists them in `durableObjectClasses`.
   */
  durableObjects?: Record<string, { className: string; scriptName?: string }>;
  /** Durable Object classes this Worker's entry exports (deployed as SQLite-backed, migration tag v1..). */
  durableObjectClasses?: string[];
  /** Workers Analytics Engine bindings: binding name -> dataset (created by Cloudflare on first write). */
  analyticsEngineDatasets?: Record<string, string>;
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

/** CDN image tagging (issue #10): queues, KV, the D1 database shared with jobs. */
export const TAGGING_NAME = `${GATEWAY_NAME}-tagging`;
export const TAGGING_CONSUMER_NAME = `${GATEWAY_NAME}-tagging-consumer`;
export const TAGGING_QUEUE = "beit-edge-tagging";
export const TAGGING_DLQ = "beit-edge-tagging-dlq";
export const TAGS_KV = "beit-edge-tags";
/** Redeliveries of a tagging message; the last attempt records `failed` instead of retrying. */
export const TAGGING_MAX_RETRIES = 5;

/** Vars of the tagging Worker (parsed by src/tagging/config.ts). */
export const TAGGING_VARS = {
  TAGGING_PREFIX: {
    default: "/images/",
    doc: "Path prefix the tagging Worker serves; nothing outside it is ever fetched.",
  },
  ORIGIN_URL: {
    default: "",
    doc: 'HTTP origin base URL of the proxy (the path under the prefix is appended); "self" = the request\'s own URL (deployed on a route); empty = the IMAGES R2 bucket. R2 messages (notifications, npm run tag) always read IMAGES.',
  },
  IMAGES_BUCKET: {
    default: BUCKETS.IMAGES,
    doc: "Name of the bucket bound as IMAGES (what R2 event notifications and `npm run tag -- --bucket` name).",
  },
  R2_PREFIX: {
    default: "",
    doc: "Key prefix inside the IMAGES bucket (key = R2_PREFIX + path under the prefix).",
  },
  TAG_TOP_K: { default: "10", doc: "Labels stored per image (1..100)." },
  TAG_MIN_SCORE: { default: "0.01", doc: "Labels below this softmax score are not stored (0..1)." },
  TAG_MAX_IMAGE_BYTES: {
    default: "20971520",
    doc: "Larger images are skipped (image-too-large) without being read.",
  },
  TAGS_CACHE_TTL_S: {
    default: "60",
    doc: "KV cacheTtl of hot-path reads (>= 30): how long an edge may reuse a read, including a miss.",
  },
  TAGS_LOOKUP_BUDGET_MS: {
    default: "50",
    doc: "How long the image response may wait for the KV lookup once the origin has answered; then it goes out untagged.",
  },
  TAG_PENDING_TTL_S: {
    default: "300",
    doc: "Burst dedupe window: a miss enqueues a job at most once per isolate and per colo in this time.",
  },
  TAG_FAILED_RETRY_S: {
    default: "3600",
    doc: "A failed (retryable) status expires from KV after this long, so the image is tried again (>= 60).",
  },
  TAG_UNVALIDATED_TTL_S: {
    default: "86400",
    doc: "Entries of images whose origin sends neither ETag nor Last-Modified expire after this long (>= 60).",
  },
} as const satisfies Record<string, VarSpec>;

/** Vars of the webhook jobs (read by src/jobs/config.ts; gateway and jobs Worker both read them). */
export const JOBS_VARS: Record<string, VarSpec> = {
  WEBHOOK_RETRY_SCHEDULE: {
    default: "5s,5m,30m,2h,5h,10h,14h,20h,24h",
    doc: "Delays before each webhook retry after a failed attempt (units ms, s, m, h, d).",
  },
  WEBHOOK_TIMEOUT_MS: { default: "15000", doc: "One webhook delivery attempt, headers and body (ms)." },
  JOB_RETENTION_S: {
    default: "604800",
    doc: "Results stay retrievable this long after a job ends (7 days).",
  },
  JOB_MAX_ATTEMPTS: {
    default: "5",
    doc: "Classification attempts for retryable errors (503/504) before a job fails.",
  },
  JOB_LEASE_S: { default: "300", doc: "A running job not finished within this is taken over." },
  JOB_STUCK_AFTER_S: {
    default: "600",
    doc: "A queued job untouched this long is re-enqueued by the sweeper.",
  },
  DELIVERY_STUCK_AFTER_S: {
    default: "60",
    doc: "A delivery due this long ago and not in flight is re-enqueued by the sweeper.",
  },
  MAX_METADATA_BYTES: { default: "4096", doc: "Largest job metadata (a JSON object), UTF-8 bytes." },
  MAX_JOB_TOP_K: {
    default: "100",
    doc: "Largest top_k of a job (results are kept in D1 and sent in webhooks).",
  },
  CALLBACK_ALLOWED_PORTS: {
    default: "443",
    doc: "Ports a callback_url may use (comma-separated); loopback callbacks (local only) may use any.",
  },
};

/** Keys, quotas and usage (issue #20; read by src/accounts/config.ts). */
export const ACCOUNTS_VARS = {
  DEFAULT_RPM: {
    default: "600",
    doc: "Requests per minute of a key without its own limit (and of the static API_KEY).",
  },
  DEFAULT_IMAGES_PER_MINUTE: {
    default: "600",
    doc: "Images classified per minute (classify, jobs) of a key without its own limit.",
  },
  KEY_CACHE_TTL_S: {
    default: "30",
    doc: "Seconds an isolate reuses a key's row before asking D1 again (0..60): a revoked key stops working within this time.",
  },
} as const satisfies Record<string, VarSpec>;

/** The Durable Object class counting each key's quota (src/accounts/quota.ts), exported by the gateway. */
export const QUOTA_CLASS = "KeyQuota";
/** The Analytics Engine dataset usage goes to in production. */
export const USAGE_DATASET = "beit_edge_usage";
const USAGE_EVENTS = { USAGE_EVENTS: USAGE_DATASET };

/** Queue producer bindings of the Workers that submit jobs or deliveries. */
const JOB_PRODUCERS = { JOBS_QUEUE: QUEUES.JOBS, DELIVERY_QUEUE: QUEUES.DELIVERIES };

export const GATEWAY: WorkerSpec = {
  kind: "gateway",
  name: GATEWAY_NAME,
  entry: "src/workers/gateway/index.ts",
  vars: { ...CLASSIFIER_VARS, ...JOBS_VARS, ...ACCOUNTS_VARS, IMAGES_BUCKET: TAGGING_VARS.IMAGES_BUCKET },
  secrets: ["API_KEY"],
  durableObjects: { QUOTA: { className: QUOTA_CLASS } },
  durableObjectClasses: [QUOTA_CLASS],
  analyticsEngineDatasets: USAGE_EVENTS,
  r2Buckets: { MODELS: BUCKETS.MODELS, UPLOADS: BUCKETS.UPLOADS, IMAGES: BUCKETS.IMAGES },
  bindsStages: true,
  // /images/* is forwarded to the tagging Worker (one port locally); /v1/images reads DB and
  // enqueues backfills.
  services: { TAGGING: TAGGING_NAME },
  queueProducers: { ...JOB_PRODUCERS, TAGGING_QUEUE: TAGGING_QUEUE },
  d1Databases: [DATABASE],
};

/**
 * The CDN proxy (the image path): GET/HEAD under TAGGING_PREFIX, one KV lookup, a miss enqueued.
 * It binds no stage, no model bucket and no D1: nothing of the model is in its bundle or its
 * isolate, so classification can neither slow nor crash an image response.
 */
export const TAGGING: WorkerSpec = {
  kind: "tagging",
  name: TAGGING_NAME,
  entry: "src/workers/tagging/index.ts",
  vars: TAGGING_VARS,
  r2Buckets: { IMAGES: BUCKETS.IMAGES },
  queueProducers: { TAGGING_QUEUE: TAGGING_QUEUE },
  kvNamespaces: { TAGS: TAGS_KV },
};

/**
 * The tagging consumer, a Worker of its own: it decodes and classifies (up to ~100 MiB of decode
 * memory, seconds of CPU), which in the proxy's Worker would share the proxy's isolates (one
 * thread, 128 MB) with image responses. It writes D1 and the hot-path KV entries.
 */
export const TAGGING_CONSUMER: WorkerSpec = {
  kind: "tagging-consumer",
  name: TAGGING_CONSUMER_NAME,
  entry: "src/workers/tagging-consumer/index.ts",
  vars: { ...CLASSIFIER_VARS, ...TAGGING_VARS, ...ACCOUNTS_VARS },
  r2Buckets: { MODELS: BUCKETS.MODELS, IMAGES: BUCKETS.IMAGES },
  bindsStages: true,
  queueConsumers: [
    {
      queue: TAGGING_QUEUE,
      maxBatchSize: 10,
      maxBatchTimeoutS: 1,
      maxRetries: TAGGING_MAX_RETRIES,
      deadLetterQueue: TAGGING_DLQ,
    },
  ],
  d1Databases: [DATABASE],
  kvNamespaces: { TAGS: TAGS_KV },
  // A backfill's images count against the image quota of the key that asked (deployed after the
  // gateway, which defines the class).
  durableObjects: { QUOTA: { className: QUOTA_CLASS, scriptName: GATEWAY_NAME } },
  analyticsEngineDatasets: USAGE_EVENTS,
};

/** Webhook jobs (issue #9): the two queue consumers, the dead-letter consumer and the sweeper cron. */
export const JOBS: WorkerSpec = {
  kind: "jobs",
  name: `${GATEWAY_NAME}-jobs`,
  entry: "src/workers/jobs/index.ts",
  vars: { ...CLASSIFIER_VARS, ...JOBS_VARS, ...ACCOUNTS_VARS },
  secrets: ["WEBHOOK_SECRET", "WEBHOOK_SECRET_PREVIOUS"],
  // A job's images count against its key's image quota when they are classified (deployed after
  // the gateway, which defines the class).
  durableObjects: { QUOTA: { className: QUOTA_CLASS, scriptName: GATEWAY_NAME } },
  analyticsEngineDatasets: USAGE_EVENTS,
  r2Buckets: { MODELS: BUCKETS.MODELS, UPLOADS: BUCKETS.UPLOADS },
  bindsStages: true,
  queueProducers: JOB_PRODUCERS,
  queueConsumers: [
    // One job per invocation: up to 8 images at ~1 s each stays far inside a consumer's limits.
    { queue: QUEUES.JOBS, maxBatchSize: 1, maxRetries: 10, deadLetterQueue: QUEUES.JOBS_DLQ },
    // Deliveries are I/O-bound: a batch is posted concurrently. Each delivery's message is retried
    // with the schedule's delays: 9 retries + up to 3 re-delays (Queues cap a delay at 12 h) + margin.
    {
      queue: QUEUES.DELIVERIES,
      maxBatchSize: 10,
      maxBatchTimeoutS: 1,
      maxRetries: 20,
      deadLetterQueue: QUEUES.JOBS_DLQ,
    },
    { queue: QUEUES.JOBS_DLQ, maxBatchSize: 10, maxRetries: 3 },
  ],
  d1Databases: [DATABASE],
  crons: ["* * * * *"],
};

/** The vars of the stage Worker (parsed by src/workers/stage/index.ts). */
export const STAGE_VARS = {
  STAGE_PRIME: {
    default: "always",
    doc: '"always": every stage load ends with one run on zeros (the isolate\'s first run, 3-4x a warm one, started as early as possible). "on-request": only a /warm that asks primes (x-stage-prime: 1, as /healthz does) and a classification\'s cold start lets its own first run do it; measured slower overall on this 2-core VM (bench/README.md, "Cold start"), kept for comparisons.',
  },
} satisfies Record<string, VarSpec>;

export const STAGE: WorkerSpec = {
  kind: "stage",
  name: stageWorkerName(0),
  entry: "src/workers/stage/index.ts",
  vars: STAGE_VARS,
  r2Buckets: { MODELS: BUCKETS.MODELS },
  perStage: true,
};

/** Every Worker of the deployment. Order: per-stage Workers are deployed before their callers. */
export const WORKERS: WorkerSpec[] = [STAGE, TAGGING, GATEWAY, TAGGING_CONSUMER, JOBS];

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
