/**
 * @module
 * Settings of keys, quotas and usage, parsed once per env object from the vars in src/topology.ts
 * (ACCOUNTS_VARS); an unset or invalid value takes its default.
 */
import { ACCOUNTS_VARS } from "../topology.ts";

export interface AccountsVars {
  DEFAULT_RPM?: string;
  DEFAULT_IMAGES_PER_MINUTE?: string;
  KEY_CACHE_TTL_S?: string;
}

export interface AccountsConfig {
  defaultRpm: number;
  defaultImagesPerMinute: number;
  /** How long an isolate reuses a key's row (and whether any key exists) before asking D1 again. */
  keyCacheTtlMs: number;
}

function int(raw: string | undefined, fallback: string, min: number, max: number): number {
  const n = Number(raw);
  return raw !== undefined && raw !== "" && Number.isInteger(n) && n >= min && n <= max
    ? n
    : Number(fallback);
}

export function parseAccountsConfig(env: AccountsVars): AccountsConfig {
  const d = ACCOUNTS_VARS;
  return {
    defaultRpm: int(env.DEFAULT_RPM, d.DEFAULT_RPM.default, 1, 1_000_000),
    defaultImagesPerMinute: int(
      env.DEFAULT_IMAGES_PER_MINUTE,
      d.DEFAULT_IMAGES_PER_MINUTE.default,
      1,
      1_000_000,
    ),
    // At most 60 s: the bound on how long a revoked key may keep working.
    keyCacheTtlMs: int(env.KEY_CACHE_TTL_S, d.KEY_CACHE_TTL_S.default, 0, 60) * 1000,
  };
}

const cache = new WeakMap<object, AccountsConfig>();

export function accountsConfigOf(env: AccountsVars): AccountsConfig {
  let c = cache.get(env);
  if (!c) {
    c = parseAccountsConfig(env);
    cache.set(env, c);
  }
  return c;
}
