import { Webhook } from "standardwebhooks";
import { describe, expect, it } from "vitest";
import {
  generateWebhookSecret,
  signWebhook,
  verifyWebhook,
  WebhookVerificationError,
  webhookHeaders,
  webhookSecrets,
} from "./webhook-signature.ts";

// The worked example of the Standard Webhooks specification and its reference libraries.
const SPEC = {
  secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
  id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
  timestamp: 1614265330,
  body: '{"test": 2432232314}',
  signature: "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
};

describe("Standard Webhooks signing", () => {
  it("reproduces the specification's worked example", async () => {
    expect(await signWebhook([SPEC.secret], SPEC.id, SPEC.timestamp, SPEC.body)).toBe(SPEC.signature);
  });

  it("verifies the specification's worked example", async () => {
    const headers = {
      "webhook-id": SPEC.id,
      "webhook-timestamp": String(SPEC.timestamp),
      "webhook-signature": SPEC.signature,
    };
    expect(await verifyWebhook(SPEC.secret, headers, SPEC.body, { nowSeconds: SPEC.timestamp + 10 })).toEqual(
      {
        test: 2432232314,
      },
    );
  });

  it("is accepted by the published standardwebhooks package, for each secret during a rotation", async () => {
    const [current, previous] = [generateWebhookSecret(), generateWebhookSecret()];
    const body = JSON.stringify({ type: "classification.succeeded", data: { id: "job_1", label: "é" } });
    const now = Math.floor(Date.now() / 1000);
    const headers = await webhookHeaders(webhookSecrets(current, previous), "evt_1", now, body);
    expect(headers["webhook-signature"].split(" ")).toHaveLength(2);
    // A receiver that knows only one of the two secrets accepts the message.
    for (const secret of [current, previous])
      expect(new Webhook(secret).verify(body, headers)).toEqual(JSON.parse(body));
    expect(() => new Webhook(generateWebhookSecret()).verify(body, headers)).toThrow();
  });

  it("verifies what the published package signs", async () => {
    const secret = generateWebhookSecret();
    const body = '{"a":1}';
    const now = Math.floor(Date.now() / 1000);
    const signature = new Webhook(secret).sign("evt_x", new Date(now * 1000), body);
    const headers = new Headers({
      "webhook-id": "evt_x",
      "webhook-timestamp": String(now),
      "webhook-signature": signature,
    });
    expect(await verifyWebhook(secret, headers, body)).toEqual({ a: 1 });
  });

  it("refuses a changed body, a changed id, a stale or future timestamp and missing headers", async () => {
    const secret = generateWebhookSecret();
    const now = 1_800_000_000;
    const good = await webhookHeaders([secret], "evt_1", now, '{"a":1}');
    const opts = { nowSeconds: now };
    await expect(verifyWebhook(secret, good, '{"a":2}', opts)).rejects.toThrow(/no matching signature/);
    await expect(verifyWebhook(secret, { ...good, "webhook-id": "evt_2" }, '{"a":1}', opts)).rejects.toThrow(
      WebhookVerificationError,
    );
    await expect(verifyWebhook(secret, good, '{"a":1}', { nowSeconds: now + 301 })).rejects.toThrow(
      /too old/,
    );
    await expect(verifyWebhook(secret, good, '{"a":1}', { nowSeconds: now - 301 })).rejects.toThrow(
      /too new/,
    );
    await expect(
      verifyWebhook(secret, good, '{"a":1}', { nowSeconds: now + 301, toleranceSeconds: 600 }),
    ).resolves.toEqual({ a: 1 });
    const { "webhook-signature": _s, ...unsigned } = good;
    await expect(verifyWebhook(secret, unsigned, '{"a":1}', opts)).rejects.toThrow(/missing/);
    await expect(
      verifyWebhook(
        secret,
        { ...good, "webhook-signature": good["webhook-signature"].replace("v1,", "v2,") },
        '{"a":1}',
        opts,
      ),
    ).rejects.toThrow(/no matching/);
  });

  it("refuses a secret that is not base64", async () => {
    await expect(signWebhook(["whsec_not base64!"], "evt", 1, "{}")).rejects.toThrow(/not base64/);
    await expect(signWebhook([], "evt", 1, "{}")).rejects.toThrow(/no webhook secret/);
  });
});
