/**
 * @module
 * The miniflare Workers of the workerd test project, built from src/topology.ts (the one topology
 * source) and the bundles global-setup.ts makes with wrangler: every Worker of the topology for a
 * model with `stages` stages, with its var defaults, R2 buckets, service bindings, queues, D1
 * databases, KV namespaces, Durable Objects and Analytics Engine datasets, plus per-kind test
 * overrides.
 */
import { join } from "node:path";
import {
  BUCKETS,
  COMPATIBILITY_DATE,
  type ResolvedWorker,
  resolveTopology,
  varDefaults,
  WORKERS,
} from "../../src/topology.ts";
import type { WorkerBundle } from "./fixtures.ts";

export interface TestOverrides {
  /** Extra vars/secrets (strings) by Worker kind. */
  vars?: Record<string, Record<string, string>>;
  /** Outbound fetch handler by Worker kind (no network in tests). */
  outbound?: Record<string, (req: Request) => Promise<Response>>;
}

export const sharedOptions = {
  compatibilityDate: COMPATIBILITY_DATE,
  r2Buckets: { ...BUCKETS } as Record<string, string>,
};

function modules(b: WorkerBundle) {
  return {
    modules: [
      { type: "ESModule" as const, path: join(b.dir, b.js) },
      ...b.wasm.map((w) => ({ type: "CompiledWasm" as const, path: join(b.dir, w) })),
    ],
    modulesRoot: b.dir,
  };
}

/** The miniflare options of one resolved Worker (`name` may be overridden for variants). */
export function miniflareWorker(
  w: ResolvedWorker,
  bundles: Record<string, WorkerBundle>,
  overrides: TestOverrides = {},
  name = w.name,
) {
  const s = w.spec;
  const bundle = bundles[s.kind];
  if (!bundle) throw new Error(`global setup built no bundle for Worker kind ${s.kind}`);
  const outbound = overrides.outbound?.[s.kind];
  return {
    name,
    compatibilityDate: COMPATIBILITY_DATE,
    ...(s.compatibilityFlags?.length && { compatibilityFlags: s.compatibilityFlags }),
    ...modules(bundle),
    bindings: { ...varDefaults(s), ...overrides.vars?.[s.kind] },
    r2Buckets: { ...s.r2Buckets },
    serviceBindings: { ...w.services },
    ...(s.queueProducers && { queueProducers: { ...s.queueProducers } }),
    ...(s.queueConsumers?.length && {
      queueConsumers: Object.fromEntries(
        s.queueConsumers.map((c) => [
          c.queue,
          {
            maxBatchSize: c.maxBatchSize,
            maxBatchTimeout: c.maxBatchTimeoutS,
            maxRetries: c.maxRetries,
            deadLetterQueue: c.deadLetterQueue,
          },
        ]),
      ),
    }),
    ...(s.d1Databases?.length && {
      d1Databases: Object.fromEntries(s.d1Databases.map((d) => [d.binding, d.databaseName])),
    }),
    ...(s.kvNamespaces && { kvNamespaces: { ...s.kvNamespaces } }),
    // The per-key quota object: defined by the gateway (a variant of it defines its own), bound by
    // name from the jobs Worker.
    ...(s.durableObjects && {
      durableObjects: Object.fromEntries(
        Object.entries(s.durableObjects).map(([b, d]) => [
          b,
          d.scriptName ? { className: d.className, scriptName: d.scriptName } : d.className,
        ]),
      ),
    }),
    ...(s.analyticsEngineDatasets && {
      analyticsEngineDatasets: Object.fromEntries(
        Object.entries(s.analyticsEngineDatasets).map(([b, dataset]) => [b, { dataset }]),
      ),
    }),
    ...(outbound && { outboundService: outbound }),
  };
}

/** Every Worker of the topology for a model of `stages` stages, as miniflare options. */
export function miniflareWorkers(
  stages: number,
  bundles: Record<string, WorkerBundle>,
  overrides: TestOverrides = {},
) {
  return resolveTopology(stages, WORKERS).map((w) => miniflareWorker(w, bundles, overrides));
}
