import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { localWebhookSecret } from "./webhook-secret.ts";

describe("local webhook secret (npm start)", () => {
  it("prefers the environment, then .dev.vars, else generates one once into .dev.vars", async () => {
    const dir = await mkdtemp(join(tmpdir(), "beit-secret-"));
    try {
      await writeFile(join(dir, ".dev.vars"), "API_KEY=abc");
      const env = await localWebhookSecret(dir, {
        WEBHOOK_SECRET: "whsec_ZW52",
        WEBHOOK_SECRET_PREVIOUS: "whsec_b2xk",
      });
      expect(env).toMatchObject({
        source: "environment",
        vars: { WEBHOOK_SECRET: "whsec_ZW52", WEBHOOK_SECRET_PREVIOUS: "whsec_b2xk" },
      });
      const first = await localWebhookSecret(dir, {});
      expect(first.source).toBe("generated");
      expect(first.secret).toMatch(/^whsec_[A-Za-z0-9+/]{32}$/);
      const text = await readFile(join(dir, ".dev.vars"), "utf8");
      expect(text).toBe(`API_KEY=abc\nWEBHOOK_SECRET=${first.secret}\n`);
      const again = await localWebhookSecret(dir, {});
      expect(again).toMatchObject({ source: ".dev.vars", secret: first.secret });
      await writeFile(join(dir, ".dev.vars"), 'export WEBHOOK_SECRET="whsec_eA=="\n');
      expect(await localWebhookSecret(dir, {})).toMatchObject({ source: ".dev.vars", secret: "whsec_eA==" });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
