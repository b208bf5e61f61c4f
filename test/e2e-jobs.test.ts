/**
 * Webhook jobs end to end over the real `wrangler dev` (gateway, jobs Worker with its queues, D1
 * and cron, every stage Worker of the tiny test model; migrations applied by serveLocal) with real
 * HTTP receivers on loopback (scripts/lib/webhook-receiver.ts). The retry schedule is shortened through
 * configuration (WEBHOOK_RETRY_SCHEDULE), not by another code path. Two API keys are configured,
 * so scoping is checked too. Everything is bounded by timeouts and the servers are always stopped.
 * The first test classifies synchronously (POST /v1/classify) in the same wrangler dev before the
 * jobs round trips: with the webhook retries after it, it is the regression test of the local stall
 * (scripts/lib/workerd-wrapper.ts LOCAL_V8_FLAGS): without --single-threaded-gc (scripts/lib/workerd-wrapper.ts) the
 * * whole local workerd livelocked in 5 of 14 runs on our 2-core machine, right after the first
 * delayed delivery retry. The last test restarts wrangler dev to lose a queued message and checks
 * that the sweeper (the jobs Worker's cron, fired as npm start fires it) completes the delivery.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningReceiver, startWebhookReceiver } from "../scripts/lib/webhook-receiver.ts";
import { PROBLEM_BASE } from "../src/edge/problem.ts";
import { initNodeCodecs } from "../src/image/codecs-node.ts";
import { imageToPixelValues } from "../src/image/index.ts";
import { createStageSession, initOrt } from "../src/inference/ort.ts";
import { topK } from "../src/inference/pipeline.ts";
import { generateWebhookSecret } from "../src/jobs/webhook-signature.ts";
import type { Manifest } from "../src/shared/manifest.ts";
import { testPng } from "./helpers/png.ts";
import { startTinyService, type TinyService } from "./helpers/tiny-service.ts";

const secret = generateWebhookSecret();
const KEY_A = "e2e-key-a";
const KEY_B = "e2e-key-b";
let svc: TinyService | null = null;
let receiver: RunningReceiver;
const png = testPng(64, 48, 5);
let manifest: Manifest;

/** What onnxruntime-web in Node gives for `png` (the same tiny model, the same image path). */
async function expectedTop(k: number): Promise<{ label: string; score: number }[]> {
  const shards = svc!.shards;
  await initNodeCodecs();
  await initOrt();
  let x = (await imageToPixelValues(png, manifest.preprocess)).pixels;
  for (const s of manifest.stages) {
    const session = await createStageSession(
      new Uint8Array(await readFile(join(shards, s.graph.file))),
      s.weights && s.externalDataPath
        ? { path: s.externalDataPath, data: new Uint8Array(await readFile(join(shards, s.weights.file))) }
        : null,
      // The level the stage Workers open it with (the scores are compared exactly).
      { graphOptimizationLevel: manifest.graphOptimization },
    );
    x = await session.run(x, s.inputs[0], s.outputs[0]);
    await session.release();
  }
  const labels = JSON.parse(await readFile(join(shards, manifest.labels.file), "utf8")) as string[];
  return topK(x, labels, k).map((p) => ({ label: p.label, score: p.score }));
}

interface Job {
  id: string;
  status: string;
  results: unknown;
  error: { code?: string; status?: number } | null;
  attempts: number;
  metadata: unknown;
  model: { version?: string; synthetic?: boolean } | null;
  delivery: {
    state: string;
    attempts: number;
    webhook_id: string;
    last_status: number | null;
    next_attempt_at: string | null;
  } | null;
}

function api(path: string, init: RequestInit & { key?: string | null } = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  const key = init.key === undefined ? KEY_A : init.key;
  if (key) headers.set("authorization", `Bearer ${key}`);
  return fetch(`${svc!.url}${path}`, { ...init, headers, signal: AbortSignal.timeout(30_000) });
}

