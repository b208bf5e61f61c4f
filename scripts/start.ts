/**
 * @module
 * `npm start`: build (if needed), publish to local R2, and serve the gateway plus every stage
 * Worker with `wrangler dev` on http://localhost:8787.
 *
 *   npm start                        the default model (hub, else full-size synthetic fallback)
 *   npm start -- --model DIR         a shard directory built by `npm run model -- build`
 *   npm start -- --size tiny         a tiny synthetic model (one layer per stage), for quick development
 *   options: --port N (8787), --persist DIR (.wrangler/state), --prepare-only (build + publish, no
 *   server), --verbose (wrangler's full start-up output)
 *   npm start -- --images DIR        serve the files of DIR through the tagging Worker (default: samples)
 *
 * CDN image tagging demo: the sample images (samples/; sunset.jpg also as copies/sunset.jpg) and
 * a text file, or the files of --images DIR, are seeded into the local IMAGES bucket,
 * which the tagging Worker serves at http://localhost:8787/images/<key> (the gateway forwards
 * /images/* to it); D1 migrations are applied before wrangler dev starts.
 *
 * Cron Triggers (the jobs Worker's sweeper) are fired on their topology schedules by this process
 * (scripts/lib/local-crons.ts), since `wrangler dev` does not fire them.
 *
 * Secrets (scripts/lib/dev-secrets.ts): API_KEY from the environment or the root `.dev.vars`
 * turns auth on; the banner says whether it is on. ALLOW_LOOPBACK_FETCH is set to "true" (URL
 * inputs may name localhost) unless the environment sets ALLOW_LOOPBACK_FETCH=false.
 *
 * The default tries microsoft/beit-base-patch16-224-pt22k-ft22k from the hub; when it cannot be
 * reached it prints one banner and builds the full-size synthetic checkpoint instead (random
 * weights, real shapes), which the API labels as synthetic everywhere. A second start reuses what
 * is built and published.
 */
import { stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parseCommandLine } from "../model-shards/args.ts";
import { buildShards, verifyShards } from "../model-shards/build.ts";
import { loadCheckpoint } from "../model-shards/checkpoint/index.ts";
import { synthesize, writeCheckpoint } from "../model-shards/checkpoint/synth.ts";
import { TINY_BUILD } from "../model-shards/configs.ts";
import { AppError } from "../src/shared/errors.ts";
import type { Manifest } from "../src/shared/manifest.ts";
import { BUCKETS, DATABASE, JOBS, WORKERS } from "../src/topology.ts";
import { d1Cli } from "./lib/d1-cli.ts";
import { resolveDevSecrets } from "./lib/dev-secrets.ts";
import { contentTypeOf, filesOfDir } from "./lib/image-origin.ts";
import { publishLocal, withLocalBucket } from "./lib/local-r2.ts";
import { checkPortFree, launcherPids } from "./lib/process-guard.ts";
import { localLoopbackFetch, serveLocal } from "./lib/serve.ts";
import { localWebhookSecret } from "./lib/webhook-secret.ts";

export const HUB_ID = "microsoft/beit-base-patch16-224-pt22k-ft22k";

/** The sample every example uses (samples/README.md). */
const SAMPLE_JPEG = "sunset.jpg";

const root = resolve(import.meta.dirname, "..");

interface StartArgs {
  model?: string;
  size: "base" | "tiny";
  port: number;
  persist: string;
  prepareOnly: boolean;
  verbose: boolean;
  images?: string;
}

const START_USAGE =
  "Usage: npm start [-- --model DIR | --size base|tiny] [--images DIR] [--port N] [--persist DIR] [--prepare-only] [--verbose]";

