/**
 * @module
 * The typed configuration of a Worker, parsed once from its env (cached per env object). Defaults
 * come from src/topology.ts; an unset or invalid value falls back to its default. No other module
 * reads raw var strings.
 */
import { CLASSIFIER_VARS } from "../topology.ts";
import type { ClassifierVars } from "./env.ts";
import type { Limits } from "./limits.ts";

export interface Config {
  limits: Limits;
  /** How long the active-model pointer is reused before R2 is asked again. */
  pointerTtlMs: number;
  /** The API_KEY secret, or null when the service is open. */
  apiKey: string | null;
}

function positiveInt(v: string | undefined, fallback: string): number {
  const n = Number(v);
  return v !== undefined && Number.isInteger(n) && n > 0 ? n : Number(fallback);
}

function nonNegative(v: string | undefined, fallback: string): number {
  const n = Number(v);
  return Number.isFinite(n) && n >= 0 ? n : Number(fallback);
}

/** Parses `env` (no caching; see {@link configOf}). */
export function parseConfig(env: ClassifierVars & { API_KEY?: string }): Config {
  const d = CLASSIFIER_VARS;
  return {
    limits: {
      deadlineMs: positiveInt(env.REQUEST_DEADLINE_MS, d.REQUEST_DEADLINE_MS.default),
      maxBodyBytes: positiveInt(env.MAX_BODY_BYTES, d.MAX_BODY_BYTES.default),
      maxBatch: positiveInt(env.MAX_BATCH, d.MAX_BATCH.default),
      allowLoopbackFetch: (env.ALLOW_LOOPBACK_FETCH ?? d.ALLOW_LOOPBACK_FETCH.default) === "true",
    },
    pointerTtlMs: nonNegative(env.POINTER_TTL_S, d.POINTER_TTL_S.default) * 1000,
    apiKey: env.API_KEY ? env.API_KEY : null,
  };
}

const cache = new WeakMap<object, Config>();

/** The config of `env`, parsed on first use and reused for the isolate's life. */
export function configOf(env: ClassifierVars & { API_KEY?: string }): Config {
  let c = cache.get(env);
  if (!c) {
    c = parseConfig(env);
    cache.set(env, c);
  }
  return c;
}
