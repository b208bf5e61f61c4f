/**
 * @module
 * `npm run deploy`: ships the model and the Workers to Cloudflare in the order that keeps live
 * traffic safe:
 *
 *   1. create what the topology binds if it is missing: R2 buckets, queues and dead-letter queues,
 *      the D1 database (its id goes into the configs), KV namespaces (scripts/lib/deploy-resources.ts);
 *   2. apply the D1 migrations (migrations/, only new ones) with `wrangler d1 migrations apply --remote`;
 *   3. upload shards and the manifest, skipping keys already there (names carry the sha256);
 *   4. deploy the stage Workers (beit-edge-stage-0..N-1), then the gateway and the jobs Worker
 *      (its queue consumers and cron trigger come with it) binding exactly them;
 *   5. swap the `active.json` pointer last. Secrets (API_KEY, WEBHOOK_SECRET) are set by hand:
 *      the deploy prints the `wrangler secret put` commands.
 *
 *   npm run deploy [-- --model DIR] [--bucket NAME] [--dry-run [--outdir DIR]]
 *                     [--tagging-route PATTERN] [--tagging-notify [--tagging-notify-prefix PREFIX]]
 *
 * CDN image tagging's bucket, queue + DLQ and KV namespace are topology resources (step 1), its
 * table is migrations/0002_images.sql (step 2). Only what is tagging-specific is in
 * scripts/lib/tagging-deploy.ts: `--tagging-notify` adds the R2 object-create notification rule
 * (IMAGES bucket -> tagging queue, after step 1), `--tagging-route` puts the tagging Worker on a
 * route of your zone (e.g. 'example.com/images/*').
 *
 * `--dry-run` works offline: it bundles every Worker with `wrangler deploy --dry-run --outdir`,
 * prints each bundle's uncompressed size against the 64 MiB limit (failing above it) and the files
 * that would be uploaded; the bundles are deleted afterwards unless `--outdir` names where to keep
 * them. CLOUDFLARE_API_BASE_URL (honoured by wrangler) points every API call elsewhere, as
 * test/deploy.test.ts does with a local stand-in. A real deploy needs `wrangler login` or CLOUDFLARE_API_TOKEN (and
 * CLOUDFLARE_ACCOUNT_ID for the existence checks; without it every file is uploaded).
 */
import { mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseCommandLine } from "../model-shards/args.ts";
import { verifyShards } from "../model-shards/build.ts";
import { ACTIVE_KEY } from "../src/shards/layout.ts";
import { type PublishTarget, publishModel } from "../src/shards/publish.ts";
import { AppError } from "../src/shared/errors.ts";
import { type Manifest, manifestFiles } from "../src/shared/manifest.ts";
import { BUCKETS, TAGGING_NAME, TAGGING_QUEUE } from "../src/topology.ts";
import { applyMigrations } from "./lib/d1-migrations.ts";
import { ensureResources, resourcePlan } from "./lib/deploy-resources.ts";
import { runWrangler } from "./lib/run-wrangler.ts";
import { addRoute, ensureNotificationRule, type NotificationRule } from "./lib/tagging-deploy.ts";
import { BUCKET_NAME, type GeneratedConfigs, writeWranglerConfigs } from "./lib/wrangler-configs.ts";

/** Workers' script size limit (uncompressed), on every plan since 2026. */
export const SCRIPT_LIMIT_BYTES = 64 * 1024 * 1024;

const root = resolve(import.meta.dirname, "..");

interface DeployArgs {
  model?: string;
  bucket: string;
  dryRun: boolean;
  outdir?: string;
  taggingRoute?: string;
  /** Create the R2 notification rule (prefix "" = every key). */
  taggingNotify?: string;
}

function parseArgs(argv: string[]): DeployArgs {
  const { values: v } = parseCommandLine(
    {
      args: argv,
      options: {
        model: { type: "string" },
        bucket: { type: "string", default: BUCKET_NAME },
        "dry-run": { type: "boolean", default: false },
        outdir: { type: "string" },
        "tagging-route": { type: "string" },
        "tagging-notify": { type: "boolean", default: false },
        "tagging-notify-prefix": { type: "string" },
      },
    },
    (m) =>
      new AppError(
        "usage",
        2,
        `${m}. Usage: npm run deploy [-- --model DIR] [--bucket NAME] [--dry-run [--outdir DIR]] [--tagging-route PATTERN] [--tagging-notify [--tagging-notify-prefix PREFIX]]`,
      ),
  );
  return {
    model: v.model === undefined ? undefined : resolve(v.model),
    bucket: v.bucket,
    dryRun: v["dry-run"],
    outdir: v.outdir === undefined ? undefined : resolve(v.outdir),
    taggingRoute: v["tagging-route"],
    taggingNotify:
      v["tagging-notify"] || v["tagging-notify-prefix"] !== undefined
        ? (v["tagging-notify-prefix"] ?? "")
        : undefined,
  };
}

