// The consumers' logic driven directly: real D1 and R2 (Miniflare), a real HTTP receiver on
// loopback, and a stand-in for the classification core (the real core runs in the workerd and
// wrangler dev tests). Queue sends are collected and replayed by hand, moving a fake clock by each
// message's delay.
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Webhook } from "standardwebhooks";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { type TestD1, testD1 } from "../../test/helpers/d1.ts";
import { AppError } from "../shared/errors.ts";
import { jobsConfigFrom } from "./config.ts";
import {
  type ConsumerDeps,
  type DeliveryMessage,
  type JobClassifier,
  type JobMessage,
  runDelivery,
  runJob,
  sweep,
} from "./consumers.ts";
import { JobStore, uploadKey } from "./repository.ts";
import { generateWebhookSecret } from "./webhook-signature.ts";

interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
}

/** A receiver answering with the next scripted response (default 204), recording every request. */
class Receiver {
  server!: Server;
  url = "";
  received: Received[] = [];
  script: { status: number; headers?: Record<string, string>; hang?: boolean }[] = [];
  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      let body = "";
      req.on("data", (c) => {
        body += c;
      });
      req.on("end", () => {
        this.received.push({ path: req.url ?? "", headers: req.headers, body });
        const next = this.script.shift() ?? { status: 204 };
        if (next.hang) return;
        res.writeHead(next.status, next.headers).end();
      });
    });
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hook`;
  }
  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }
}

const secret = generateWebhookSecret();
const receiver = new Receiver();
let d1: TestD1;
let store: JobStore;
let uploads: R2Bucket;
let clock: number;
let jobQueue: { msg: JobMessage; delay?: number }[];
let deliveryQueue: { msg: DeliveryMessage; delay?: number }[];
let calls: number;
let behaviour: (n: number) => void;

const classifier: JobClassifier = {
  async classify(images, opts) {
    calls++;
    behaviour(calls);
    return {
      predictions: images.map((b) => [{ label: `bytes-${b.byteLength}`, score: 1 / opts.topK }]),
      images: images.map(() => ({ width: 1, height: 1, format: "png" })),
      model: { id: "test/model", version: "v1", synthetic: true, precision: "int8" },
      timings: { totalMs: 1 },
    };
  },
};

function deps(vars: Record<string, string> = {}): ConsumerDeps {
  return {
    store,
    uploads,
    config: jobsConfigFrom({ WEBHOOK_SECRET: secret, WEBHOOK_RETRY_SCHEDULE: "5s,5m", ...vars }),
    classifier: () => classifier,
    sendJob: async (msg, delay) => {
      jobQueue.push({ msg, delay });
    },
    sendDelivery: async (msg, delay) => {
      deliveryQueue.push({ msg, delay });
    },
    now: () => clock,
    log: () => undefined,
  };
}

async function submit(opts: { callback?: string | null; images?: number; batch?: boolean } = {}) {
  const n = opts.images ?? 1;
  const { job } = await store.create({
    owner: "open",
    idempotencyKey: null,
    requestHash: "h",
    callbackUrl: opts.callback === undefined ? receiver.url : opts.callback,
    metadata: '{"ref":"a-1"}',
    topK: 4,
    exifTranspose: true,
    batch: opts.batch ?? false,
    imageCount: n,
    imageBytes: 10 * n,
    now: clock,
    retentionMs: 86_400_000,
  });
  for (let i = 0; i < n; i++) await uploads.put(uploadKey(job.id, i), new Uint8Array(10 + i));
  return job;
}

/** Runs one delivery message as the queue would: a retry puts it back with its delay. */
async function deliverOnce(d: ConsumerDeps): Promise<void> {
  const { msg, delay } = deliveryQueue.shift()!;
  clock += (delay ?? 0) * 1000;
  const action = await runDelivery(d, msg);
  if (!action.ack) deliveryQueue.push({ msg, delay: action.delaySeconds });
}

/** Runs queued delivery messages in order, moving the clock by each message's delay. */
async function drainDeliveries(d: ConsumerDeps, max = 20): Promise<void> {
  for (let i = 0; i < max && deliveryQueue.length > 0; i++) await deliverOnce(d);
}

beforeAll(() => receiver.start());
afterAll(() => receiver.stop());
beforeEach(async () => {
  d1 = await testD1();
  store = new JobStore(d1.db);
  uploads = await d1.bindings.bucket("UPLOADS");
  clock = Date.now();
  jobQueue = [];
  deliveryQueue = [];
  calls = 0;
  behaviour = () => undefined;
  receiver.received = [];
  receiver.script = [];
});
afterEach(() => d1.dispose());

describe("job consumer", () => {
  it("classifies, stores the result, enqueues one delivery and deletes the uploads", async () => {
    const job = await submit({ images: 2, batch: true });
    expect(await runJob(deps(), { jobId: job.id })).toEqual({ ack: true });
    const row = await store.byId(job.id);
    expect(row?.status).toBe("succeeded");
    expect(JSON.parse(row!.results!)).toEqual([
      [{ label: "bytes-10", score: 0.25 }],
      [{ label: "bytes-11", score: 0.25 }],
    ]);
    expect(row?.uploads_deleted).toBe(1);
    expect(await uploads.get(uploadKey(job.id, 0))).toBeNull();
    expect(deliveryQueue).toEqual([{ msg: { jobId: job.id, generation: 0 }, delay: undefined }]);
    // The same message again (at-least-once): no second classification, no second delivery.
    expect(await runJob(deps(), { jobId: job.id })).toEqual({ ack: true });
    expect(calls).toBe(1);
    expect(deliveryQueue).toHaveLength(1);
  });

  it("retries a job whose classification threw mid-way, and completes it once", async () => {
    behaviour = (n) => {
      if (n === 1) throw new TypeError("boom");
    };
    const job = await submit();
    const first = await runJob(deps(), { jobId: job.id });
    expect(first).toEqual({ ack: false, delaySeconds: 5 });
    expect((await store.byId(job.id))?.status).toBe("queued");
    expect(await runJob(deps(), { jobId: job.id })).toEqual({ ack: true });
    expect(await runJob(deps(), { jobId: job.id })).toEqual({ ack: true });
    expect(calls).toBe(2);
    expect(await store.byId(job.id)).toMatchObject({ status: "succeeded", attempts: 2 });
    expect(deliveryQueue).toHaveLength(1);
  });

  it("retries model-unavailable as a job (Retry-After respected) and fails it after JOB_MAX_ATTEMPTS", async () => {
    behaviour = () => {
      throw new AppError("model-unavailable", 503, "No model is published.", { retryAfter: 30 });
    };
    const job = await submit();
    const d = deps({ JOB_MAX_ATTEMPTS: "2" });
    expect(await runJob(d, { jobId: job.id })).toEqual({ ack: false, delaySeconds: 30 });
    expect((await store.byId(job.id))?.status).toBe("queued");
    expect(await runJob(d, { jobId: job.id })).toEqual({ ack: true });
    const row = await store.byId(job.id);
    expect(row?.status).toBe("failed");
    expect(JSON.parse(row!.error!)).toMatchObject({ status: 503, code: "model-unavailable" });
  });

  it("fails an undecodable image at once with the problem details and delivers classification.failed", async () => {
    behaviour = () => {
      throw new AppError("undecodable-image", 400, "The image could not be decoded.");
    };
    const job = await submit();
    expect(await runJob(deps(), { jobId: job.id })).toEqual({ ack: true });
    expect(calls).toBe(1);
    await drainDeliveries(deps());
    expect(receiver.received).toHaveLength(1);
    const event = JSON.parse(receiver.received[0].body);
    expect(event.type).toBe("classification.failed");
    expect(event.data).toMatchObject({
      id: job.id,
      status: "failed",
      results: null,
      metadata: { ref: "a-1" },
      error: {
        type: "https://beit-edge.dev/problems/undecodable-image",
        status: 400,
        code: "undecodable-image",
      },
    });
  });

  it("runs a job without callback_url and enqueues no delivery", async () => {
    const job = await submit({ callback: null });
    await runJob(deps(), { jobId: job.id });
    expect((await store.byId(job.id))?.status).toBe("succeeded");
    expect(await store.delivery(job.id)).toBeNull();
    expect(deliveryQueue).toEqual([]);
  });
});

describe("delivery consumer", () => {
  it("signs what the standardwebhooks package verifies; fail, fail, succeed = one success, one webhook-id", async () => {
    receiver.script = [{ status: 500 }, { status: 503, headers: { "retry-after": "7" } }, { status: 200 }];
    const job = await submit();
    const d = deps();
    await runJob(d, { jobId: job.id });
    const start = clock;
    await drainDeliveries(d);
    expect(receiver.received).toHaveLength(3);
    const ids = new Set(receiver.received.map((r) => r.headers["webhook-id"]));
    expect(ids.size).toBe(1);
    const bodies = new Set(receiver.received.map((r) => r.body));
    expect(bodies.size).toBe(1);
    for (const r of receiver.received)
      expect(new Webhook(secret).verify(r.body, r.headers as Record<string, string>)).toMatchObject({
        type: "classification.succeeded",
        data: { id: job.id, results: [{ label: "bytes-10", score: 0.25 }] },
      });
    // 5 s (+-10%, rounded up to whole queue seconds) after the 500, then the 7 s the 503 asked for.
    expect(clock - start).toBeGreaterThanOrEqual(5_000 + 7_000);
    expect(clock - start).toBeLessThanOrEqual(6_000 + 7_000);
    expect(await store.delivery(job.id)).toMatchObject({ state: "delivered", attempts: 3, last_status: 200 });
    // A duplicate of the message changes nothing.
    expect(await runDelivery(d, { jobId: job.id, generation: 0 })).toEqual({ ack: true });
    expect(receiver.received).toHaveLength(3);
  });

  it("marks the delivery failed after the last attempt, keeps the result, and redeliver works", async () => {
    receiver.script = [{ status: 500 }, { status: 502 }, { status: 500 }];
    const job = await submit();
    const d = deps();
    await runJob(d, { jobId: job.id });
    await drainDeliveries(d);
    expect(receiver.received).toHaveLength(3); // first attempt + the two scheduled retries
    expect(await store.delivery(job.id)).toMatchObject({ state: "failed", last_status: 500 });
    expect(await store.byId(job.id)).toMatchObject({ status: "succeeded" });
    const r = await store.redeliver("open", job.id, clock);
    expect("delivery" in r).toBe(true);
    // A message of the old generation is dropped; the new one delivers.
    expect(await runDelivery(d, { jobId: job.id, generation: 0 })).toEqual({ ack: true });
    await runDelivery(d, { jobId: job.id, generation: 1 });
    expect(receiver.received).toHaveLength(4);
    expect(receiver.received[3].headers["webhook-id"]).toBe(receiver.received[0].headers["webhook-id"]);
    expect(receiver.received[3].body).toBe(receiver.received[0].body);
    expect(await store.delivery(job.id)).toMatchObject({
      state: "delivered",
      generation: 1,
      total_attempts: 4,
    });
  });

  it("stops at 410 Gone and does not follow redirects", async () => {
    receiver.script = [{ status: 302, headers: { location: "/elsewhere" } }, { status: 410 }];
    const job = await submit();
    const d = deps();
    await runJob(d, { jobId: job.id });
    await drainDeliveries(d);
    expect(receiver.received.map((r) => r.path)).toEqual(["/hook", "/hook"]);
    expect(await store.delivery(job.id)).toMatchObject({ state: "failed", last_status: 410, attempts: 2 });
  });

  it("counts a receiver that does not answer within the timeout as a failed attempt", async () => {
    receiver.script = [{ status: 0, hang: true }];
    const job = await submit();
    const d = deps({ WEBHOOK_TIMEOUT_MS: "300" });
    await runJob(d, { jobId: job.id });
    await deliverOnce(d);
    expect(await store.delivery(job.id)).toMatchObject({
      state: "pending",
      attempts: 1,
      last_status: null,
      last_error: "no response within 300 ms",
    });
    expect(deliveryQueue).toHaveLength(1);
  });

  it("re-delays a message that arrives before its attempt is due", async () => {
    receiver.script = [{ status: 500 }];
    const job = await submit();
    const d = deps({ WEBHOOK_RETRY_SCHEDULE: "20h" });
    await runJob(d, { jobId: job.id });
    await deliverOnce(d);
    expect(deliveryQueue[0].delay).toBe(43_200); // capped at the Queues maximum
    await deliverOnce(d); // arrives 12 h later, early: waits the rest
    expect(receiver.received).toHaveLength(1);
    expect(deliveryQueue[0].delay).toBeGreaterThan(20 * 3600 * 0.9 - 43_200 - 1);
    await deliverOnce(d);
    expect(receiver.received).toHaveLength(2);
  });
});

describe("sweeper", () => {
  it("re-enqueues a job whose message was lost and a delivery whose consumer died", async () => {
    const lost = await submit();
    const d = deps({ JOB_STUCK_AFTER_S: "60", DELIVERY_STUCK_AFTER_S: "30" });
    clock += 61_000;
    expect(await sweep(d)).toMatchObject({ jobs: 1, deliveries: 0 });
    expect(jobQueue).toEqual([{ msg: { jobId: lost.id }, delay: undefined }]);
    await runJob(d, jobQueue.shift()!.msg);
    deliveryQueue = []; // the delivery message is lost
    clock += 31_000;
    const report = await sweep(d);
    expect(report).toMatchObject({ jobs: 0, deliveries: 1 });
    await drainDeliveries(d);
    expect(receiver.received).toHaveLength(1);
    expect(await store.delivery(lost.id)).toMatchObject({ state: "delivered" });
  });
});
