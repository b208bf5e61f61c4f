/**
 * @module
 * The Worker of bench/quota-mechanism.ts: `GET /?n=200` charges one request to a key `n` times
 * through each mechanism and answers the per-call times (ms): the KeyQuota Durable Object
 * (src/accounts/quota.ts, the real class), the Rate Limiting binding (`RL.limit`), and a plain
 * in-isolate Map as the floor.
 */
import { chargeKey, type QuotaNamespace } from "../src/accounts/quota.ts";

export { KeyQuota } from "../src/accounts/quota.ts";

interface Env {
  QUOTA: QuotaNamespace;
  RL: { limit(o: { key: string }): Promise<{ success: boolean }> };
}

export default {
  async fetch(req: Request, env: Env): Promise<Response> {
    const n = Number(new URL(req.url).searchParams.get("n") ?? "200");
    const map = new Map<string, number>();
    const rpm = 1_000_000;
    const mechanisms: Record<string, () => Promise<unknown>> = {
      durableObject: () =>
        chargeKey(env.QUOTA, "key_bench", { requests: 1, images: 0, rpm, imagesPerMinute: rpm }),
      rateLimitBinding: () => env.RL.limit({ key: "key_bench" }),
      isolateMap: async () => map.set("key_bench", (map.get("key_bench") ?? 0) + 1),
    };
    const rounds: Record<string, number[]> = {};
    for (let round = 0; round < 5; round++)
      for (const [name, call] of Object.entries(mechanisms)) {
        const t = Date.now();
        for (let i = 0; i < n; i++) await call();
        rounds[name] = [...(rounds[name] ?? []), (Date.now() - t) / n];
      }
    return Response.json(rounds);
  },
};
