/**
 * @module
 * The gateway's side of keys, quotas, usage and request logs (issue #20): thin Hono glue over
 * src/accounts/.
 *
 * - `*`: request id (a client's well-formed `x-request-id` is kept), then after the response: the
 *   `x-request-id` and RateLimit fields on it, usage recorded (waitUntil), one JSON log line.
 * - `/v1/*`: the principal (src/accounts/auth.ts: API_KEY secret or a D1 key), the route's scope
 *   (403 `forbidden` without it), one request charged to the key's quota (429 `rate-limited`).
 * - `POST /v1/keys`, `GET /v1/keys`, `DELETE /v1/keys/{id}` (admin scope), `GET /v1/usage`.
 */
import type { Context, Hono, Next } from "hono";
import { matchedRoutes } from "hono/route";
import { forgetKey, resolvePrincipal } from "../../accounts/auth.ts";
import { accountsConfigOf } from "../../accounts/config.ts";
import {
  hasScope,
  isKeyId,
  newKey,
  parseExpiry,
  parseLimit,
  parseName,
  parseScopes,
  type Scope,
} from "../../accounts/keys.ts";
import { chargeKey, type QuotaResult, rateLimited, rateLimitHeaders } from "../../accounts/quota.ts";
import { dayOf, KeyStore, keyView, USAGE_FIELDS, UsageStore } from "../../accounts/store.ts";
import { recordUsage } from "../../accounts/usage.ts";
import { configOf } from "../../edge/config.ts";
import { logLine, ms, requestIdOf } from "../../edge/request-log.ts";
import { AppError } from "../../shared/errors.ts";
import type { JobsAppEnv } from "./jobs.ts";

type C = Context<JobsAppEnv>;

/**
 * A request refused before its body was read (401, 403, 429) has its body read and dropped when it
 * is at most this long (bytes), otherwise cancelled: an unread body left on a kept-alive connection
 * made the next request on it hang under wrangler dev (test/e2e-keys.test.ts, 2 of 3 runs).
 */
export const DRAIN_LIMIT_BYTES = 1024 * 1024;

/** Longest range of one usage query (days). */
export const MAX_USAGE_DAYS = 366;

function keepAliveOf(c: C): (p: Promise<unknown>) => void {
  return (p) => {
    try {
      c.executionCtx.waitUntil(p);
    } catch {
      // no execution context (app.request in tests): let it run
    }
  };
}

/** The scope a /v1 path needs; null: any authenticated caller (its own usage). */
export function scopeOfPath(path: string): Scope | null {
  if (path === "/v1/usage") return null;
  if (path === "/v1/keys" || path.startsWith("/v1/keys/")) return "admin";
  if (path === "/v1/jobs" || path.startsWith("/v1/jobs/")) return "jobs";
  if (path === "/v1/images" || path.startsWith("/v1/images/")) return "images";
  return "classify";
}

/** The route pattern a request matched (`/v1/jobs/:id`), for logs: never the raw path. */
function routeOf(c: C): string {
  const routes = matchedRoutes(c).filter((r) => r.method !== "ALL");
  return routes.length > 0 ? routes[routes.length - 1].path : "(none)";
}

function withHeaders(res: Response, headers: Record<string, string>): Response {
  try {
    for (const [k, v] of Object.entries(headers)) res.headers.set(k, v);
    return res;
  } catch {
    // Immutable headers (a response passed through from a fetch): copy it.
    const copy = new Response(res.body, res);
    for (const [k, v] of Object.entries(headers)) copy.headers.set(k, v);
    return copy;
  }
}

/**
 * Charges `images` to the caller's image quota (the open service has none). Throws 429
 * `rate-limited` past the limit; the RateLimit fields of this charge go on the response.
 */
export async function chargeImages(c: C, images: number): Promise<void> {
  const p = c.get("principal");
  if (!p || p.imagesPerMinute === null || p.rpm === null || !c.env.QUOTA || images <= 0) return;
  const t0 = performance.now();
  const r = await chargeKey(c.env.QUOTA, p.id, {
    requests: 0,
    images,
    rpm: p.rpm,
    imagesPerMinute: p.imagesPerMinute,
  });
  c.get("phases").quota = (c.get("phases").quota ?? 0) + ms(t0);
  c.set("rate", r);
  if (!r.allowed) throw rateLimited(r, images);
}

