/**
 * The gateway's Hono app through `app.request()` in Node (the way hono tests its own middleware):
 * a fake decoder and fake stage fetchers, an in-memory R2 with a published tiny model. The
 * service-level behaviour with real ORT, codecs and R2 is in test/gateway.workerd.test.ts; this
 * checks the route's own job: parse, one core call, response shaping.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  buildTinyModel,
  fakeDecoder,
  fakeEnv,
  fakeStages,
  type TinyModel,
} from "../../../test/helpers/fake-classifier.ts";
import type { GatewayEnv } from "../../edge/env.ts";
import { createApp } from "./app.ts";

let tiny: TinyModel;
beforeAll(async () => {
  tiny = await buildTinyModel(12);
}, 120_000);
afterAll(() => tiny.cleanup());

const app = createApp({ decode: fakeDecoder });

describe("gateway app", () => {
  it("POST /v1/classify answers predictions with model headers and Server-Timing per stage", async () => {
    const env = await fakeEnv<GatewayEnv>(tiny, fakeStages(tiny.manifest));
    const res = await app.request(
      "/v1/classify?top_k=2",
      { method: "POST", body: new Uint8Array([4]), headers: { "content-type": "image/png" } },
      env,
    );
    expect(res.status).toBe(200);
    const body = (await res.json()) as { label: string; score: number }[];
    expect(body.map((p) => p.label)).toEqual([tiny.labels[4], tiny.labels[5]]);
    expect(res.headers.get("x-model-version")).toBe(tiny.manifest.version);
    expect(res.headers.get("x-model-synthetic")).toBe("true");
    const timing = res.headers.get("server-timing") ?? "";
    expect(timing).toMatch(/^decode;dur=[\d.]+, preprocess;dur=[\d.]+, queue;dur=[\d.]+, stage-0;dur=/);
    for (let i = 0; i < tiny.manifest.stages.length; i++) {
      expect(timing).toContain(`stage-${i};dur=`);
      expect(timing).toContain(`run-${i};dur=`);
    }
    expect(timing).toMatch(/total;dur=[\d.]+/);

    const batch = await app.request(
      "/v1/classify",
      {
        method: "POST",
        body: JSON.stringify({ inputs: [btoa("\x01"), btoa("\x02")], parameters: { top_k: 1 } }),
        headers: { "content-type": "application/json" },
      },
      env,
    );
    expect(((await batch.json()) as { label: string }[][]).map((p) => p[0].label)).toEqual([
      tiny.labels[1],
      tiny.labels[2],
    ]);
  });

  it("answers errors as problem+json: 422 top_k, 401 without the key, 503 with Retry-After", async () => {
    const env = await fakeEnv<GatewayEnv>(tiny, fakeStages(tiny.manifest, { failStage: 0 }), {
      API_KEY: "k",
    });
    const post = (query: string, auth = "Bearer k") =>
      app.request(
        `/v1/classify${query}`,
        {
          method: "POST",
          body: new Uint8Array([1]),
          headers: { "content-type": "image/png", authorization: auth },
        },
        env,
      );
    const bad = await post(`?top_k=${tiny.labels.length + 1}`);
    expect(bad.status).toBe(422);
    expect(bad.headers.get("content-type")).toContain("application/problem+json");
    expect((await post("", "Bearer nope")).status).toBe(401);
    const down = await post("");
    expect(down.status).toBe(503);
    expect(down.headers.get("retry-after")).toBe("5");
  });

  it("GET /v1/model, /v1/labels and /healthz describe the active model and its stages", async () => {
    const env = await fakeEnv<GatewayEnv>(tiny, fakeStages(tiny.manifest));
    const model = (await (await app.request("/v1/model", {}, env)).json()) as {
      version: string;
      stages: unknown[];
      fidelity: unknown;
    };
    expect(model.version).toBe(tiny.manifest.version);
    expect(model.fidelity).toEqual(tiny.manifest.fidelity ?? null);
    expect(model.stages).toHaveLength(tiny.manifest.stages.length);
    expect(await (await app.request("/v1/labels", {}, env)).json()).toEqual(tiny.labels);
    const health = await app.request("/healthz", {}, env);
    expect(health.status).toBe(200);
    expect(((await health.json()) as { status: string }).status).toBe("ok");
  });
});
