import { describe, expect, it } from "vitest";
import { serialize } from "./serialize.ts";

const tick = () => new Promise((r) => setTimeout(r, 1));

describe("serialize", () => {
  it("never runs two tasks at once and keeps arrival order", async () => {
    const exclusive = serialize();
    let running = 0;
    let most = 0;
    const order: number[] = [];
    const task = (i: number) => async () => {
      running++;
      most = Math.max(most, running);
      await tick();
      await tick();
      order.push(i);
      running--;
      return i * 10;
    };
    const results = await Promise.all([0, 1, 2, 3, 4].map((i) => exclusive(task(i))));
    expect(results).toEqual([0, 10, 20, 30, 40]);
    expect(order).toEqual([0, 1, 2, 3, 4]);
    expect(most).toBe(1);
  });

  it("passes a failure to its caller and still runs the tasks queued behind it", async () => {
    const exclusive = serialize();
    const failing = exclusive(async () => {
      await tick();
      throw new Error("bad image");
    });
    const next = exclusive(async () => "ok");
    await expect(failing).rejects.toThrow("bad image");
    await expect(next).resolves.toBe("ok");
  });
});
