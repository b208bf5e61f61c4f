/**
 * @module
 * Keeps the local server from outliving whoever started it, and finds out who holds a port.
 *
 * - {@link startGuard}: a small detached process that watches a list of pids (this process and
 *   the ones that launched it: `npm`, its `sh -c`, `tsx`) and ends a process group (wrangler dev
 *   and the workerd processes it starts) as soon as one of them is gone, however it ended: SIGKILL
 *   of `npm start`, a closed terminal, a test harness killing its child. wrangler runs in its own
 *   process group so that Ctrl-C reaches it once, through `npm start`; without the guard a SIGKILL
 *   of `npm start` left wrangler and workerd serving the old configuration on the old port.
 * - {@link launcherPids}: the pids that launched this process through npm (Linux /proc; elsewhere
 *   just the parent).
 * - {@link portHolder} / {@link checkPortFree}: whether a TCP port can be listened on, and which
 *   process listens there (Linux /proc), so `npm start` can fail in a second naming it.
 */
import { spawn } from "node:child_process";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { createServer } from "node:net";

/**
 * The guard's own code, run with `node -e` (no tsx: it starts in ~50 ms). argv: the process group
 * to end, then the pids to watch. It polls every 200 ms; when a watched pid is gone it sends
 * SIGTERM to the group and SIGKILL 3 s later if anything is left; it exits by itself once the
 * group is gone.
 */
const GUARD_SOURCE = `
const [pgid, ...watch] = process.argv.slice(1).map(Number);
const alive = (pid) => { try { process.kill(pid, 0); return true; } catch (e) { return e.code === "EPERM"; } };
const kill = (sig) => { try { process.kill(-pgid, sig); } catch {} };
const timer = setInterval(() => {
  if (!alive(-pgid)) process.exit(0);
  if (watch.every(alive)) return;
  clearInterval(timer);
  kill("SIGTERM");
  const t0 = Date.now();
  const check = setInterval(() => {
    if (!alive(-pgid)) process.exit(0);
    if (Date.now() - t0 > 3000) { kill("SIGKILL"); process.exit(0); }
  }, 100);
}, 200);
`;

/**
 * Starts the guard for process group `pgid` (a child spawned with `detached: true` leads its own
 * group), watching `watch` (default: this process). The guard is detached too, so that a signal
 * to our own process group cannot take it down with us; it does not keep this process alive.
 *
 * @returns the guard's pid.
 * @example
 * const child = spawn(cmd, args, { detached: true });
 * startGuard(child.pid!, [process.pid, ...launcherPids()]);
 */
export function startGuard(pgid: number, watch: number[] = [process.pid]): number | undefined {
  const guard = spawn(process.execPath, ["-e", GUARD_SOURCE, String(pgid), ...watch.map(String)], {
    detached: true,
    stdio: "ignore",
  });
  guard.unref();
  return guard.pid;
}

function procStat(pid: number): { ppid: number } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // pid (comm) state ppid ...; comm may hold spaces and parentheses
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return { ppid: Number(fields[1]) };
  } catch {
    return null;
  }
}

function hasNpmLifecycle(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/environ`, "latin1")
      .split("\0")
      .some((v) => v.startsWith("npm_lifecycle_event="));
  } catch {
    return false;
  }
}

/**
 * The processes that launched this one: the parent, and further up as long as the process below
 * was started by an npm script (its environment has `npm_lifecycle_event`). Under `npm start`
 * that is tsx, `sh -c`, and npm itself: npm's own environment has no lifecycle variable, so the
 * walk stops above it. Without /proc it is the parent alone.
 */
export function launcherPids(): number[] {
  const pids = [process.ppid];
  let pid = process.ppid;
  while (pids.length < 8 && hasNpmLifecycle(pid)) {
    const ppid = procStat(pid)?.ppid;
    if (!ppid || ppid <= 1) break;
    pids.push(ppid);
    pid = ppid;
  }
  return pids;
}

/** The listening socket's inode for `port` in /proc/net/tcp or tcp6, if any. */
function listeningInodes(port: number): Set<string> {
  const inodes = new Set<string>();
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      // sl local_address rem_address st ... inode (field 9)
      if (f.length > 9 && f[1].endsWith(`:${hexPort}`) && f[3] === "0A") inodes.add(f[9]);
    }
  }
  return inodes;
}

/** What listens on `port` (Linux: from /proc), as `{ pid, command }`, or null when unknown. */
export function portHolder(port: number): { pid: number; command: string } | null {
  const inodes = listeningInodes(port);
  if (inodes.size === 0) return null;
  let pids: string[];
  try {
    pids = readdirSync("/proc").filter((p) => /^\d+$/.test(p));
  } catch {
    return null;
  }
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      let target: string;
      try {
        target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      const m = /^socket:\[(\d+)\]$/.exec(target);
      if (m && inodes.has(m[1])) {
        let command = "";
        try {
          command = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean).join(" ");
        } catch {}
        return { pid: Number(pid), command };
      }
    }
  }
  return null;
}

function canListen(port: number, host: string): Promise<"free" | "taken" | "no-address"> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once("error", (e: NodeJS.ErrnoException) =>
      resolve(e.code === "EADDRINUSE" || e.code === "EACCES" ? "taken" : "no-address"),
    );
    srv.listen({ port, host, exclusive: true }, () => srv.close(() => resolve("free")));
  });
}

/**
 * Checks that `port` is free on 127.0.0.1 (where wrangler dev listens) and on ::1 (where
 * `localhost` may resolve first); resolves null when it is, else a message naming the port and,
 * where /proc tells, the process holding it.
 */
export async function checkPortFree(port: number): Promise<string | null> {
  for (const host of ["127.0.0.1", "::1"]) {
    if ((await canListen(port, host)) !== "taken") continue;
    const holder = portHolder(port);
    const who = holder
      ? `process ${holder.pid} (${holder.command.length > 120 ? `${holder.command.slice(0, 117)}...` : holder.command})`
      : "another process";
    const ours =
      holder && /workerd|wrangler/.test(holder.command) ? " It looks like an earlier local server." : "";
    return `Port ${port} on ${host} is taken by ${who}.${ours} Stop it${holder ? ` (kill ${holder.pid})` : ""}, or start on another port: npm start -- --port ${port + 1}.`;
  }
  return null;
}
