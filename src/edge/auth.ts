/**
 * @module
 * Optional bearer-token auth: when the `API_KEY` secret is set, requests must send
 * `Authorization: Bearer <API_KEY>`. Tokens are compared through their SHA-256 digests with a
 * constant-time loop, so neither content nor length leaks through timing. Without the secret the
 * service is open. `API_KEY` may hold several keys (spaces or commas between them); each is a
 * separate caller, identified by {@link authenticate}.
 */
import { AppError } from "../shared/errors.ts";
import { toHex } from "../shared/hash.ts";

async function digest(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
}

/** Constant-time equality of two strings (compares SHA-256 digests). */
export async function safeEqual(a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([digest(a), digest(b)]);
  let diff = 0;
  for (let i = 0; i < x.length; i++) diff |= x[i] ^ y[i];
  return diff === 0;
}

/**
 * The API keys in the `API_KEY` secret: one key, or several separated by spaces or commas, each
 * its own caller (jobs belong to the key that created them).
 */
export function apiKeysOf(apiKey: string | null | undefined): string[] {
  return (apiKey ?? "").split(/[\s,]+/).filter((k) => k.length > 0);
}

/** Caller id of the open service (no API_KEY configured): every request is the same caller. */
export const OPEN_CALLER = "open";

/**
 * Checks the bearer token and returns the caller's id: {@link OPEN_CALLER} when no key is
 * configured, otherwise `key:<first 16 hex digits of the key's SHA-256>` (the key itself is never
 * stored). Throws 401 `unauthorized` for a missing or unknown token. Every configured key is
 * compared, in constant time, whatever matches first.
 */
export async function authenticate(
  header: string | null,
  apiKey: string | null | undefined,
): Promise<string> {
  const keys = apiKeysOf(apiKey);
  if (keys.length === 0) return OPEN_CALLER;
  const m = /^Bearer\s+(.+)$/i.exec(header ?? "");
  const token = m ? m[1].trim() : "";
  let matched = false;
  for (const k of keys) if (await safeEqual(token, k)) matched = true;
  if (!m || !matched)
    throw new AppError(
      "unauthorized",
      401,
      "This service requires an API key: send `Authorization: Bearer <key>`.",
    );
  return `key:${toHex(await digest(token)).slice(0, 16)}`;
}

/** Throws 401 `unauthorized` unless `header` carries a configured bearer token (no-op when `apiKey` is empty). */
export async function checkBearer(header: string | null, apiKey: string | undefined): Promise<void> {
  await authenticate(header, apiKey);
}
