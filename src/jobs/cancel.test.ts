// Jobs a client can stop (issue #20): cancel while queued or running, cancel_after, and a job's
// images charged to its key's quota when it is classified. Real D1 and R2 (Miniflare); a counting
// stand-in for the classification core; queue sends collected.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type TestD1, testD1 } from "../../test/helpers/d1.ts";
import { jobsConfigFrom } from "./config.ts";
import { type ConsumerDeps, endJob, type JobClassifier, runJob, sweep } from "./consumers.ts";
import { jobView } from "./model.ts";
import { JobStore, uploadKey } from "./repository.ts";

let d1: TestD1;
let store: JobStore;
let uploads: R2Bucket;
let clock: number;
let calls: number;
let during: () => Promise<void>;
let sentDeliveries: { jobId: string; generation: number }[];

const classifier: JobClassifier = {
  async classify(images) {
    calls++;
    await during();
    return {
      predictions: images.map(() => [{ label: "a", score: 1 }]),
      images: images.map(() => ({ width: 1, height: 1, format: "png" })),
      model: { id: "m", version: "v1", synthetic: true, precision: "int8" },
      timings: { runMs: [3, 4] },
    };
  },
};

function deps(over: Partial<ConsumerDeps> = {}): ConsumerDeps {
  return {
    store,
    uploads,
    config: jobsConfigFrom({ WEBHOOK_SECRET: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }),
    classifier: () => classifier,
    sendJob: async () => {},
    sendDelivery: async (msg) => {
      sentDeliveries.push(msg);
    },
    now: () => clock,
    log: () => undefined,
    ...over,
  };
}

async function submit(cancelAfterS: number | null = null, owner = "key_00000000000000aa") {
  const { job } = await store.create({
    owner,
    idempotencyKey: null,
    requestHash: "h",
    callbackUrl: "https://hooks.example.com/in",
    metadata: null,
    topK: 1,
    exifTranspose: true,
    batch: false,
    imageCount: 2,
    imageBytes: 20,
    now: clock,
    retentionMs: 86_400_000,
    cancelAfterS,
  });
  for (let i = 0; i < 2; i++) await uploads.put(uploadKey(job.id, i), new Uint8Array(10));
  return job;
}

async function eventType(jobId: string): Promise<string> {
  const d = await store.delivery(jobId);
  return (JSON.parse(d?.payload ?? "{}") as { type?: string }).type ?? "none";
}

beforeEach(async () => {
  d1 = await testD1();
  store = new JobStore(d1.db);
  uploads = await d1.bindings.bucket("UPLOADS");
  clock = Date.now();
  calls = 0;
  during = async () => {};
  sentDeliveries = [];
});
afterEach(() => d1.dispose());

describe("cancel", () => {
  it("ends a queued job canceled: never classified, event classification.canceled, delivered", async () => {
    const job = await submit();
    const r = await store.requestCancel(job.owner, job.id, clock);
    expect("job" in r && r.job?.status).toBe("queued");
    const held = await store.claimToEnd(job.id, clock, 60_000);
    expect(await endJob(deps(), held!, "canceled")).toBe(true);
    // The job's own queue message arrives later: nothing to do.
    expect(await runJob(deps(), { jobId: job.id })).toEqual({ ack: true });
    expect(calls).toBe(0);
    const after = (await store.byId(job.id))!;
    expect(jobView(after)).toMatchObject({ status: "canceled", results: null, started_at: null });
    expect((jobView(after).error as { code: string }).code).toBe("job-canceled");
    expect(await eventType(job.id)).toBe("classification.canceled");
    expect(sentDeliveries).toEqual([{ jobId: job.id, generation: 0 }]);
    expect(await uploads.get(uploadKey(job.id, 0))).toBeNull();
    // Listing by status sees it as canceled, not failed.
    expect((await store.list(job.owner, { status: "canceled", limit: 5 })).jobs).toHaveLength(1);
    expect((await store.list(job.owner, { status: "failed", limit: 5 })).jobs).toHaveLength(0);
  });

  it("discards the result of a job canceled while it runs; the event says canceled", async () => {
    const job = await submit();
    during = async () => {
      const r = await store.requestCancel(job.owner, job.id, clock);
      expect("job" in r && r.job?.status).toBe("running");
    };
    expect(await runJob(deps(), { jobId: job.id })).toEqual({ ack: true });
    expect(calls).toBe(1);
    const v = jobView((await store.byId(job.id))!);
    expect(v).toMatchObject({ status: "canceled", results: null });
    expect(v.cancel_requested_at).not.toBeNull();
    expect(await eventType(job.id)).toBe("classification.canceled");
  });

  it("changes nothing on a job that has ended, or of another key", async () => {
    const job = await submit();
    await runJob(deps(), { jobId: job.id });
    const before = await store.byId(job.id);
    const r = await store.requestCancel(job.owner, job.id, clock + 1);
    expect(r).toMatchObject({ reason: "final" });
    expect(await store.byId(job.id)).toEqual(before);
    expect(await store.requestCancel("key_00000000000000bb", job.id, clock)).toEqual({ reason: "not-found" });
  });
});

describe("cancel_after", () => {
  it("ends a job not started in time expired, without classifying it", async () => {
    const job = await submit(10);
    expect(jobView(job).parameters.cancel_after).toBe(10);
    clock += 11_000;
    expect(await runJob(deps(), { jobId: job.id })).toEqual({ ack: true });
    expect(calls).toBe(0);
    const v = jobView((await store.byId(job.id))!);
    expect(v.status).toBe("expired");
    expect((v.error as { code: string }).code).toBe("job-expired");
    expect(await eventType(job.id)).toBe("classification.expired");
  });

  it("is enforced by the sweeper when the message is late, and not for a job started in time", async () => {
    const late = await submit(5);
    const ok = await submit(60);
    clock += 6_000;
    expect((await sweep(deps())).expiredUnstarted).toBe(1);
    expect(jobView((await store.byId(late.id))!).status).toBe("expired");
    await runJob(deps(), { jobId: ok.id });
    expect(jobView((await store.byId(ok.id))!).status).toBe("succeeded");
  });
});

describe("image quota of jobs", () => {
  it("waits while the owner's image quota is used up, then classifies and records usage", async () => {
    const job = await submit(30);
    let allowed = false;
    const charged: [string, number][] = [];
    const usage: unknown[] = [];
    const d = deps({
      chargeImages: async (owner, n) => {
        charged.push([owner, n]);
        return { allowed, retryAfterS: 7 };
      },
      usage: (owner, counts) => usage.push([owner, counts]),
    });
    expect(await runJob(d, { jobId: job.id })).toEqual({ ack: false, delaySeconds: 7 });
    expect(calls).toBe(0);
    const waiting = (await store.byId(job.id))!;
    expect(waiting).toMatchObject({ status: "queued", started_at: null });
    allowed = true;
    clock += 7_000;
    expect(await runJob(d, { jobId: job.id })).toEqual({ ack: true });
    expect(charged).toEqual([
      [job.owner, 2],
      [job.owner, 2],
    ]);
    expect(usage).toEqual([[job.owner, { images: 2, model_ms: 7 }]]);
    expect(jobView((await store.byId(job.id))!).status).toBe("succeeded");
  });
});
