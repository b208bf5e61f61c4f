import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runWrangler, WranglerError, wranglerTimeoutMs } from "./run-wrangler.ts";

// Stand-ins for wrangler: scripts that behave like its failure modes.
let dir: string;
const script = (name: string) => join(dir, name);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "beit-edge-run-wrangler-"));
  // Waits for an answer on stdin, as a prompt does; prints what it got once stdin ends.
  await writeFile(
    script("prompt.mjs"),
    `let got = ""; process.stdin.on("data", (d) => (got += d)); process.stdin.on("end", () => { console.log("stdin closed:" + JSON.stringify(got)); });`,
  );
  // Never returns (an API call that is never answered).
  await writeFile(
    script("hang.mjs"),
    `process.stderr.write("waiting on GET /x\\n"); setInterval(() => {}, 1000);`,
  );
  await writeFile(
    script("fail.mjs"),
    `process.stderr.write("✘ [ERROR] A request to the API failed\\n"); process.exit(3);`,
  );
  await writeFile(script("ok.mjs"), `console.log(JSON.stringify(process.argv.slice(2)));`);
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("runWrangler", () => {
  it("passes the arguments and resolves with stdout", async () => {
    const { stdout } = await runWrangler(["kv", "namespace", "list"], { root: dir, bin: script("ok.mjs") });
    expect(JSON.parse(stdout)).toEqual(["kv", "namespace", "list"]);
  });

  it("closes stdin, so a prompt sees end of input instead of waiting forever", async () => {
    const { stdout } = await runWrangler([], { root: dir, bin: script("prompt.mjs"), timeoutMs: 10_000 });
    expect(stdout.trim()).toBe('stdin closed:""');
  });

  it("stops a call that never returns and names it in the error", async () => {
    const t0 = Date.now();
    const err = await runWrangler(["kv", "namespace", "list"], {
      root: dir,
      bin: script("hang.mjs"),
      timeoutMs: 1500,
    }).catch((e: unknown) => e);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(err).toBeInstanceOf(WranglerError);
    const w = err as WranglerError;
    expect(w.timedOut).toBe(true);
    expect(w.message).toMatch(/`wrangler kv namespace list` did not finish within 2 s/);
    expect(w.message).toContain("waiting on GET /x");
  });

  it("rejects a failing call with its exit code and stderr", async () => {
    const err = (await runWrangler(["d1", "list"], { root: dir, bin: script("fail.mjs") }).catch(
      (e: unknown) => e,
    )) as WranglerError;
    expect(err.timedOut).toBe(false);
    expect(err.message).toMatch(/`wrangler d1 list` failed \(exit 3\)/);
    expect(err.stderr).toContain("A request to the API failed");
  });

  it("reads its limit from WRANGLER_TIMEOUT_MS", () => {
    expect(wranglerTimeoutMs({ WRANGLER_TIMEOUT_MS: "1234" })).toBe(1234);
    expect(wranglerTimeoutMs({})).toBe(300_000);
    expect(wranglerTimeoutMs({ WRANGLER_TIMEOUT_MS: "soon" })).toBe(300_000);
  });
});
