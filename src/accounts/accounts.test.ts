// Keys, principals, quota windows and usage on Miniflare's real D1 (migrations/ applied). The
// Durable Object runtime itself is exercised over wrangler dev (test/e2e-keys.test.ts); here the
// counter it holds is driven directly.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type TestD1, testD1 } from "../../test/helpers/d1.ts";
import type { AppError } from "../shared/errors.ts";
import { OPEN_PRINCIPAL, resolvePrincipal } from "./auth.ts";
import { parseAccountsConfig } from "./config.ts";
import {
  hashKey,
  hasScope,
  isKeyId,
  keyIdOfToken,
  newKey,
  parseExpiry,
  parseLimit,
  parseName,
  parseScopes,
} from "./keys.ts";
import { limitsOf } from "./limits.ts";
import { charge, rateLimited, rateLimitHeaders, type WindowState } from "./quota.ts";
import { KeyStore, keyView, UsageStore } from "./store.ts";

let d1: TestD1;
let keys: KeyStore;
beforeEach(async () => {
  d1 = await testD1();
  keys = new KeyStore(d1.db);
});
afterEach(() => d1.dispose());

async function issue(
  over: { scopes?: string; expiresAt?: number | null; rpm?: number | null } = {},
  now = 1e12,
) {
  const k = await newKey();
  await keys.create({
    id: k.id,
    hash: k.hash,
    name: "acme",
    scopes: parseScopes(over.scopes ?? "classify,jobs"),
    rpm: over.rpm ?? null,
    imagesPerMinute: null,
    expiresAt: over.expiresAt ?? null,
    now,
  });
  return k;
}

function rejects(p: Promise<unknown>): Promise<AppError> {
  return p.then(
    () => {
      throw new Error("expected a rejection");
    },
    (e: unknown) => e as AppError,
  );
}

describe("key format and validation", () => {
  it("issues bek_ keys whose id is inside and whose hash alone is stored", async () => {
    const k = await newKey();
    expect(k.token).toMatch(/^bek_[0-9a-f]{16}_[0-9A-Za-z]{32}$/);
    expect(keyIdOfToken(k.token)).toBe(k.id);
    expect(isKeyId(k.id)).toBe(true);
    expect(k.hash).toBe(await hashKey(k.token));
    expect(k.hash).not.toContain(k.token.slice(21));
    expect((await newKey()).token).not.toBe(k.token);
    expect(keyIdOfToken(`${k.token}x`)).toBeNull();
    expect(keyIdOfToken("bek_short")).toBeNull();
  });

  it("refuses bad names, scopes, limits and expiries by name", () => {
    const param = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return [(e as AppError).status, (e as AppError).extra.parameter];
      }
      return null;
    };
    expect(param(() => parseName(""))).toEqual([422, "name"]);
    expect(param(() => parseName("a\nb"))).toEqual([422, "name"]);
    expect(parseName("  acme  ")).toBe("acme");
    expect(param(() => parseScopes("classify,root"))).toEqual([422, "scopes"]);
    expect(param(() => parseScopes([]))).toEqual([422, "scopes"]);
    expect(parseScopes("jobs, classify,jobs")).toEqual(["classify", "jobs"]);
    expect(parseScopes(undefined)).toEqual(["classify", "jobs", "images"]);
    expect(param(() => parseLimit("0", "rpm"))).toEqual([422, "rpm"]);
    expect(param(() => parseLimit("1.5", "rpm"))).toEqual([422, "rpm"]);
    expect(param(() => parseLimit(-3, "rpm"))).toEqual([422, "rpm"]);
    expect(parseLimit("60", "rpm")).toBe(60);
    expect(parseLimit(undefined, "rpm")).toBeNull();
    expect(parseExpiry("30d", 1000)).toBe(1000 + 30 * 86_400_000);
    expect(parseExpiry("90", 0)).toBe(90_000);
    expect(param(() => parseExpiry("soon", 0))).toEqual([422, "expires"]);
    expect(param(() => parseExpiry("2000-01-01T00:00:00Z", Date.now()))).toEqual([422, "expires"]);
    expect(param(() => parseExpiry("99999d", 0))).toEqual([422, "expires"]);
    expect(hasScope(["admin"], "jobs")).toBe(true);
    expect(hasScope(["classify"], "jobs")).toBe(false);
  });
});

