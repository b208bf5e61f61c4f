/**
 * @module
 * Runs the gateway and every stage Worker in one `wrangler dev` process (`-c gateway -c stage-0
 * -c stage-1 ...`: Workers started together get working service bindings between them) on local
 * R2 persisted in `persistTo`. Used by `npm start`, the e2e test and the service benchmarks.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import { promisify } from "node:util";
import { WORKERS } from "../../src/topology.ts";
import { applyLocalMigrations } from "./d1-migrations.ts";
import { writeDevVars } from "./dev-secrets.ts";
import { type CronTicker, startCronTicker, triggerScheduled } from "./local-crons.ts";
import { startGuard } from "./process-guard.ts";
import { localV8Flags, workerdWrapper } from "./workerd-wrapper.ts";
import { type GeneratedConfigs, writeWranglerConfigs } from "./wrangler-configs.ts";

export interface ServeOptions {
  root: string;
  stages: number;
  persistTo: string;
  port?: number;
  /** Where the generated configs go (default <root>/.wrangler/generated). */
  configDir?: string;
  /**
   * Extra gateway vars. ALLOW_LOOPBACK_FETCH defaults to "true" here (local development: URL inputs
   * may name http://localhost:...) unless the caller's environment says ALLOW_LOOPBACK_FETCH=false.
   */
  vars?: Record<string, string>;
  /** Extra vars (or local secrets) by Worker kind: { jobs: { WEBHOOK_RETRY_SCHEDULE: "1s" } }. */
  varsByKind?: Record<string, Record<string, string>>;
  /**
   * Secrets for the local Workers (from scripts/lib/dev-secrets.ts), written as `.dev.vars` beside
   * the generated configs, where wrangler dev reads them; none removes that file.
   */
  secrets?: Record<string, string>;
  /**
   * "inherit" shows wrangler's output as is; "quiet" shows it without the start-up noise that
   * {@link wranglerNoiseFilter} names (and keeps it all for error messages); "pipe" only keeps it.
   */
  stdio?: "inherit" | "quiet" | "pipe";
  /** How long to wait for readiness (ms, default 120000). */
  readyTimeoutMs?: number;
  /**
   * The route polled until it answers 200 (default "/healthz"). `/healthz` warms every stage
   * before it answers, so the first request after it meets warm isolates; a route that touches no
   * stage (`/openapi.json`) leaves them cold, for benchmarks of a real cold start.
   */
  readyPath?: string;
  /**
   * Serve bundles built once up front (`wrangler deploy --dry-run`) with `--no-bundle` semantics,
   * so that edits to src/ during a test or benchmark cannot make wrangler reload the Workers
   * mid-request. `npm start` leaves this off to keep live reload.
   */
  prebundle?: boolean;
  /**
   * Fire the Workers' Cron Triggers (src/topology.ts `crons`) on their schedules, as Cloudflare
   * would (wrangler dev does not; scripts/lib/local-crons.ts). `npm start` turns it on; tests call
   * {@link RunningService.scheduled} when they want a tick.
   */
  runCrons?: boolean;
  /**
   * Pids whose end ends the server (scripts/lib/process-guard.ts): default this process; `npm
   * start` adds the processes that launched it (npm, sh, tsx), so that wrangler dev and workerd
   * never outlive `npm start`, even when it is killed with SIGKILL.
   */
  guardPids?: number[];
}

export interface RunningService {
  url: string;
  port: number;
  child: ChildProcess;
  /**
   * The user runtime's own entry (behind wrangler's proxy at {@link url}): where
   * `/cdn-cgi/handler/scheduled` with `MF-Route-Override: <worker>` reaches that Worker.
   */
  userEntryUrl: string;
  /** Output so far (only with stdio "pipe"). */
  output(): string;
  /**
   * Runs the scheduled() handler of every Worker with crons (of `kind` only, if given) once now,
   * once per cron, exactly as the cron ticker does; rejects when one does not return ok.
   */
  scheduled(kind?: string): Promise<void>;
  stop(): Promise<void>;
}

