/**
 * @module
 * The account resources the topology (src/topology.ts) needs besides the Workers themselves: R2
 * buckets, queues (dead-letter queues included), D1 databases (and their migrations), KV
 * namespaces, and the reminders `npm run deploy` cannot act on (cron triggers are deployed with
 * their Worker; secrets are set by hand). Everything is read from the topology, so a Worker that
 * adds a binding there gets its resource created here without touching this file.
 *
 * Creation is idempotent: "already exists" counts as done; D1 and KV ids are looked up by name and
 * written into the generated configs (`resourceIds`).
 */
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { WORKERS, type WorkerSpec } from "../../src/topology.ts";

export interface TopologyResources {
  buckets: string[];
  queues: string[];
  databases: { binding: string; databaseName: string; migrationsDir?: string }[];
  kv: { binding: string; title: string }[];
  crons: { worker: string; crons: string[] }[];
  secrets: { worker: string; secrets: string[] }[];
  /** Durable Object classes and the Worker defining them (created by that Worker's deploy, migration tags v1..). */
  durableObjects: { worker: string; classes: string[] }[];
  /** Analytics Engine datasets and who writes them (Cloudflare creates a dataset on its first write). */
  analyticsEngine: { dataset: string; workers: string[] }[];
}

/** Every resource named by the topology, deduplicated. */
export function topologyResources(workers: WorkerSpec[] = WORKERS): TopologyResources {
  const buckets = new Set<string>();
  const queues = new Set<string>();
  const dbs = new Map<string, TopologyResources["databases"][number]>();
  const kv = new Map<string, TopologyResources["kv"][number]>();
  const crons: TopologyResources["crons"] = [];
  const secrets: TopologyResources["secrets"] = [];
  const durableObjects: TopologyResources["durableObjects"] = [];
  const datasets = new Map<string, string[]>();
  for (const w of workers) {
    if (w.durableObjectClasses?.length)
      durableObjects.push({ worker: w.name, classes: w.durableObjectClasses });
    for (const d of Object.values(w.analyticsEngineDatasets ?? {}))
      datasets.set(d, [...(datasets.get(d) ?? []), w.name]);
    for (const b of Object.values(w.r2Buckets ?? {})) buckets.add(b);
    for (const q of Object.values(w.queueProducers ?? {})) queues.add(q);
    for (const c of w.queueConsumers ?? []) {
      queues.add(c.queue);
      if (c.deadLetterQueue) queues.add(c.deadLetterQueue);
    }
    for (const d of w.d1Databases ?? []) dbs.set(d.databaseName, d);
    for (const [binding, title] of Object.entries(w.kvNamespaces ?? {})) kv.set(title, { binding, title });
    if (w.crons?.length) crons.push({ worker: w.name, crons: w.crons });
    if (w.secrets?.length) secrets.push({ worker: w.name, secrets: w.secrets });
  }
  return {
    buckets: [...buckets],
    queues: [...queues],
    databases: [...dbs.values()],
    kv: [...kv.values()],
    crons,
    secrets,
    durableObjects,
    analyticsEngine: [...datasets].map(([dataset, ws]) => ({ dataset, workers: ws })),
  };
}

/** The dry run's description of what a deploy creates or applies, one line each. */
export async function resourcePlan(root: string, r = topologyResources()): Promise<string[]> {
  const lines: string[] = [];
  for (const b of r.buckets) lines.push(`R2 bucket ${b}: create if missing`);
  for (const q of r.queues) lines.push(`queue ${q}: create if missing`);
  for (const d of r.databases) {
    lines.push(
      `D1 database ${d.databaseName} (binding ${d.binding}): create if missing, its id into the configs`,
    );
    if (d.migrationsDir) {
      const files = (await readdir(join(root, d.migrationsDir)).catch(() => []))
        .filter((f) => f.endsWith(".sql"))
        .sort();
      lines.push(
        `D1 migrations ${d.migrationsDir}/ --remote (only new ones apply): ${files.join(", ") || "none"}`,
      );
    }
  }
  for (const k of r.kv)
    lines.push(`KV namespace ${k.title} (binding ${k.binding}): create if missing, its id into the configs`);
  for (const c of r.crons) lines.push(`cron ${c.crons.join(", ")} on ${c.worker} (deployed with the Worker)`);
  for (const d of r.durableObjects)
    lines.push(
      `Durable Object classes ${d.classes.join(", ")} on ${d.worker}: SQLite-backed, created by its deploy (migrations ${d.classes.map((_, i) => `v${i + 1}`).join(", ")}; only new tags apply)`,
    );
  for (const a of r.analyticsEngine)
    lines.push(
      `Analytics Engine dataset ${a.dataset} (written by ${a.workers.join(", ")}): bound with each Worker; Cloudflare creates it on the first write`,
    );
  for (const s of r.secrets)
    lines.push(
      `secrets of ${s.worker} (not set by deploy): ${s.secrets.map((n) => `wrangler secret put ${n} --name ${s.worker}`).join("; ")}`,
    );
  return lines;
}

type Wrangler = (args: string[]) => Promise<string>;

function already(e: unknown): boolean {
  const msg =
    String((e as { stderr?: string; stdout?: string }).stderr ?? "") +
    String((e as { stdout?: string }).stdout ?? "") +
    String(e);
  return /already exists|already own|already taken|10026|11009/i.test(msg);
}

/**
 * Creates what is missing and returns the ids the configs need (binding -> id). `wrangler` runs a
 * wrangler command against the account and resolves with its stdout.
 */
export async function ensureResources(
  wrangler: Wrangler,
  log: (m: string) => void,
  r = topologyResources(),
): Promise<Record<string, string>> {
  const ids: Record<string, string> = {};
  for (const b of r.buckets) {
    try {
      await wrangler(["r2", "bucket", "create", b]);
      log(`created R2 bucket ${b}`);
    } catch (e) {
      if (!already(e)) throw e;
    }
  }
  for (const q of r.queues) {
    try {
      await wrangler(["queues", "create", q]);
      log(`created queue ${q}`);
    } catch (e) {
      if (!already(e)) throw e;
    }
  }
  if (r.databases.length) {
    const find = async () =>
      JSON.parse(await wrangler(["d1", "list", "--json"])) as { uuid: string; name: string }[];
    let list = await find();
    for (const d of r.databases) {
      if (!list.some((x) => x.name === d.databaseName)) {
        await wrangler(["d1", "create", d.databaseName]);
        log(`created D1 database ${d.databaseName}`);
        list = await find();
      }
      const hit = list.find((x) => x.name === d.databaseName);
      if (!hit) throw new Error(`D1 database ${d.databaseName} was created but is not listed`);
      ids[d.binding] = hit.uuid;
    }
  }
  if (r.kv.length) {
    const find = async () =>
      JSON.parse(await wrangler(["kv", "namespace", "list"])) as { id: string; title: string }[];
    let list = await find();
    for (const k of r.kv) {
      if (!list.some((x) => x.title === k.title)) {
        await wrangler(["kv", "namespace", "create", k.title]);
        log(`created KV namespace ${k.title}`);
        list = await find();
      }
      const hit = list.find((x) => x.title === k.title);
      if (!hit) throw new Error(`KV namespace ${k.title} was created but is not listed`);
      ids[k.binding] = hit.id;
    }
  }
  return ids;
}