/** Adds to this request's usage (recorded after the response). */
export function addUsage(c: C, counts: Partial<Record<(typeof USAGE_FIELDS)[number], number>>): void {
  const u = c.get("usage");
  for (const [k, v] of Object.entries(counts)) {
    const f = k as (typeof USAGE_FIELDS)[number];
    u[f] = (u[f] ?? 0) + (v ?? 0);
  }
}

/** Registers the middleware; call before any route. */
export function registerAccountsMiddleware(app: Hono<JobsAppEnv>): void {
  app.use("*", async (c, next: Next) => {
    const t0 = performance.now();
    const requestId = requestIdOf(c.req.header("x-request-id"));
    c.set("requestId", requestId);
    c.set("rate", null);
    c.set("usage", {});
    c.set("problem", null);
    c.set("phases", {});
    await next();
    const raw = c.req.raw;
    if (raw.body && !raw.bodyUsed) {
      const len = Number(raw.headers.get("content-length") ?? Number.NaN);
      await (len <= DRAIN_LIMIT_BYTES ? raw.arrayBuffer() : raw.body.cancel()).catch(() => {});
    }
    const rate: QuotaResult | null = c.get("rate");
    c.res = withHeaders(c.res, { "x-request-id": requestId, ...(rate ? rateLimitHeaders(rate) : {}) });
    const principal = c.get("principal");
    const usage = c.get("usage");
    if (principal && c.req.path.startsWith("/v1/")) {
      usage.requests = 1;
      keepAliveOf(c)(recordUsage(c.env, principal.id, "gateway", usage));
    }
    const phases = c.get("phases");
    const len = (v: string | null | undefined) => (v ? Number(v) : null);
    logLine({
      event: "request",
      request_id: requestId,
      key_id: principal?.id ?? null,
      method: c.req.method,
      route: routeOf(c),
      status: c.res.status,
      problem: c.get("problem"),
      images: usage.images ?? 0,
      bytes_in: len(c.req.header("content-length")),
      bytes_out: len(c.res.headers.get("content-length")),
      ms: { ...phases, total: ms(t0) },
      model_version: c.res.headers.get("x-model-version"),
    });
  });

  app.use("/v1/*", async (c, next) => {
    const t0 = performance.now();
    const principal = await resolvePrincipal({
      authorization: c.req.header("authorization") ?? null,
      apiKey: configOf(c.env).apiKey,
      db: c.env.DB,
      config: accountsConfigOf(c.env),
      now: Date.now(),
      keepAlive: keepAliveOf(c),
    });
    c.get("phases").auth = ms(t0);
    c.set("principal", principal);
    c.set("caller", principal.id);
    const scope = scopeOfPath(c.req.path);
    if (scope === "admin" && principal.kind === "open")
      throw new AppError(
        "forbidden",
        403,
        "Key management needs an admin key, and this service has no keys yet (it is open). Create the first one with `npm run keys -- create --name admin --scopes admin` (add --remote for a deployment).",
      );
    if (scope !== null && !hasScope(principal.scopes, scope))
      throw new AppError(
        "forbidden",
        403,
        `This key (${principal.id}) lacks the \`${scope}\` scope that ${c.req.path.split("/").slice(0, 3).join("/")} needs. Its scopes: ${principal.scopes.join(", ")}.`,
        { scope },
      );
    if (principal.rpm !== null && principal.imagesPerMinute !== null && c.env.QUOTA) {
      const t1 = performance.now();
      const r = await chargeKey(c.env.QUOTA, principal.id, {
        requests: 1,
        images: 0,
        rpm: principal.rpm,
        imagesPerMinute: principal.imagesPerMinute,
      });
      c.get("phases").quota = ms(t1);
      c.set("rate", r);
      if (!r.allowed) throw rateLimited(r, 0);
    }
    await next();
  });
}

function invalid(parameter: string, detail: string): AppError {
  return new AppError("invalid-parameter", 422, detail, { parameter });
}

function keyStoreOf(c: C): KeyStore {
  if (!c.env.DB)
    throw new AppError("keys-unavailable", 503, "Key management needs the DB binding (D1).", {
      retryAfter: 60,
    });
  return new KeyStore(c.env.DB);
}

