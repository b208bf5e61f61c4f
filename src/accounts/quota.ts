/**
 * @module
 * Per-key quotas: requests per minute and images per minute, counted exactly by one Durable Object
 * per key ({@link KeyQuota}, bound as QUOTA; the gateway's script exports the class). Windows are
 * fixed UTC minutes, so `remaining` and `reset` are exact and go into the IETF rate-limit fields of
 * every response (draft-ietf-httpapi-ratelimit-headers):
 *
 *   RateLimit-Policy: "requests";q=600;w=60, "images";q=600;w=60
 *   RateLimit: "requests";r=598;t=17, "images";r=592;t=17
 *
 * Why a Durable Object and not the Rate Limiting binding: the binding answers only allowed or not,
 * counts per Cloudflare location and approximately, and has no remaining/reset to report; a client
 * pacing itself needs both, and the 429 needs Retry-After. The cost was measured
 * (bench/quota-mechanism.ts, docs/operations.md "Quotas").
 *
 * The counts live in the object's memory: an object is evicted only after it has been idle, and an
 * idle key's counts of the past minute are then gone, which can only let a client through, never
 * refuse it wrongly.
 */
import { AppError } from "../shared/errors.ts";

/** Length of a quota window (s): the limits are per minute. */
export const WINDOW_S = 60;

export interface QuotaRequest {
  /** Requests to count now (1 per API request, 0 for an images-only charge). */
  requests: number;
  /** Images to count now. */
  images: number;
  /** The key's limits. */
  rpm: number;
  imagesPerMinute: number;
}

export interface PolicyState {
  name: "requests" | "images";
  limit: number;
  remaining: number;
  /** Seconds until the window resets. */
  resetS: number;
}

export interface QuotaResult {
  allowed: boolean;
  /** Which limit refused (when not allowed). */
  limitedBy: "requests" | "images" | null;
  /** Seconds to wait before the refused charge can pass (when not allowed). */
  retryAfterS: number;
  policies: PolicyState[];
}

export interface WindowState {
  start: number;
  requests: number;
  images: number;
}

/**
 * Charges `req` against `state` at `now` (all-or-nothing: a refused charge counts nothing) and
 * returns what remains. Pure, so it is tested in Node and the Durable Object only holds the state.
 */
export function charge(state: WindowState, req: QuotaRequest, now: number): QuotaResult {
  const start = Math.floor(now / (WINDOW_S * 1000)) * WINDOW_S * 1000;
  if (state.start !== start) {
    state.start = start;
    state.requests = 0;
    state.images = 0;
  }
  const resetS = Math.max(1, Math.ceil((start + WINDOW_S * 1000 - now) / 1000));
  let limitedBy: QuotaResult["limitedBy"] = null;
  if (req.requests > 0 && state.requests + req.requests > req.rpm) limitedBy = "requests";
  else if (req.images > 0 && state.images + req.images > req.imagesPerMinute) limitedBy = "images";
  if (limitedBy === null) {
    state.requests += req.requests;
    state.images += req.images;
  }
  return {
    allowed: limitedBy === null,
    limitedBy,
    // A batch larger than a whole window's images can never pass: the detail says so; waiting a window is still the honest hint.
    retryAfterS: limitedBy === null ? 0 : resetS,
    policies: [
      { name: "requests", limit: req.rpm, remaining: Math.max(0, req.rpm - state.requests), resetS },
      {
        name: "images",
        limit: req.imagesPerMinute,
        remaining: Math.max(0, req.imagesPerMinute - state.images),
        resetS,
      },
    ],
  };
}

/**
 * The Durable Object: one per key (idFromName(key id)), a single-threaded counter, so two
 * concurrent requests of one key can never both take the last unit. POST a {@link QuotaRequest}
 * as JSON, get a {@link QuotaResult}.
 */
export class KeyQuota {
  private state: WindowState = { start: 0, requests: 0, images: 0 };

  async fetch(req: Request): Promise<Response> {
    const body = (await req.json()) as QuotaRequest;
    return Response.json(charge(this.state, body, Date.now()));
  }
}

/** The QUOTA binding's shape (a Durable Object namespace). */
export interface QuotaNamespace {
  idFromName(name: string): DurableObjectId;
  get(id: DurableObjectId): { fetch(input: string, init?: RequestInit): Promise<Response> };
}

/** Charges `req` to the key's object. */
export async function chargeKey(ns: QuotaNamespace, keyId: string, req: QuotaRequest): Promise<QuotaResult> {
  const stub = ns.get(ns.idFromName(keyId));
  const res = await stub.fetch("https://quota/charge", { method: "POST", body: JSON.stringify(req) });
  if (!res.ok) throw new Error(`quota object answered ${res.status}`);
  return (await res.json()) as QuotaResult;
}

/** The IETF rate-limit fields (`RateLimit-Policy`, `RateLimit`) of a result. */
export function rateLimitHeaders(r: QuotaResult): Record<string, string> {
  return {
    "ratelimit-policy": r.policies.map((p) => `"${p.name}";q=${p.limit};w=${WINDOW_S}`).join(", "),
    ratelimit: r.policies.map((p) => `"${p.name}";r=${p.remaining};t=${p.resetS}`).join(", "),
  };
}

/** The 429 `rate-limited` problem of a refused charge (headers go on its response). */
export function rateLimited(r: QuotaResult, images: number): AppError {
  const p = r.policies.find((x) => x.name === r.limitedBy)!;
  const detail =
    r.limitedBy === "images" && images > p.limit
      ? `This request has ${images} images, more than this key's whole limit of ${p.limit} images per minute: split it, or ask for a higher images-per-minute limit.`
      : `This key's limit of ${p.limit} ${r.limitedBy} per minute is used up; retry after ${r.retryAfterS} s (the RateLimit header shows what remains).`;
  return new AppError("rate-limited", 429, detail, {
    retryAfter: r.retryAfterS,
    limit: r.limitedBy,
  });
}