async function submit(callback: string | null, extra: Record<string, string> = {}, body: Uint8Array = png) {
  const form = new FormData();
  form.append("file", new Blob([body], { type: "image/png" }), "a.png");
  if (callback) form.append("callback_url", callback);
  for (const [k, v] of Object.entries(extra)) form.append(k, v);
  return api("/v1/jobs?top_k=3", { method: "POST", body: form });
}

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function job(id: string): Promise<Job> {
  return (await (await api(`/v1/jobs/${id}`)).json()) as Job;
}

function final(id: string, deliveryState?: string): Promise<Job> {
  return until(`job ${id} to finish`, async () => {
    const j = await job(id);
    const done = j.status === "succeeded" || j.status === "failed";
    return done && (!deliveryState || j.delivery?.state === deliveryState) ? j : undefined;
  });
}

beforeAll(async () => {
  receiver = await startWebhookReceiver({ secrets: [secret] });
  svc = await startTinyService({
    seed: 12,
    vars: { API_KEY: `${KEY_A} ${KEY_B}`, ALLOW_LOOPBACK_FETCH: "true" },
    varsByKind: {
      jobs: {
        WEBHOOK_SECRET: secret,
        WEBHOOK_RETRY_SCHEDULE: "1s,1s,1s",
        ALLOW_LOOPBACK_FETCH: "true",
        WEBHOOK_TIMEOUT_MS: "3000",
        // The sweeper re-enqueues a delivery due for more than 1 s (it only runs when a test fires it).
        DELIVERY_STUCK_AFTER_S: "1",
      },
    },
  });
  manifest = svc.manifest;
}, 300_000);

afterAll(async () => {
  if (process.env.E2E_JOBS_LOG)
    await (await import("node:fs/promises")).writeFile(process.env.E2E_JOBS_LOG, svc?.service.output() ?? "");
  await svc?.stop();
  await receiver?.stop();
}, 30_000);

