/**
 * @module
 * API keys: their format, hashing, scopes and the validation of what a client or the CLI asks for.
 * Pure (WebCrypto only), shared by the gateway, the consumers and `npm run keys`.
 *
 * A key is `bek_<16 hex id>_<32 base62 secret>` (58 characters): the prefix makes a leaked key
 * recognisable (secret scanners, logs), the id (`key_<16 hex>` outside the token) finds its row
 * without a scan, and only the SHA-256 of the whole token is stored. The token itself is shown once,
 * when it is created.
 */
import { AppError } from "../shared/errors.ts";
import { sha256Hex } from "../shared/hash.ts";

/** The prefix of every key this service issues. */
export const KEY_PREFIX = "bek_";
/** What a scope lets a key do. `admin` includes every other scope. */
export const SCOPES = ["classify", "jobs", "images", "admin"] as const;
export type Scope = (typeof SCOPES)[number];
/** Scopes of a key created without `scopes`: everything but admin. */
export const DEFAULT_SCOPES: Scope[] = ["classify", "jobs", "images"];
/** Longest key name (characters). */
export const MAX_NAME_LENGTH = 100;
/** Highest per-key limit accepted (requests or images per minute). */
export const MAX_LIMIT_PER_MINUTE = 1_000_000;
/** Longest lifetime a key may be given (10 years). */
export const MAX_EXPIRY_S = 10 * 365 * 86_400;

const TOKEN_RE = /^bek_([0-9a-f]{16})_([0-9A-Za-z]{32})$/;
const ID_RE = /^key_[0-9a-f]{16}$/;
const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/** The key id inside a well-formed token, or null for anything else. */
export function keyIdOfToken(token: string): string | null {
  const m = TOKEN_RE.exec(token);
  return m ? `key_${m[1]}` : null;
}

/** True for a string shaped like a key id (`key_<16 hex>`). */
export function isKeyId(text: string): boolean {
  return ID_RE.test(text);
}

/** True when `token` looks like one of our keys (so a malformed one can be named as such). */
export function looksLikeIssuedKey(token: string): boolean {
  return token.startsWith(KEY_PREFIX);
}

/** The stored hash of a token (lower-case hex SHA-256). */
export function hashKey(token: string): Promise<string> {
  return sha256Hex(new TextEncoder().encode(token));
}

function randomChars(n: number, alphabet: string): string {
  // Rejection sampling keeps every character equally likely (62 does not divide 256).
  const out: string[] = [];
  const limit = 256 - (256 % alphabet.length);
  while (out.length < n) {
    for (const b of crypto.getRandomValues(new Uint8Array(n * 2))) {
      if (b < limit && out.length < n) out.push(alphabet[b % alphabet.length]);
    }
  }
  return out.join("");
}

/** A new key: its token (show once), id and stored hash. */
export async function newKey(): Promise<{ token: string; id: string; hash: string }> {
  const hex = randomChars(16, "0123456789abcdef");
  const token = `${KEY_PREFIX}${hex}_${randomChars(32, BASE62)}`;
  return { token, id: `key_${hex}`, hash: await hashKey(token) };
}

/** Constant-time comparison of two equal-length hex strings (hashes). */
export function sameHash(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/** True when `scopes` grant `needed` (`admin` grants everything). */
export function hasScope(scopes: readonly string[], needed: Scope): boolean {
  return scopes.includes(needed) || scopes.includes("admin");
}

function invalid(parameter: string, detail: string): AppError {
  return new AppError("invalid-parameter", 422, detail, { parameter });
}

/** A key name: 1..100 printable characters, trimmed. */
export function parseName(raw: unknown): string {
  if (typeof raw !== "string" || raw.trim().length === 0)
    throw invalid("name", "name is required: a label for the key, e.g. the client's name.");
  const name = raw.trim();
  if (name.length > MAX_NAME_LENGTH || /[\x00-\x1f\x7f]/.test(name))
    throw invalid(
      "name",
      `name must be 1 to ${MAX_NAME_LENGTH} characters without control characters, got ${name.length}.`,
    );
  return name;
}

/** Scopes from a list or a comma-separated string; unknown scopes are refused by name. */
export function parseScopes(raw: unknown): Scope[] {
  if (raw === undefined || raw === null) return [...DEFAULT_SCOPES];
  const list = typeof raw === "string" ? raw.split(",") : raw;
  if (!Array.isArray(list) || list.some((s) => typeof s !== "string"))
    throw invalid("scopes", `scopes must be a list of ${SCOPES.join(", ")}.`);
  const scopes = [...new Set((list as string[]).map((s) => s.trim()).filter((s) => s.length > 0))];
  const bad = scopes.filter((s) => !(SCOPES as readonly string[]).includes(s));
  if (bad.length > 0 || scopes.length === 0)
    throw invalid(
      "scopes",
      `scopes must be one or more of ${SCOPES.join(", ")}; ${bad.length ? `unknown: ${bad.map((s) => JSON.stringify(s.slice(0, 40))).join(", ")}` : "none given"}.`,
    );
  return scopes.sort((a, b) => SCOPES.indexOf(a as Scope) - SCOPES.indexOf(b as Scope)) as Scope[];
}

/** A per-key limit per minute (null: the topology's default). */
export function parseLimit(raw: unknown, parameter: string): number | null {
  if (raw === undefined || raw === null || raw === "") return null;
  const n = typeof raw === "number" ? raw : typeof raw === "string" && /^\d+$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > MAX_LIMIT_PER_MINUTE)
    throw invalid(
      parameter,
      `${parameter} must be an integer from 1 to ${MAX_LIMIT_PER_MINUTE}, got ${JSON.stringify(String(raw).slice(0, 40))}.`,
    );
  return n;
}

const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400 };

/**
 * An expiry: a duration (`90s`, `15m`, `12h`, `30d`, or plain seconds) from `now`, or an ISO 8601
 * time in the future. Returns Unix ms, or null for none.
 */
export function parseExpiry(raw: unknown, now: number): number | null {
  if (raw === undefined || raw === null || raw === "") return null;
  const text = String(raw).trim();
  const m = /^(\d+)([smhd]?)$/.exec(text);
  let at: number;
  if (m) {
    const seconds = Number(m[1]) * UNITS[m[2] || "s"];
    if (seconds < 1 || seconds > MAX_EXPIRY_S)
      throw invalid("expires", `expires must be from 1 s to ${MAX_EXPIRY_S / 86_400} days, got ${text}.`);
    at = now + seconds * 1000;
  } else {
    at = Date.parse(text);
    if (!/^\d{4}-\d{2}-\d{2}/.test(text) || !Number.isFinite(at))
      throw invalid(
        "expires",
        `expires must be a duration such as 30d, 12h, 15m, 90s, or an ISO 8601 time; got ${JSON.stringify(text.slice(0, 40))}.`,
      );
    if (at <= now) throw invalid("expires", "expires must be in the future.");
    if (at - now > MAX_EXPIRY_S * 1000)
      throw invalid("expires", `expires must be at most ${MAX_EXPIRY_S / 86_400} days away.`);
  }
  return at;
}