function parseArgs(argv: string[]): StartArgs {
  const { values: v } = parseCommandLine(
    {
      args: argv,
      options: {
        model: { type: "string" },
        size: { type: "string", default: process.env.BEIT_EDGE_SIZE ?? "base" },
        port: { type: "string", default: "8787" },
        persist: { type: "string", default: join(root, ".wrangler/state") },
        images: { type: "string" },
        "prepare-only": { type: "boolean", default: false },
        verbose: { type: "boolean", default: false },
      },
    },
    (m) => new AppError("usage", 2, `${m}. ${START_USAGE}`),
  );
  if (v.size !== "base" && v.size !== "tiny")
    throw new AppError("usage", 2, `--size must be base or tiny, got ${v.size}.`);
  const port = Number(v.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535)
    throw new AppError("usage", 2, "--port must be an integer from 1 to 65535.");
  return {
    model: v.model === undefined ? undefined : resolve(v.model),
    size: v.size,
    port,
    persist: resolve(v.persist),
    prepareOnly: v["prepare-only"],
    verbose: v.verbose,
    images: v.images === undefined ? undefined : resolve(v.images),
  };
}

async function exists(p: string): Promise<boolean> {
  return (await stat(p).catch(() => null)) !== null;
}

function banner(lines: string[]): void {
  const width = Math.max(...lines.map((l) => l.length));
  const bar = "=".repeat(width + 4);
  process.stderr.write(`\n${bar}\n${lines.map((l) => `| ${l.padEnd(width)} |`).join("\n")}\n${bar}\n\n`);
}

/** The first sentence of an error detail (it names the URL that failed), wrapped to `width` columns. */
function wrapFirstSentence(detail: string, width = 96): string[] {
  const first = detail.split("\n")[0].split(/(?<=\))\. |\. /)[0];
  const lines: string[] = [];
  let line = "";
  for (const word of first.split(" ")) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  return lines;
}

const progress = (msg: string) => process.stderr.write(`  ${msg}\n`);

