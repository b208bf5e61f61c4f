/**
 * @module
 * Optional bearer-token auth: when the `API_KEY` secret is set, requests must send
 * `Authorization: Bearer <API_KEY>`. Tokens are compared through their SHA-256 digests with a
 * constant-time loop, so neither content nor length leaks through timing. Without the secret the
 * service is open.
 */
import { AppError } from "../shared/errors.ts";

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

/** Throws 401 `unauthorized` unless `header` carries the expected bearer token (no-op when `apiKey` is empty). */
export async function checkBearer(header: string | null, apiKey: string | undefined): Promise<void> {
  if (!apiKey) return;
  const m = /^Bearer\s+(.+)$/i.exec(header ?? "");
  if (!m || !(await safeEqual(m[1].trim(), apiKey)))
    throw new AppError(
      "unauthorized",
      401,
      "This service requires an API key: send `Authorization: Bearer <key>`.",
    );
}
