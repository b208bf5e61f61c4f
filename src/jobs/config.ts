/**
 * @module
 * The jobs settings, parsed once from a Worker's vars/secrets with documented defaults. A value
 * that does not parse is a configuration error (thrown at first use with the variable's name), not a
 * silent fallback, except where noted.
 *
 * | var | default | what |
 * |---|---|---|
 * | `WEBHOOK_SECRET` | (none) | `whsec_<base64>`; required to deliver webhooks |
 * | `WEBHOOK_SECRET_PREVIOUS` | (none) | the old secret while rotating: both signatures are sent |
 * | `WEBHOOK_RETRY_SCHEDULE` | `5s,5m,30m,2h,5h,10h,14h,20h,24h` | delays after each failed attempt |
 * | `WEBHOOK_TIMEOUT_MS` | 15000 | one delivery attempt, headers and body |
 * | `JOB_RETENTION_S` | 604800 (7 days) | results stay retrievable this long after the job ends |
 * | `JOB_MAX_ATTEMPTS` | 5 | classification attempts for retryable errors (503/504) before the job fails |
 * | `JOB_LEASE_S` | 300 | a running job not finished within this is taken over |
 * | `JOB_STUCK_AFTER_S` | 600 | a queued job untouched this long is re-enqueued by the sweeper |
 * | `DELIVERY_STUCK_AFTER_S` | 60 | a delivery due this long ago and not in flight is re-enqueued |
 * | `MAX_METADATA_BYTES` | 4096 | the `metadata` JSON object, UTF-8 bytes |
 * | `MAX_JOB_TOP_K` | 100 | top_k of a job (results live in D1 rows and webhook bodies) |
 */
import { DEFAULT_RETRY_SCHEDULE_S, parseRetrySchedule } from "./retry.ts";
import { webhookSecrets } from "./webhook-signature.ts";

export interface JobsVars {
  WEBHOOK_SECRET?: string;
  WEBHOOK_SECRET_PREVIOUS?: string;
  WEBHOOK_RETRY_SCHEDULE?: string;
  WEBHOOK_TIMEOUT_MS?: string;
  JOB_RETENTION_S?: string;
  JOB_MAX_ATTEMPTS?: string;
  JOB_LEASE_S?: string;
  JOB_STUCK_AFTER_S?: string;
  DELIVERY_STUCK_AFTER_S?: string;
  MAX_METADATA_BYTES?: string;
  MAX_JOB_TOP_K?: string;
}

export interface JobsConfig {
  secrets: string[];
  retryScheduleS: number[];
  webhookTimeoutMs: number;
  retentionMs: number;
  maxAttempts: number;
  leaseMs: number;
  stuckAfterMs: number;
  deliveryStuckAfterMs: number;
  maxMetadataBytes: number;
  maxTopK: number;
}

export const JOBS_DEFAULTS = {
  WEBHOOK_TIMEOUT_MS: 15_000,
  JOB_RETENTION_S: 7 * 86_400,
  JOB_MAX_ATTEMPTS: 5,
  JOB_LEASE_S: 300,
  JOB_STUCK_AFTER_S: 600,
  DELIVERY_STUCK_AFTER_S: 60,
  MAX_METADATA_BYTES: 4096,
  MAX_JOB_TOP_K: 100,
} as const;

function num(env: JobsVars, name: keyof typeof JOBS_DEFAULTS): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return JOBS_DEFAULTS[name];
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0)
    throw new Error(`${name} must be a positive number, got ${JSON.stringify(raw)}`);
  return n;
}

/** Parses the jobs settings; throws an Error naming the variable when one is malformed. */
export function jobsConfigFrom(env: JobsVars): JobsConfig {
  return {
    secrets: webhookSecrets(env.WEBHOOK_SECRET, env.WEBHOOK_SECRET_PREVIOUS),
    retryScheduleS: env.WEBHOOK_RETRY_SCHEDULE
      ? parseRetrySchedule(env.WEBHOOK_RETRY_SCHEDULE)
      : [...DEFAULT_RETRY_SCHEDULE_S],
    webhookTimeoutMs: num(env, "WEBHOOK_TIMEOUT_MS"),
    retentionMs: num(env, "JOB_RETENTION_S") * 1000,
    maxAttempts: Math.floor(num(env, "JOB_MAX_ATTEMPTS")),
    leaseMs: num(env, "JOB_LEASE_S") * 1000,
    stuckAfterMs: num(env, "JOB_STUCK_AFTER_S") * 1000,
    deliveryStuckAfterMs: num(env, "DELIVERY_STUCK_AFTER_S") * 1000,
    maxMetadataBytes: Math.floor(num(env, "MAX_METADATA_BYTES")),
    maxTopK: Math.floor(num(env, "MAX_JOB_TOP_K")),
  };
}
