/**
 * @module
 * Secrets for local runs (`npm start`, the e2e test): the one place that decides which secrets the
 * local Workers get and where they come from.
 *
 * - {@link SECRET_NAMES} lists the secrets the Workers read (from src/topology.ts). Each may come from the environment
 *   (`API_KEY=... npm start`) or from `.dev.vars` at the project root; the environment wins, and an
 *   empty value counts as unset (so `API_KEY= npm start` turns auth off despite `.dev.vars`).
 *   Every other `KEY=VALUE` line of the root `.dev.vars` is passed through too, as wrangler would.
 * - {@link writeDevVars} writes the result as `.dev.vars` beside the generated wrangler configs
 *   (`.wrangler/generated/`): wrangler reads `.dev.vars` from the directory of each `-c` config,
 *   never from the project root, which is why a root `.dev.vars` alone did nothing. A run without
 *   secrets removes the file, so a secret from an earlier run never lingers.
 *
 * Adding a secret (e.g. WEBHOOK_SECRET) = one more name in a Worker's `secrets` in src/topology.ts.
 */
import { chmod, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { WORKERS } from "../../src/topology.ts";

/**
 * Secrets the Workers read (every `secrets` entry of src/topology.ts, e.g. API_KEY); each can be
 * set in the environment or in the root `.dev.vars`.
 */
export const SECRET_NAMES: readonly string[] = [...new Set(WORKERS.flatMap((w) => w.secrets ?? []))];

export interface DevSecrets {
  /** Name -> value of every secret to give the local Workers (non-empty values only). */
  values: Record<string, string>;
  /** Where each value came from. */
  sources: Record<string, "environment" | ".dev.vars">;
}

/**
 * Parses a `.dev.vars` as wrangler's dotenv does, one line per entry: `KEY=VALUE`, optional
 * `export `, `#` comments, values optionally in single, double or back quotes (in double quotes a
 * literal `\n` is a newline). Multi-line quoted values are not supported; malformed lines are
 * reported, not skipped silently.
 */
export function parseDevVars(text: string, file = ".dev.vars"): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [i, raw] of text.split(/\r?\n/).entries()) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const m = /^(?:export\s+)?([\w.-]+)\s*=\s*(.*)$/.exec(line);
    if (!m) throw new Error(`${file}:${i + 1}: expected KEY=VALUE, got ${JSON.stringify(raw)}`);
    let value = m[2];
    const q = value[0];
    if ((q === '"' || q === "'" || q === "`") && value.length >= 2 && value.endsWith(q)) {
      value = value.slice(1, -1);
      if (q === '"') value = value.replace(/\\n/g, "\n").replace(/\\r/g, "\r");
    } else value = value.replace(/\s*#.*$/, "");
    out[m[1]] = value;
  }
  return out;
}

/** Resolves the local secrets from `<root>/.dev.vars` and `env` (the environment wins). */
export async function resolveDevSecrets(
  root: string,
  env: Record<string, string | undefined> = process.env,
  names: readonly string[] = SECRET_NAMES,
): Promise<DevSecrets> {
  const path = join(root, ".dev.vars");
  const text = await readFile(path, "utf8").catch((e: NodeJS.ErrnoException) => {
    if (e.code === "ENOENT") return "";
    throw e;
  });
  const fromFile = parseDevVars(text, path);
  const values: Record<string, string> = {};
  const sources: DevSecrets["sources"] = {};
  for (const [k, v] of Object.entries(fromFile)) {
    if (v === "") continue;
    values[k] = v;
    sources[k] = ".dev.vars";
  }
  for (const name of names) {
    const v = env[name];
    if (v === undefined) continue;
    if (v === "") {
      delete values[name];
      delete sources[name];
    } else {
      values[name] = v;
      sources[name] = "environment";
    }
  }
  return { values, sources };
}

/**
 * Quotes `value` for wrangler's dotenv parser, which strips one pair of quotes and knows no escapes
 * (in double quotes it turns a literal `\n` into a newline): the first quote character the value
 * does not contain is used, and raw newlines are fine inside any of them.
 */
export function quoteDevVar(value: string): string {
  for (const q of ["'", "`", '"']) {
    if (value.includes(q)) continue;
    if (q === '"' && /\\[nr]/.test(value)) continue;
    return `${q}${value}${q}`;
  }
  throw new Error("a secret containing all of ' ` and \" cannot be written to .dev.vars");
}

/**
 * Writes `<configDir>/.dev.vars` (mode 0600) with `values`, where wrangler dev looks for it, or
 * removes it when there is nothing to write.
 */
export async function writeDevVars(configDir: string, values: Record<string, string>): Promise<void> {
  const path = join(configDir, ".dev.vars");
  const entries = Object.entries(values);
  if (!entries.length) {
    await rm(path, { force: true });
    return;
  }
  const body = entries.map(([k, v]) => `${k}=${quoteDevVar(v)}`).join("\n");
  await writeFile(path, `# Written by scripts/lib/dev-secrets.ts for wrangler dev; do not edit.\n${body}\n`, {
    mode: 0o600,
  });
  await chmod(path, 0o600);
}
