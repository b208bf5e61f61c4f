/**
 * @module
 * The converter's entry to checkpoints: {@link loadCheckpoint} takes a local directory or a hub
 * id, reads config.json, preprocessor_config.json and the weights (model.safetensors, a sharded
 * model.safetensors.index.json set, or pytorch_model.bin), validates the state dict against the
 * config, and returns a {@link Checkpoint} with the sha256 of every source file.
 */
import { createHash } from "node:crypto";
import { readdir, readFile, stat } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import { AppError } from "../../src/shared/errors.ts";
import { parseBeitConfig, parsePreprocessorConfig } from "./config.ts";
import { numel } from "./dtypes.ts";
import { type DownloadProgress, downloadFromHub, type HubOptions } from "./hub.ts";
import { expectedTensorShapes, gridSide, isIndexKey, relativePositionIndex } from "./layout.ts";
import { decodePytorchBin } from "./pytorch.ts";
import { decodeSafetensors, readSafetensorsIndex } from "./safetensors.ts";
import type { BeitConfig, Checkpoint, SourceFile, StateDict } from "./types.ts";

export type { Checkpoint } from "./types.ts";

export interface LoadOptions extends Omit<HubOptions, "revision" | "files" | "onProgress"> {
  /** Hub revision when `from` is a hub id without `@revision` (default "main"). */
  revision?: string;
  /** Download progress (hub ids only). */
  onProgress?: (p: DownloadProgress) => void;
  /** Non-fatal findings (extra keys, a regenerated index); default: printed to stderr. */
  onWarning?: (message: string) => void;
}

/** Weight files in order of preference. */
export const WEIGHT_FILES = [
  "model.safetensors",
  "model.safetensors.index.json",
  "pytorch_model.bin",
] as const;

const HUB_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]*\/[A-Za-z0-9][A-Za-z0-9_.-]*(@[A-Za-z0-9_./-]+)?$/;

/**
 * Splits "org/name@revision" into its parts, or returns null if `s` is not a hub id.
 */
export function parseHubId(s: string): { repo: string; revision?: string } | null {
  if (!HUB_ID.test(s) || s.includes("..")) return null;
  const at = s.indexOf("@");
  return at < 0 ? { repo: s } : { repo: s.slice(0, at), revision: s.slice(at + 1) };
}

async function isDir(p: string): Promise<boolean> {
  return (await stat(p).catch(() => null))?.isDirectory() ?? false;
}

/**
 * Loads a checkpoint from a directory or the hub.
 *
 * @example
 * const ck = await loadCheckpoint("microsoft/beit-base-patch16-224-pt22k-ft22k");
 * const local = await loadCheckpoint("./synthetic-base");
 */
export async function loadCheckpoint(from: string, opts: LoadOptions = {}): Promise<Checkpoint> {
  const warn = opts.onWarning ?? ((m: string) => process.stderr.write(`warning: ${m}\n`));
  let dir: string;
  let id: string;
  let revision: string;
  if (await isDir(from)) {
    dir = resolve(from);
    // A snapshot of the Hugging Face cache names its repo and commit.
    const m = /models--([^/\\]+?)--([^/\\]+)[/\\]snapshots[/\\]([0-9a-f]{40})$/.exec(dir);
    id = m ? `${m[1]}/${m[2]}` : basename(dir);
    revision = m ? m[3] : "local";
  } else {
    const hub = parseHubId(from);
    if (!hub)
      throw new AppError(
        "checkpoint-not-found",
        404,
        `${from} is neither a directory nor a hub id like org/name[@revision]. Pass an existing checkpoint directory or a Hugging Face model id.`,
      );
    dir = await downloadFromHub(hub.repo, {
      ...opts,
      revision: hub.revision ?? opts.revision ?? "main",
      onProgress: opts.onProgress,
    });
    id = hub.repo;
    // The snapshot directory is named by the commit the revision resolved to.
    revision = basename(dir);
  }
  return loadDirectory(dir, { id, revision, warn });
}

