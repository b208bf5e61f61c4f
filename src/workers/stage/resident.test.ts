/**
 * The stage session lifecycle without ORT: one resident session, loads shared by concurrent
 * callers, a version swap that waits for in-flight runs and releases the old session before the
 * new one loads (never two alive), and a failed load that the next call retries.
 */
import { describe, expect, it } from "vitest";
import { ResidentSession } from "./resident.ts";

function tracker() {
  const log: string[] = [];
  let alive = 0;
  let maxAlive = 0;
  const loader =
    (name: string, fail = false) =>
    async () => {
      log.push(`load ${name}`);
      await new Promise((r) => setTimeout(r, 5));
      if (fail) throw new Error(`load ${name} failed`);
      alive++;
      maxAlive = Math.max(maxAlive, alive);
      return {
        name,
        async release() {
          alive--;
          log.push(`release ${name}`);
        },
      };
    };
  return { log, loader, maxAlive: () => maxAlive };
}

function gate() {
  let open!: () => void;
  const p = new Promise<void>((r) => {
    open = r;
  });
  return { p, open };
}

const noKeepAlive = () => undefined;

describe("ResidentSession", () => {
  it("shares one load between concurrent callers; only the first reports it as fresh", async () => {
    const t = tracker();
    const s = new ResidentSession<{ name: string; release(): Promise<void> }>();
    const kept: Promise<unknown>[] = [];
    const calls = [1, 2, 3].map(() =>
      s.with(
        "v1",
        0,
        t.loader("v1"),
        (p) => kept.push(p),
        async (l, fresh) => `${l.name}:${fresh}`,
      ),
    );
    expect((await Promise.all(calls)).sort()).toEqual(["v1:false", "v1:false", "v1:true"]);
    expect(t.log).toEqual(["load v1"]);
    expect(kept).toHaveLength(1);
    expect(s.view()).toEqual({ version: "v1", stage: 0, loaded: true });
  });

  it("swaps versions only after in-flight runs finish, releasing the old session first", async () => {
    const t = tracker();
    const s = new ResidentSession<{ name: string; release(): Promise<void> }>();
    const running = gate();
    const run = s.with("v1", 0, t.loader("v1"), noKeepAlive, async () => {
      t.log.push("run v1 start");
      await running.p;
      t.log.push("run v1 end");
    });
    await new Promise((r) => setTimeout(r, 20));
    const swap = s.with("v2", 0, t.loader("v2"), noKeepAlive, async (l) => l.name);
    await new Promise((r) => setTimeout(r, 20));
    expect(t.log).toEqual(["load v1", "run v1 start"]);
    running.open();
    await run;
    expect(await swap).toBe("v2");
    expect(t.log).toEqual(["load v1", "run v1 start", "run v1 end", "release v1", "load v2"]);
    expect(t.maxAlive()).toBe(1);
  });

  it("never leaves two sessions alive when two other versions are asked at once", async () => {
    const t = tracker();
    const s = new ResidentSession<{ name: string; release(): Promise<void> }>();
    await s.with("v1", 0, t.loader("v1"), noKeepAlive, async () => undefined);
    const [a, b] = await Promise.all([
      s.with("v2", 0, t.loader("v2"), noKeepAlive, async (l) => l.name),
      s.with("v3", 0, t.loader("v3"), noKeepAlive, async (l) => l.name),
    ]);
    expect([a, b]).toEqual(["v2", "v3"]);
    expect(t.maxAlive()).toBe(1);
  });

  it("forgets a failed load so that the next call loads again", async () => {
    const t = tracker();
    const s = new ResidentSession<{ name: string; release(): Promise<void> }>();
    await expect(s.with("v1", 1, t.loader("v1", true), noKeepAlive, async () => "x")).rejects.toThrow(
      /failed/,
    );
    expect(await s.with("v1", 1, t.loader("v1"), noKeepAlive, async (l, fresh) => `${l.name}:${fresh}`)).toBe(
      "v1:true",
    );
    expect(t.log).toEqual(["load v1", "load v1"]);
  });
});
