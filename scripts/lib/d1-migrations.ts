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
import { readFile } from "node:fs/promises";
import { WORKERS } from "../../src/topology.ts";
import { runWrangler } from "./run-wrangler.ts";

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
  const out: Record<string, string> = {};
  for (const db of topologyDatabases()) {
    if (!db.migrationsDir) continue;
    const config = await configBinding(o.configs, db.databaseName);
    const where = o.persistTo ? ["--local", "--persist-to", o.persistTo] : ["--remote"];
    try {
      // Bounded and without stdin (scripts/lib/run-wrangler.ts): a hang is an error naming the call.
      const { stdout, stderr } = await runWrangler(
        ["d1", "migrations", "apply", db.databaseName, ...where, "-c", config],
        { root: o.root, env: { ...o.env, CI: "1" } },
      );
      out[db.databaseName] = stdout + stderr;
    } catch (e) {
      // The message names the command and why (exit code or time limit) with the end of stderr;
      // wrangler prints a failing migration's SQL error on stdout, so that goes along too.
      const err = e as { stdout?: string; message: string };
      throw new Error(
        `applying the D1 migrations of ${db.databaseName} (${db.migrationsDir}/) failed: ${err.message}\n${err.stdout ?? ""}`.slice(
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
