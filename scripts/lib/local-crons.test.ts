import { createServer, type IncomingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, expect, it } from "vitest";
import { WORKERS } from "../../src/topology.ts";
import { nextCronTime, parseCron, startCronTicker, triggerScheduled } from "./local-crons.ts";

const at = (iso: string) => new Date(iso);
const next = (expr: string, from: string) => nextCronTime(parseCron(expr), at(from)).toISOString();

describe("nextCronTime (UTC, minute resolution, as Cloudflare reads cron expressions)", () => {
  it("fires every minute for * * * * *, strictly after the given time", () => {
    expect(next("* * * * *", "2026-12-02T03:04:05.600Z")).toBe("2026-12-02T03:05:00.000Z");
    expect(next("* * * * *", "2026-12-02T03:05:00.000Z")).toBe("2026-12-02T03:06:00.000Z");
  });
  it("reads steps, ranges and lists", () => {
    expect(next("*/15 * * * *", "2026-12-02T03:04:00Z")).toBe("2026-12-02T03:15:00.000Z");
    expect(next("0 9-17/4 * * *", "2026-12-02T10:00:00Z")).toBe("2026-12-02T13:00:00.000Z");
    expect(next("5,35 2 * * *", "2026-12-02T02:06:00Z")).toBe("2026-12-02T02:35:00.000Z");
    expect(next("0 0 1 1 *", "2026-12-02T00:00:00Z")).toBe("2027-01-01T00:00:00.000Z");
  });
  it("treats day of week 7 as Sunday and ORs day of month with day of week when both are given", () => {
    // 2026-12-06 is a Sunday.
    expect(next("0 12 * * 7", "2026-12-02T00:00:00Z")).toBe("2026-12-06T12:00:00.000Z");
    expect(next("0 0 15 * 0", "2026-12-02T00:00:00Z")).toBe("2026-12-06T00:00:00.000Z");
  });
  it("refuses what it does not read, saying why", () => {
    expect(() => parseCron("* * * *")).toThrow(/5 fields/);
    expect(() => parseCron("61 * * * *")).toThrow(/outside 0-59/);
    expect(() => parseCron("0 0 * * MON")).toThrow(/MON/);
    expect(() => parseCron("*/0 * * * *")).toThrow(/outside/);
  });
  it("reads every cron of the topology", () => {
    for (const w of WORKERS) for (const c of w.crons ?? []) expect(() => parseCron(c)).not.toThrow();
  });
});

/** A stand-in for wrangler dev's /cdn-cgi/handler/scheduled that records each call. */
async function fakeWrangler(status = 200) {
  const calls: { url: string; headers: IncomingHttpHeaders }[] = [];
  const server = createServer((req, res) => {
    calls.push({ url: req.url ?? "", headers: req.headers });
    res.writeHead(status).end(status === 200 ? "ok" : "exception");
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, calls, close: () => new Promise((r) => server.close(r)) };
}

describe("triggerScheduled and the ticker", () => {
  it("names the Worker with MF-Route-Override and passes the cron and its scheduled time", async () => {
    const w = await fakeWrangler();
    try {
      await triggerScheduled(w.url, "beit-edge-jobs", "* * * * *", at("2026-12-02T03:05:00Z"));
      expect(w.calls).toHaveLength(1);
      const u = new URL(w.calls[0].url, w.url);
      expect(u.pathname).toBe("/cdn-cgi/handler/scheduled");
      expect(u.searchParams.get("cron")).toBe("* * * * *");
      expect(u.searchParams.get("time")).toBe(String(Date.parse("2026-12-02T03:05:00Z")));
      expect(w.calls[0].headers["mf-route-override"]).toBe("beit-edge-jobs");
    } finally {
      await w.close();
    }
  });

  it("rejects when the handler did not return ok", async () => {
    const w = await fakeWrangler(500);
    try {
      await expect(triggerScheduled(w.url, "beit-edge-jobs", "* * * * *")).rejects.toThrow(/answered 500/);
    } finally {
      await w.close();
    }
  });

  it("fires at the next matching minute (clock given), and not after stop()", async () => {
    const w = await fakeWrangler();
    // A clock 150 ms before a minute boundary: the first tick is due in ~150 ms.
    const offset = Date.parse("2026-12-02T03:05:00Z") - 150 - Date.now();
    const ticker = startCronTicker({
      url: w.url,
      workers: [{ name: "beit-edge-jobs", crons: ["* * * * *"] }],
      now: () => Date.now() + offset,
    });
    try {
      for (let i = 0; i < 40 && w.calls.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
      expect(w.calls).toHaveLength(1);
      expect(new URL(w.calls[0].url, w.url).searchParams.get("time")).toBe(
        String(Date.parse("2026-12-02T03:05:00Z")),
      );
    } finally {
      ticker.stop();
      await w.close();
    }
  });
});
