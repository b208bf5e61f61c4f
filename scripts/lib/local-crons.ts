/**
 * @module
 * Cron Triggers under `wrangler dev`, which does not fire them itself: a ticker that calls each
 * Worker's `scheduled()` handler on its topology cron schedule (src/topology.ts `crons`), through
 * the trigger wrangler dev always enables, `GET /cdn-cgi/handler/scheduled?cron=...&time=...`.
 * That path runs the first Worker of the process (the gateway) unless the request names another
 * with miniflare's `MF-Route-Override: <worker name>` header, which is how the jobs Worker's
 * sweeper is reached. The request must go to the user runtime's own entry socket
 * (`RunningService.userEntryUrl`): on wrangler dev's public port, its proxy Worker's runtime
 * reads (and drops) that header first and knows no such Worker (404 "No entrypoint worker found").
 * Used by `npm start` (scripts/lib/serve.ts `runCrons`) and the e2e test.
 *
 * Schedules are standard 5-field cron expressions in UTC, as Cloudflare reads them: minute, hour,
 * day of month, month, day of week (0-7, 0 and 7 = Sunday), each `*`, `N` or `A-B`, optionally
 * with a step `/S`, or a comma list of those; names (`MON`, `JAN`), `L`, `W` and `#` are refused.
 */

interface Field {
  min: number;
  max: number;
}

const FIELDS: Field[] = [
  { min: 0, max: 59 }, // minute
  { min: 0, max: 23 }, // hour
  { min: 1, max: 31 }, // day of month
  { min: 1, max: 12 }, // month
  { min: 0, max: 7 }, // day of week
];

/** A parsed cron expression: for each field, the set of values that match. */
export interface CronSchedule {
  expr: string;
  sets: Set<number>[];
  /** Whether day of month / day of week were restricted (not `*`): cron ORs them when both are. */
  domRestricted: boolean;
  dowRestricted: boolean;
}

function parseField(text: string, f: Field, expr: string): Set<number> {
  const out = new Set<number>();
  for (const part of text.split(",")) {
    const m = /^(\*|(\d+)(?:-(\d+))?)(?:\/(\d+))?$/.exec(part);
    if (!m) throw new Error(`cron "${expr}": "${part}" is not *, N, A-B or a step of them`);
    const step = m[4] === undefined ? 1 : Number(m[4]);
    let lo = f.min;
    let hi = f.max;
    if (m[1] !== "*") {
      lo = Number(m[2]);
      hi = m[3] === undefined ? (m[4] === undefined ? lo : f.max) : Number(m[3]);
    }
    if (step < 1 || lo < f.min || hi > f.max || lo > hi)
      throw new Error(`cron "${expr}": "${part}" is outside ${f.min}-${f.max}`);
    for (let v = lo; v <= hi; v += step) out.add(v);
  }
  return out;
}

/** Parses a 5-field cron expression; throws with the reason when it is not one. */
export function parseCron(expr: string): CronSchedule {
  const parts = expr.trim().split(/\s+/);
  if (parts.length !== 5) throw new Error(`cron "${expr}": expected 5 fields, got ${parts.length}`);
  const sets = parts.map((p, i) => parseField(p, FIELDS[i], expr));
  if (sets[4].has(7)) sets[4].add(0);
  return { expr, sets, domRestricted: parts[2] !== "*", dowRestricted: parts[4] !== "*" };
}

function matches(s: CronSchedule, d: Date): boolean {
  const [minute, hour, dom, month, dow] = s.sets;
  if (!minute.has(d.getUTCMinutes()) || !hour.has(d.getUTCHours()) || !month.has(d.getUTCMonth() + 1))
    return false;
  const domOk = dom.has(d.getUTCDate());
  const dowOk = dow.has(d.getUTCDay());
  if (s.domRestricted && s.dowRestricted) return domOk || dowOk;
  return domOk && dowOk;
}

/** The first minute strictly after `after` (UTC) that `schedule` matches. */
export function nextCronTime(schedule: CronSchedule, after: Date): Date {
  const t = new Date(after.getTime());
  t.setUTCSeconds(0, 0);
  // At most a few years of minutes; every valid schedule matches well within that.
  for (let i = 0; i < 60 * 24 * 366 * 5; i++) {
    t.setUTCMinutes(t.getUTCMinutes() + 1);
    if (matches(schedule, t)) return t;
  }
  throw new Error(`cron "${schedule.expr}" never matches`);
}

/** Calls `worker`'s scheduled() handler once, as the cron `cron` at `time`; throws unless it returned ok. */
export async function triggerScheduled(
  url: string,
  worker: string,
  cron: string,
  time = new Date(),
): Promise<void> {
  const q = new URLSearchParams({ cron, time: String(time.getTime()) });
  const res = await fetch(`${url}/cdn-cgi/handler/scheduled?${q}`, {
    headers: { "MF-Route-Override": worker },
    signal: AbortSignal.timeout(60_000),
  });
  const body = await res.text();
  if (res.status !== 200)
    throw new Error(`scheduled() of ${worker} answered ${res.status}: ${body.slice(0, 200)}`);
}

export interface CronTicker {
  stop(): void;
}

/**
 * Fires every (worker, cron) pair at its next matching minute, then again, until stopped. A
 * failed or slow call is reported to `onError` and does not stop the ticker; a tick whose previous
 * call is still running is skipped (Cloudflare does not overlap a cron's invocations either).
 */
export function startCronTicker(o: {
  url: string;
  workers: { name: string; crons: readonly string[] }[];
  onError?: (worker: string, cron: string, e: unknown) => void;
  now?: () => number;
}): CronTicker {
  const now = o.now ?? Date.now;
  const timers = new Set<ReturnType<typeof setTimeout>>();
  let stopped = false;
  for (const w of o.workers)
    for (const cron of w.crons) {
      const schedule = parseCron(cron);
      let running = false;
      const arm = () => {
        if (stopped) return;
        const at = nextCronTime(schedule, new Date(now()));
        const t = setTimeout(
          () => {
            timers.delete(t);
            if (!running) {
              running = true;
              triggerScheduled(o.url, w.name, cron, at)
                .catch((e) => o.onError?.(w.name, cron, e))
                .finally(() => {
                  running = false;
                });
            }
            arm();
          },
          Math.max(0, at.getTime() - now()),
        );
        t.unref();
        timers.add(t);
      };
      arm();
    }
  return {
    stop() {
      stopped = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
    },
  };
}
