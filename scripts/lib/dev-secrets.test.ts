import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { parseDevVars, quoteDevVar, resolveDevSecrets, SECRET_NAMES, writeDevVars } from "./dev-secrets.ts";
import { wranglerNoiseFilter } from "./serve.ts";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "beit-edge-secrets-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("local secrets for npm start", () => {
  it("takes API_KEY from the root .dev.vars, the environment winning, empty meaning unset", async () => {
    expect((await resolveDevSecrets(dir, {})).values).toEqual({});
    await writeFile(join(dir, ".dev.vars"), "# local\nexport API_KEY='from-file'\nOTHER=x # note\n");
    expect(await resolveDevSecrets(dir, {})).toEqual({
      values: { API_KEY: "from-file", OTHER: "x" },
      sources: { API_KEY: ".dev.vars", OTHER: ".dev.vars" },
    });
    const env = await resolveDevSecrets(dir, { API_KEY: "from-env", OTHER: "ignored: not a secret name" });
    expect(env.values).toEqual({ API_KEY: "from-env", OTHER: "x" });
    expect(env.sources.API_KEY).toBe("environment");
    expect((await resolveDevSecrets(dir, { API_KEY: "" })).values).toEqual({ OTHER: "x" });
    expect(SECRET_NAMES).toContain("API_KEY"); // from src/topology.ts
    // The list of names is the mechanism: a second secret works the same way.
    expect((await resolveDevSecrets(dir, { HOOK: "h" }, ["API_KEY", "HOOK"])).values.HOOK).toBe("h");
  });

  it("refuses a malformed .dev.vars line instead of skipping it", () => {
    expect(() => parseDevVars("API_KEY\n", "f")).toThrow(/f:1: expected KEY=VALUE/);
  });

  it("writes .dev.vars beside the configs (0600, round-trips any quote) and removes it when empty", async () => {
    const values = { API_KEY: `it's "quoted"`, B: "a\\nb" };
    await writeDevVars(dir, values);
    const path = join(dir, ".dev.vars");
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(parseDevVars(await readFile(path, "utf8"))).toEqual(values);
    expect(quoteDevVar("plain")).toBe("'plain'");
    expect(() => quoteDevVar(`'"\``)).toThrow();
    await writeDevVars(dir, {});
    await expect(stat(path)).rejects.toThrow(/ENOENT/);
  });
});

describe("wrangler dev start-up filter", () => {
  it("drops binding tables, [not connected], banners and probe logs until ready, then passes everything", () => {
    const f = wranglerNoiseFilter();
    const out = [
      "",
      " ⛅️ wrangler 4.86.0 (update available 4.164.0)",
      "──────────────",
      "beit-edge has access to the following bindings:",
      "Binding   Resource   Mode",
      "env.STAGE_0 (beit-edge-stage-0)   Worker   local \x1b[31m[not connected]\x1b[39m",
      "",
      "",
      "Service bindings, Durable Object bindings, and Tail consumers connect to other Wrangler ...",
      "⎔ Starting local server...",
      "Using secrets defined in .wrangler/generated/.dev.vars",
      "[wrangler:info] Ready on http://127.0.0.1:1234",
      "[wrangler:info] GET /healthz 200 OK (12ms)",
      "✘ [ERROR] something real",
    ].filter(f.keep);
    expect(out).toEqual(["✘ [ERROR] something real"]);
    f.ready();
    expect(["[wrangler:info] GET /healthz 200 OK (3ms)", ""].filter(f.keep)).toHaveLength(2);
  });
});
