/**
 * @module
 * Who is calling: the bearer token of a request resolved to a {@link Principal} (key id, name,
 * scopes, limits). Two sources of keys:
 *
 * - the `API_KEY` secret, as before: one or several static keys, each with every scope and the
 *   default limits, caller id `key:<sha256 prefix>` (what jobs already record as their owner);
 * - keys issued into D1 (`npm run keys`, `POST /v1/keys`), found by the id inside the token and
 *   checked against the stored SHA-256 in constant time.
 *
 * Auth is on when either source has a key (a D1 key counts from its creation on, revoked or not,
 * so revoking the last key never reopens the service). Without any, the service is open and every
 * request is the caller `open`.
 *
 * The hot path costs no D1 query: each isolate keeps a key's row, and whether any key exists, for
 * KEY_CACHE_TTL_S (30 s, at most 60), so a revocation reaches every isolate within that time.
 */
import { apiKeysOf, OPEN_CALLER, safeEqual } from "../edge/auth.ts";
import { AppError } from "../shared/errors.ts";
import { sha256Hex } from "../shared/hash.ts";
import type { AccountsConfig } from "./config.ts";
import { hashKey, keyIdOfToken, looksLikeIssuedKey, SCOPES, type Scope, sameHash } from "./keys.ts";
import { type KeyRow, KeyStore, type SqlDatabase } from "./store.ts";

export interface Principal {
  /** Key id (`key_...`), static key caller id (`key:<hex>`), or `open`. */
  id: string;
  name: string;
  kind: "issued" | "static" | "open";
  scopes: readonly string[];
  /** Limits per minute; null for the open service (no quota). */
  rpm: number | null;
  imagesPerMinute: number | null;
}

export const OPEN_PRINCIPAL: Principal = {
  id: OPEN_CALLER,
  name: "open",
  kind: "open",
  scopes: SCOPES,
  rpm: null,
  imagesPerMinute: null,
};

interface Cached<T> {
  value: T;
  at: number;
}

/** The isolate's cache of one database's keys. */
class KeyCache {
  rows = new Map<string, Cached<KeyRow | null>>();
  anyKey: Cached<boolean> | null = null;
  touched = new Map<string, number>();
}

const caches = new WeakMap<object, KeyCache>();

function cacheOf(db: object): KeyCache {
  let c = caches.get(db);
  if (!c) {
    c = new KeyCache();
    caches.set(db, c);
  }
  return c;
}

/** Forgets what this isolate cached about `id` (after a revoke through this isolate). */
export function forgetKey(db: SqlDatabase | undefined, id: string): void {
  if (!db) return;
  const c = cacheOf(db);
  c.rows.delete(id);
  c.anyKey = null;
}

function unauthorized(detail: string): AppError {
  return new AppError("unauthorized", 401, detail);
}

export interface AuthInput {
  authorization: string | null;
  /** The API_KEY secret. */
  apiKey: string | null;
  db: SqlDatabase | undefined;
  config: AccountsConfig;
  now: number;
  /** Work to finish after the response (last_used_at). */
  keepAlive?: (p: Promise<unknown>) => void;
}

/** D1 could not answer: fail closed (never open the service because the key table is unreachable). */
function unavailable(e: unknown): AppError {
  console.error(JSON.stringify({ event: "auth-d1-failed", error: String(e).slice(0, 300) }));
  return new AppError(
    "auth-unavailable",
    503,
    "API keys cannot be checked right now (the key database did not answer). Retry shortly.",
    { retryAfter: 5 },
  );
}

async function keyRow(db: SqlDatabase, cache: KeyCache, id: string, now: number, ttl: number) {
  const hit = cache.rows.get(id);
  if (hit && now - hit.at < ttl) return hit.value;
  const row = await new KeyStore(db).get(id).catch((e: unknown) => {
    throw unavailable(e);
  });
  cache.rows.set(id, { value: row, at: now });
  return row;
}