/** Builds the synthetic checkpoint of `size` and its int8 shards (skipping what already exists). */
async function buildSynthetic(size: "base" | "tiny"): Promise<string> {
  const out = join(root, `model-shards/out/synthetic-${size}`);
  if (await exists(join(out, "manifest.json"))) return out;
  const ckDir = join(root, `model-shards/checkpoints/synthetic-${size}`);
  if (!(await exists(join(ckDir, "config.json")))) {
    progress(`synthesizing the ${size} checkpoint into ${ckDir} ...`);
    await writeCheckpoint(ckDir, synthesize({ size, seed: 0 }), "safetensors");
  }
  progress(`building int8 shards into ${out} (the full-size model takes 10-60 s) ...`);
  const t0 = Date.now();
  await buildShards(await loadCheckpoint(ckDir), {
    outDir: out,
    ...(size === "tiny" ? TINY_BUILD : { precision: "int8" }),
    onProgress: (m) => progress(m),
  });
  progress(`built in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  return out;
}

/** Picks (and builds if needed) the shard directory to serve. */
async function resolveModel(args: StartArgs): Promise<string> {
  if (args.model) return args.model;
  if (args.size === "tiny") return buildSynthetic("tiny");
  const hubOut = join(root, "model-shards/out/beit-base-patch16-224-pt22k-ft22k");
  if (await exists(join(hubOut, "manifest.json"))) return hubOut;
  const synthOut = join(root, "model-shards/out/synthetic-base");
  if (await exists(join(synthOut, "manifest.json"))) return synthOut;
  try {
    progress(`downloading ${HUB_ID} from the Hugging Face hub ...`);
    const ck = await loadCheckpoint(HUB_ID);
    await buildShards(ck, { outDir: hubOut, precision: "int8", onProgress: (m) => progress(m) });
    return hubOut;
  } catch (e) {
    const why = e instanceof AppError ? e.detail : String(e);
    banner([
      e instanceof AppError && e.code === "hub-unreachable"
        ? `The Hugging Face hub is unreachable, so ${HUB_ID} cannot be downloaded:`
        : `${HUB_ID} could not be downloaded or converted:`,
      ...wrapFirstSentence(why).map((l) => `  ${l}`),
      "Falling back to the FULL-SIZE SYNTHETIC checkpoint: real BEiT-base shapes and cost,",
      "RANDOM weights. Its labels are meaningless; /v1/model and the x-model-synthetic header say so.",
      "For the real model: npm start -- --model DIR (a shard dir built with `npm run model -- build`).",
    ]);
    return buildSynthetic("base");
  }
}

const startedAt = Date.now();

/**
 * Seeds the local IMAGES bucket: the files of `dir`, or the committed samples (samples/*.jpg,
 * *.png), one of them again under copies/ (same bytes: classified once) and a text file (skipped:
 * not an image). Returns the keys.
 */
async function seedImages(persist: string, dir: string | undefined): Promise<string[]> {
  let files: Map<string, { bytes: Uint8Array; contentType: string }>;
  if (dir) {
    if (!(await exists(dir))) throw new AppError("usage", 2, `--images ${dir}: no such directory.`);
    files = await filesOfDir(dir);
  } else {
    files = new Map(
      [...(await filesOfDir(join(root, "samples")))].filter(([key]) =>
        /\.(jpe?g|png|webp|gif|avif)$/.test(key),
      ),
    );
    const first = files.get(SAMPLE_JPEG);
    if (first) files.set(`copies/${SAMPLE_JPEG}`, first);
    files.set("notes.txt", {
      bytes: new TextEncoder().encode("not an image\n"),
      contentType: contentTypeOf("notes.txt"),
    });
  }
  await withLocalBucket(
    persist,
    async (bucket) => {
      for (const [key, f] of files) {
        const head = await bucket.head(key);
        if (head && head.size === f.bytes.byteLength) continue;
        const plain = new Uint8Array(f.bytes.byteLength);
        plain.set(f.bytes);
        await bucket.put(key, plain, { httpMetadata: { contentType: f.contentType } });
      }
    },
    BUCKETS.IMAGES,
  );
  return [...files.keys()].sort();
}

/** The Workers' cron schedules, for the banner: `beit-edge-jobs "* * * * *" (sweeper)`. */
function cronLine(): string {
  const withCrons = WORKERS.filter((w) => (w.crons ?? []).length > 0);
  if (withCrons.length === 0) return "none";
  return withCrons.map((w) => `${w.name} ${(w.crons ?? []).map((c) => `"${c}"`).join(", ")}`).join("; ");
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  // Before a minute of building and publishing: is the port free? (The other ports wrangler dev
  // needs, its inspector's and the user runtime's entry, are picked free by serveLocal.)
  if (!args.prepareOnly) {
    const taken = await checkPortFree(args.port);
    if (taken) throw new AppError("port-in-use", 1, taken);
  }
  const dir = await resolveModel(args);
  const manifest: Manifest = await verifyShards(dir);
  progress(`publishing ${dir} to local R2 (${args.persist}) ...`);
  const pub = await publishLocal(dir, args.persist);
  progress(
    `uploaded ${pub.uploaded.length} file(s), ${pub.skipped.length} already there; active version ${pub.version.slice(0, 12)}`,
  );
  const what = `${manifest.model.id} (${manifest.precision}, ${manifest.stages.length} stages${manifest.model.synthetic ? ", SYNTHETIC random weights" : ""})`;
  const imageKeys = await seedImages(args.persist, args.images);
  progress(
    `${imageKeys.length} image(s) in the local ${BUCKETS.IMAGES} bucket${args.images ? ` from ${args.images}` : " (samples)"}`,
  );
  if (args.prepareOnly) {
    progress(`prepared ${what}`);
    return;
  }
  // WEBHOOK_SECRET: from the environment or .dev.vars, else generated once into .dev.vars; it then
  // reaches the Workers with the other secrets.
  const webhook = await localWebhookSecret(root);
  if (webhook.source === "generated")
    progress(`generated a development WEBHOOK_SECRET (kept in .dev.vars): ${webhook.secret}`);
  const secrets = await resolveDevSecrets(root);
  const loopback = localLoopbackFetch(process.env); // what serveLocal sets

  progress(
    `starting wrangler dev: gateway, jobs Worker (queues, D1, cron), tagging Worker + its consumer, ${manifest.stages.length} stage Worker(s) (${args.verbose ? "full output" : "start-up notices hidden; --verbose shows them"}) ...`,
  );
  const svc = await serveLocal({
    root,
    stages: manifest.stages.length,
    persistTo: args.persist,
    port: args.port,
    stdio: args.verbose ? "inherit" : "quiet",
    secrets: secrets.values,
    readyTimeoutMs: 300_000,
    // wrangler dev does not fire Cron Triggers; serveLocal does, on the topology's schedules.
    runCrons: true,
    guardPids: [process.pid, ...launcherPids()],
  });
  const url = svc.url.replace("127.0.0.1", "localhost");
  const staticKey = secrets.values.API_KEY !== undefined;
  // Issued keys (npm run keys) live in the local D1 the service now serves.
  const issued = await d1Cli({
    root,
    databaseName: DATABASE.databaseName,
    config: join(root, ".wrangler/generated/gateway.json"),
    persistTo: args.persist,
  })
    .prepare("SELECT COUNT(*) AS n, SUM(revoked_at IS NULL) AS active FROM api_keys")
    .bind()
    .first<{ n: number; active: number | null }>()
    .catch(() => null);
  const issuedText =
    issued && issued.n > 0
      ? `${issued.n} issued key(s) in D1, ${issued.active ?? 0} not revoked (npm run keys -- list)`
      : "";
  const auth = staticKey || (issued?.n ?? 0) > 0;
  banner([
    `beit-edge is serving ${what}`,
    `  ${url}/            the demo page: classify an image, browse the tagged images`,
    `  curl --data-binary @samples/${SAMPLE_JPEG} -H 'content-type: image/jpeg' ${url}/v1/classify`,
    `  curl -sD - -o /dev/null ${url}/images/${SAMPLE_JPEG}      tagged images (image-labels header)`,
    `  npm run tag -- --bucket ${BUCKETS.IMAGES} --url ${url}        tag the whole bucket`,
    `  webhook jobs: npm run webhook-receiver -- --port 9000, then`,
    `  curl -F file=@samples/${SAMPLE_JPEG} -F callback_url=http://127.0.0.1:9000/webhooks ${url}/v1/jobs`,
    `Docs: README.md and docs/ (API: ${url}/openapi.json).`,
    auth
      ? `Auth is ON (${[staticKey ? `API_KEY from ${secrets.sources.API_KEY === "environment" ? "the environment" : ".dev.vars"}` : "", issuedText].filter(Boolean).join("; ")}): add -H 'authorization: Bearer <key>' to /v1/* calls.`
      : "Auth is off (no API_KEY, no issued key): the API is open. npm run keys -- create --name NAME turns it on.",
    ...Object.keys(secrets.values)
      .filter((k) => k !== "API_KEY")
      .map(
        (k) =>
          `Secret ${k} set (from ${secrets.sources[k] === "environment" ? "the environment" : ".dev.vars"}).`,
      ),
    loopback === "true"
      ? "URL inputs may fetch localhost (ALLOW_LOOPBACK_FETCH=true; ALLOW_LOOPBACK_FETCH=false npm start refuses)."
      : "URL inputs may not fetch loopback addresses (ALLOW_LOOPBACK_FETCH=false).",
    `Crons: ${cronLine()}, fired by npm start (wrangler dev alone does not). One tick by hand:`,
    `  curl -H 'MF-Route-Override: ${JOBS.name}' '${svc.userEntryUrl}/cdn-cgi/handler/scheduled?cron=*+*+*+*+*'`,
    `Ready in ${((Date.now() - startedAt) / 1000).toFixed(0)} s. Stop with Ctrl-C.`,
  ]);
  let stopping = false;
  const stop = async () => {
    stopping = true;
    await svc.stop();
    process.exit(0);
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  process.once("SIGHUP", stop);
  const code = await new Promise<number>((r) => svc.child.once("exit", (c) => r(c ?? 1)));
  if (stopping) return;
  process.stderr.write(`wrangler dev exited (code ${code}); the local server is stopped.\n`);
  process.exit(code === 0 ? 0 : 1);
}

main().catch((e: unknown) => {
  const err =
    e instanceof AppError ? e : new AppError("start-failed", 1, e instanceof Error ? e.message : String(e));
  process.stderr.write(`error[${err.code}]: ${err.detail}\n`);
  process.exit(1);
});
