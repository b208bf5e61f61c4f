/**
 * @module
 * Entry of the jobs Worker (`beit-edge-jobs`, see src/topology.ts JOBS): the consumers of the jobs,
 * deliveries and dead-letter queues and the sweeper cron, each a thin call into src/jobs/consumers.ts
 * with this invocation's bindings. Classification goes through the core (src/classify) and the
 * stage Workers, exactly as POST /v1/classify does.
 *
 * A handler that throws unexpectedly retries its message after 5 s; queue retries are bounded
 * (max_retries in src/topology.ts) and what exhausts them goes to the dead-letter queue.
 */

import { limitsOf } from "../../accounts/limits.ts";
import { chargeKey } from "../../accounts/quota.ts";
import { recordUsage } from "../../accounts/usage.ts";
import { defaultDecoder } from "../../classify/decoder.ts";
import { createClassifier } from "../../classify/index.ts";
import { configOf } from "../../edge/config.ts";
import type { JobsEnv } from "../../edge/env.ts";
import { logLine } from "../../edge/request-log.ts";
import { checkCallbackUrl } from "../../jobs/callback-url.ts";
import { jobsConfigOf } from "../../jobs/config.ts";
import {
  type ConsumerDeps,
  type DeliveryMessage,
  type JobMessage,
  type MessageAction,
  runDeadLetter,
  runDelivery,
  runJob,
  sweep,
} from "../../jobs/consumers.ts";
import { JobStore } from "../../jobs/repository.ts";
import { QUEUES } from "../../topology.ts";

function depsOf(env: JobsEnv, ctx: ExecutionContext): ConsumerDeps {
  const config = jobsConfigOf(env);
  const keepAlive = (p: Promise<unknown>) => ctx.waitUntil(p);
  return {
    store: new JobStore(env.DB),
    uploads: env.UPLOADS,
    config,
    classifier: () => createClassifier(env, { decode: defaultDecoder, keepAlive }),
    sendJob: async (msg, delaySeconds) => {
      await env.JOBS_QUEUE.send(msg, delaySeconds ? { delaySeconds } : undefined);
    },
    sendDelivery: async (msg, delaySeconds) => {
      await env.DELIVERY_QUEUE.send(msg, delaySeconds ? { delaySeconds } : undefined);
    },
    checkCallbackUrl: (url) => {
      checkCallbackUrl(url, {
        allowedPorts: config.callbackPorts,
        allowLoopback: configOf(env).limits.allowLoopbackFetch,
      });
    },
    // A job's images count against its key's image quota when they are classified.
    chargeImages: async (owner, images) => {
      const quota = env.QUOTA;
      if (!quota) return null;
      const limits = await limitsOf(env.DB, owner, env);
      if (!limits) return null;
      return chargeKey(quota, owner, { requests: 0, images, ...limits });
    },
    usage: (owner, counts) => keepAlive(recordUsage(env, owner, "jobs", counts)),
  };
}

async function handle<T>(msg: Message<T>, run: () => Promise<MessageAction>): Promise<void> {
  try {
    const action = await run();
    if (action.ack) msg.ack();
    else msg.retry({ delaySeconds: Math.ceil(action.delaySeconds) });
  } catch (e) {
    console.error(`queue message ${msg.id} failed (attempt ${msg.attempts}); retrying`, e);
    msg.retry({ delaySeconds: 5 });
  }
}

export default {
  async queue(batch, env, ctx) {
    const t0 = Date.now();
    const deps = depsOf(env, ctx);
    try {
      await consume(batch, deps);
    } finally {
      // One structured line per queue invocation: ids and counts only.
      logLine({
        event: "queue",
        queue: batch.queue,
        messages: batch.messages.length,
        outcomes: batch.messages.map((m) => ({
          message_id: m.id,
          job_id: (m.body as JobMessage).jobId,
          attempts: m.attempts,
        })),
        ms: Date.now() - t0,
      });
    }
  },
  async scheduled(_event, env, ctx) {
    const report = await sweep(depsOf(env, ctx));
    if (report.jobs || report.deliveries || report.expired || report.expiredUnstarted)
      logLine({ event: "sweep", ...report });
  },
} satisfies ExportedHandler<JobsEnv, JobMessage | DeliveryMessage>;

async function consume(batch: MessageBatch<JobMessage | DeliveryMessage>, deps: ConsumerDeps): Promise<void> {
  if (batch.queue === QUEUES.JOBS)
    for (const m of batch.messages as Message<JobMessage>[]) await handle(m, () => runJob(deps, m.body));
  else if (batch.queue === QUEUES.DELIVERIES)
    await Promise.all(
      (batch.messages as Message<DeliveryMessage>[]).map((m) => handle(m, () => runDelivery(deps, m.body))),
    );
  else if (batch.queue === QUEUES.JOBS_DLQ)
    for (const m of batch.messages as Message<JobMessage | DeliveryMessage>[])
      await handle(m, () => runDeadLetter(deps, m.body));
  else {
    console.error(`beit-edge-jobs consumes no queue named ${batch.queue}; its messages are retried`);
    batch.retryAll();
  }
}