async function loadDirectory(
  dir: string,
  meta: { id: string; revision: string; warn: (m: string) => void },
): Promise<Checkpoint> {
  const present = new Set(await readdir(dir).catch(() => [] as string[]));
  const weights = WEIGHT_FILES.find((f) => present.has(f));
  const missing = ["config.json", "preprocessor_config.json"].filter((f) => !present.has(f));
  if (!weights) missing.push(`weights (${WEIGHT_FILES.join(" or ")})`);
  if (missing.length > 0)
    throw new AppError(
      "checkpoint-incomplete",
      422,
      `checkpoint directory ${dir} is missing ${missing.join(", ")}; it holds ${present.size ? [...present].sort().join(", ") : "nothing"}. A checkpoint needs config.json, preprocessor_config.json and the weights.`,
      { missing },
    );
  const files: SourceFile[] = [];
  const readTracked = async (name: string): Promise<Buffer> => {
    const bytes = await readFile(join(dir, name));
    files.push({ name, bytes: bytes.byteLength, sha256: createHash("sha256").update(bytes).digest("hex") });
    return bytes;
  };
  const json = (name: string, bytes: Buffer): unknown => {
    try {
      return JSON.parse(bytes.toString("utf8"));
    } catch (e) {
      throw new AppError(
        "invalid-config",
        422,
        `${name} in ${dir} is not valid JSON (${(e as Error).message}).`,
      );
    }
  };
  const configJson = json("config.json", await readTracked("config.json"));
  const config = parseBeitConfig(configJson, { onWarning: meta.warn });
  const preprocess = parsePreprocessorConfig(
    json("preprocessor_config.json", await readTracked("preprocessor_config.json")),
  );

  let tensors: StateDict;
  // The file buffers are ours: tensors may view them instead of copying (halves peak memory).
  if (weights === "model.safetensors") tensors = decodeSafetensors(await readTracked(weights), weights, true);
  else if (weights === "pytorch_model.bin")
    tensors = decodePytorchBin(await readTracked(weights), weights, true);
  else {
    await readTracked(weights as string);
    const { tensors: t, shards } = await readSafetensorsIndex(join(dir, weights as string));
    for (const s of shards) {
      const bytes = await readFile(join(dir, s));
      files.push({
        name: s,
        bytes: bytes.byteLength,
        sha256: createHash("sha256").update(bytes).digest("hex"),
      });
    }
    tensors = t;
  }
  validateStateDict(config, tensors, meta.warn);
  return {
    id: meta.id,
    revision: meta.revision,
    synthetic: (configJson as Record<string, unknown>).beit_edge_synthetic === true,
    config,
    preprocess,
    tensors,
    files,
  };
}

/**
 * Checks `tensors` against the layout `config` implies: every expected key present with the
 * expected shape and kind (float or integer). A missing relative_position_index (newer
 * transformers do not save that buffer) is filled in from its definition; extra keys are
 * dropped with a warning. Throws "checkpoint-mismatch" naming the first bad key.
 */
export function validateStateDict(
  config: BeitConfig,
  tensors: StateDict,
  warn: (m: string) => void = () => {},
): void {
  const expected = expectedTensorShapes(config);
  for (const [key, shape] of expected) {
    let t = tensors.get(key);
    if (!t && isIndexKey(key)) {
      t = { dtype: "I64", shape, data: relativePositionIndex(gridSide(config)) };
      tensors.set(key, t);
    }
    if (!t)
      throw new AppError(
        "checkpoint-mismatch",
        422,
        `the weights have no tensor ${key} (expected shape [${shape.join(", ")}]) although config.json implies it; the weights do not belong to this config or are not a BeitForImageClassification checkpoint.`,
        { key },
      );
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]))
      throw new AppError(
        "checkpoint-mismatch",
        422,
        `tensor ${key} has shape [${t.shape.join(", ")}] but config.json implies [${shape.join(", ")}]; the weights do not match config.json.`,
        { key },
      );
    if (isIndexKey(key) !== (t.dtype === "I64"))
      throw new AppError(
        "checkpoint-mismatch",
        422,
        `tensor ${key} has dtype ${t.dtype}, which is not what BEiT stores there.`,
        { key },
      );
    if (t.data.length !== numel(shape)) throw new Error(`internal: ${key} has ${t.data.length} elements`);
  }
  const extra = [...tensors.keys()].filter((k) => !expected.has(k));
  if (extra.length > 0) {
    warn(
      `ignoring ${extra.length} tensor(s) the classifier does not use: ${extra.slice(0, 8).join(", ")}${extra.length > 8 ? ", ..." : ""}`,
    );
    for (const k of extra) tensors.delete(k);
  }
}
