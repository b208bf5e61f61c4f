/**
 * @module
 * `npm run tag -- --bucket NAME [--prefix P] [--retag] [--url URL] [--no-wait] [--timeout S]`:
 * bulk tagging of an R2 bucket. The gateway lists the bucket and enqueues one tagging job per key
 * (`POST /v1/images/backfill`, 1000 keys a call); this command loops over the listing with a
 * progress bar, then (unless --no-wait) follows the queue through `GET /v1/images/stats` until every
 * enqueued image has an outcome, and prints a summary. Works the same against `npm start`
 * (default URL http://localhost:8787) and a deployed gateway (`--url https://...`, `API_KEY` from
 * the environment when the deployment has one).
 */
import { parseArgs } from "node:util";

interface Stats {
  tagged: number;
  skipped: number;
  failed: number;
  classified: number;
}

function usage(msg?: string): never {
  if (msg) console.error(`error: ${msg}`);
  console.error(
    "usage: npm run tag -- --bucket NAME [--prefix P] [--retag] [--url http://localhost:8787] [--no-wait] [--timeout 1800]",
  );
  process.exit(2);
}

function bar(done: number, total: number, width = 30): string {
  const f = total > 0 ? Math.min(1, done / total) : 1;
  const n = Math.round(f * width);
  return `[${"#".repeat(n)}${"-".repeat(width - n)}] ${done}/${total}`;
}

/** Draws a line in place on a TTY, or prints it when `force` (non-TTY: milestones only). */
function drawer(stream: NodeJS.WriteStream = process.stderr) {
  let last = "";
  return (line: string, force = false) => {
    if (stream.isTTY) {
      if (line !== last) stream.write(`\r\x1b[2K${line}`);
    } else if (force && line !== last) stream.write(`${line}\n`);
    last = line;
  };
}

async function call<T>(base: string, path: string, init: RequestInit = {}): Promise<T> {
  const headers = new Headers(init.headers);
  if (process.env.API_KEY) headers.set("authorization", `Bearer ${process.env.API_KEY}`);
  let res: Response;
  try {
    res = await fetch(new URL(path, base), { ...init, headers });
  } catch (e) {
    throw new Error(`cannot reach ${base} (${String(e)}). Is \`npm start\` running, or is --url right?`);
  }
  const text = await res.text();
  if (!res.ok) {
    let detail = text;
    try {
      detail = (JSON.parse(text) as { detail?: string }).detail ?? text;
    } catch {
      // not JSON
    }
    throw new Error(`${res.status} from ${path}: ${detail}`);
  }
  return JSON.parse(text) as T;
}

async function main(): Promise<void> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      options: {
        bucket: { type: "string" },
        prefix: { type: "string", default: "" },
        retag: { type: "boolean", default: false },
        url: { type: "string", default: "http://localhost:8787" },
        "no-wait": { type: "boolean", default: false },
        timeout: { type: "string", default: "1800" },
        help: { type: "boolean", default: false },
      },
    }));
  } catch (e) {
    usage((e as Error).message);
  }
  if (values.help) usage();
  const bucket = values.bucket;
  if (typeof bucket !== "string" || bucket === "") usage("--bucket NAME is required");
  const base = String(values.url);
  const prefix = String(values.prefix ?? "");
  const timeoutMs = Number(values.timeout) * 1000;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) usage("--timeout must be a number of seconds");
  const started = Date.now();
  const draw = drawer();

  let cursor: string | null = null;
  let enqueued = 0;
  // Outcomes are counted from the server's clock (GET /v1/images/stats?since=), not this machine's.
  let since: number | undefined;
  do {
    const r: { enqueued: number; cursor: string | null; at: number } = await call(
      base,
      "/v1/images/backfill",
      {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ bucket, prefix, retag: values.retag === true, ...(cursor ? { cursor } : {}) }),
      },
    );
    enqueued += r.enqueued;
    cursor = r.cursor;
    since ??= r.at;
    draw(`listing ${bucket}/${prefix}: ${enqueued} images enqueued${cursor ? " ..." : ""}`, cursor === null);
  } while (cursor);
  if (process.stderr.isTTY) process.stderr.write("\n");
  if (enqueued === 0) {
    console.log(`Nothing to tag: no keys under "${prefix}" in ${bucket}.`);
    return;
  }
  if (values["no-wait"]) {
    console.log(`${enqueued} images enqueued; the tagging queue runs them in the background.`);
    return;
  }

  let stats: Stats = { tagged: 0, skipped: 0, failed: 0, classified: 0 };
  let milestone = 0;
  for (;;) {
    stats = await call<Stats>(
      base,
      `/v1/images/stats?since=${since ?? 0}&prefix=${encodeURIComponent(prefix)}`,
    );
    const done = stats.tagged + stats.skipped + stats.failed;
    const pct = Math.floor((10 * done) / enqueued);
    draw(
      `tagging ${bar(done, enqueued)}  tagged ${stats.tagged}, skipped ${stats.skipped}, failed ${stats.failed}`,
      pct > milestone || done >= enqueued,
    );
    milestone = Math.max(milestone, pct);
    if (done >= enqueued) break;
    if (Date.now() - started > timeoutMs) {
      if (process.stderr.isTTY) process.stderr.write("\n");
      console.log(
        `Timed out after ${values.timeout} s with ${enqueued - done} images still queued (they keep running).`,
      );
      process.exitCode = 1;
      break;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
  if (process.stderr.isTTY) process.stderr.write("\n");
  const minutes = (Date.now() - started) / 60000;
  const done = stats.tagged + stats.skipped + stats.failed;
  console.log(
    [
      `Summary for ${bucket}/${prefix}${values.retag ? " (retag)" : ""}:`,
      `  enqueued   ${enqueued}`,
      `  tagged     ${stats.tagged} (${stats.classified} classified, ${stats.tagged - stats.classified} reused labels of identical bytes or were current)`,
      `  skipped    ${stats.skipped}`,
      `  failed     ${stats.failed}`,
      `  time       ${(minutes * 60).toFixed(1)} s, ${(done / Math.max(minutes, 1e-9)).toFixed(0)} images/minute`,
    ].join("\n"),
  );
}

main().catch((e) => {
  console.error(`error: ${(e as Error).message}`);
  process.exit(1);
});
