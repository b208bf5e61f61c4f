/**
 * @module
 * One webhook delivery attempt: POST the event body, signed (Standard Webhooks headers), to the
 * callback URL. Redirects are not followed (a 3xx is a failed attempt), the attempt is bounded by a
 * timeout (default 15 s, headers and body), and the response body is discarded unread.
 */
import { webhookHeaders } from "./webhook-signature.ts";

export interface PostWebhookOptions {
  url: string;
  webhookId: string;
  /** The event body, exactly the bytes that are signed. */
  payload: string;
  secrets: string[];
  timeoutMs: number;
  /** Unix seconds of this attempt (the webhook-timestamp header); default now. */
  nowSeconds?: number;
  fetch?: typeof fetch;
}

export interface AttemptResult {
  /** HTTP status, or null when no response came (timeout, network error). */
  status: number | null;
  /** What went wrong, short, for `last_error` (null on 2xx). */
  error: string | null;
  retryAfter: string | null;
  ms: number;
}

/** The User-Agent deliveries carry. */
export const WEBHOOK_USER_AGENT = "beit-edge-webhooks/1";

/** Performs one attempt; never throws. */
export async function postWebhook(o: PostWebhookOptions): Promise<AttemptResult> {
  const started = Date.now();
  const doFetch = o.fetch ?? fetch;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), o.timeoutMs);
  try {
    const headers = await webhookHeaders(
      o.secrets,
      o.webhookId,
      o.nowSeconds ?? Math.floor(Date.now() / 1000),
      o.payload,
    );
    const res = await doFetch(o.url, {
      method: "POST",
      redirect: "manual",
      signal: controller.signal,
      headers: { ...headers, "content-type": "application/json", "user-agent": WEBHOOK_USER_AGENT },
      body: o.payload,
    });
    // Drain (bounded by the same timeout) so the connection can be reused; the content is not used.
    await res.body?.cancel().catch(() => undefined);
    const ok = res.status >= 200 && res.status < 300;
    const redirect = res.status >= 300 && res.status < 400;
    return {
      status: res.status,
      error: ok ? null : redirect ? `HTTP ${res.status} (redirects are not followed)` : `HTTP ${res.status}`,
      retryAfter: res.headers.get("retry-after"),
      ms: Date.now() - started,
    };
  } catch (e) {
    const error = controller.signal.aborted
      ? `no response within ${o.timeoutMs} ms`
      : `network error: ${e instanceof Error ? e.message : String(e)}`.slice(0, 300);
    return { status: null, error, retryAfter: null, ms: Date.now() - started };
  } finally {
    clearTimeout(timer);
  }
}