async function anyIssuedKey(db: SqlDatabase, cache: KeyCache, now: number, ttl: number): Promise<boolean> {
  if (cache.anyKey && now - cache.anyKey.at < ttl) return cache.anyKey.value;
  const row = await db
    .prepare("SELECT EXISTS (SELECT 1 FROM api_keys) AS any")
    .bind()
    .first<{ any: number }>();
  const value = row?.any === 1;
  cache.anyKey = { value, at: now };
  return value;
}

/**
 * Resolves the request's principal, or throws 401 `unauthorized` (missing, malformed, unknown,
 * revoked or expired key; the detail says which, never echoing the key).
 */
export async function resolvePrincipal(a: AuthInput): Promise<Principal> {
  const staticKeys = apiKeysOf(a.apiKey);
  const m = /^Bearer\s+(\S+)\s*$/i.exec(a.authorization ?? "");
  const token = m ? m[1] : null;
  const cache = a.db ? cacheOf(a.db) : null;
  const ttl = a.config.keyCacheTtlMs;
  if (token !== null) {
    let staticMatch = false;
    for (const k of staticKeys) if (await safeEqual(token, k)) staticMatch = true;
    if (staticMatch)
      return {
        id: `key:${(await sha256Hex(new TextEncoder().encode(token))).slice(0, 16)}`,
        name: "API_KEY",
        kind: "static",
        scopes: SCOPES,
        rpm: a.config.defaultRpm,
        imagesPerMinute: a.config.defaultImagesPerMinute,
      };
    const id = keyIdOfToken(token);
    if (id !== null && a.db && cache) {
      const row = await keyRow(a.db, cache, id, a.now, ttl);
      if (row && sameHash(row.hash, await hashKey(token))) {
        if (row.revoked_at !== null && row.revoked_at <= a.now)
          throw unauthorized(`API key ${row.id} was revoked. Ask the service's operator for a new key.`);
        if (row.expires_at !== null && row.expires_at <= a.now)
          throw unauthorized(
            `API key ${row.id} expired at ${new Date(row.expires_at).toISOString()}. Ask for a new key.`,
          );
        const last = cache.touched.get(row.id) ?? row.last_used_at ?? 0;
        if (a.now - last >= 60_000 && a.keepAlive) {
          cache.touched.set(row.id, a.now);
          const db = a.db;
          a.keepAlive(new KeyStore(db).touch(row.id, a.now).catch(() => {}));
        }
        return {
          id: row.id,
          name: row.name,
          kind: "issued",
          scopes: row.scopes.split(",").filter((s): s is Scope => s.length > 0),
          rpm: row.rpm ?? a.config.defaultRpm,
          imagesPerMinute: row.images_per_minute ?? a.config.defaultImagesPerMinute,
        };
      }
    }
  }
  const authOn =
    staticKeys.length > 0 || (a.db && cache ? await anyIssuedKey(a.db, cache, a.now, ttl) : false);
  if (!authOn) return OPEN_PRINCIPAL;
  if (token === null)
    throw unauthorized(
      m === null && a.authorization
        ? "The Authorization header must be `Bearer <key>`."
        : "This service requires an API key: send `Authorization: Bearer <key>`.",
    );
  if (looksLikeIssuedKey(token) && keyIdOfToken(token) === null)
    throw unauthorized(
      "The API key is malformed: keys look like bek_<16 hex digits>_<32 letters or digits>. Copy it again in full.",
    );
  throw unauthorized("The API key is not valid for this service.");
}

/** Whether requests need a key now (for the home page's key field); true when D1 cannot tell. */
export async function authIsOn(
  apiKey: string | null,
  db: SqlDatabase | undefined,
  config: AccountsConfig,
  now: number,
): Promise<boolean> {
  if (apiKeysOf(apiKey).length > 0) return true;
  if (!db) return false;
  return anyIssuedKey(db, cacheOf(db), now, config.keyCacheTtlMs).catch(() => true);
}
