/**
 * Keys, quotas, usage and revocation end to end over the real `wrangler dev` (gateway + stage
 * Workers + the KeyQuota Durable Object, local D1), with keys made by the real CLI
 * (`npm run keys`, scripts/keys.ts) against the same local state, as a user would. Bounded by
 * timeouts; the server is always stopped.
 */
import { execFile } from "node:child_process";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { testPng } from "./helpers/png.ts";
import { startTinyService, type TinyService } from "./helpers/tiny-service.ts";

const root = resolve(import.meta.dirname, "..");
let svc: TinyService | null = null;
const png = testPng(32, 32, 3);

interface Made {
  id: string;
  key: string;
  scopes: string[];
}

async function keysCli(...args: string[]): Promise<unknown> {
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [
      join(root, "node_modules/tsx/dist/cli.mjs"),
      join(root, "scripts/keys.ts"),
      ...args,
      "--json",
      "--persist",
      join(svc!.dir, "state"),
    ],
    { cwd: root, timeout: 120_000 },
  );
  // The CLI takes seconds, in which the server may close a kept-alive connection; a request sent
  // on it then fails at once. This GET takes any such socket (failing is fine), so the test's next
  // POST starts on a live one.
  for (let i = 0; i < 2; i++)
    await fetch(`${svc!.url}/healthz`).then(
      (r) => r.arrayBuffer(),
      () => null,
    );
  return JSON.parse(stdout);
}

const call = (path: string, key: string | null, init: RequestInit = {}) =>
  fetch(`${svc!.url}${path}`, {
    ...init,
    headers: { ...(key && { authorization: `Bearer ${key}` }), ...(init.headers as Record<string, string>) },
    signal: AbortSignal.timeout(20_000),
  });
const classify = (key: string) =>
  call("/v1/classify", key, { method: "POST", body: png, headers: { "content-type": "image/png" } });

beforeAll(async () => {
  svc = await startTinyService({ seed: 13 });
}, 240_000);

afterAll(async () => {
  if (process.env.E2E_KEYS_DEBUG) console.log(svc?.service.output().slice(-6000));
  await svc?.stop();
}, 30_000);

describe("keys over wrangler dev", () => {
  let user: Made;
  let admin: Made;

  it("creates keys with the CLI; the service turns auth on and classifies with them", async () => {
    user = (await keysCli("create", "--name", "e2e-user", "--scopes", "classify", "--rpm", "3")) as Made;
    admin = (await keysCli("create", "--name", "e2e-admin", "--scopes", "admin")) as Made;
    expect(user.key).toMatch(/^bek_/);
    expect(user.scopes).toEqual(["classify"]);
    // The service was open before: an isolate may take KEY_CACHE_TTL_S to notice; a key works at once.
    const res = await classify(user.key);
    expect(res.status).toBe(200);
    expect(res.headers.get("x-request-id")).toMatch(/^req_/);
    expect(res.headers.get("ratelimit-policy")).toBe('"requests";q=3;w=60, "images";q=600;w=60');
    await res.arrayBuffer();
  }, 300_000);

  it("answers 429 past the key's rpm, with Retry-After and the RateLimit fields", async () => {
    let refused: Response | null = null;
    // rpm 3 in fixed UTC minutes: at most 3 + 3 passes if the minute turns during the loop.
    for (let i = 0; i < 8 && !refused; i++) {
      const r = await classify(user.key);
      if (r.status === 429) refused = r;
      else {
        expect(r.status).toBe(200);
        await r.arrayBuffer();
      }
    }
    expect(refused).not.toBeNull();
    const body = (await refused!.json()) as { code: string; limit: string };
    expect(body).toMatchObject({ code: "rate-limited", limit: "requests" });
    expect(refused!.headers.get("content-type")).toBe("application/problem+json");
    expect(Number(refused!.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(refused!.headers.get("ratelimit-policy")).toContain('"requests";q=3;w=60');
    expect(refused!.headers.get("ratelimit")).toMatch(/^"requests";r=0;t=\d+/);
  }, 120_000);

  it("shows the requests in /v1/usage, refuses /v1/jobs without the jobs scope", async () => {
    const jobs = await call("/v1/jobs", user.key);
    expect(jobs.status).toBe(403);
    expect(((await jobs.json()) as { code: string }).code).toBe("forbidden");
    let requests = 0;
    for (let i = 0; i < 20 && requests < 4; i++) {
      const u = await call(`/v1/usage?key_id=${user.id}`, admin.key);
      expect(u.status).toBe(200);
      const body = (await u.json()) as { totals: { requests: number; images: number } };
      requests = body.totals.requests;
      if (requests < 4) await new Promise((r) => setTimeout(r, 250));
    }
    expect(requests).toBeGreaterThanOrEqual(4);
  }, 60_000);

  it("refuses an expired key and, within 60 s, a key revoked with the CLI", async () => {
    const short = (await keysCli("create", "--name", "e2e-short", "--expires", "1s")) as Made;
    await new Promise((r) => setTimeout(r, 1500));
    const expired = await call("/v1/model", short.key);
    expect(expired.status).toBe(401);
    expect(((await expired.json()) as { detail: string }).detail).toMatch(/expired/);

    const revoked = (await keysCli("revoke", admin.id)) as { status: string };
    expect(revoked.status).toBe("revoked");
    const t0 = Date.now();
    let status = 0;
    while (Date.now() - t0 < 60_000) {
      const r = await call("/v1/model", admin.key);
      status = r.status;
      await r.arrayBuffer();
      if (status === 401) break;
      await new Promise((res) => setTimeout(res, 1000));
    }
    expect(status).toBe(401);
    expect(Date.now() - t0).toBeLessThan(60_000);
    // A malformed key is named as such.
    const bad = await call("/v1/model", `${user.key.slice(0, 12)}`);
    expect(bad.status).toBe(401);
    expect(((await bad.json()) as { detail: string }).detail).toMatch(/malformed/);
  }, 120_000);
});
