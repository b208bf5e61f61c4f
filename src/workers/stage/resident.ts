/**
 * @module
 * The stage isolate's session lifecycle, apart from ORT and R2 so that it can be tested in Node:
 * at most one resident session, for one (version, stage). A call for the resident key shares its
 * load (started once, by the first caller); a call for another key waits until runs on the
 * resident session have finished, releases it, then loads the requested one. Wasm memory never
 * shrinks, so two sessions are never resident at once: the isolate's peak stays one stage's.
 * A failed load is forgotten, so the next call tries again (no poisoned state).
 */
import type { KeepAlive } from "../../shards/store.ts";

/** What a load produces: anything that can be released. */
export interface Releasable {
  release(): Promise<void>;
}

interface Resident<L> {
  key: string;
  version: string;
  stage: number;
  promise: Promise<L>;
  loaded: boolean;
  failed: boolean;
  reported: boolean;
  busy: number;
  /** Resolvers of callers waiting for `busy` to reach 0 (each wait gets a fresh promise). */
  waiters: (() => void)[];
}

export interface ResidentView {
  version: string | null;
  stage: number | null;
  loaded: boolean;
}

/**
 * Waits for `p`, which another request settles, while this request keeps a timer of its own
 * pending. workerd cancels a request as hung ("the Workers runtime canceled this request because it
 * detected that your Worker's code had hung") when it waits only on promises that other requests'
 * I/O or timers will settle: seen when a swap waited for a run that was on a zero-delay timer
 * (test/model-versions.workerd.test.ts, 8 concurrent requests across a version swap, 1 in 3 runs).
 */
export async function awaitHoldingATimer(p: Promise<void>, everyMs = 20): Promise<void> {
  let settled = false;
  const done = () => {
    settled = true;
  };
  p.then(done, done);
  while (!settled) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([p, new Promise<void>((r) => (timer = setTimeout(r, everyMs)))]);
    clearTimeout(timer);
  }
  return p;
}

export class ResidentSession<L extends Releasable> {
  #resident: Resident<L> | null = null;

  /** What is resident now (for GET /status; no loading). */
  view(): ResidentView {
    const r = this.#resident;
    return { version: r?.version ?? null, stage: r?.stage ?? null, loaded: r?.loaded ?? false };
  }

  /**
   * Pins the session of (version, stage) for the duration of `fn`, loading it with `load` if
   * needed. `fresh`
   * is true for the first call to see a load (it reports the load's time; later calls report it as
   * in memory). A load is shared by every call that wants it, so it is tied to the starting
   * invocation with `keepAlive` (waitUntil): were that request cancelled mid-load, its I/O would
   * never settle in workerd and every later request would hang on it.
   */
  async with<T>(
    version: string,
    stage: number,
    load: () => Promise<L>,
    keepAlive: KeepAlive,
    fn: (loaded: L, fresh: boolean) => Promise<T>,
  ): Promise<T> {
    const key = `${version}/${stage}`;
    for (;;) {
      const r = this.#resident;
      if (r && r.key === key) {
        r.busy++;
        try {
          const loaded = await r.promise;
          const fresh = !r.reported;
          r.reported = true;
          return await fn(loaded, fresh);
        } catch (e) {
          if (this.#resident === r && r.failed) this.#resident = null;
          throw e;
        } finally {
          r.busy--;
          if (r.busy === 0) for (const wake of r.waiters.splice(0)) wake();
        }
      }
      if (r && r.busy > 0) {
        await awaitHoldingATimer(new Promise<void>((wake) => r.waiters.push(wake)));
        continue;
      }
      if (r) {
        this.#resident = null;
        const old = await r.promise.catch(() => null);
        await old?.release().catch(() => undefined);
      }
      // Another caller may have installed a resident while this one released the old session.
      if (this.#resident) continue;
      const next: Resident<L> = {
        key,
        version,
        stage,
        promise: load(),
        loaded: false,
        failed: false,
        reported: false,
        busy: 0,
        waiters: [],
      };
      next.promise.then(
        () => {
          next.loaded = true;
        },
        () => {
          next.failed = true;
        },
      );
      keepAlive(next.promise.catch(() => undefined));
      this.#resident = next;
    }
  }
}
