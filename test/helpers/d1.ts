/**
 * @module
 * A real D1 database for Node-side tests: Miniflare's D1 (the SQLite-backed emulation wrangler dev
 * uses), in memory, with every migrations/*.sql applied in order. Each call gets a fresh database.
 */
import { readdir, readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { type LocalBindings, localBindings } from "./local-bindings.ts";

const MIGRATIONS = resolve(import.meta.dirname, "../../migrations");

/** Statements of a migration file (comments dropped, split at semicolons that end a line). */
export function migrationStatements(sql: string): string[] {
  return sql
    .split("\n")
    .map((l) => l.replace(/--.*$/, ""))
    .join("\n")
    .split(/;\s*(?:\n|$)/)
    .map((s) => s.trim())
    .filter(Boolean);
}

export interface TestD1 {
  db: D1Database;
  /** The same Miniflare's UPLOADS bucket and the rest of its bindings. */
  bindings: LocalBindings;
  dispose(): Promise<void>;
}

/** A fresh in-memory D1 database with migrations/ applied. */
export async function testD1(): Promise<TestD1> {
  const bindings = localBindings({ d1Databases: ["DB"], r2Buckets: ["UPLOADS"] });
  const db = await bindings.d1("DB");
  for (const file of (await readdir(MIGRATIONS)).filter((f) => f.endsWith(".sql")).sort()) {
    const statements = migrationStatements(await readFile(join(MIGRATIONS, file), "utf8"));
    await db.batch(statements.map((s) => db.prepare(s)));
  }
  return { db, bindings, dispose: () => bindings.dispose() };
}
