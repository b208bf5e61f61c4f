/**
 * @module
 * Webhook jobs benchmark against `wrangler dev` (gateway, jobs Worker with its queues and D1, every
 * stage Worker, local R2) with the full-size synthetic int8 model: N jobs (default 200) submitted at
 * once, each with a callback to a loopback receiver that answers 503 to a fraction of first
 * attempts (default 20%, chosen by webhook-id), so those are delivered by a retry.
 *
 * Measures: jobs per minute (first submit to last successful delivery), submit-to-webhook latency
 * p50/p95 (submit request start to the receiver's successful delivery), and the delivered count:
 * every job must be delivered successfully exactly once (one 2xx per webhook-id).
 *
 *   npm start -- --prepare-only      # builds the full-size model once
 *   npx tsx bench/jobs.ts [--model DIR] [--jobs N] [--fail-fraction F] [--timeout-s S]
 *
 * Prints a Markdown table (and writes it to bench/results/jobs.md).
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { publishLocal, readManifest } from "../scripts/lib/local-r2.ts";
import { freePort, serveLocal } from "../scripts/lib/serve.ts";
import { startWebhookReceiver } from "../scripts/lib/webhook-receiver.ts";
import { generateWebhookSecret } from "../src/jobs/webhook-signature.ts";
import { imageBenchInputs } from "./image-inputs.ts";
import { flag, pct } from "./lib/cli.ts";

const root = resolve(import.meta.dirname, "..");

async function main(): Promise<void> {
  const dir = resolve(flag("model", join(root, "model-shards/out/synthetic-base")));
  const jobs = Number(flag("jobs", "200"));
  const failFraction = Number(flag("fail-fraction", "0.2"));
  const timeoutS = Number(flag("timeout-s", "900"));
  const manifest = await readManifest(dir).catch(() => {
    throw new Error(
      `no model in ${dir}: run \`npm start -- --prepare-only\` first (builds the full-size synthetic model)`,
    );
  });
  const input = (await imageBenchInputs()).find((i) => i.name === "224.webp")!;
  const image = { name: input.name, bytes: input.bytes, type: "image/webp" };
  const secret = generateWebhookSecret();
  const persist = await mkdtemp(join(tmpdir(), "beit-edge-bench-jobs-"));
  const submitted = new Map<string, number>();
  const deliveredAt = new Map<string, number>();
  const successes = new Map<string, number>();
  const receiver = await startWebhookReceiver({
    secrets: [secret],
    failFraction,
    onDelivery: (d) => {
      const id = String(d.event?.data?.id ?? "");
      if (d.answered >= 200 && d.answered < 300) {
        successes.set(id, (successes.get(id) ?? 0) + 1);
        if (!deliveredAt.has(id)) deliveredAt.set(id, d.at);
      }
    },
  });
  let svc: Awaited<ReturnType<typeof serveLocal>> | null = null;
  try {
    await publishLocal(dir, persist);
    svc = await serveLocal({
      root,
      stages: manifest.stages.length,
      persistTo: persist,
      port: await freePort(),
      configDir: join(persist, "configs"),
      prebundle: true,
      readyTimeoutMs: 300_000,
      // The receiver's 503s get Retry-After-free retries along a short schedule.
      varsByKind: { jobs: { WEBHOOK_SECRET: secret, WEBHOOK_RETRY_SCHEDULE: "2s,5s,10s,30s" } },
    });
    const url = svc.url;
    // Warm the stages once (not counted): a first job cold-loads every stage.
    const warm = await fetch(`${url}/v1/jobs`, {
      method: "POST",
      body: image.bytes,
      headers: { "content-type": image.type },
    });
    const warmId = ((await warm.json()) as { id: string }).id;
    for (;;) {
      const j = (await (await fetch(`${url}/v1/jobs/${warmId}`)).json()) as { status: string };
      if (j.status === "succeeded" || j.status === "failed") break;
      await new Promise((r) => setTimeout(r, 500));
    }
    process.stderr.write(`submitting ${jobs} jobs at once ...\n`);
    const t0 = Date.now();
    await Promise.all(
      Array.from({ length: jobs }, async () => {
        const start = Date.now();
        const form = new FormData();
        form.append("file", new Blob([image.bytes], { type: image.type }), "img");
        form.append("callback_url", receiver.url);
        const res = await fetch(`${url}/v1/jobs`, { method: "POST", body: form });
        if (res.status !== 202)
          throw new Error(`submit answered ${res.status}: ${(await res.text()).slice(0, 300)}`);
        submitted.set(((await res.json()) as { id: string }).id, start);
      }),
    );
    const submitMs = Date.now() - t0;
    process.stderr.write(`submitted in ${submitMs} ms; waiting for deliveries ...\n`);
    const end = Date.now() + timeoutS * 1000;
    let last = 0;
    while ([...submitted.keys()].some((id) => !deliveredAt.has(id)) && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 1000));
      if (deliveredAt.size !== last && deliveredAt.size % 20 === 0)
        process.stderr.write(`  ${deliveredAt.size} delivered\n`);
      last = deliveredAt.size;
    }
    // Give duplicate deliveries (there must be none) a moment to show up.
    await new Promise((r) => setTimeout(r, 3000));
    const ids = [...submitted.keys()];
    const latencies = ids
      .filter((id) => deliveredAt.has(id))
      .map((id) => deliveredAt.get(id)! - submitted.get(id)!);
    const lastAt = Math.max(...ids.map((id) => deliveredAt.get(id) ?? 0));
    const minutes = (lastAt - t0) / 60_000;
    const delivered = ids.filter((id) => successes.get(id) === 1).length;
    const duplicates = ids.filter((id) => (successes.get(id) ?? 0) > 1).length;
    const firstFailed = receiver.deliveries.filter(
      (d) => d.attempt === 1 && d.answered === 503 && submitted.has(String(d.event?.data?.id)),
    ).length;
    const unverified = receiver.deliveries.filter((d) => !d.verified).length;
    const rows = [
      ["jobs submitted at once", String(jobs)],
      [
        "model",
        `${manifest.model.id} (${manifest.stages.length} stages${manifest.model.synthetic ? ", synthetic" : ""})`,
      ],
      ["image", `${image.name} (${image.bytes.byteLength} bytes)`],
      ["submit, all", `${(submitMs / 1000).toFixed(1)} s`],
      ["first attempts answered 503 (retried)", `${firstFailed} (${Math.round(failFraction * 100)}% asked)`],
      ["throughput", `${(deliveredAt.size / minutes).toFixed(1)} jobs/min`],
      ["submit-to-webhook p50", `${(pct(latencies, 50) / 1000).toFixed(1)} s`],
      ["submit-to-webhook p95", `${(pct(latencies, 95) / 1000).toFixed(1)} s`],
      ["delivered exactly once", `${delivered} / ${jobs}`],
      ["delivered more than once", String(duplicates)],
      ["deliveries failing verification", String(unverified)],
    ];
    const table = ["| measure | value |", "|---|---|", ...rows.map(([a, b]) => `| ${a} | ${b} |`)].join("\n");
    console.log(table);
    await mkdir(join(root, "bench/results"), { recursive: true });
    await writeFile(join(root, "bench/results/jobs.md"), `${table}\n`);
    if (delivered !== jobs || duplicates > 0) process.exitCode = 1;
  } finally {
    // wrangler dev's log (queue batches, consumer errors) next to the results, for a stalled run.
    if (svc)
      await writeFile(join(root, "bench/results/jobs-wrangler.log"), svc.output()).catch(() => undefined);
    await svc?.stop();
    await receiver.stop();
    await rm(persist, { recursive: true, force: true });
  }
}

await main();