describe("KeyStore", () => {
  it("creates, lists (never the hash), revokes once", async () => {
    const k = await issue({ scopes: "classify" }, 1000);
    const [row] = await keys.list();
    expect(keyView(row, 2000)).toEqual({
      id: k.id,
      name: "acme",
      scopes: ["classify"],
      rpm: null,
      images_per_minute: null,
      created_at: new Date(1000).toISOString(),
      expires_at: null,
      revoked_at: null,
      last_used_at: null,
      status: "active",
    });
    expect(JSON.stringify(keyView(row))).not.toContain(row.hash);
    expect((await keys.revoke(k.id, 5000))?.revoked_at).toBe(5000);
    expect((await keys.revoke(k.id, 9000))?.revoked_at).toBe(5000);
    expect(await keys.revoke("key_0000000000000000", 1)).toBeNull();
  });
});

describe("resolvePrincipal", () => {
  const config = parseAccountsConfig({ KEY_CACHE_TTL_S: "30" });
  const auth = (authorization: string | null, now: number, apiKey: string | null = null) =>
    resolvePrincipal({ authorization, apiKey, db: d1.db, config, now });

  it("is open with no key anywhere, and closed as soon as a key exists", async () => {
    expect(await auth(null, 1e12)).toBe(OPEN_PRINCIPAL);
    const fresh = await testD1();
    try {
      const store = new KeyStore(fresh.db);
      const k = await newKey();
      await store.create({
        ...k,
        name: "a",
        scopes: ["classify"],
        rpm: null,
        imagesPerMinute: null,
        expiresAt: null,
        now: 1,
      });
      const e = await rejects(
        resolvePrincipal({ authorization: null, apiKey: null, db: fresh.db, config, now: 2 }),
      );
      expect([e.status, e.code]).toEqual([401, "unauthorized"]);
    } finally {
      await fresh.dispose();
    }
  });

  it("takes the API_KEY secret as a static key with every scope, and issued keys with theirs", async () => {
    const k = await issue({ scopes: "jobs", rpm: 5 });
    const s = await auth("Bearer s3cret", 1e12, "s3cret other");
    expect(s).toMatchObject({ kind: "static", name: "API_KEY", rpm: 600 });
    expect(s.id).toMatch(/^key:[0-9a-f]{16}$/);
    const p = await auth(`Bearer ${k.token}`, 1e12, "s3cret");
    expect(p).toMatchObject({ id: k.id, kind: "issued", scopes: ["jobs"], rpm: 5, imagesPerMinute: 600 });
  });

  it("names what is wrong: missing, malformed, unknown, revoked (within the cache TTL), expired", async () => {
    const k = await issue({ expiresAt: 1e12 + 60_000 });
    const detail = async (h: string | null, now = 1e12) => (await rejects(auth(h, now))).detail;
    expect(await detail(null)).toMatch(/requires an API key/);
    expect(await detail(`Bearer ${k.token.slice(0, 20)}`)).toMatch(/malformed/);
    expect(await detail(`Bearer ${k.token.slice(0, -1)}Z`)).toMatch(/not valid/);
    expect(await detail(`Basic ${k.token}`)).toMatch(/must be `Bearer <key>`/);
    // Works, is cached; revoked elsewhere (the CLI), it keeps working at most KEY_CACHE_TTL_S.
    expect((await auth(`Bearer ${k.token}`, 1e12)).id).toBe(k.id);
    await keys.revoke(k.id, 1e12 + 1000);
    expect((await auth(`Bearer ${k.token}`, 1e12 + 29_000)).id).toBe(k.id);
    expect(await detail(`Bearer ${k.token}`, 1e12 + 31_000)).toMatch(/was revoked/);
    // Revoking the only key never reopens the service.
    expect(await detail(null, 1e12 + 31_000)).toMatch(/requires an API key/);
    const e = await issue({ expiresAt: 1e12 + 10 });
    expect(await detail(`Bearer ${e.token}`, 1e12 + 20)).toMatch(/expired at/);
    const secret = k.token.slice(21);
    for (const h of [null, `Bearer ${k.token}`]) {
      const msg = await rejects(auth(h, 1e12 + 40_000)).then((x) => x.detail);
      expect(msg).not.toContain(secret);
    }
  });

  it("gives limits outside a request (jobs): issued key, static key defaults, none when open", async () => {
    const k = await issue({ rpm: 7 });
    expect(await limitsOf(d1.db, k.id, {})).toEqual({ rpm: 7, imagesPerMinute: 600 });
    expect(await limitsOf(d1.db, "key:abc", { DEFAULT_IMAGES_PER_MINUTE: "9" })).toEqual({
      rpm: 600,
      imagesPerMinute: 9,
    });
    expect(await limitsOf(d1.db, "open", {})).toBeNull();
  });
});