async function exists(p: string): Promise<boolean> {
  return (await stat(p).catch(() => null)) !== null;
}

async function defaultModel(): Promise<string> {
  for (const d of ["model-shards/out/beit-base-patch16-224-pt22k-ft22k", "model-shards/out/synthetic-base"])
    if (await exists(join(root, d, "manifest.json"))) return join(root, d);
  throw new AppError(
    "no-model",
    1,
    "No built model found. Build one first: `npm start -- --prepare-only` (default model) or `npm run model -- build --from DIR --out DIR`, then `npm run deploy -- --model DIR`.",
  );
}

/**
 * Every wrangler call of the deploy: stdin closed, bounded by WRANGLER_TIMEOUT_MS (default 300 s),
 * so a call that never returns fails the deploy with the command's name (scripts/lib/run-wrangler.ts).
 */
function wrangler(args: string[]) {
  return runWrangler(args, { root });
}

/** Total bytes of the files wrangler wrote for one Worker (modules + wasm; source maps excluded). */
async function bundleBytes(dir: string): Promise<number> {
  let total = 0;
  for (const f of await readdir(dir))
    if (!f.endsWith(".map") && f !== "README.md") total += (await stat(join(dir, f))).size;
  return total;
}

export interface BundleReport {
  worker: string;
  bytes: number;
}

/** Bundles every Worker with `wrangler deploy --dry-run --outdir`; returns their sizes. */
export async function dryRunBundles(configs: GeneratedConfigs, outdir: string): Promise<BundleReport[]> {
  // Every Worker of the topology (src/topology.ts), gateway first.
  const gateway = configs.workers.filter((w) => w.path === configs.gateway);
  const jobs = [...gateway, ...configs.workers.filter((w) => w.path !== configs.gateway)].map((w) => ({
    worker: w.name,
    config: w.path,
  }));
  // Stage bundles are identical code; build them one after another to stay gentle on 2 cores.
  const out: BundleReport[] = [];
  for (const j of jobs) {
    const dir = join(outdir, j.worker);
    await wrangler(["deploy", "--dry-run", "--outdir", dir, "-c", j.config]);
    out.push({ worker: j.worker, bytes: await bundleBytes(dir) });
  }
  return out;
}

/** The Cloudflare API base; CLOUDFLARE_API_BASE_URL overrides it for wrangler and for us alike. */
function apiBase(): string {
  return (process.env.CLOUDFLARE_API_BASE_URL ?? "https://api.cloudflare.com/client/v4").replace(/\/+$/, "");
}

/** A PublishTarget for Cloudflare R2 through wrangler (uploads) and the REST API (existence checks). */
function remoteTarget(bucket: string, dir: string): PublishTarget {
  const token = process.env.CLOUDFLARE_API_TOKEN;
  const account = process.env.CLOUDFLARE_ACCOUNT_ID;
  return {
    async has(key) {
      if (!token || !account) return false;
      const url = `${apiBase()}/accounts/${account}/r2/buckets/${bucket}/objects/${key
        .split("/")
        .map(encodeURIComponent)
        .join("/")}`;
      const res = await fetch(url, {
        headers: { authorization: `Bearer ${token}`, range: "bytes=0-0" },
        // Bounded like every wrangler call: an API that never answers fails the deploy.
        signal: AbortSignal.timeout(60_000),
      });
      await res.body?.cancel();
      return res.status === 200 || res.status === 206;
    },
    async put(key, bytes, contentType) {
      const tmp = join(dir, "upload.bin");
      await writeFile(tmp, bytes);
      await wrangler([
        "r2",
        "object",
        "put",
        `${bucket}/${key}`,
        "--file",
        tmp,
        "--content-type",
        contentType,
        "--remote",
      ]);
    },
  };
}

const log = (m: string) => process.stderr.write(`${m}\n`);
const mib = (n: number) => `${(n / 1024 / 1024).toFixed(2)} MiB`;

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const dir = args.model ?? (await defaultModel());
  const manifest = await verifyShards(dir);
  // Everything this run writes goes under one directory: --outdir for a dry run that keeps its
  // bundles, else a temporary one removed at the end (so concurrent runs never share configs).
  const work = args.dryRun && args.outdir ? args.outdir : await mkdtemp(join(tmpdir(), "beit-edge-deploy-"));
  try {
    await deploy(args, dir, manifest, work);
  } finally {
    if (work !== args.outdir) await rm(work, { recursive: true, force: true });
  }
}