describe("webhook jobs over wrangler dev", () => {
  it("answers POST /v1/classify, then runs a polled job to the same labels", async () => {
    const sync = await api("/v1/classify?top_k=3", {
      method: "POST",
      body: png,
      headers: { "content-type": "image/png" },
    });
    expect(sync.status).toBe(200);
    const labels = (await sync.json()) as unknown;
    const expected = await expectedTop(3);
    expect(labels).toEqual(expected);
    const { id } = (await (await submit(null)).json()) as Job;
    const done = await final(id);
    expect(done.status).toBe("succeeded");
    expect(done.results).toEqual(expected);
  }, 90_000);

  it("runs a polled job (no callback) to what onnxruntime-web in Node computes for the image", async () => {
    const res = await submit(null);
    expect(res.status).toBe(202);
    const created = (await res.json()) as Job;
    expect(res.headers.get("location")).toBe(`/v1/jobs/${created.id}`);
    expect(created).toMatchObject({ status: "queued", delivery: null });
    const done = await final(created.id);
    expect(done.status).toBe("succeeded");
    expect(done.results).toEqual(await expectedTop(3));
    expect(done.model).toMatchObject({ synthetic: true, version: manifest.version });
  });

  it("delivers a signed event; a receiver failing twice then succeeding gets one success under one webhook-id", async () => {
    receiver.setFailFirst(2);
    const res = await submit(receiver.url, { metadata: '{"order":"A-17"}' });
    const { id } = (await res.json()) as Job;
    const done = await final(id, "delivered");
    receiver.setFailFirst(0);
    const mine = receiver.deliveries.filter((d) => d.event?.data?.id === id);
    expect(mine.map((d) => d.answered)).toEqual([503, 503, 204]);
    expect(new Set(mine.map((d) => d.webhookId)).size).toBe(1);
    expect(mine.every((d) => d.verified)).toBe(true);
    expect(new Set(mine.map((d) => d.body)).size).toBe(1);
    expect(mine[2].event).toMatchObject({
      type: "classification.succeeded",
      data: { id, status: "succeeded", metadata: { order: "A-17" } },
    });
    expect(mine[2].event?.data?.results).toEqual(done.results);
    expect(done.delivery).toMatchObject({
      state: "delivered",
      attempts: 3,
      last_status: 204,
      webhook_id: mine[0].webhookId,
    });
    expect(mine[0].webhookId).toMatch(/^evt_/);
  }, 90_000);

  it("keeps the result when the receiver is down for every attempt, and redeliver then works", async () => {
    const down = await startWebhookReceiver({ secrets: [secret] });
    down.setDown(true);
    try {
      const { id } = (await (await submit(down.url)).json()) as Job;
      const failed = await final(id, "failed");
      expect(failed.status).toBe("succeeded");
      expect(failed.results).toBeTruthy();
      expect(failed.delivery).toMatchObject({ state: "failed", attempts: 4, last_status: null });
      down.setDown(false);
      const r = await api(`/v1/jobs/${id}/redeliver`, { method: "POST" });
      expect(r.status).toBe(202);
      const again = await final(id, "delivered");
      expect(again.delivery?.webhook_id).toBe(failed.delivery?.webhook_id);
      expect(down.deliveries).toHaveLength(1);
      expect(down.deliveries[0]).toMatchObject({
        verified: true,
        webhookId: failed.delivery?.webhook_id,
        answered: 204,
      });
    } finally {
      await down.stop();
    }
  }, 90_000);

  it("fails an undecodable image at once with problem details and delivers classification.failed", async () => {
    const bad = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3]);
    const { id } = (await (await submit(receiver.url, {}, bad)).json()) as Job;
    const failed = await final(id, "delivered");
    expect(failed.status).toBe("failed");
    expect(failed.attempts).toBe(1);
    expect(failed.error).toMatchObject({
      type: `${PROBLEM_BASE}undecodable-image`,
      status: 400,
      code: "undecodable-image",
    });
    const event = receiver.deliveries.find((d) => d.event?.data?.id === id)?.event;
    expect(event).toMatchObject({
      type: "classification.failed",
      data: { error: { code: "undecodable-image" } },
    });
  }, 90_000);

  it("answers the same Idempotency-Key and body with the same job, another body with 422", async () => {
    const key = `idem-${Date.now()}`;
    const first = await submit(null, {}, png);
    expect(first.status).toBe(202);
    const a = await api("/v1/jobs", {
      method: "POST",
      body: png,
      headers: { "content-type": "image/png", "idempotency-key": key },
    });
    const b = await api("/v1/jobs", {
      method: "POST",
      body: png,
      headers: { "content-type": "image/png", "idempotency-key": key },
    });
    expect(a.status).toBe(202);
    expect(b.status).toBe(202);
    expect(b.headers.get("idempotent-replayed")).toBe("true");
    expect(((await b.json()) as Job).id).toBe(((await a.json()) as Job).id);
    const other = await api("/v1/jobs", {
      method: "POST",
      body: testPng(10, 10, 1),
      headers: { "content-type": "image/png", "idempotency-key": key },
    });
    expect(other.status).toBe(422);
    expect(await other.json()).toMatchObject({ code: "idempotency-key-reused" });
    // Another caller may use the same key for its own job.
    const c = await api("/v1/jobs", {
      method: "POST",
      body: png,
      headers: { "content-type": "image/png", "idempotency-key": key },
      key: KEY_B,
    });
    expect(c.status).toBe(202);
    expect(c.headers.get("idempotent-replayed")).toBeNull();
  });

  it("scopes jobs to the API key that created them", async () => {
    const { id } = (await (await submit(null)).json()) as Job;
    expect((await api(`/v1/jobs/${id}`)).status).toBe(200);
    const other = await api(`/v1/jobs/${id}`, { key: KEY_B });
    expect(other.status).toBe(404);
    expect(other.headers.get("content-type")).toBe("application/problem+json");
    expect((await api(`/v1/jobs/${id}/redeliver`, { method: "POST", key: KEY_B })).status).toBe(404);
    expect((await api(`/v1/jobs/${id}`, { key: null })).status).toBe(401);
    const listB = (await (await api("/v1/jobs?limit=100", { key: KEY_B })).json()) as { jobs: Job[] };
    expect(listB.jobs.some((j) => j.id === id)).toBe(false);
    const listA = (await (await api("/v1/jobs?limit=100")).json()) as { jobs: Job[] };
    expect(listA.jobs.some((j) => j.id === id)).toBe(true);
  });

  it("refuses bad callback URLs, oversized metadata and bad list parameters with problem+json", async () => {
    const cases: [() => Promise<Response>, number, string][] = [
      [() => submit("http://hooks.example.com/in"), 422, "invalid-callback-url"],
      [() => submit("https://10.0.0.7/in"), 422, "invalid-callback-url"],
      [() => submit("https://169.254.169.254/latest"), 422, "invalid-callback-url"],
      [() => submit("https://hooks.example.com:8443/in"), 422, "invalid-callback-url"],
      [
        () => submit(null, { metadata: JSON.stringify({ blob: "x".repeat(5000) }) }),
        422,
        "metadata-too-large",
      ],
      [() => submit(null, { metadata: "[1,2]" }), 422, "invalid-metadata"],
      [
        () =>
          api("/v1/jobs?top_k=101", { method: "POST", body: png, headers: { "content-type": "image/png" } }),
        422,
        "invalid-parameter",
      ],
      [() => api("/v1/jobs", { method: "POST", body: new Uint8Array(0) }), 400, "empty-body"],
      [() => api("/v1/jobs?status=done"), 422, "invalid-parameter"],
      [() => api("/v1/jobs?limit=0"), 422, "invalid-parameter"],
      [() => api("/v1/jobs/job_nope"), 404, "not-found"],
    ];
    for (const [p, status, code] of cases) {
      const res = await p();
      expect(res.status, code).toBe(status);
      expect(res.headers.get("content-type")).toBe("application/problem+json");
      expect(await res.json()).toMatchObject({ status, code });
    }
  });

  // Last: it restarts wrangler dev.
  it("completes a delivery whose queued message a dev-server restart lost, through the sweeper cron", async () => {
    // First attempt: 503 with Retry-After 6, so the retry waits in the local queue broker's memory.
    const slow = await startWebhookReceiver({ secrets: [secret], failFirst: 1, retryAfterS: 6 });
    try {
      const { id } = (await (await submit(slow.url)).json()) as Job;
      await until("the first delivery attempt", async () => (slow.deliveries.length > 0 ? true : undefined));
      const pending = await until(`job ${id} to record its first attempt`, async () => {
        const j = await job(id);
        return j.delivery?.attempts === 1 ? j : undefined;
      });
      expect(pending.delivery).toMatchObject({ state: "pending", last_status: 503 });
      // The dev server restarts: D1 keeps the pending delivery, the delayed queue message is gone.
      await svc!.restart();
      const due = Date.parse(String(pending.delivery?.next_attempt_at));
      await new Promise((r) => setTimeout(r, Math.max(0, due - Date.now()) + 3_000));
      expect(slow.deliveries).toHaveLength(1); // lost: nothing retried it
      expect((await job(id)).delivery?.state).toBe("pending");
      // One sweeper tick (the jobs Worker's scheduled(), as npm start fires it each minute).
      await svc!.service.scheduled("jobs");
      const done = await final(id, "delivered");
      expect(slow.deliveries.map((d) => d.answered)).toEqual([503, 204]);
      expect(new Set(slow.deliveries.map((d) => d.webhookId)).size).toBe(1);
      expect(slow.deliveries.every((d) => d.verified)).toBe(true);
      expect(done.delivery).toMatchObject({ state: "delivered", attempts: 2, last_status: 204 });
    } finally {
      await slow.stop();
    }
  }, 240_000);
});
