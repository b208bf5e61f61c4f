import { describe, expect, it } from "vitest";
import {
  classifyAttempt,
  DEFAULT_RETRY_SCHEDULE_S,
  nextRetryDelay,
  parseRetryAfter,
  parseRetrySchedule,
} from "./retry.ts";

describe("webhook retry schedule", () => {
  it("defaults to the spec's example: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h", () => {
    expect(DEFAULT_RETRY_SCHEDULE_S).toEqual(parseRetrySchedule("5s,5m,30m,2h,5h,10h,14h,20h,24h"));
    expect(DEFAULT_RETRY_SCHEDULE_S.reduce((a, b) => a + b, 0) / 3600).toBeCloseTo(75.6, 1);
  });

  it("parses units and refuses anything else", () => {
    expect(parseRetrySchedule("200ms, 1 2s 1m 1h 1d")).toEqual([0.2, 1, 2, 60, 3600, 86400]);
    expect(parseRetrySchedule("")).toEqual([]);
    expect(() => parseRetrySchedule("5s,soon")).toThrow(/"soon" is not a delay/);
  });

  it("jitters each delay within +-10% and stops after the last entry", () => {
    const s = [10, 100];
    expect(nextRetryDelay(1, s, { random: () => 0 })).toBeCloseTo(9);
    expect(nextRetryDelay(1, s, { random: () => 1 })).toBeCloseTo(11);
    expect(nextRetryDelay(2, s, { random: () => 0.5 })).toBeCloseTo(100);
    expect(nextRetryDelay(3, s)).toBeNull();
    expect(nextRetryDelay(0, s)).toBeNull();
    const draws = Array.from({ length: 200 }, () => nextRetryDelay(1, s)!);
    expect(Math.min(...draws)).toBeGreaterThanOrEqual(9);
    expect(Math.max(...draws)).toBeLessThanOrEqual(11);
    expect(new Set(draws).size).toBeGreaterThan(100);
  });

  it("lets Retry-After replace the scheduled delay, capped at 24 h, but not extend the schedule", () => {
    expect(nextRetryDelay(1, [5, 5], { retryAfterS: 120 })).toBe(120);
    expect(nextRetryDelay(1, [5], { retryAfterS: 10 ** 9 })).toBe(86400);
    expect(nextRetryDelay(2, [5], { retryAfterS: 1 })).toBeNull();
  });
});

describe("attempt outcomes", () => {
  it("2xx delivers, 410 stops, everything else retries", () => {
    for (const s of [200, 201, 202, 204, 299]) expect(classifyAttempt(s)).toEqual({ kind: "delivered" });
    expect(classifyAttempt(410)).toEqual({ kind: "gone" });
    for (const s of [301, 302, 307, 308, 400, 401, 404, 500, 501])
      expect(classifyAttempt(s, "7")).toEqual({ kind: "retry" });
    expect(classifyAttempt(undefined)).toEqual({ kind: "retry" });
  });

  it("honours Retry-After (seconds or HTTP date) for 429, 502, 503, 504 only", () => {
    for (const s of [429, 502, 503, 504])
      expect(classifyAttempt(s, "30")).toEqual({ kind: "retry", retryAfterS: 30 });
    expect(classifyAttempt(503)).toEqual({ kind: "retry" });
    expect(classifyAttempt(503, "whenever")).toEqual({ kind: "retry" });
    const now = Date.parse("2026-12-01T12:00:00Z");
    expect(parseRetryAfter("Tue, 01 Dec 2026 12:01:30 GMT", now)).toBe(90);
    expect(parseRetryAfter("Tue, 01 Dec 2026 11:00:00 GMT", now)).toBe(0);
    expect(parseRetryAfter("99999999")).toBe(86400);
  });
});
