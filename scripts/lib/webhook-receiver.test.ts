import { describe, expect, it } from "vitest";
import { postWebhook } from "../../src/jobs/deliver.ts";
import { generateWebhookSecret } from "../../src/jobs/webhook-signature.ts";
import { startWebhookReceiver } from "./webhook-receiver.ts";

describe("webhook receiver (npm run webhook-receiver)", () => {
  it("verifies signatures, fails the first N attempts of each webhook-id, refuses a wrong secret", async () => {
    const secret = generateWebhookSecret();
    const r = await startWebhookReceiver({ secrets: [secret], failFirst: 1 });
    try {
      const send = (id: string, secrets = [secret]) =>
        postWebhook({
          url: r.url,
          webhookId: id,
          payload: '{"type":"t","data":{"id":"job_1"}}',
          secrets,
          timeoutMs: 5000,
        });
      expect((await send("evt_a")).status).toBe(503);
      expect((await send("evt_a")).status).toBe(204);
      expect((await send("evt_b", [generateWebhookSecret()])).status).toBe(401);
      expect(r.deliveries.map((d) => [d.webhookId, d.attempt, d.verified, d.answered])).toEqual([
        ["evt_a", 1, true, 503],
        ["evt_a", 2, true, 204],
        ["evt_b", 1, false, 401],
      ]);
      expect(r.deliveries[0].event?.data?.id).toBe("job_1");
      r.setDown(true);
      expect((await send("evt_c")).status).toBeNull();
    } finally {
      await r.stop();
    }
  });
});
