/**
 * @module
 * The key and usage tables in D1 (migrations/0003_accounts.sql). Written against the narrow part of
 * D1Database used here ({@link SqlDatabase}), so `npm run keys` can run the same code over
 * `wrangler d1 execute` (locally or `--remote`) that the gateway runs over its binding.
 */
import type { Scope } from "./keys.ts";

/** The part of D1Database the stores use. */
export interface SqlDatabase {
  prepare(sql: string): {
    bind(...values: unknown[]): {
      first<T = Record<string, unknown>>(): Promise<T | null>;
      all<T = Record<string, unknown>>(): Promise<{ results: T[] }>;
      run(): Promise<{ meta: { changes?: number } }>;
    };
  };
}

/** A row of api_keys. */
export interface KeyRow {
  id: string;
  hash: string;
  name: string;
  scopes: string;
  rpm: number | null;
  images_per_minute: number | null;
  created_at: number;
  expires_at: number | null;
  revoked_at: number | null;
  last_used_at: number | null;
}

/** A key as the API and the CLI show it (never the hash, never the token). */
export interface KeyView {
  id: string;
  name: string;
  scopes: string[];
  rpm: number | null;
  images_per_minute: number | null;
  created_at: string;
  expires_at: string | null;
  revoked_at: string | null;
  last_used_at: string | null;
  status: "active" | "expired" | "revoked";
}

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

export function keyView(k: KeyRow, now = Date.now()): KeyView {
  return {
    id: k.id,
    name: k.name,
    scopes: k.scopes.split(",").filter(Boolean),
    rpm: k.rpm,
    images_per_minute: k.images_per_minute,
    created_at: iso(k.created_at)!,
    expires_at: iso(k.expires_at),
    revoked_at: iso(k.revoked_at),
    last_used_at: iso(k.last_used_at),
    status:
      k.revoked_at !== null ? "revoked" : k.expires_at !== null && k.expires_at <= now ? "expired" : "active",
  };
}

export interface NewKeyRow {
  id: string;
  hash: string;
  name: string;
  scopes: Scope[];
  rpm: number | null;
  imagesPerMinute: number | null;
  expiresAt: number | null;
  now: number;
}

export class KeyStore {
  constructor(readonly db: SqlDatabase) {}

  async create(k: NewKeyRow): Promise<KeyRow> {
    const row = await this.db
      .prepare(
        `INSERT INTO api_keys (id, hash, name, scopes, rpm, images_per_minute, created_at, expires_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING *`,
      )
      .bind(k.id, k.hash, k.name, k.scopes.join(","), k.rpm, k.imagesPerMinute, k.now, k.expiresAt)
      .first<KeyRow>();
    if (!row) throw new Error(`key ${k.id} was not inserted`);
    return row;
  }

  get(id: string): Promise<KeyRow | null> {
    return this.db.prepare("SELECT * FROM api_keys WHERE id = ?").bind(id).first<KeyRow>();
  }

  async list(): Promise<KeyRow[]> {
    const { results } = await this.db
      .prepare("SELECT * FROM api_keys ORDER BY created_at DESC, id")
      .bind()
      .all<KeyRow>();
    return results;
  }

  /** How many keys work now (not revoked, not expired): auth is on when there is one. */
  async activeCount(now: number): Promise<number> {
    const row = await this.db
      .prepare(
        "SELECT COUNT(*) AS n FROM api_keys WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)",
      )
      .bind(now)
      .first<{ n: number }>();
    return row?.n ?? 0;
  }

  /** Revokes a key; returns the row after it, or null when no key has this id. Revoking twice keeps the first time. */
  async revoke(id: string, now: number): Promise<KeyRow | null> {
    await this.db
      .prepare("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
      .bind(now, id)
      .run();
    return this.get(id);
  }

  async touch(id: string, now: number): Promise<void> {
    await this.db.prepare("UPDATE api_keys SET last_used_at = ? WHERE id = ?").bind(now, id).run();
  }
}

/** Counters of one key and day (what usage_daily holds). */
export interface UsageCounts {
  requests?: number;
  images?: number;
  model_ms?: number;
  jobs?: number;
  deliveries?: number;
  images_tagged?: number;
}

export const USAGE_FIELDS = [
  "requests",
  "images",
  "model_ms",
  "jobs",
  "deliveries",
  "images_tagged",
] as const;

export interface UsageRow extends Required<UsageCounts> {
  key_id: string;
  day: string;
}

/** The UTC day of a time, YYYY-MM-DD. */
export function dayOf(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

export class UsageStore {
  constructor(readonly db: SqlDatabase) {}

  /** Adds `counts` to the key's row for the day of `now` (one upsert). */
  async add(keyId: string, now: number, counts: UsageCounts): Promise<void> {
    const v = USAGE_FIELDS.map((f) => Math.max(0, Math.round(counts[f] ?? 0)));
    if (v.every((x) => x === 0)) return;
    await this.db
      .prepare(
        `INSERT INTO usage_daily (key_id, day, ${USAGE_FIELDS.join(", ")}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (key_id, day) DO UPDATE SET ${USAGE_FIELDS.map((f) => `${f} = ${f} + excluded.${f}`).join(", ")}`,
      )
      .bind(keyId, dayOf(now), ...v)
      .run();
  }

  /** Rows from `from` to `to` (days, inclusive), of one key or (null) of every key. */
  async query(keyId: string | null, from: string, to: string): Promise<UsageRow[]> {
    const { results } = await this.db
      .prepare(
        `SELECT key_id, day, ${USAGE_FIELDS.join(", ")} FROM usage_daily
         WHERE day >= ? AND day <= ? AND (? IS NULL OR key_id = ?) ORDER BY day, key_id`,
      )
      .bind(from, to, keyId, keyId)
      .all<UsageRow>();
    return results;
  }
}
