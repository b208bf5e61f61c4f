/**
 * @module
 * Generates the wrangler configs of a deployment from src/topology.ts (the one topology source):
 * for a model with N stages, one config per Worker of the topology, the gateway binding exactly
 * STAGE_0..STAGE_{N-1} and one stage Worker per stage (same code, names beit-edge-stage-<i>).
 * `npm start`, `npm run deploy`, the e2e test, the workerd test bundles and the benchmarks all use
 * these, so the number of Workers always follows the manifest.
 */
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import {
  BUCKETS,
  COMPATIBILITY_DATE,
  GATEWAY_NAME,
  MAX_STAGES,
  type ResolvedWorker,
  resolveTopology,
  stageWorkerName,
  varDefaults,
  WORKERS,
  type WorkerSpec,
} from "../../src/topology.ts";
import { toToml } from "./toml.ts";

export { COMPATIBILITY_DATE, GATEWAY_NAME, MAX_STAGES };
export const BUCKET_NAME = BUCKETS.MODELS;
/** Worker name of stage `i`. */
export const stageName = stageWorkerName;

export interface ConfigOptions {
  /** Repository root (where src/ lives). */
  root: string;
  /** Directory the JSON configs are written to. */
  outDir: string;
  stages: number;
  /** Name of the model bucket (default beit-edge-models). */
  bucketName?: string;
  /** Extra vars (strings) of the gateway. */
  vars?: Record<string, string>;
  /** Extra vars by Worker kind ("jobs", ...); `vars` above is the same as { gateway: vars }. */
  varsByKind?: Record<string, Record<string, string>>;
  /** Real resource ids (D1 database_id, KV id) by binding name, for deploys; local runs need none. */
  resourceIds?: Record<string, string>;
  /** The topology (default: src/topology.ts WORKERS). */
  workers?: WorkerSpec[];
  /** Paths (`main`, `migrations_dir`) relative to `root`, as in a committed template; default absolute. */
  relativePaths?: boolean;
}

export interface GeneratedConfig {
  kind: string;
  name: string;
  stage?: number;
  path: string;
}

export interface GeneratedConfigs {
  gateway: string;
  stages: string[];
  /** Every config, in deploy order (callees before callers). */
  workers: GeneratedConfig[];
}

const wasmRules = [{ type: "CompiledWasm", globs: ["**/*.wasm"], fallthrough: false }];

/** The wrangler config (JSON form) of one resolved Worker. */
export function wranglerConfig(
  w: ResolvedWorker,
  opts: Pick<ConfigOptions, "root" | "bucketName" | "vars" | "varsByKind" | "resourceIds" | "relativePaths">,
): Record<string, unknown> {
  const root = resolve(opts.root);
  const path = (p: string) => (opts.relativePaths ? p : join(root, p));
  const s = w.spec;
  const extraVars = { ...(s.kind === "gateway" ? opts.vars : {}), ...opts.varsByKind?.[s.kind] };
  const vars = { ...varDefaults(s), ...extraVars };
  const cfg: Record<string, unknown> = {
    name: w.name,
    main: path(s.entry),
    compatibility_date: COMPATIBILITY_DATE,
  };
  if (s.compatibilityFlags?.length) cfg.compatibility_flags = s.compatibilityFlags;
  if (Object.keys(vars).length) cfg.vars = vars;
  if (s.r2Buckets)
    cfg.r2_buckets = Object.entries(s.r2Buckets).map(([binding, bucket]) => ({
      binding,
      bucket_name: binding === "MODELS" && opts.bucketName ? opts.bucketName : bucket,
    }));
  if (Object.keys(w.services).length)
    cfg.services = Object.entries(w.services).map(([binding, service]) => ({ binding, service }));
  const producers = Object.entries(s.queueProducers ?? {}).map(([binding, queue]) => ({ binding, queue }));
  const consumers = (s.queueConsumers ?? []).map((c) => ({
    queue: c.queue,
    ...(c.maxBatchSize !== undefined && { max_batch_size: c.maxBatchSize }),
    ...(c.maxBatchTimeoutS !== undefined && { max_batch_timeout: c.maxBatchTimeoutS }),
    ...(c.maxRetries !== undefined && { max_retries: c.maxRetries }),
    ...(c.deadLetterQueue !== undefined && { dead_letter_queue: c.deadLetterQueue }),
  }));
  if (producers.length || consumers.length)
    cfg.queues = {
      ...(producers.length && { producers }),
      ...(consumers.length && { consumers }),
    };
  if (s.d1Databases?.length)
    cfg.d1_databases = s.d1Databases.map((d) => ({
      binding: d.binding,
      database_name: d.databaseName,
      database_id: opts.resourceIds?.[d.binding] ?? d.databaseName,
      ...(d.migrationsDir && { migrations_dir: path(d.migrationsDir) }),
    }));
  if (s.kvNamespaces)
    cfg.kv_namespaces = Object.entries(s.kvNamespaces).map(([binding, title]) => ({
      binding,
      id: opts.resourceIds?.[binding] ?? title,
    }));
  if (s.crons?.length) cfg.triggers = { crons: s.crons };
  if (s.durableObjects)
    cfg.durable_objects = {
      bindings: Object.entries(s.durableObjects).map(([name, d]) => ({
        name,
        class_name: d.className,
        ...(d.scriptName && { script_name: d.scriptName }),
      })),
    };
  // One migration per class, in the order they were added: deploys apply only the new tags.
  if (s.durableObjectClasses?.length)
    cfg.migrations = s.durableObjectClasses.map((c, i) => ({ tag: `v${i + 1}`, new_sqlite_classes: [c] }));
  if (s.analyticsEngineDatasets)
    cfg.analytics_engine_datasets = Object.entries(s.analyticsEngineDatasets).map(([binding, dataset]) => ({
      binding,
      dataset,
    }));
  // Workers Logs: the one JSON line per request / queue invocation (src/edge/request-log.ts) is queryable.
  cfg.observability = { enabled: true };
  cfg.rules = wasmRules;
  return cfg;
}

