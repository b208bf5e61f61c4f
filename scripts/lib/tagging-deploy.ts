/**
 * @module
 * What `npm run deploy` does for CDN image tagging beyond the topology's resources (those — the
 * IMAGES bucket, the tagging queue and its DLQ, the TAGS KV namespace, the shared D1 database — are
 * created by scripts/lib/deploy-resources.ts like every other binding of src/topology.ts):
 * - the optional R2 event-notification rule (object-create on the bucket -> the tagging queue),
 *   created only when `wrangler r2 bucket notification list` does not already name the queue;
 * - the optional route of the tagging Worker, written into its generated config before deploying.
 */
import { readFile, writeFile } from "node:fs/promises";

/** Runs wrangler with `args`; resolves to its stdout. */
export type Wrangler = (args: string[]) => Promise<string>;

export interface NotificationRule {
  bucket: string;
  queue: string;
  /** Only keys under this prefix notify (empty: every object). */
  prefix?: string;
}

export interface StepReport {
  what: string;
  action: "exists" | "created" | "would create";
  command: string;
}

const quote = (args: string[]) =>
  `wrangler ${args.map((a) => (/\s/.test(a) ? JSON.stringify(a) : a)).join(" ")}`;

function ruleCommand(r: NotificationRule): string[] {
  return [
    "r2",
    "bucket",
    "notification",
    "create",
    r.bucket,
    "--event-type",
    "object-create",
    "--queue",
    r.queue,
    ...(r.prefix ? ["--prefix", r.prefix] : []),
  ];
}

/**
 * Ensures the object-create rule `bucket -> queue` exists (with `dryRun`, only reports the command,
 * without calling wrangler: it works offline). The bucket and queue must exist already.
 */
export async function ensureNotificationRule(
  r: NotificationRule,
  wrangler: Wrangler,
  dryRun: boolean,
): Promise<StepReport> {
  const create = ruleCommand(r);
  const what = `R2 event notification ${r.bucket} object-create -> ${r.queue}${r.prefix ? ` (prefix ${r.prefix})` : ""}`;
  if (dryRun) return { what, action: "would create", command: `${quote(create)} (unless it exists)` };
  const listed = await wrangler(["r2", "bucket", "notification", "list", r.bucket]);
  if (new RegExp(`(^|[\\s│:"'])${r.queue}([\\s│"',]|$)`, "m").test(listed))
    return { what, action: "exists", command: quote(create) };
  await wrangler(create);
  return { what, action: "created", command: quote(create) };
}

/** The zone a route pattern belongs to: its host without a leading `*.` or `*`. */
export function routeZone(pattern: string): string {
  return pattern.replace(/^\*?\.?/, "").split("/")[0];
}

/** Puts the Worker of the generated config `configPath` on `pattern` ("zone.example/path*"). */
export async function addRoute(configPath: string, pattern: string): Promise<void> {
  const cfg = JSON.parse(await readFile(configPath, "utf8")) as Record<string, unknown>;
  cfg.routes = [{ pattern, zone_name: routeZone(pattern) }];
  await writeFile(configPath, `${JSON.stringify(cfg, null, 2)}\n`);
}
