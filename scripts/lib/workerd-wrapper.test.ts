import { mkdtemp, readdir, readFile, readlink, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Miniflare, serializeConfig } from "miniflare";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "./serve.ts";
import { addV8Flags, LOCAL_V8_FLAGS, localV8Flags, workerdWrapper } from "./workerd-wrapper.ts";

const root = resolve(import.meta.dirname, "../..");
const script = `export default { fetch() { return new Response(typeof gc); } };`;

/**
 * Starts a one-Worker Miniflare (workerd) with `env` applied while it spawns workerd; returns
 * `typeof gc` inside it and the port its entry socket got.
 */
async function probeWorkerd(env: Record<string, string>): Promise<{ gc: string; port: string }> {
  const saved = process.env.MINIFLARE_WORKERD_PATH;
  Object.assign(process.env, env);
  const mf = new Miniflare({ modules: true, script, compatibilityDate: "2026-04-01" });
  try {
    const res = await mf.dispatchFetch("http://localhost/");
    return { gc: await res.text(), port: (await mf.ready).port };
  } finally {
    await mf.dispose();
    if (saved === undefined) delete process.env.MINIFLARE_WORKERD_PATH;
    else process.env.MINIFLARE_WORKERD_PATH = saved;
  }
}

/** The pids of the workerd processes that are children of this process. */
async function childWorkerds(): Promise<number[]> {
  const pids: number[] = [];
  for (const d of await readdir("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    const stat = await readFile(`/proc/${d}/stat`, "utf8").catch(() => "");
    // pid (comm) state ppid ...
    const m = /^\d+ \((.*)\) \S+ (\d+)/.exec(stat);
    if (m?.[1] === "workerd" && Number(m[2]) === process.pid) pids.push(Number(d));
  }
  return pids;
}

describe("addV8Flags", () => {
  const config = serializeConfig({
    services: [
      {
        name: "a",
        worker: { compatibilityDate: "2026-04-01", modules: [{ name: "a.mjs", esModule: script }] },
      },
    ],
    sockets: [{ name: "http", address: "127.0.0.1:0", service: { name: "a" } }],
  });

  it("appends one segment holding the flags and points the root's v8Flags at it", () => {
    const out = addV8Flags(config, ["--expose-gc", "--single-threaded-gc"]);
    const v = new DataView(out.buffer, out.byteOffset, out.byteLength);
    expect(v.getUint32(0, true)).toBe(1); // two segments
    const text = new TextDecoder().decode(out.subarray(out.byteLength - 48));
    expect(text).toContain("--expose-gc\0");
    expect(text).toContain("--single-threaded-gc\0");
    // The original segment is unchanged except for the one pointer.
    const before = config.subarray(8);
    const after = out.subarray(16, 16 + before.byteLength);
    expect(after.filter((b, i) => b !== before[i]).length).toBeGreaterThan(0);
    expect(after.filter((b, i) => b !== before[i]).length).toBeLessThanOrEqual(8);
  });

  it("returns the config unchanged for no flags and refuses what is not a miniflare config", () => {
    expect(addV8Flags(config, [])).toBe(config);
    expect(() => addV8Flags(new Uint8Array(3), ["--x"])).toThrow(/too short/);
    expect(() => addV8Flags(config.subarray(0, config.byteLength - 8), ["--x"])).toThrow(/segment table/);
    const twice = addV8Flags(config, ["--expose-gc"]);
    expect(() => addV8Flags(twice, ["--expose-gc"])).toThrow(/already set/);
  });
});

describe("workerdWrapper (real workerd through Miniflare)", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "beit-edge-v8flags-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("makes workerd start with the flags (--expose-gc shows as a global gc) and accepts LOCAL_V8_FLAGS", async () => {
    expect((await probeWorkerd({})).gc).toBe("undefined");
    const env = await workerdWrapper(dir, root, { v8Flags: [...LOCAL_V8_FLAGS, "--expose-gc"] });
    expect((await probeWorkerd(env)).gc).toBe("function");
  }, 60_000);

  it("puts the entry socket miniflare asks for on port 0 on the given port", async () => {
    const userEntryPort = await freePort();
    const env = await workerdWrapper(dir, root, { userEntryPort });
    expect(await probeWorkerd(env)).toEqual({ gc: "undefined", port: String(userEntryPort) });
  }, 60_000);

  // vitest.config.ts installs the wrapper for the whole run (useLocalWorkerdFlags): a Miniflare
  // started with no environment of its own, like the pool's and the tests', gets the flags. The
  // wrapper hands workerd its filtered config as a (deleted) file on stdin, which /proc can reread.
  it.skipIf(process.platform !== "linux" || localV8Flags(process.env).length === 0)(
    "every workerd of the test run gets LOCAL_V8_FLAGS (BEIT_EDGE_V8_FLAGS unless set) in its config",
    async () => {
      const before = new Set(await childWorkerds());
      const mf = new Miniflare({ modules: true, script, compatibilityDate: "2026-04-01" });
      try {
        await mf.ready;
        const started = (await childWorkerds()).filter((p) => !before.has(p));
        expect(started).toHaveLength(1);
        const stdin = await readlink(`/proc/${started[0]}/fd/0`);
        // A file, not miniflare's own stdin pipe (a socket: no wrapper in between).
        expect(stdin).toMatch(/^\/.* \(deleted\)$/);
        const config = await readFile(`/proc/${started[0]}/fd/0`);
        for (const flag of localV8Flags(process.env)) expect(config.includes(`${flag}\0`)).toBe(true);
      } finally {
        await mf.dispose();
      }
    },
    60_000,
  );
});