async function deploy(args: DeployArgs, dir: string, manifest: Manifest, work: string): Promise<void> {
  const writeConfigs = (resourceIds?: Record<string, string>) =>
    writeWranglerConfigs({
      root,
      outDir: join(work, "configs"),
      stages: manifest.stages.length,
      bucketName: args.bucket,
      resourceIds,
    });
  let configs = await writeConfigs();
  const rule: NotificationRule | undefined =
    args.taggingNotify === undefined
      ? undefined
      : { bucket: BUCKETS.IMAGES, queue: TAGGING_QUEUE, prefix: args.taggingNotify };
  const route = async () => {
    const w = configs.workers.find((c) => c.name === TAGGING_NAME);
    if (args.taggingRoute && w) await addRoute(w.path, args.taggingRoute);
  };
  await route();
  log(
    `model ${manifest.model.id} ${manifest.version.slice(0, 12)}: ${manifest.stages.length} stages${manifest.model.synthetic ? " (SYNTHETIC random weights)" : ""}`,
  );

  if (args.dryRun) {
    // Without --outdir the bundles (~14 MiB per Worker) are in the temporary `work`, removed at the end.
    const reports = await dryRunBundles(configs, work);
    let over = false;
    for (const r of reports) {
      const ok = r.bytes < SCRIPT_LIMIT_BYTES;
      over ||= !ok;
      log(
        `bundle ${r.worker.padEnd(20)} ${mib(r.bytes).padStart(12)}  (limit 64 MiB) ${ok ? "ok" : "TOO LARGE"}`,
      );
    }
    const files = manifestFiles(manifest);
    log(
      `would upload to r2://${args.bucket}/shards/: ${files.length} file(s), ${mib(files.reduce((a, f) => a + f.bytes, 0))} (existing keys skipped)`,
    );
    log(
      `would deploy ${configs.stages.length} stage Worker(s), then ${configs.workers
        .filter((w) => w.kind !== "stage")
        .map((w) => w.name)
        .join(", ")}, then swap ${ACTIVE_KEY} to ${manifest.version}`,
    );
    for (const line of await resourcePlan(root)) log(`would ensure ${line}`);
    if (rule) {
      const step = await ensureNotificationRule(rule, async () => "", true);
      log(`would ensure ${step.what}: ${step.command}`);
    }
    if (args.taggingRoute) log(`would route ${TAGGING_NAME} on ${args.taggingRoute}`);
    log(args.outdir ? `bundles in ${work}` : "bundles removed (pass --outdir DIR to keep them)");
    process.stdout.write(
      `${JSON.stringify({ version: manifest.version, stages: manifest.stages.length, bundles: reports })}\n`,
    );
    if (over) throw new AppError("bundle-too-large", 1, "A Worker bundle exceeds the 64 MiB script limit.");
    return;
  }

  log(`ensuring bucket ${args.bucket} ...`);
  try {
    await wrangler(["r2", "bucket", "create", args.bucket]);
  } catch (e) {
    const msg = String((e as { stderr?: string }).stderr ?? e);
    if (!/already exists|already own/i.test(msg))
      throw new AppError(
        "r2-bucket",
        1,
        `Could not create R2 bucket ${args.bucket}: ${msg.slice(0, 400)}. Run \`npx wrangler login\` or set CLOUDFLARE_API_TOKEN.`,
      );
  }
  log("ensuring queues, D1 databases, KV namespaces ...");
  const ids = await ensureResources(async (a) => (await wrangler(a)).stdout, log);
  configs = await writeConfigs(ids);
  await route();
  if (rule) {
    const step = await ensureNotificationRule(rule, async (a) => (await wrangler(a)).stdout, false);
    log(`${step.action} ${step.what}`);
  }
  if (args.taggingRoute) log(`route ${TAGGING_NAME} on ${args.taggingRoute}`);
  log("applying D1 migrations (--remote) ...");
  await applyMigrations({ root, configs: configs.workers.map((w) => w.path) });
  const { readFile } = await import("node:fs/promises");
  const pub = await publishModel(
    manifest,
    async (f) => new Uint8Array(await readFile(join(dir, f))),
    remoteTarget(args.bucket, work),
    { activate: false, onFile: (f, action, bytes) => log(`  ${action} ${f} (${mib(bytes)})`) },
  );
  log(`uploaded ${pub.uploaded.length}, skipped ${pub.skipped.length}`);
  // In topology order: callees (the stage Workers) before the Workers that bind them.
  for (const w of configs.workers) {
    log(`deploying ${w.name} ...`);
    await wrangler(["deploy", "-c", w.path]);
  }
  const pointer = JSON.stringify({ version: manifest.version, publishedAt: new Date().toISOString() });
  await remoteTarget(args.bucket, work).put(
    ACTIVE_KEY,
    new TextEncoder().encode(pointer),
    "application/json",
  );
  log(`active model is now ${manifest.version}`);
  for (const line of (await resourcePlan(root)).filter((l) => l.startsWith("secrets")))
    log(`remember: ${line}`);
}

main().catch((e: unknown) => {
  const err =
    e instanceof AppError ? e : new AppError("deploy-failed", 1, e instanceof Error ? e.message : String(e));
  process.stderr.write(`error[${err.code}]: ${err.detail}\n`);
  process.exit(1);
});
