import { describe, expect, it } from "vitest";
import { localLoopbackFetch, wranglerNoiseFilter } from "./serve.ts";
import { localV8Flags } from "./workerd-wrapper.ts";

describe("localLoopbackFetch (what npm start sets ALLOW_LOOPBACK_FETCH to)", () => {
  it("allows loopback URLs for local development unless the environment says otherwise", () => {
    expect(localLoopbackFetch({})).toBe("true");
    expect(localLoopbackFetch({ ALLOW_LOOPBACK_FETCH: "true" })).toBe("true");
    expect(localLoopbackFetch({ ALLOW_LOOPBACK_FETCH: "" })).toBe("true");
  });
  it("ALLOW_LOOPBACK_FETCH=false npm start refuses loopback too (anything but true/1 counts as no)", () => {
    expect(localLoopbackFetch({ ALLOW_LOOPBACK_FETCH: "false" })).toBe("false");
    expect(localLoopbackFetch({ ALLOW_LOOPBACK_FETCH: "FALSE" })).toBe("false");
    expect(localLoopbackFetch({ ALLOW_LOOPBACK_FETCH: "0" })).toBe("false");
    expect(localLoopbackFetch({ ALLOW_LOOPBACK_FETCH: "no" })).toBe("false");
  });
});

describe("wranglerNoiseFilter", () => {
  const warning = [
    "\x1b[33m▲ \x1b[43;33m[\x1b[43;30mWARNING\x1b[43;33m]\x1b[0m \x1b[1mScheduled Workers are not automatically triggered during local development.\x1b[0m",
    "",
    "  To manually trigger a scheduled event, run:",
    '    curl "http://127.0.0.1:45845/cdn-cgi/handler/scheduled"',
    "  For more details, see https://developers.cloudflare.com/workers/configuration/cron-triggers/#test-cron-triggers-locally",
    "",
    "",
    "[wrangler:info] Ready on http://127.0.0.1:45845",
    "[wrangler:info] POST /v1/jobs 202 Accepted (143ms)",
  ];
  it("hides the cron warning and its hint when npm start fires the crons, and keeps what follows", () => {
    const f = wranglerNoiseFilter({ cronsFired: true });
    const kept = warning.filter(f.keep);
    expect(kept).toEqual(["[wrangler:info] POST /v1/jobs 202 Accepted (143ms)"]);
  });
  it("keeps the warning when nothing fires the crons", () => {
    const f = wranglerNoiseFilter();
    expect(warning.filter(f.keep).some((l) => l.includes("Scheduled Workers are not"))).toBe(true);
  });
});

describe("wranglerNoiseFilter: a URL input that cannot be fetched", () => {
  // As workerd printed it on 2026-12-06 for {"url":"https://example.com/cat.jpg"} offline.
  const dnsFailure = [
    "[wrangler:info] POST /v1/classify 200 OK (304ms)",
    "\x1b[31m✘ \x1b[41;31m[\x1b[41;97mERROR\x1b[41;31m]\x1b[0m \x1b[1me = kj/async-io-unix.c++:1298: failed: DNS lookup failed.; params.host = example.com; params.service = ; gai_strerror(status) = Name or service not known\x1b[0m",
    "",
    "  stack: /work/node_modules/@cloudflare/workerd-linux-64/bin/workerd@51f50be /work/node_modules/@cloudflare/workerd-linux-64/bin/workerd@51f5bb0; sentryErrorContext = jsgInternalError; wdErrId = 5e12ajg5f0o1dhr38bjjmtp3",
    "",
    "",
    "[wrangler:info] POST /v1/classify 400 Bad Request (11ms)",
  ];
  it("drops workerd's red error and native stack, keeping the request's one line", () => {
    const f = wranglerNoiseFilter();
    f.ready();
    expect(dnsFailure.filter(f.keep)).toEqual([
      "[wrangler:info] POST /v1/classify 200 OK (304ms)",
      "[wrangler:info] POST /v1/classify 400 Bad Request (11ms)",
    ]);
  });
  it("keeps other errors", () => {
    const f = wranglerNoiseFilter();
    f.ready();
    const other = "✘ [ERROR] Uncaught TypeError: x is not a function";
    expect([other].filter(f.keep)).toEqual([other]);
  });
});

describe("localV8Flags", () => {
  it("defaults to --single-threaded-gc; BEIT_EDGE_V8_FLAGS replaces the list, empty means none", () => {
    expect(localV8Flags({})).toEqual(["--single-threaded-gc"]);
    expect(localV8Flags({ BEIT_EDGE_V8_FLAGS: "" })).toEqual([]);
    expect(localV8Flags({ BEIT_EDGE_V8_FLAGS: " --expose-gc  --single-threaded-gc " })).toEqual([
      "--expose-gc",
      "--single-threaded-gc",
    ]);
  });
});
