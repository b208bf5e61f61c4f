/**
 * @module
 * A D1 database reached through `wrangler d1 execute --json` (locally: the `--persist-to` state
 * `npm start` serves; or `--remote`), shaped like the part of D1Database the stores in
 * src/accounts/ use, so `npm run keys` runs the same queries the gateway runs over its binding.
 * Parameters are inlined as SQL literals (strings quoted with '' escaping, numbers checked finite,
 * null): `wrangler d1 execute --command` takes no bindings.
 */
import type { SqlDatabase } from "../../src/accounts/store.ts";
import { runWrangler } from "./run-wrangler.ts";

/** One value as an SQLite literal. */
export function sqlLiteral(v: unknown): string {
  if (v === null || v === undefined) return "NULL";
  if (typeof v === "number") {
    if (!Number.isFinite(v)) throw new Error(`not a finite number: ${v}`);
    return String(v);
  }
  if (typeof v === "boolean") return v ? "1" : "0";
  if (typeof v === "string") return `'${v.replace(/'/g, "''")}'`;
  throw new Error(`cannot inline a ${typeof v} into SQL`);
}

/** `sql` with each `?` replaced by the next value (the stores' SQL has no `?` inside literals). */
export function inline(sql: string, values: unknown[]): string {
  let i = 0;
  const out = sql.replace(/\?/g, () => {
    if (i >= values.length) throw new Error("more ? than values");
    return sqlLiteral(values[i++]);
  });
  if (i !== values.length) throw new Error("more values than ?");
  return out;
}

export interface D1CliOptions {
  root: string;
  databaseName: string;
  /** A wrangler config binding the database. */
  config: string;
  /** Local state directory; omit for --remote. */
  persistTo?: string;
}

interface Result {
  results?: Record<string, unknown>[];
  meta?: { changes?: number };
}

/** The database through wrangler. */
export function d1Cli(o: D1CliOptions): SqlDatabase {
  const where = o.persistTo ? ["--local", "--persist-to", o.persistTo] : ["--remote"];
  const exec = async (sql: string): Promise<Result> => {
    const { stdout } = await runWrangler(
      [
        "d1",
        "execute",
        o.databaseName,
        ...where,
        "--json",
        "-c",
        o.config,
        "--command",
        sql.replace(/\s+/g, " "),
      ],
      { root: o.root, env: { CI: "1" } },
    );
    const parsed = JSON.parse(stdout) as Result[] | Result;
    return Array.isArray(parsed) ? (parsed[0] ?? {}) : parsed;
  };
  return {
    prepare: (sql) => ({
      bind: (...values) => {
        const text = inline(sql, values);
        return {
          first: async <T>() => ((await exec(text)).results?.[0] ?? null) as T | null,
          all: async <T>() => ({ results: ((await exec(text)).results ?? []) as T[] }),
          run: async () => ({ meta: { changes: (await exec(text)).meta?.changes } }),
        };
      },
    }),
  };
}