describe("quota windows", () => {
  it("counts exactly per UTC minute, all or nothing, with remaining and reset", () => {
    const st: WindowState = { start: 0, requests: 0, images: 0 };
    const t = 1_700_000_080_000; // 40 s into a UTC minute
    const req = { requests: 1, images: 0, rpm: 3, imagesPerMinute: 4 };
    expect(charge(st, req, t).policies[0]).toEqual({ name: "requests", limit: 3, remaining: 2, resetS: 20 });
    charge(st, req, t + 1000);
    const third = charge(st, req, t + 2000);
    expect(third.allowed).toBe(true);
    const fourth = charge(st, req, t + 2500);
    expect(fourth).toMatchObject({ allowed: false, limitedBy: "requests", retryAfterS: 18 });
    expect(rateLimitHeaders(fourth)).toEqual({
      "ratelimit-policy": '"requests";q=3;w=60, "images";q=4;w=60',
      ratelimit: '"requests";r=0;t=18, "images";r=4;t=18',
    });
    // Images: a refused batch counts nothing; a smaller one still fits.
    const img = { requests: 0, images: 3, rpm: 3, imagesPerMinute: 4 };
    expect(charge(st, img, t + 3000).allowed).toBe(true);
    expect(charge(st, img, t + 3000)).toMatchObject({ allowed: false, limitedBy: "images" });
    expect(charge(st, { ...img, images: 1 }, t + 3000).allowed).toBe(true);
    expect(rateLimited(charge(st, { ...img, images: 9 }, t + 3000), 9).detail).toMatch(
      /more than this key's whole limit/,
    );
    // The next minute starts from zero.
    expect(charge(st, req, t + 20_000).policies[0]).toMatchObject({ remaining: 2, resetS: 60 });
  });
});

describe("UsageStore", () => {
  it("adds per key and UTC day and answers a range", async () => {
    const u = new UsageStore(d1.db);
    const day1 = Date.parse("2026-12-01T23:59:00Z");
    await u.add("key_a", day1, { requests: 1, images: 2, model_ms: 10.4 });
    await u.add("key_a", day1 + 30_000, { requests: 1, images: 1 });
    await u.add("key_a", day1 + 120_000, { jobs: 1 });
    await u.add("key_b", day1, { requests: 5 });
    const a = await u.query("key_a", "2026-12-01", "2026-12-02");
    expect(a).toEqual([
      {
        key_id: "key_a",
        day: "2026-12-01",
        requests: 2,
        images: 3,
        model_ms: 10,
        jobs: 0,
        deliveries: 0,
        images_tagged: 0,
      },
      {
        key_id: "key_a",
        day: "2026-12-02",
        requests: 0,
        images: 0,
        model_ms: 0,
        jobs: 1,
        deliveries: 0,
        images_tagged: 0,
      },
    ]);
    expect((await u.query(null, "2026-12-01", "2026-12-01")).map((r) => r.key_id)).toEqual([
      "key_a",
      "key_b",
    ]);
    expect(await u.query("key_a", "2026-12-03", "2026-12-09")).toEqual([]);
  });
});
