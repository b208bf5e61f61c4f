/**
 * @module
 * `npm run webhook-receiver -- [--port 9000] [--secret whsec_...] [--fail-first N] [--json]`
 *
 * Listens on 127.0.0.1, verifies each delivery's Standard Webhooks signature and prints one line
 * per delivery (or the full event with --json). The secret comes from --secret, else the
 * WEBHOOK_SECRET environment variable, else the WEBHOOK_SECRET line of the project's .dev.vars
 * (where `npm start` keeps the development secret). `--fail-first N` answers 503 to the first N
 * attempts of every webhook-id, to watch the service retry.
 */
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { startWebhookReceiver } from "./lib/webhook-receiver.ts";

const root = resolve(import.meta.dirname, "..");

async function secretFromDevVars(): Promise<string | undefined> {
  const text = await readFile(resolve(root, ".dev.vars"), "utf8").catch(() => "");
  const m = /^\s*(?:export\s+)?WEBHOOK_SECRET\s*=\s*["']?([^"'\s#]+)/m.exec(text);
  return m?.[1];
}

function usage(message: string): never {
  console.error(`error: ${message}
usage: npm run webhook-receiver -- [--port 9000] [--secret whsec_...] [--fail-first N] [--json]`);
  process.exit(2);
}

async function main(): Promise<void> {
  let args: ReturnType<typeof parse>;
  function parse() {
    return parseArgs({
      options: {
        port: { type: "string", default: "9000" },
        secret: { type: "string" },
        "fail-first": { type: "string", default: "0" },
        json: { type: "boolean", default: false },
      },
    });
  }
  try {
    args = parse();
  } catch (e) {
    usage(e instanceof Error ? e.message : String(e));
  }
  const port = Number(args.values.port);
  const failFirst = Number(args.values["fail-first"]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) usage(`--port ${args.values.port} is not a port`);
  if (!Number.isInteger(failFirst) || failFirst < 0) usage("--fail-first takes a whole number");
  const secret = args.values.secret ?? process.env.WEBHOOK_SECRET ?? (await secretFromDevVars());
  if (!secret)
    usage(
      "no secret: pass --secret whsec_..., set WEBHOOK_SECRET, or run `npm start` once (it writes .dev.vars)",
    );
  const receiver = await startWebhookReceiver({
    port,
    secrets: [secret],
    failFirst,
    onDelivery: (d) => {
      if (args.values.json) {
        console.log(JSON.stringify({ ...d, body: undefined }));
        return;
      }
      const data = d.event?.data;
      const results = data?.results as unknown;
      const first = Array.isArray(results)
        ? Array.isArray(results[0])
          ? results[0][0]
          : results[0]
        : undefined;
      const top = first ? ` top: ${first.label} ${Number(first.score).toFixed(3)}` : "";
      const verdict = d.verified ? "verified" : `NOT VERIFIED (${d.error})`;
      console.log(
        `${new Date(d.at).toISOString()} ${d.webhookId} attempt ${d.attempt} ${verdict} -> ${d.answered}` +
          (d.event ? ` ${d.event.type} ${data?.id} ${data?.status}${top}` : ""),
      );
    },
  });
  console.log(`webhook receiver on ${receiver.url} (verifying with the configured secret; Ctrl-C stops)`);
  console.log(`submit with: -F callback_url=${receiver.url}`);
  const stop = () => {
    receiver.stop().then(() => process.exit(0));
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}

await main();
