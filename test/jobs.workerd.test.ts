/**
 * Webhook jobs inside workerd: the gateway and the jobs Worker run as auxiliary Workers (the
 * wrangler bundles) with real Miniflare Queues and D1 (migrations/ applied here through the test
 * Worker's binding of the same database) and the tiny model's stage Workers. A polled job's results
 * equal what onnxruntime-web in Node gives; the same job message sent again changes nothing.
 */
import { applyD1Migrations, env, SELF } from "cloudflare:test";
import { beforeAll, describe, expect, inject, it } from "vitest";
import { fromBase64 } from "./workerd/fixtures.ts";
import { seedModel } from "./workerd/seed.ts";

interface TestEnv {
  MODELS: R2Bucket;
  DB: D1Database;
  JOBS_QUEUE: Queue<{ jobId: string }>;
  TEST_MIGRATIONS: Parameters<typeof applyD1Migrations>[1];
}

const fx = inject("workerdFixtures");
const tenv = env as unknown as TestEnv;
const png = fromBase64(fx.images.gradient);
const BASE = "https://beit-edge.test";

interface Job {
  id: string;
  status: string;
  attempts: number;
  finished_at: string | null;
  results: unknown;
  model: { version?: string } | null;
}

async function job(id: string): Promise<Job> {
  return (await (await SELF.fetch(`${BASE}/v1/jobs/${id}`)).json()) as Job;
}

async function finished(id: string, timeoutMs = 60_000): Promise<Job> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const j = await job(id);
    if (j.status === "succeeded" || j.status === "failed") return j;
    if (Date.now() > end) throw new Error(`job ${id} still ${j.status}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

beforeAll(async () => {
  await applyD1Migrations(tenv.DB, tenv.TEST_MIGRATIONS);
  await seedModel(tenv.MODELS, fx.modelA);
});

describe("webhook jobs (workerd, Miniflare Queues + D1)", () => {
  it("runs a polled job through the jobs queue to the classification onnxruntime-web gives", async () => {
    const res = await SELF.fetch(`${BASE}/v1/jobs`, {
      method: "POST",
      body: png,
      headers: { "content-type": "image/png" },
    });
    expect(res.status).toBe(202);
    const { id } = (await res.json()) as Job;
    const done = await finished(id);
    expect(done.status).toBe("succeeded");
    expect(done.results).toEqual(fx.expected.modelA.gradient.top);
    expect(done.model?.version).toBe(fx.modelA.version);
  });

  it("gives one result when the same job message is delivered again", async () => {
    const res = await SELF.fetch(`${BASE}/v1/jobs`, {
      method: "POST",
      body: png,
      headers: { "content-type": "image/png" },
    });
    const { id } = (await res.json()) as Job;
    const first = await finished(id);
    await tenv.JOBS_QUEUE.send({ jobId: id });
    await tenv.JOBS_QUEUE.send({ jobId: id });
    await new Promise((r) => setTimeout(r, 2500));
    const again = await job(id);
    expect(again).toMatchObject({ status: "succeeded", attempts: 1, finished_at: first.finished_at });
    const rows = await tenv.DB.prepare("SELECT COUNT(*) AS n FROM jobs WHERE id = ?")
      .bind(id)
      .first<{ n: number }>();
    expect(rows?.n).toBe(1);
  });

  it("answers bad job inputs with problem+json", async () => {
    const cases: [RequestInit & { path?: string }, number, string][] = [
      [
        {
          body: png,
          headers: { "content-type": "image/png" },
          path: "/v1/jobs?callback_url=http://10.0.0.1/x",
        },
        422,
        "invalid-callback-url",
      ],
      [
        {
          body: JSON.stringify({ image: btoa("x"), metadata: "not an object" }),
          headers: { "content-type": "application/json" },
        },
        422,
        "invalid-metadata",
      ],
      [{ body: new Uint8Array(0), headers: { "content-type": "image/png" } }, 400, "empty-body"],
    ];
    for (const [init, status, code] of cases) {
      const res = await SELF.fetch(`${BASE}${init.path ?? "/v1/jobs"}`, { method: "POST", ...init });
      expect(res.status, code).toBe(status);
      expect(res.headers.get("content-type")).toBe("application/problem+json");
      expect(await res.json()).toMatchObject({ code, status });
    }
  });
});
