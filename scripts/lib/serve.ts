/**
 * @module
 * Runs the gateway and every stage Worker in one `wrangler dev` process (`-c gateway -c stage-0
 * -c stage-1 ...`: Workers started together get working service bindings between them) on local
 * R2 persisted in `persistTo`. Used by `npm start`, the e2e test and the service benchmarks.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";
import { join, resolve } from "node:path";
import { writeWranglerConfigs } from "./wrangler-configs.ts";

export interface ServeOptions {
  root: string;
  stages: number;
  persistTo: string;
  port?: number;
  /** Where the generated configs go (default <root>/.wrangler/generated). */
  configDir?: string;
  /** Extra gateway vars. */
  vars?: Record<string, string>;
  /** "inherit" shows wrangler's output; "pipe" keeps it for error messages. */
  stdio?: "inherit" | "pipe";
  /** How long to wait for readiness (ms, default 120000). */
  readyTimeoutMs?: number;
}

export interface RunningService {
  url: string;
  port: number;
  child: ChildProcess;
  /** Output so far (only with stdio "pipe"). */
  output(): string;
  stop(): Promise<void>;
}

/** A free TCP port on 127.0.0.1. */
export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", rej);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => res(port));
    });
  });
}

/** Starts wrangler dev and resolves once GET /healthz answers 200. */
export async function serveLocal(opts: ServeOptions): Promise<RunningService> {
  const root = resolve(opts.root);
  const port = opts.port ?? 8787;
  const configs = await writeWranglerConfigs({
    root,
    outDir: opts.configDir ?? join(root, ".wrangler/generated"),
    stages: opts.stages,
    vars: opts.vars,
  });
  const args = [
    join(root, "node_modules/wrangler/bin/wrangler.js"),
    "dev",
    "-c",
    configs.gateway,
    ...configs.stages.flatMap((c) => ["-c", c]),
    "--port",
    String(port),
    "--ip",
    "127.0.0.1",
    "--persist-to",
    resolve(opts.persistTo),
    "--inspector-port",
    String(await freePort()),
    "--show-interactive-dev-session=false",
  ];
  let out = "";
  const child = spawn(process.execPath, args, {
    cwd: root,
    stdio: opts.stdio === "inherit" ? "inherit" : ["ignore", "pipe", "pipe"],
    detached: true,
    env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "1" },
  });
  child.stdout?.on("data", (d) => {
    out += String(d);
  });
  child.stderr?.on("data", (d) => {
    out += String(d);
  });
  let exited = false;
  child.on("exit", () => {
    exited = true;
  });
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (exited || child.pid === undefined) return;
    const gone = new Promise<void>((r) => child.once("exit", () => r()));
    try {
      process.kill(-child.pid, "SIGTERM");
    } catch {
      return;
    }
    const t = setTimeout(() => {
      try {
        if (!exited && child.pid) process.kill(-child.pid, "SIGKILL");
      } catch {}
    }, 5_000);
    await gone;
    clearTimeout(t);
  };
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 120_000);
  for (;;) {
    if (exited) throw new Error(`wrangler dev exited before it was ready.\n${out.slice(-4000)}`);
    if (Date.now() > deadline) {
      await stop();
      throw new Error(
        `wrangler dev was not ready within ${opts.readyTimeoutMs ?? 120_000} ms.\n${out.slice(-4000)}`,
      );
    }
    try {
      const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(5_000) });
      if (res.status === 200) break;
      await res.body?.cancel();
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  return { url, port, child, output: () => out, stop };
}
