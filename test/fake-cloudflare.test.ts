/**
 * The Cloudflare API stand-in (test/helpers/fake-cloudflare.ts) pages its lists as the API does,
 * checked through the real wrangler: regression test for the deploy test's hang, where the
 * stand-in ignored `page` and `wrangler kv namespace list` (the Cloudflare SDK's iterator, which
 * asks for the next page until one comes back empty) fetched page 2, 3, ... forever once one
 * namespace existed. Every call is bounded (scripts/lib/run-wrangler.ts).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runWrangler } from "../scripts/lib/run-wrangler.ts";
import { type FakeCloudflare, startFakeCloudflare } from "./helpers/fake-cloudflare.ts";

const root = resolve(import.meta.dirname, "..");
let fake: FakeCloudflare;
let home: string;

beforeAll(async () => {
  fake = await startFakeCloudflare();
  home = await mkdtemp(join(tmpdir(), "beit-edge-fake-cf-"));
});

afterAll(async () => {
  await fake?.close();
  if (home) await rm(home, { recursive: true, force: true });
});

const wrangler = async (args: string[]) =>
  (
    await runWrangler(args, {
      root,
      timeoutMs: 60_000,
      env: {
        HOME: home,
        CLOUDFLARE_API_BASE_URL: fake.baseUrl,
        CLOUDFLARE_API_TOKEN: "test-token",
        CLOUDFLARE_ACCOUNT_ID: fake.account,
        CI: "1",
      },
    })
  ).stdout;

describe("Cloudflare API stand-in, through wrangler", () => {
  it("lists KV namespaces to the end and stops (25 namespaces, more than one page)", async () => {
    for (let i = 0; i < 25; i++) fake.kv.set(`ns-${String(i).padStart(2, "0")}`, `id${i}`);
    const list = JSON.parse(await wrangler(["kv", "namespace", "list"])) as { title: string }[];
    expect(list.map((n) => n.title).sort()).toEqual([...fake.kv.keys()].sort());
    const pages = fake.calls.filter((c) => c.method === "GET" && c.path.endsWith("/storage/kv/namespaces"));
    expect(pages.length).toBeLessThanOrEqual(3);
  }, 90_000);

  it("lists D1 databases when their count is a multiple of wrangler's page size", async () => {
    // `wrangler d1 list` asks 10 per page and stops on a short page: exactly 10 needs page 2 empty.
    for (let i = 0; i < 10; i++) fake.databases.set(`db-${i}`, { uuid: `uuid-${i}`, sql: [] });
    const list = JSON.parse(await wrangler(["d1", "list", "--json"])) as { name: string }[];
    expect(list.map((d) => d.name).sort()).toEqual([...fake.databases.keys()].sort());
  }, 90_000);
});
