/**
 * @module
 * The webhook signing secret of a local run (`npm start`): `WEBHOOK_SECRET` from the environment
 * when set, else the `WEBHOOK_SECRET=` line of the project's git-ignored `.dev.vars`, else a new
 * `whsec_` secret generated once and appended there (so the receiver, `npm run webhook-receiver`,
 * finds the same one). `WEBHOOK_SECRET_PREVIOUS` (rotation) is passed through from the environment.
 * When the first-contact helper's general secrets mechanism lands, WEBHOOK_SECRET is one more name
 * in its list and this module reduces to the generate-once step.
 */
import { appendFile, chmod, readFile } from "node:fs/promises";
import { join } from "node:path";
import { generateWebhookSecret } from "../../src/jobs/webhook-signature.ts";

export interface LocalWebhookSecret {
  vars: Record<string, string>;
  source: "environment" | ".dev.vars" | "generated";
  secret: string;
}

/** Reads `KEY=VALUE` for `name` from a .dev.vars text (quotes optional), or undefined. */
export function devVarsValue(text: string, name: string): string | undefined {
  for (const raw of text.split(/\r?\n/)) {
    const m = /^\s*(?:export\s+)?([\w.-]+)\s*=\s*(.*?)\s*$/.exec(raw);
    if (!m || m[1] !== name) continue;
    const v = m[2].replace(/^(["'`])(.*)\1$/, "$2");
    if (v) return v;
  }
  return undefined;
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
  const existing = devVarsValue(text, "WEBHOOK_SECRET");
  if (existing)
    return { secret: existing, source: ".dev.vars", vars: { WEBHOOK_SECRET: existing, ...previous } };
  const secret = generateWebhookSecret();
  await appendFile(path, `${text && !text.endsWith("\n") ? "\n" : ""}WEBHOOK_SECRET=${secret}\n`, {
    mode: 0o600,
  });
  await chmod(path, 0o600).catch(() => undefined);
  return { secret, source: "generated", vars: { WEBHOOK_SECRET: secret, ...previous } };
}
