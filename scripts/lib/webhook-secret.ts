/**
 * @module
 * The webhook signing secret of a local run (`npm start`): `WEBHOOK_SECRET` from the environment
 * when set, else the `WEBHOOK_SECRET=` line of the project's git-ignored `.dev.vars`, else a new
 * `whsec_` secret generated once and appended there (so the receiver, `npm run webhook-receiver`,
 * finds the same one). `WEBHOOK_SECRET_PREVIOUS` (rotation) is passed through from the environment.
 * The secret then reaches the Workers like every other secret (scripts/lib/dev-secrets.ts); this
 * module adds only the generate-once step.
 */
import { appendFile, chmod, readFile } from "node:fs/promises";
import { join } from "node:path";
import { generateWebhookSecret } from "../../src/jobs/webhook-signature.ts";
import { parseDevVars } from "./dev-secrets.ts";

export interface LocalWebhookSecret {
  vars: Record<string, string>;
  source: "environment" | ".dev.vars" | "generated";
  secret: string;
}

export async function localWebhookSecret(
  root: string,
  env: Record<string, string | undefined> = process.env,
): Promise<LocalWebhookSecret> {
  const previous: Record<string, string> = env.WEBHOOK_SECRET_PREVIOUS
    ? { WEBHOOK_SECRET_PREVIOUS: env.WEBHOOK_SECRET_PREVIOUS }
    : {};
  if (env.WEBHOOK_SECRET)
    return {
      secret: env.WEBHOOK_SECRET,
      source: "environment",
      vars: { WEBHOOK_SECRET: env.WEBHOOK_SECRET, ...previous },
    };
  const path = join(root, ".dev.vars");
  const text = await readFile(path, "utf8").catch(() => "");
  const existing = parseDevVars(text, path).WEBHOOK_SECRET || undefined;
  if (existing)
    return { secret: existing, source: ".dev.vars", vars: { WEBHOOK_SECRET: existing, ...previous } };
  const secret = generateWebhookSecret();
  await appendFile(path, `${text && !text.endsWith("\n") ? "\n" : ""}WEBHOOK_SECRET=${secret}\n`, {
    mode: 0o600,
  });
  await chmod(path, 0o600).catch(() => undefined);
  return { secret, source: "generated", vars: { WEBHOOK_SECRET: secret, ...previous } };
}
