/**
 * @module
 * Standard Webhooks (https://www.standardwebhooks.com) signing and verification with WebCrypto,
 * so the same code runs in workerd, Node 20 and a receiver anywhere.
 *
 * A message carries three headers: `webhook-id` (stable for the event across retries),
 * `webhook-timestamp` (Unix seconds of this attempt) and `webhook-signature`, a space-separated list
 * of `v1,<base64 HMAC-SHA256 over "{id}.{timestamp}.{body}">`, one per configured secret (two while
 * a secret is being rotated). Secrets are written `whsec_<base64 of the key bytes>`.
 *
 * @example
 * // A receiver (Node 20, any framework): keep the raw body text, verify, then parse.
 * import { verifyWebhook } from "beit-edge/src/jobs/webhook-signature.ts";
 * const event = await verifyWebhook(process.env.WEBHOOK_SECRET!, req.headers, rawBody);
 * // throws WebhookVerificationError on a bad signature, a missing header or a stale timestamp
 */

/** Prefix of a Standard Webhooks secret. */
export const SECRET_PREFIX = "whsec_";
/** Default accepted clock difference between sender and receiver, seconds (the spec's 5 minutes). */
export const DEFAULT_TOLERANCE_SECONDS = 300;

/** Thrown by {@link verifyWebhook} and {@link parseWebhookSecret}. */
export class WebhookVerificationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WebhookVerificationError";
  }
}

function base64ToBytes(text: string): Uint8Array {
  const s = text.replace(/-/g, "+").replace(/_/g, "/");
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 === 1)
    throw new WebhookVerificationError("the secret is not base64 after its whsec_ prefix");
  const bin = atob(s.padEnd(Math.ceil(s.length / 4) * 4, "="));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function bytesToBase64(bytes: Uint8Array): string {
  let bin = "";
  for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
  return btoa(bin);
}

/** The key bytes of a `whsec_<base64>` secret (the prefix is optional, as in the spec's libraries). */
export function parseWebhookSecret(secret: string): Uint8Array {
  const text = secret.trim();
  const key = base64ToBytes(text.startsWith(SECRET_PREFIX) ? text.slice(SECRET_PREFIX.length) : text);
  if (key.length === 0) throw new WebhookVerificationError("the webhook secret is empty");
  return key;
}

/**
 * The secrets configured for signing: `current` first, then `previous` (set only while rotating).
 * Each may itself be a space-separated list. Empty entries are dropped.
 */
export function webhookSecrets(current: string | undefined, previous?: string): string[] {
  return [current ?? "", previous ?? ""].flatMap((s) => s.split(/\s+/)).filter((s) => s.length > 0);
}

/** A new random `whsec_` secret (24 random bytes, as the spec's examples use). */
export function generateWebhookSecret(): string {
  return `${SECRET_PREFIX}${bytesToBase64(crypto.getRandomValues(new Uint8Array(24)))}`;
}

async function hmac(key: Uint8Array, content: string): Promise<string> {
  const k = await crypto.subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return bytesToBase64(
    new Uint8Array(await crypto.subtle.sign("HMAC", k, new TextEncoder().encode(content))),
  );
}

/**
 * The `webhook-signature` header value for one message: `v1,<sig>` per secret, space-separated.
 *
 * @example
 * const sig = await signWebhook(["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], "msg_1", 1614265330, body);
 */
export async function signWebhook(
  secrets: string[],
  id: string,
  timestampSeconds: number,
  body: string,
): Promise<string> {
  if (secrets.length === 0) throw new WebhookVerificationError("no webhook secret is configured");
  const content = `${id}.${timestampSeconds}.${body}`;
  const sigs = await Promise.all(
    secrets.map(async (s) => `v1,${await hmac(parseWebhookSecret(s), content)}`),
  );
  return sigs.join(" ");
}

/** The three Standard Webhooks headers of one delivery attempt. */
export async function webhookHeaders(
  secrets: string[],
  id: string,
  timestampSeconds: number,
  body: string,
): Promise<Record<string, string>> {
  return {
    "webhook-id": id,
    "webhook-timestamp": String(timestampSeconds),
    "webhook-signature": await signWebhook(secrets, id, timestampSeconds, body),
  };
}

type HeaderSource = Headers | Record<string, string | string[] | undefined>;

function header(headers: HeaderSource, name: string): string | undefined {
  if (typeof (headers as Headers).get === "function") return (headers as Headers).get(name) ?? undefined;
  for (const [k, v] of Object.entries(headers as Record<string, string | string[] | undefined>))
    if (k.toLowerCase() === name) return Array.isArray(v) ? v[0] : v;
  return undefined;
}

function constantTimeEqual(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  let diff = x.length ^ y.length;
  for (let i = 0; i < Math.max(x.length, y.length); i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0);
  return diff === 0;
}

export interface VerifyOptions {
  /** Largest accepted difference between `webhook-timestamp` and now, seconds (default 300). */
  toleranceSeconds?: number;
  /** Now in Unix seconds (tests). */
  nowSeconds?: number;
}

/**
 * Verifies one delivery and returns the parsed JSON body. `secret` is the receiver's `whsec_` secret
 * (or several, during a rotation on the receiver's side); `body` is the raw request body exactly as
 * received (re-serialised JSON would not verify). Throws {@link WebhookVerificationError} when a
 * header is missing, the timestamp is outside the tolerance, or no `v1` signature matches.
 *
 * @example
 * const event = await verifyWebhook(secret, request.headers, await request.text(), { toleranceSeconds: 300 });
 */
export async function verifyWebhook<T = unknown>(
  secret: string | string[],
  headers: HeaderSource,
  body: string,
  options: VerifyOptions = {},
): Promise<T> {
  const id = header(headers, "webhook-id");
  const ts = header(headers, "webhook-timestamp");
  const sig = header(headers, "webhook-signature");
  if (!id || !ts || !sig)
    throw new WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature header");
  if (!/^\d{1,12}$/.test(ts)) throw new WebhookVerificationError("webhook-timestamp is not Unix seconds");
  const tolerance = options.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS;
  const now = options.nowSeconds ?? Math.floor(Date.now() / 1000);
  const timestamp = Number(ts);
  if (timestamp < now - tolerance) throw new WebhookVerificationError("message timestamp too old");
  if (timestamp > now + tolerance) throw new WebhookVerificationError("message timestamp too new");
  const content = `${id}.${timestamp}.${body}`;
  const expected = await Promise.all(
    (Array.isArray(secret) ? secret : [secret]).map((s) => hmac(parseWebhookSecret(s), content)),
  );
  const passed = sig
    .split(" ")
    .map((p) => p.split(","))
    .filter(([version, value]) => version === "v1" && value);
  const ok = passed.some(([, value]) => expected.some((e) => constantTimeEqual(value, e)));
  if (!ok) throw new WebhookVerificationError("no matching signature found");
  return JSON.parse(body) as T;
}