/** Config file name of a resolved Worker: gateway.json, stage-<i>.json, <kind>.json. */
function fileName(w: ResolvedWorker): string {
  return w.stage !== undefined ? `${w.spec.kind}-${w.stage}.json` : `${w.spec.kind}.json`;
}

/** Writes one config per Worker under `outDir`; returns their paths. */
export async function writeWranglerConfigs(opts: ConfigOptions): Promise<GeneratedConfigs> {
  const resolved = resolveTopology(opts.stages, opts.workers ?? WORKERS);
  await mkdir(opts.outDir, { recursive: true });
  const workers: GeneratedConfig[] = [];
  for (const w of resolved) {
    const path = join(opts.outDir, fileName(w));
    await writeFile(path, `${JSON.stringify(wranglerConfig(w, opts), null, 2)}\n`);
    workers.push({ kind: w.spec.kind, name: w.name, stage: w.stage, path });
  }
  const gateway = workers.find((w) => w.kind === "gateway");
  if (!gateway) throw new Error("the topology has no gateway Worker");
  return {
    gateway: gateway.path,
    stages: workers.filter((w) => w.kind === "stage").map((w) => w.path),
    workers,
  };
}

/** The committed template at the repository root. */
export const TEMPLATE_FILE = "wrangler.toml";

const templateHeader = `# GENERATED from src/topology.ts by \`npm run topology\`: do not edit, edit the topology and rerun.
# scripts/lib/wrangler-configs.test.ts fails when this file drifts from the topology.
#
# The gateway Worker as wrangler sees it (\`wrangler types\`, \`wrangler deploy --dry-run\`), bound to
# every stage the gateway can address (STAGE_0..STAGE_${MAX_STAGES - 1}). \`npm start\` and \`npm run deploy\`
# do not read it: they generate one config per Worker for the manifest being served (the gateway
# bound to exactly its stages, one beit-edge-stage-<i> per stage) under .wrangler/generated/ and
# .wrangler/deploy/, from the same topology (scripts/lib/wrangler-configs.ts).
`;

/** The text of wrangler.toml: the gateway of the topology with all {@link MAX_STAGES} stage bindings. */
export function gatewayTemplate(workers: WorkerSpec[] = WORKERS): string {
  const gateway = resolveTopology(MAX_STAGES, workers).find((w) => w.spec.kind === "gateway");
  if (!gateway) throw new Error("the topology has no gateway Worker");
  return `${templateHeader}\n${toToml(wranglerConfig(gateway, { root: ".", relativePaths: true }))}`;
}

/** Writes wrangler.toml under `root`; with `check`, only compares. Returns whether it was up to date. */
export async function writeGatewayTemplate(root: string, check = false): Promise<boolean> {
  const file = join(root, TEMPLATE_FILE);
  const want = gatewayTemplate();
  const have = await readFile(file, "utf8").catch(() => null);
  if (have === want) return true;
  if (!check) await writeFile(file, want);
  return false;
}
