/**
 * @module
 * The webhook-jobs settings, parsed once per env object (like src/edge/config.ts) from the vars and
 * secrets of the gateway and the jobs Worker. Defaults and meanings live in src/topology.ts
 * (JOBS_VARS); an unset value takes its default, and so does an invalid one, with a warning naming
 * the variable (the convention of src/edge/config.ts).
 *
 * Secrets: `WEBHOOK_SECRET` (`whsec_<base64>`, required to deliver) and, while rotating,
 * `WEBHOOK_SECRET_PREVIOUS`: every delivery then carries both signatures. The outbound policy's
 * `ALLOW_LOOPBACK_FETCH` (src/edge/config.ts, on only in local development) also admits http
 * callbacks to loopback addresses, on any port.
 */
import { JOBS_VARS } from "../topology.ts";
import { parseRetrySchedule } from "./retry.ts";
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
  CALLBACK_ALLOWED_PORTS?: string;
}

export interface JobsConfig {
  /** Signing secrets, current first. */
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
  callbackPorts: number[];
}

type NumberVar = Exclude<
  keyof JobsVars,
  "WEBHOOK_SECRET" | "WEBHOOK_SECRET_PREVIOUS" | "WEBHOOK_RETRY_SCHEDULE" | "CALLBACK_ALLOWED_PORTS"
>;

function warn(name: string, raw: string, fallback: string): void {
  console.warn(`${name}=${JSON.stringify(raw)} is not valid; using the default ${fallback}`);
}

function num(env: JobsVars, name: NumberVar, integer = false): number {
  const fallback = JOBS_VARS[name].default;
  const raw = env[name];
  if (raw === undefined || raw === "") return Number(fallback);
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) {
    warn(name, raw, fallback);
    return Number(fallback);
  }
  return n;
}

function schedule(env: JobsVars): number[] {
  const fallback = JOBS_VARS.WEBHOOK_RETRY_SCHEDULE.default;
  const raw = env.WEBHOOK_RETRY_SCHEDULE;
  if (raw !== undefined && raw !== "") {
    try {
      return parseRetrySchedule(raw);
    } catch {
      warn("WEBHOOK_RETRY_SCHEDULE", raw, fallback);
    }
  }
  return parseRetrySchedule(fallback);
}

function ports(env: JobsVars): number[] {
  const fallback = JOBS_VARS.CALLBACK_ALLOWED_PORTS.default;
  const parse = (t: string) =>
    t
      .split(/[\s,]+/)
      .filter(Boolean)
      .map(Number);
  const raw = env.CALLBACK_ALLOWED_PORTS;
  if (raw !== undefined && raw !== "") {
    const p = parse(raw);
    if (p.length > 0 && p.every((n) => Number.isInteger(n) && n > 0 && n < 65536)) return p;
    warn("CALLBACK_ALLOWED_PORTS", raw, fallback);
  }
  return parse(fallback);
}

/** Parses `env` (no caching; see {@link jobsConfigOf}). */
export function jobsConfigFrom(env: JobsVars): JobsConfig {
  return {
    secrets: webhookSecrets(env.WEBHOOK_SECRET, env.WEBHOOK_SECRET_PREVIOUS),
    retryScheduleS: schedule(env),
    webhookTimeoutMs: num(env, "WEBHOOK_TIMEOUT_MS"),
    retentionMs: num(env, "JOB_RETENTION_S") * 1000,
    maxAttempts: num(env, "JOB_MAX_ATTEMPTS", true),
    leaseMs: num(env, "JOB_LEASE_S") * 1000,
    stuckAfterMs: num(env, "JOB_STUCK_AFTER_S") * 1000,
    deliveryStuckAfterMs: num(env, "DELIVERY_STUCK_AFTER_S") * 1000,
    maxMetadataBytes: num(env, "MAX_METADATA_BYTES", true),
    maxTopK: num(env, "MAX_JOB_TOP_K", true),
    callbackPorts: ports(env),
  };
}

const cache = new WeakMap<object, JobsConfig>();

/** The jobs config of `env`, parsed on first use and reused for the isolate's life. */
export function jobsConfigOf(env: JobsVars): JobsConfig {
  let c = cache.get(env);
  if (!c) {
    c = jobsConfigFrom(env);
    cache.set(env, c);
  }
  return c;
}