/**
 * A line filter for wrangler dev's output that drops start-up lines a user cannot act on, all of
 * them explained by `npm start`'s own banner instead:
 * - the binding tables, printed per Worker as it is configured: the gateway's lists every
 *   `env.STAGE_i` as `[not connected]` because the stage Workers of the same process start after
 *   it (they connect once all are up, which is when `serveLocal` returns), and the paragraph
 *   explaining that status;
 * - the version header (with its update notice), "Starting local server...", "Ready on ..."
 *   (the banner prints the URL), and "Using secrets defined in ..." (the banner says whether auth
 *   is on);
 * - with `cronsFired`, the warning that "Scheduled Workers are not automatically triggered" and
 *   its curl hint: serveLocal fires them itself when `runCrons` is set (the banner says so).
 * Until `ready()` is called it also drops blank lines and the readiness probe's `GET /healthz` logs
 * (wrangler's and the gateway's own JSON line);
 * everything else (request logs, warnings, errors) passes.
 */
export function wranglerNoiseFilter(opts: { cronsFired?: boolean } = {}): {
  keep: (line: string) => boolean;
  ready: () => void;
} {
  let inTable = false;
  let inCronWarning = false;
  let inFetchError = false;
  let ready = false;
  const keep = (raw: string) => {
    const line = raw.replace(/\x1b\[[0-9;]*m/g, "").trimEnd();
    // workerd's own report of an outbound connection that failed (a URL input whose host does not
    // resolve or refuses): a red ERROR line and a native stack. It is the user's error, already
    // answered as problem+json (400 url-unreachable) and logged as that request's one line.
    if (OUTBOUND_FAILURE.test(line)) {
      inFetchError = true;
      return false;
    }
    if (inFetchError) {
      if (line === "" || /^\s/.test(line)) return false;
      inFetchError = false;
    }
    // The warning, then a blank line and its indented lines ("To manually trigger ...", the curl
    // command, "For more details, see ...").
    if (opts.cronsFired && /Scheduled Workers are not automatically triggered/.test(line)) {
      inCronWarning = true;
      return false;
    }
    if (inCronWarning) {
      if (line === "" || /^\s/.test(line)) return false;
      inCronWarning = false;
    }
    if (inTable) {
      if (line === "") inTable = false;
      return false;
    }
    if (ready) return true;
    // Before the service is ready: no blank lines and no log lines of the readiness probe.
    if (line === "" || /\[wrangler:info\] GET \/healthz /.test(line) || /"route":"\/healthz"/.test(line))
      return false;
    if (/has access to the following bindings:$/.test(line)) {
      inTable = true;
      return false;
    }
    return !(
      /^No bindings found\.?$/.test(line) ||
      /^Service bindings, Durable Object bindings, and Tail consumers connect/.test(line) ||
      /^\s*⛅️ wrangler \d/.test(line) ||
      /^─+$/.test(line) ||
      /^⎔ Starting local server/.test(line) ||
      /\[wrangler:info\] Ready on /.test(line) ||
      /^Using secrets defined in /.test(line)
    );
  };
  return {
    keep,
    ready: () => {
      ready = true;
    },
  };
}

/**
 * workerd's log line for an outbound connection that failed at the network level, e.g.
 * `✘ [ERROR] e = kj/async-io-unix.c++:1298: failed: DNS lookup failed.; params.host = example.com`.
 */
const OUTBOUND_FAILURE =
  /\[ERROR\].*kj\/async-io[\w-]*\.c\+\+:\d+: (?:failed|disconnected): (?:DNS lookup failed|connect\(|.*(?:Connection refused|Network is unreachable|No route to host|timed out))/;

/** Pipes `from` to `to` line by line, keeping only the lines `keep` accepts. */
function pipeLines(from: NodeJS.ReadableStream, to: NodeJS.WritableStream, keep: (l: string) => boolean) {
  let rest = "";
  from.on("data", (d) => {
    const lines = (rest + String(d)).split("\n");
    rest = lines.pop() ?? "";
    for (const l of lines) if (keep(l)) to.write(`${l}\n`);
  });
  from.on("end", () => {
    if (rest && keep(rest)) to.write(`${rest}\n`);
  });
}

/**
 * ALLOW_LOOPBACK_FETCH for a local serve: "true" unless `env.ALLOW_LOOPBACK_FETCH` is "false"
 * (or anything but "true"/unset, which is taken as a wish to refuse).
 */
export function localLoopbackFetch(env: Record<string, string | undefined>): "true" | "false" {
  const v = env.ALLOW_LOOPBACK_FETCH?.trim().toLowerCase();
  return v === undefined || v === "" || v === "true" || v === "1" ? "true" : "false";
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

/**
 * Bundles each Worker kind's code once and points every config at its bundle
 * (`no_bundle`, wasm modules found next to it).
 */
async function usePrebuiltBundles(root: string, configDir: string, configs: GeneratedConfigs): Promise<void> {
  const wrangler = join(root, "node_modules/wrangler/bin/wrangler.js");
  const build = async (config: string, out: string) => {
    await promisify(execFile)(
      process.execPath,
      [wrangler, "deploy", "--dry-run", "--outdir", out, "-c", config],
      {
        cwd: root,
        env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "1" },
        maxBuffer: 16 * 1024 * 1024,
      },
    );
    const js = (await readdir(out)).find((f) => f.endsWith(".js"));
    if (!js) throw new Error(`wrangler produced no bundle for ${config}`);
    return join(out, js);
  };
  // One bundle per Worker kind (the per-stage Workers share theirs).
  const firstOfKind = new Map<string, string>();
  for (const w of configs.workers) if (!firstOfKind.has(w.kind)) firstOfKind.set(w.kind, w.path);
  const mains = new Map(
    await Promise.all(
      [...firstOfKind].map(
        async ([kind, path]) => [kind, await build(path, join(configDir, `bundle-${kind}`))] as const,
      ),
    ),
  );
  for (const [path, main] of configs.workers.map((w) => [w.path, mains.get(w.kind)!] as const)) {
    const cfg = JSON.parse(await readFile(path, "utf8")) as Record<string, unknown>;
    Object.assign(cfg, { main, no_bundle: true, find_additional_modules: true, base_dir: dirname(main) });
    await writeFile(path, `${JSON.stringify(cfg, null, 2)}\n`);
  }
}

/** Starts wrangler dev and resolves once GET /healthz (or `readyPath`) answers 200. */
export async function serveLocal(opts: ServeOptions): Promise<RunningService> {
  const root = resolve(opts.root);
  const port = opts.port ?? 8787;
  const configDir = opts.configDir ?? join(root, ".wrangler/generated");
  const loopback = localLoopbackFetch(process.env);
  const configs = await writeWranglerConfigs({
    root,
    outDir: configDir,
    stages: opts.stages,
    vars: { ALLOW_LOOPBACK_FETCH: loopback, ...opts.vars },
    // The jobs Worker posts webhooks through the same outbound policy as the gateway's URL inputs.
    varsByKind: {
      ...opts.varsByKind,
      jobs: { ALLOW_LOOPBACK_FETCH: loopback, ...opts.varsByKind?.jobs },
    },
  });
  await writeDevVars(configDir, opts.secrets ?? {});
  if (opts.prebundle) await usePrebuiltBundles(root, configDir, configs);
  // D1 schema (migrations/) into the same local state wrangler dev serves; only new files apply.
  await applyLocalMigrations(
    root,
    configs.workers.map((w) => w.path),
    resolve(opts.persistTo),
  );
  const args = [
    join(root, "node_modules/wrangler/bin/wrangler.js"),
    "dev",
    "-c",
    configs.gateway,
    ...configs.workers.filter((w) => w.path !== configs.gateway).flatMap((w) => ["-c", w.path]),
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
  // workerd through scripts/lib/workerd-wrapper.ts: with --single-threaded-gc (without it the whole
  // local runtime could livelock on a 2-core machine: LOCAL_V8_FLAGS in workerd-wrapper.ts),
  // and the user runtime's entry on a known port (the only place crons can be routed by Worker).
  const userEntryPort = await freePort();
  const workerdEnv = await workerdWrapper(configDir, root, {
    v8Flags: localV8Flags(process.env),
    userEntryPort,
  });
  let out = "";
  const child = spawn(process.execPath, args, {
    cwd: root,
    stdio: opts.stdio === "inherit" ? "inherit" : ["ignore", "pipe", "pipe"],
    detached: true,
    env: {
      ...process.env,
      WRANGLER_SEND_METRICS: "false",
      CI: "1",
      // miniflare would fetch a `Request.cf` sample from the network and print a stack trace when
      // it cannot; the offline placeholder is what it falls back to anyway.
      CLOUDFLARE_CF_FETCH_ENABLED: process.env.CLOUDFLARE_CF_FETCH_ENABLED ?? "false",
      ...workerdEnv,
    },
  });
  const filter = wranglerNoiseFilter({ cronsFired: opts.runCrons });
  if (opts.stdio === "quiet" && child.stdout && child.stderr) {
    pipeLines(child.stdout, process.stdout, filter.keep);
    pipeLines(child.stderr, process.stderr, filter.keep);
  }
  child.stdout?.on("data", (d) => {
    out += String(d);
  });
  child.stderr?.on("data", (d) => {
    out += String(d);
  });
  let exited = false;
  // wrangler runs in its own process group; never leave it behind if this process goes away:
  // on a normal exit here, and through the guard process when this one (or its launcher) is killed.
  if (child.pid !== undefined) startGuard(child.pid, opts.guardPids ?? [process.pid]);
  const killOnExit = () => {
    try {
      if (!exited && child.pid) process.kill(-child.pid, "SIGTERM");
    } catch {}
  };
  process.once("exit", killOnExit);
  let exitedHow = "";
  child.on("exit", (code, signal) => {
    exitedHow = signal ? `killed by ${signal}` : `exit code ${code}`;
    exited = true;
    process.removeListener("exit", killOnExit);
  });
  const url = `http://127.0.0.1:${port}`;
  // The Workers with Cron Triggers, by name (wrangler dev routes /cdn-cgi/handler/scheduled by it).
  const cronWorkers = configs.workers.flatMap((w) => {
    const crons = WORKERS.find((s) => s.kind === w.kind)?.crons ?? [];
    return crons.length > 0 ? [{ kind: w.kind, name: w.name, crons }] : [];
  });
  const userEntryUrl = `http://127.0.0.1:${userEntryPort}`;
  const scheduled = async (kind?: string) => {
    for (const w of cronWorkers.filter((c) => kind === undefined || c.kind === kind))
      for (const cron of w.crons) await triggerScheduled(userEntryUrl, w.name, cron);
  };
  let ticker: CronTicker | null = null;
  const stop = async () => {
    ticker?.stop();
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
    if (exited)
      throw new Error(`wrangler dev exited before it was ready (${exitedHow}).\n${out.slice(-4000)}`);
    if (Date.now() > deadline) {
      await stop();
      throw new Error(
        `wrangler dev was not ready within ${opts.readyTimeoutMs ?? 120_000} ms.\n${out.slice(-4000)}`,
      );
    }
    try {
      const res = await fetch(`${url}${opts.readyPath ?? "/healthz"}`, {
        signal: AbortSignal.timeout(5_000),
      });
      if (res.status === 200) break;
      await res.body?.cancel();
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  // The probe's own log line may still be in the pipe: let it through the filter first.
  setTimeout(filter.ready, 500).unref();
  if (opts.runCrons)
    ticker = startCronTicker({
      url: userEntryUrl,
      workers: cronWorkers,
      onError: (worker, cron, e) =>
        process.stderr.write(
          `beit-edge: the "${cron}" cron of ${worker} failed: ${e instanceof Error ? e.message : String(e)}\n`,
        ),
    });
  return { url, port, userEntryUrl, child, output: () => out, scheduled, stop };
}
