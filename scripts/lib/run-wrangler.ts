/**
 * @module
 * The one way the deploy scripts run wrangler: as a child process with its stdin closed (wrangler
 * never waits on a prompt: it sees end of input and, non-interactive, takes its defaults or fails),
 * and with a time limit, so a call that never returns (an API that answers unexpectedly, a stuck
 * upload) becomes an error naming the command instead of a deploy that hangs.
 *
 * The limit is `WRANGLER_TIMEOUT_MS` from the environment (default 300 s: long enough for a 14 MiB
 * stage Worker upload on a slow link, short enough that a hang is noticed).
 *
 * @example
 * const { stdout } = await runWrangler(["kv", "namespace", "list"], { root });
 */
import { execFile } from "node:child_process";
import { join } from "node:path";

/** Default time limit of one wrangler call. */
export const WRANGLER_TIMEOUT_MS = 300_000;

export interface RunWranglerOptions {
  /** Project root: wrangler runs there, from its node_modules. */
  root: string;
  /** Added to process.env (WRANGLER_SEND_METRICS=false is always set). */
  env?: NodeJS.ProcessEnv;
  /** Time limit in ms; default WRANGLER_TIMEOUT_MS from the environment, else 300 s. */
  timeoutMs?: number;
  /** The script to run instead of wrangler (tests). */
  bin?: string;
}

/** A wrangler call that failed: exit code or timeout, with what it printed. */
export class WranglerError extends Error {
  constructor(
    message: string,
    readonly command: string,
    readonly stdout: string,
    readonly stderr: string,
    readonly timedOut: boolean,
  ) {
    super(message);
    this.name = "WranglerError";
  }
}

/** The time limit the environment asks for (WRANGLER_TIMEOUT_MS), else the default. */
export function wranglerTimeoutMs(env: NodeJS.ProcessEnv = process.env): number {
  const n = Number(env.WRANGLER_TIMEOUT_MS);
  return Number.isFinite(n) && n > 0 ? n : WRANGLER_TIMEOUT_MS;
}

const tail = (s: string, n = 1500) => (s.length > n ? `...${s.slice(-n)}` : s);

/** Runs `wrangler ...args`; resolves with its output, rejects with a {@link WranglerError}. */
export function runWrangler(
  args: string[],
  o: RunWranglerOptions,
): Promise<{ stdout: string; stderr: string }> {
  const timeoutMs = o.timeoutMs ?? wranglerTimeoutMs();
  const bin = o.bin ?? join(o.root, "node_modules/wrangler/bin/wrangler.js");
  const command = `wrangler ${args.join(" ")}`;
  return new Promise((resolve, reject) => {
    const child = execFile(
      process.execPath,
      [bin, ...args],
      {
        cwd: o.root,
        env: { ...process.env, ...o.env, WRANGLER_SEND_METRICS: "false" },
        maxBuffer: 64 * 1024 * 1024,
        timeout: timeoutMs,
        killSignal: "SIGKILL",
      },
      (err, stdout, stderr) => {
        if (!err) return resolve({ stdout, stderr });
        const timedOut = (err as { killed?: boolean }).killed === true;
        const why = timedOut
          ? `did not finish within ${Math.round(timeoutMs / 1000)} s and was stopped (raise WRANGLER_TIMEOUT_MS if it is just slow; run it by hand with WRANGLER_LOG=debug to see the API call it waits on)`
          : `failed (exit ${(err as { code?: unknown }).code ?? "?"})`;
        reject(
          new WranglerError(
            `\`${command}\` ${why}:\n${tail(stderr || stdout)}`,
            command,
            stdout,
            stderr,
            timedOut,
          ),
        );
      },
    );
    // No prompt can ever wait for an answer.
    child.stdin?.end();
  });
}
