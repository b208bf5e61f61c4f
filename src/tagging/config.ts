/**
 * @module
 * The tagging Worker's typed config, parsed once per env ({@link taggingConfigOf}) from the vars
 * whose defaults and meaning src/topology.ts lists (TAGGING_VARS). An unset var takes its default;
 * an invalid one is refused by name ({@link TaggingConfigError}), because a misread prefix or
 * origin would serve the wrong files.
 */
import { TAGGING_VARS } from "../topology.ts";

export { TAGGING_VARS };

export type TaggingVars = { [K in keyof typeof TAGGING_VARS]?: string };

/** The tagging Worker's configuration. */
export interface TaggingConfig {
  /** Starts and ends with "/". */
  prefix: string;
  /** Key prefix inside the IMAGES bucket (R2 messages outside it are refused). */
  r2Prefix: string;
  /** Where the proxy's images come from. */
  origin: { kind: "url"; base: URL } | { kind: "self" } | { kind: "r2"; keyPrefix: string };
  topK: number;
  minScore: number;
  maxImageBytes: number;
  cacheTtlS: number;
  lookupBudgetMs: number;
  pendingTtlS: number;
  failedRetryS: number;
  unvalidatedTtlS: number;
}

/** A var with an invalid value (a deployment error, reported with the var's name). */
export class TaggingConfigError extends Error {
  constructor(
    readonly variable: string,
    detail: string,
  ) {
    super(`${variable}: ${detail}`);
    this.name = "TaggingConfigError";
  }
}

function num(
  env: TaggingVars,
  name: keyof typeof TAGGING_VARS,
  min: number,
  max: number,
  integer = true,
): number {
  const raw = env[name] ?? TAGGING_VARS[name].default;
  const n = Number(raw);
  if (raw.trim() === "" || !Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n)))
    throw new TaggingConfigError(
      name,
      `expected ${integer ? "an integer" : "a number"} in ${min}..${max}, got "${raw}"`,
    );
  return n;
}

/**
 * Parses the tagging vars. `hasBucket` says whether the IMAGES R2 binding exists (the origin when
 * ORIGIN_URL is empty).
 */
export function parseTaggingConfig(env: TaggingVars, hasBucket: boolean): TaggingConfig {
  let prefix = env.TAGGING_PREFIX ?? TAGGING_VARS.TAGGING_PREFIX.default;
  if (!prefix.startsWith("/") || prefix.includes("..") || /[?#\\]/.test(prefix))
    throw new TaggingConfigError("TAGGING_PREFIX", `must be a path starting with "/", got "${prefix}"`);
  if (!prefix.endsWith("/")) prefix += "/";
  const originRaw = (env.ORIGIN_URL ?? "").trim();
  let origin: TaggingConfig["origin"];
  if (originRaw === "self") origin = { kind: "self" };
  else if (originRaw !== "") {
    let base: URL;
    try {
      base = new URL(originRaw);
    } catch {
      throw new TaggingConfigError("ORIGIN_URL", `not a URL: "${originRaw}"`);
    }
    if (base.protocol !== "http:" && base.protocol !== "https:")
      throw new TaggingConfigError("ORIGIN_URL", `must be http(s), got "${base.protocol}"`);
    if (base.username || base.password || base.search || base.hash)
      throw new TaggingConfigError("ORIGIN_URL", "must have no credentials, query or fragment");
    if (!base.pathname.endsWith("/")) base.pathname += "/";
    origin = { kind: "url", base };
  } else if (hasBucket) origin = { kind: "r2", keyPrefix: env.R2_PREFIX ?? "" };
  else
    throw new TaggingConfigError(
      "ORIGIN_URL",
      'set it to an http(s) URL or "self", or bind an IMAGES R2 bucket',
    );
  return {
    prefix,
    r2Prefix: env.R2_PREFIX ?? "",
    origin,
    topK: num(env, "TAG_TOP_K", 1, 100),
    minScore: num(env, "TAG_MIN_SCORE", 0, 1, false),
    maxImageBytes: num(env, "TAG_MAX_IMAGE_BYTES", 1, 512 * 1024 * 1024),
    cacheTtlS: num(env, "TAGS_CACHE_TTL_S", 30, 86400 * 365),
    lookupBudgetMs: num(env, "TAGS_LOOKUP_BUDGET_MS", 0, 10_000),
    pendingTtlS: num(env, "TAG_PENDING_TTL_S", 1, 86400),
    failedRetryS: num(env, "TAG_FAILED_RETRY_S", 60, 86400 * 365),
    unvalidatedTtlS: num(env, "TAG_UNVALIDATED_TTL_S", 60, 86400 * 365),
  };
}

const cache = new WeakMap<object, TaggingConfig>();

/** {@link parseTaggingConfig}, once per env object (the isolate's life). */
export function taggingConfigOf(env: TaggingVars & { IMAGES?: unknown }): TaggingConfig {
  let c = cache.get(env);
  if (!c) {
    c = parseTaggingConfig(env, env.IMAGES !== undefined);
    cache.set(env, c);
  }
  return c;
}
