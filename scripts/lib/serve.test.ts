import { describe, expect, it } from "vitest";
import { localLoopbackFetch } from "./serve.ts";

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
