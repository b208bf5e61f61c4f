/**
 * `npm start` as a user (or a supervisor) runs it, as a real child process (issue #21):
 * - a port that is taken fails it within 5 s, before any building, naming the port and the
 *   process that holds it;
 * - killed with SIGKILL (nothing of it can clean up), it leaves nothing behind: within 10 s its
 *   port is free and no process it started (wrangler dev, workerd) is alive.
 * It serves the tiny synthetic model (`--size tiny`) from a temporary local state.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { freePort } from "../scripts/lib/serve.ts";

const root = resolve(import.meta.dirname, "..");
const started: number[] = [];
const dirs: string[] = [];

function npmStart(port: number, persist: string): { child: ChildProcess; output: () => string } {
  const child = spawn(
    "npm",
    ["start", "--", "--size", "tiny", "--port", String(port), "--persist", persist],
    {
      cwd: root,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, API_KEY: "", FORCE_COLOR: "0" },
    },
  );
  let out = "";
  child.stdout?.on("data", (d) => {
    out += String(d);
  });
  child.stderr?.on("data", (d) => {
    out += String(d);
  });
  return { child, output: () => out };
}

/** Every process below `pid` now (Linux /proc). */
function descendants(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const p of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, "utf8");
      parent.set(Number(p), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    } catch {}
  }
  const out: number[] = [];
  const walk = (of: number) => {
    for (const [child, ppid] of parent)
      if (ppid === of) {
        out.push(child);
        walk(child);
      }
  };
  walk(pid);
  return out;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    // a zombie waiting for its reaper is gone for our purposes
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

function commandOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
  } catch {
    return "";
  }
}

async function listening(port: number): Promise<boolean> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(1_000) });
    await res.body?.cancel();
    return true;
  } catch {
    return false;
  }
}

afterAll(async () => {
  for (const pid of started)
    try {
      process.kill(pid, "SIGKILL");
    } catch {}
  for (const d of dirs) await rm(d, { recursive: true, force: true });
}, 30_000);

describe.skipIf(process.platform !== "linux")("npm start", () => {
  it("fails within 5 s when its port is taken, naming the port and the process holding it", async () => {
    const port = await freePort();
    const holder: Server = createServer();
    await new Promise<void>((r) => holder.listen(port, "127.0.0.1", () => r()));
    try {
      const dir = await mkdtemp(join(tmpdir(), "beit-start-"));
      dirs.push(dir);
      const t0 = Date.now();
      const { child, output } = npmStart(port, join(dir, "state"));
      if (child.pid) started.push(child.pid);
      const code = await new Promise<number | null>((r) => child.once("exit", (c) => r(c)));
      expect(Date.now() - t0).toBeLessThan(5_000);
      expect(code).toBe(1);
      expect(output()).toContain(
        `error[port-in-use]: Port ${port} on 127.0.0.1 is taken by process ${process.pid}`,
      );
      expect(output()).not.toMatch(/publishing|building/);
    } finally {
      await new Promise<void>((r) => holder.close(() => r()));
    }
  }, 30_000);

  it("leaves no wrangler or workerd behind and frees its port when killed with SIGKILL", async () => {
    const port = await freePort();
    const dir = await mkdtemp(join(tmpdir(), "beit-start-"));
    dirs.push(dir);
    const { child, output } = npmStart(port, join(dir, "state"));
    const npmPid = child.pid!;
    started.push(npmPid);
    const deadline = Date.now() + 240_000;
    while (!/Ready in \d+ s/.test(output())) {
      if (child.exitCode !== null) throw new Error(`npm start exited early:\n${output()}`);
      if (Date.now() > deadline) throw new Error(`npm start was not ready in 240 s:\n${output()}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(await listening(port)).toBe(true);
    const tree = descendants(npmPid);
    started.push(...tree);
    const workerds = tree.filter((p) => /\/workerd serve /.test(commandOf(p)));
    expect(workerds.length).toBeGreaterThanOrEqual(1);
    expect(tree.some((p) => /wrangler/.test(commandOf(p)))).toBe(true);

    const t0 = Date.now();
    process.kill(npmPid, "SIGKILL");
    let left = tree;
    let open = true;
    while (Date.now() - t0 < 10_000) {
      left = tree.filter(alive);
      open = await listening(port);
      if (left.length === 0 && !open) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(left.map((p) => `${p} ${commandOf(p).slice(0, 100)}`)).toEqual([]);
    expect(open).toBe(false);
    // the port can be listened on again
    const again = createServer();
    await new Promise<void>((r, j) => again.once("error", j).listen(port, "127.0.0.1", () => r()));
    await new Promise<void>((r) => again.close(() => r()));
  }, 300_000);
});
