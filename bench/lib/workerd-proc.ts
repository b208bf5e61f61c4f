/**
 * @module
 * The local workerd processes of a `wrangler dev` and their memory, read from Linux /proc.
 */
import { readdir, readFile } from "node:fs/promises";

/** The workerd processes in wrangler's process group. */
export async function workerdPids(pgid: number): Promise<number[]> {
  const out: number[] = [];
  for (const e of await readdir("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const st = await readFile(`/proc/${e}/stat`, "utf8");
      const comm = st.slice(st.indexOf("(") + 1, st.lastIndexOf(")"));
      const fields = st.slice(st.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[2]) === pgid && comm.includes("workerd")) out.push(Number(e));
    } catch {}
  }
  return out;
}

/** A process's resident set and its peak (VmHWM), in bytes. */
export async function memOf(pid: number): Promise<{ rss: number; hwm: number }> {
  const st = await readFile(`/proc/${pid}/status`, "utf8");
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(st)?.[1] ?? 0) * 1024;
  return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
}
