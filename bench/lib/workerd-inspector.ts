/**
 * @module
 * workerd's own inspector (not wrangler's proxy, which shows only one Worker): found as the
 * listening port of the `workerd serve ... --inspector-addr` process under a `wrangler dev`, whose
 * `/json/list` names every isolate (`core:user:beit-edge-stage-0`, ...). Over one WebSocket per
 * isolate it takes V8 CPU profiles (`Profiler.start/stop`) and summarises them: self time of ORT's
 * wasm (per function, no name section: `wasm-function[N]`), JavaScript, GC and V8's own work.
 *
 * Local only: production Workers have no inspector. Node 20 needs `--experimental-websocket`.
 */
import { execFile } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import { promisify } from "node:util";

/** PIDs of `root` and all its descendants (from /proc). */
async function descendants(root: number): Promise<number[]> {
  const parent = new Map<number, number>();
  for (const d of await readdir("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    const stat = await readFile(`/proc/${d}/stat`, "utf8").catch(() => "");
    const m = /\) \S+ (\d+)/.exec(stat);
    if (m) parent.set(Number(d), Number(m[1]));
  }
  const out = [root];
  for (let i = 0; i < out.length; i++)
    for (const [pid, pp] of parent) if (pp === out[i] && !out.includes(pid)) out.push(pid);
  return out;
}

/**
 * The inspector port of the workerd runtime started by the `wrangler dev` whose pid is `wranglerPid`
 * (polls until the isolates show up, up to `timeoutMs`).
 */
export async function findWorkerdInspector(wranglerPid: number, timeoutMs = 30_000): Promise<number> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    for (const pid of await descendants(wranglerPid)) {
      const cmd = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
      if (!cmd.includes("workerd") || !cmd.includes("--inspector-addr")) continue;
      const { stdout } = await promisify(execFile)("ss", ["-ltnpH"]);
      const ports = stdout
        .split("\n")
        .filter((l) => l.includes(`pid=${pid},`))
        .map((l) => Number(/:(\d+)\s/.exec(l)?.[1]))
        .filter((p) => p > 0);
      for (const port of ports) {
        const list = await fetch(`http://127.0.0.1:${port}/json/list`, { signal: AbortSignal.timeout(2_000) })
          .then((r) => (r.ok ? r.json() : null))
          .catch(() => null);
        if (Array.isArray(list) && list.some((t: { id?: string }) => t.id?.startsWith("core:user:")))
          return port;
      }
    }
    if (Date.now() > end) throw new Error(`no workerd inspector found under pid ${wranglerPid}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

interface CallFrame {
  functionName: string;
  url: string;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
/** A V8 CPU profile (Profiler.stop's `profile`). */
export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** One CDP session on one isolate. */
export class IsolateInspector {
  readonly #ws: WebSocket;
  #next = 1;
  readonly #pending = new Map<number, { res: (v: unknown) => void; rej: (e: Error) => void }>();

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.addEventListener("message", (ev) => {
      const msg = JSON.parse(String(ev.data)) as {
        id?: number;
        result?: unknown;
        error?: { message: string };
      };
      const p = msg.id === undefined ? undefined : this.#pending.get(msg.id);
      if (!p) return;
      this.#pending.delete(msg.id as number);
      if (msg.error) p.rej(new Error(msg.error.message));
      else p.res(msg.result);
    });
  }

  static async connect(port: number, id: string): Promise<IsolateInspector> {
    if (typeof WebSocket === "undefined")
      throw new Error("WebSocket is missing: run Node 20 with --experimental-websocket");
    const ws = new WebSocket(`ws://127.0.0.1:${port}/${id}`);
    await new Promise<void>((res, rej) => {
      ws.addEventListener("open", () => res(), { once: true });
      ws.addEventListener("error", () => rej(new Error(`inspector ${id} on ${port}: connection failed`)), {
        once: true,
      });
    });
    return new IsolateInspector(ws);
  }

  send<T = unknown>(method: string, params: Record<string, unknown> = {}): Promise<T> {
    const id = this.#next++;
    return new Promise<T>((res, rej) => {
      this.#pending.set(id, { res: res as (v: unknown) => void, rej });
      this.#ws.send(JSON.stringify({ id, method, params }));
    });
  }

  /** Starts sampling every `intervalUs` microseconds. */
  async startProfile(intervalUs = 500): Promise<void> {
    await this.send("Profiler.enable");
    await this.send("Profiler.setSamplingInterval", { interval: intervalUs });
    await this.send("Profiler.start");
  }

  async stopProfile(): Promise<CpuProfile> {
    const { profile } = await this.send<{ profile: CpuProfile }>("Profiler.stop");
    return profile;
  }

  close(): void {
    this.#ws.close();
  }
}

/** Where the sampled time of a profile went (ms of self time). */
export interface ProfileSummary {
  /** Wall time the profile covers. */
  totalMs: number;
  /** ORT's wasm code. */
  wasmMs: number;
  /** JavaScript (ORT's glue, our code, the runtime's JS). */
  jsMs: number;
  /** Garbage collection. */
  gcMs: number;
  /** V8 itself with no JS or wasm frame on top: compilation, runtime calls ("(program)"). */
  programMs: number;
  /** The thread waited (I/O, or other isolates ran). */
  idleMs: number;
  /** Self time per wasm function (`wasm-function[N]`), largest first. */
  wasmFunctions: { name: string; ms: number }[];
  /** Self time per JS function (name and URL), largest first. */
  jsFunctions: { name: string; ms: number }[];
}

/** Sums a profile's self time by kind of code (samples x their time deltas). */
export function summarizeProfile(p: CpuProfile): ProfileSummary {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const s: ProfileSummary = {
    totalMs: (p.endTime - p.startTime) / 1000,
    wasmMs: 0,
    jsMs: 0,
    gcMs: 0,
    programMs: 0,
    idleMs: 0,
    wasmFunctions: [],
    jsFunctions: [],
  };
  const perFn = new Map<string, number>();
  const perJs = new Map<string, number>();
  for (let i = 0; i < p.samples.length; i++) {
    // A sample's delta is the time since the previous one; the next delta belongs to this sample.
    const ms = (p.timeDeltas[i + 1] ?? 0) / 1000;
    const f = byId.get(p.samples[i])?.callFrame;
    const name = f?.functionName ?? "";
    if (f?.url.startsWith("wasm://") || /^(\$|wasm-function)/.test(name)) {
      s.wasmMs += ms;
      perFn.set(name, (perFn.get(name) ?? 0) + ms);
    } else if (name === "(garbage collector)") s.gcMs += ms;
    else if (name === "(idle)") s.idleMs += ms;
    else if (name === "(program)" || name === "(root)") s.programMs += ms;
    else {
      s.jsMs += ms;
      const key = `${name || "(anonymous)"} ${f?.url.split("/").at(-1) ?? ""}`;
      perJs.set(key, (perJs.get(key) ?? 0) + ms);
    }
  }
  s.jsFunctions = [...perJs].map(([name, ms]) => ({ name, ms })).sort((a, b) => b.ms - a.ms);
  s.wasmFunctions = [...perFn].map(([name, ms]) => ({ name, ms })).sort((a, b) => b.ms - a.ms);
  return s;
}