function keyNotFound(id: string): AppError {
  return new AppError("key-not-found", 404, `No API key has the id ${JSON.stringify(id.slice(0, 40))}.`, {
    parameter: "id",
  });
}

function dayParam(raw: string | undefined, name: string, fallback: string): string {
  if (raw === undefined || raw === "") return fallback;
  if (!/^\d{4}-\d{2}-\d{2}$/.test(raw) || Number.isNaN(Date.parse(`${raw}T00:00:00Z`)))
    throw invalid(
      name,
      `${name} must be a day as YYYY-MM-DD (UTC), got ${JSON.stringify(raw.slice(0, 40))}.`,
    );
  return raw;
}

/** The key and usage routes. */
export function registerAccountsRoutes(app: Hono<JobsAppEnv>): void {
  app.post("/v1/keys", async (c) => {
    const store = keyStoreOf(c);
    let body: Record<string, unknown>;
    try {
      body = (await c.req.json()) as Record<string, unknown>;
    } catch {
      throw new AppError(
        "invalid-json",
        400,
        'The body must be JSON, e.g. {"name":"acme","scopes":["classify"]}.',
      );
    }
    if (typeof body !== "object" || body === null || Array.isArray(body))
      throw new AppError("invalid-json", 400, "The body must be a JSON object.");
    const now = Date.now();
    const name = parseName(body.name);
    const scopes = parseScopes(body.scopes);
    const rpm = parseLimit(body.rpm, "rpm");
    const imagesPerMinute = parseLimit(body.images_per_minute, "images_per_minute");
    const expiresAt = parseExpiry(body.expires ?? body.expires_at, now);
    const k = await newKey();
    const row = await store.create({
      id: k.id,
      hash: k.hash,
      name,
      scopes,
      rpm,
      imagesPerMinute,
      expiresAt,
      now,
    });
    forgetKey(c.env.DB, k.id);
    return c.json({ ...keyView(row, now), key: k.token }, 201, { location: `/v1/keys/${k.id}` });
  });

  app.get("/v1/keys", async (c) => {
    const now = Date.now();
    return c.json({ keys: (await keyStoreOf(c).list()).map((k) => keyView(k, now)) });
  });

  app.delete("/v1/keys/:id", async (c) => {
    const id = c.req.param("id");
    if (!isKeyId(id)) throw keyNotFound(id);
    const row = await keyStoreOf(c).revoke(id, Date.now());
    if (!row) throw keyNotFound(id);
    forgetKey(c.env.DB, id);
    return c.json(keyView(row));
  });

  app.get("/v1/usage", async (c) => {
    if (!c.env.DB)
      throw new AppError("usage-unavailable", 503, "Usage needs the DB binding (D1).", { retryAfter: 60 });
    const now = Date.now();
    const to = dayParam(c.req.query("to"), "to", dayOf(now));
    const from = dayParam(
      c.req.query("from"),
      "from",
      dayOf(Date.parse(`${to}T00:00:00Z`) - 29 * 86_400_000),
    );
    if (from > to) throw invalid("from", `from (${from}) is after to (${to}).`);
    const days = (Date.parse(`${to}T00:00:00Z`) - Date.parse(`${from}T00:00:00Z`)) / 86_400_000 + 1;
    if (days > MAX_USAGE_DAYS)
      throw invalid("from", `At most ${MAX_USAGE_DAYS} days per query, got ${days}.`);
    const principal = c.get("principal");
    const admin = hasScope(principal.scopes, "admin") && principal.kind !== "open";
    const keyParam = c.req.query("key_id");
    if (keyParam !== undefined && !admin)
      throw new AppError("forbidden", 403, "Only an admin key may ask for another key's usage (key_id=).", {
        scope: "admin",
      });
    const rows = await new UsageStore(c.env.DB).query(admin ? (keyParam ?? null) : principal.id, from, to);
    const totals = Object.fromEntries(USAGE_FIELDS.map((f) => [f, rows.reduce((n, r) => n + r[f], 0)]));
    return c.json({ from, to, key_id: admin ? (keyParam ?? null) : principal.id, totals, days: rows });
  });
}
