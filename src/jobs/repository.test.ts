import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type TestD1, testD1 } from "../../test/helpers/d1.ts";
import { isJobId, jobView } from "./model.ts";
import { JobStore, type NewJob } from "./repository.ts";

const DAY = 86_400_000;
let d1: TestD1;
let store: JobStore;

function newJob(over: Partial<NewJob> = {}): NewJob {
  return {
    owner: "key:a",
    idempotencyKey: null,
    requestHash: "h1",
    callbackUrl: "https://hooks.example.com/in",
    metadata: '{"order":42}',
    topK: 5,
    exifTranspose: true,
    batch: false,
    imageCount: 1,
    imageBytes: 100,
    now: 1_000_000,
    retentionMs: 7 * DAY,
    ...over,
  };
}

beforeEach(async () => {
  d1 = await testD1();
  store = new JobStore(d1.db);
});
afterEach(() => d1.dispose());

describe("JobStore (Miniflare D1, migrations/ applied)", () => {
  it("creates a queued job with a time-ordered id, visible to its owner only", async () => {
    const { job, created } = await store.create(newJob());
    expect(created).toBe(true);
    expect(isJobId(job.id)).toBe(true);
    expect(job.status).toBe("queued");
    expect(await store.get("key:a", job.id)).toMatchObject({ id: job.id });
    expect(await store.get("key:b", job.id)).toBeNull();
    const view = jobView(job, null);
    expect(view).toMatchObject({ status: "queued", metadata: { order: 42 }, results: null });
    expect(view.delivery).toMatchObject({ state: "pending", attempts: 0, next_attempt_at: null });
    expect(jobView({ ...job, callback_url: null }, null).delivery).toBeNull();
    expect(view.created_at).toBe(new Date(1_000_000).toISOString());
  });

  it("keeps one job per owner and idempotency key", async () => {
    const a = await store.create(newJob({ idempotencyKey: "k1" }));
    const again = await store.create(newJob({ idempotencyKey: "k1", requestHash: "other" }));
    expect(again).toEqual({ job: a.job, created: false });
    // Another caller may use the same key.
    const b = await store.create(newJob({ owner: "key:b", idempotencyKey: "k1" }));
    expect(b.created).toBe(true);
    expect(b.job.id).not.toBe(a.job.id);
  });

  it("lets exactly one consumer claim and finish a job; a duplicate finisher writes nothing", async () => {
    const { job } = await store.create(newJob());
    const first = await store.claim(job.id, 2_000_000, 60_000);
    expect(first).toMatchObject({ status: "running", attempts: 1 });
    // A duplicate message while the lease holds: no claim.
    expect(await store.claim(job.id, 2_000_001, 60_000)).toBeNull();
    // The lease expires (consumer crashed): a second consumer takes over with token 2.
    const second = await store.claim(job.id, 2_070_000, 60_000);
    expect(second).toMatchObject({ attempts: 2 });
    // The first consumer comes back late: its result is refused.
    const results = [{ label: "cat", score: 0.9 }];
    expect(await store.finish(first!, { status: "succeeded", results }, 2_080_000, 7 * DAY)).toBeNull();
    const done = await store.finish(
      second!,
      { status: "succeeded", results, model: { id: "m" } },
      2_090_000,
      7 * DAY,
    );
    expect(done?.job.status).toBe("succeeded");
    expect(done?.delivery).toMatchObject({ state: "pending", webhook_id: `evt_${job.id.slice(4)}` });
    // Finishing twice (the same message redelivered after success) changes nothing.
    expect(
      await store.finish(second!, { status: "failed", error: { code: "x" } }, 2_100_000, 7 * DAY),
    ).toBeNull();
    const row = await store.byId(job.id);
    expect(row).toMatchObject({
      status: "succeeded",
      finished_at: 2_090_000,
      expires_at: 2_090_000 + 7 * DAY,
    });
    expect(JSON.parse(row!.results!)).toEqual(results);
    const d = await store.delivery(job.id);
    const event = JSON.parse(d!.payload);
    expect(event.type).toBe("classification.succeeded");
    expect(event.data).toMatchObject({ id: job.id, status: "succeeded", results, metadata: { order: 42 } });
    expect(event.data.delivery).toBeUndefined();
    expect(await store.claim(job.id, 3_000_000, 60_000)).toBeNull();
  });

  it("puts a job back to queued on a retryable error, only for the current claim", async () => {
    const { job } = await store.create(newJob({ callbackUrl: null }));
    const c = await store.claim(job.id, 1, 60_000);
    expect(await store.release(job.id, 99, 2)).toBe(false);
    expect(await store.release(job.id, c!.attempts, 2, { code: "model-unavailable" })).toBe(true);
    const again = await store.claim(job.id, 3, 60_000);
    expect(again?.attempts).toBe(2);
    const done = await store.finish(
      again!,
      { status: "failed", error: { code: "undecodable-image" } },
      4,
      DAY,
    );
    expect(done).toMatchObject({ delivery: null, job: { status: "failed" } });
    expect(await store.delivery(job.id)).toBeNull();
  });

  it("claims each delivery attempt once, records its outcome, and redelivers with a new generation", async () => {
    const { job } = await store.create(newJob());
    const c = await store.claim(job.id, 10, 60_000);
    await store.finish(c!, { status: "succeeded", results: [] }, 20, DAY);
    const a1 = await store.claimDelivery(job.id, 0, 0, 30, 30_000);
    expect(a1).toMatchObject({ attempts: 1, total_attempts: 1 });
    expect(await store.claimDelivery(job.id, 0, 0, 31, 30_000)).toBeNull(); // duplicate message
    expect(
      await store.recordAttempt(a1!, {
        state: "pending",
        status: 503,
        error: null,
        nextAttemptAt: 5030,
        now: 40,
      }),
    ).toBe(true);
    expect(
      await store.recordAttempt(a1!, {
        state: "delivered",
        status: 200,
        error: null,
        nextAttemptAt: null,
        now: 41,
      }),
    ).toBe(false);
    const a2 = await store.claimDelivery(job.id, 0, 1, 5030, 30_000);
    expect(
      await store.recordAttempt(a2!, {
        state: "delivered",
        status: 204,
        error: null,
        nextAttemptAt: null,
        now: 5040,
      }),
    ).toBe(true);
    expect(await store.delivery(job.id)).toMatchObject({
      state: "delivered",
      attempts: 2,
      last_status: 204,
      delivered_at: 5040,
    });
    expect(await store.redeliver("key:b", job.id, 6000)).toEqual({ reason: "not-found" });
    const r = await store.redeliver("key:a", job.id, 6000);
    expect(r).toMatchObject({
      delivery: { state: "pending", generation: 1, attempts: 0, webhook_id: `evt_${job.id.slice(4)}` },
    });
    expect(await store.redeliver("key:a", job.id, 6001)).toEqual({ reason: "in-progress" });
    // A message of generation 0 is stale now.
    expect(await store.claimDelivery(job.id, 0, 2, 6002, 30_000)).toBeNull();
    expect(await store.claimDelivery(job.id, 1, 0, 6002, 30_000)).toMatchObject({
      attempts: 1,
      total_attempts: 3,
    });
  });

  it("finds stuck jobs and deliveries, deletes uploads of final jobs, expires jobs after retention", async () => {
    const queued = (await store.create(newJob({ now: 0 }))).job;
    const running = (await store.create(newJob({ now: 0 }))).job;
    await store.claim(running.id, 0, 1000);
    const fresh = (await store.create(newJob({ now: 9_000 }))).job;
    expect((await store.stuckJobs(10_000, 5_000, 10)).sort()).toEqual([queued.id, running.id].sort());
    expect(await store.stuckJobs(10_001, 5_000, 10)).toEqual([]); // touched
    const c = await store.claim(fresh.id, 10_000, 1000);
    await store.finish(c!, { status: "succeeded", results: [] }, 10_000, DAY);
    expect(await store.stuckDeliveries(10_000 + 59_000, 60_000, 10)).toEqual([]);
    expect(await store.stuckDeliveries(10_000 + 61_000, 60_000, 10)).toEqual([
      { job_id: fresh.id, generation: 0, attempts: 0 },
    ]);
    expect(await store.uploadsToDelete(10_000, 10)).toEqual([{ id: fresh.id, image_count: 1 }]);
    expect(await store.expire(10_000 + 2 * DAY, 10)).toBe(0); // uploads not yet deleted
    await store.markUploadsDeleted([fresh.id]);
    expect(await store.expire(10_000 + DAY - 1, 10)).toBe(0);
    expect(await store.expire(10_000 + DAY + 1, 10)).toBe(1);
    expect(await store.byId(fresh.id)).toBeNull();
    expect(await store.delivery(fresh.id)).toBeNull();
  });

  it("lists the owner's jobs newest first with cursor pagination and a status filter", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await store.create(newJob({ now: 1000 + i }))).job.id);
    await store.create(newJob({ owner: "key:b", now: 2000 }));
    const p1 = await store.list("key:a", { limit: 2 });
    expect(p1.jobs.map((j) => j.job.id)).toEqual([ids[4], ids[3]]);
    const p2 = await store.list("key:a", { limit: 2, cursor: p1.next! });
    expect(p2.jobs.map((j) => j.job.id)).toEqual([ids[2], ids[1]]);
    const p3 = await store.list("key:a", { limit: 2, cursor: p2.next! });
    expect(p3).toMatchObject({ next: null });
    expect(p3.jobs.map((j) => j.job.id)).toEqual([ids[0]]);
    const c = await store.claim(ids[1], 3000, 1000);
    await store.finish(c!, { status: "succeeded", results: [] }, 3000, DAY);
    const done = await store.list("key:a", { limit: 10, status: "succeeded" });
    expect(done.jobs.map((j) => j.job.id)).toEqual([ids[1]]);
    expect(jobView(done.jobs[0].job, done.jobs[0].delivery).delivery).toMatchObject({ state: "pending" });
  });
});
