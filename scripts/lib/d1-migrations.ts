/**
 * @module
 * Applies every D1 migration (migrations/*.sql, listed as `migrations_dir` in src/topology.ts) with
 * `wrangler d1 migrations apply`, which records what it applied in the database's own
 * `d1_migrations` table: running it again applies only new files. One call per database of the
 * topology, through the first generated config that binds it.
 *
 * - locally (`npm start`, the e2e test, the benchmarks: {@link applyLocalMigrations}) into the
 *   `--persist-to` directory wrangler dev then serves;
 * - on the account (`npm run deploy`) with `--remote`.
 */
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { WORKERS } from "../../src/topology.ts";

/** Every D1 database of the topology (by database name), with its migrations directory. */
export function topologyDatabases(): { databaseName: string; binding: string; migrationsDir?: string }[] {
  const seen = new Map<string, { databaseName: string; binding: string; migrationsDir?: string }>();
  for (const w of WORKERS)
    for (const d of w.d1Databases ?? []) if (!seen.has(d.databaseName)) seen.set(d.databaseName, d);
  return [...seen.values()];
}

/** The first generated config (JSON) that binds `databaseName`. */
export async function configBinding(configs: string[], databaseName: string): Promise<string> {
  for (const path of configs) {
    const cfg = JSON.parse(await readFile(path, "utf8")) as { d1_databases?: { database_name: string }[] };
    if (cfg.d1_databases?.some((d) => d.database_name === databaseName)) return path;
  }
  throw new Error(`no generated wrangler config binds the D1 database ${databaseName}`);
}

export interface ApplyOptions {
  root: string;
  /** Generated wrangler configs (any order). */
  configs: string[];
  /** Local: the `--persist-to` directory of wrangler dev. Omit for `--remote`. */
  persistTo?: string;
  env?: NodeJS.ProcessEnv;
}

/** Applies migrations to every database of the topology; returns wrangler's output per database. */
export async function applyMigrations(o: ApplyOptions): Promise<Record<string, string>> {
  const wrangler = join(o.root, "node_modules/wrangler/bin/wrangler.js");
  const out: Record<string, string> = {};
  for (const db of topologyDatabases()) {
    if (!db.migrationsDir) continue;
    const config = await configBinding(o.configs, db.databaseName);
    const where = o.persistTo ? ["--local", "--persist-to", o.persistTo] : ["--remote"];
    try {
      const { stdout, stderr } = await promisify(execFile)(
        process.execPath,
        [wrangler, "d1", "migrations", "apply", db.databaseName, ...where, "-c", config],
        {
          cwd: o.root,
          env: { ...process.env, ...o.env, WRANGLER_SEND_METRICS: "false", CI: "1" },
          maxBuffer: 16 * 1024 * 1024,
        },
      );
      out[db.databaseName] = stdout + stderr;
    } catch (e) {
      const err = e as { stdout?: string; stderr?: string; message: string };
      throw new Error(
        `applying the D1 migrations of ${db.databaseName} (${db.migrationsDir}/) failed:\n${(err.stdout ?? "") + (err.stderr ?? err.message)}`.slice(
          0,
          6000,
        ),
      );
    }
  }
  return out;
}

/** Local runs: migrations into `persistTo` before wrangler dev starts. */
export function applyLocalMigrations(
  root: string,
  configs: string[],
  persistTo: string,
): Promise<Record<string, string>> {
  return applyMigrations({ root, configs, persistTo });
}
