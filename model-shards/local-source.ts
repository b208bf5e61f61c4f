/**
 * @module
 * A shard directory (what `npm run model -- build` writes) as a {@link ModelSource}, the Node
 * counterpart of the Worker's R2 shard store: manifest.json validated, every file checked against
 * its size and sha256 before it is returned. Errors are the converter's 422s, each saying what to
 * rebuild or re-copy. Used by `verifyShards` (build.ts) and the runner (runner.ts).
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { LoadedFile, ModelSource } from "../src/shards/source.ts";
import { AppError } from "../src/shared/errors.ts";
import { sha256Hex } from "../src/shared/hash.ts";
import { type FileRef, type Manifest, ManifestError, parseManifest } from "../src/shared/manifest.ts";

export interface LocalModelSource extends ModelSource<"disk"> {
  readonly dir: string;
}

/**
 * The shard directory `dir` as a model source. Files are content-addressed (the name holds the
 * sha256), so a file this source has verified once is only size-checked when read again.
 *
 * @example
 * const source = localModelSource("model-shards/out/tiny");
 * const manifest = await source.manifest();
 */
export function localModelSource(dir: string): LocalModelSource {
  let manifest: Promise<Manifest> | null = null;
  const verified = new Set<string>();
  const load = async (): Promise<Manifest> => {
    const mpath = join(dir, "manifest.json");
    const text = await readFile(mpath, "utf8").catch(() => {
      throw new AppError(
        "manifest-missing",
        422,
        `${mpath} does not exist; build shards with \`npm run model -- build\`.`,
      );
    });
    try {
      return parseManifest(JSON.parse(text));
    } catch (e) {
      const why = e instanceof ManifestError || e instanceof SyntaxError ? e.message : String(e);
      throw new AppError(
        "manifest-invalid",
        422,
        `${mpath} is not a valid manifest: ${why}. Rebuild the shards.`,
      );
    }
  };
  return {
    dir,
    async manifest(version) {
      manifest ??= load();
      manifest.catch(() => {
        manifest = null;
      });
      const m = await manifest;
      if (version !== undefined && version !== m.version)
        throw new AppError(
          "model-version-mismatch",
          422,
          `${dir} holds model version ${m.version.slice(0, 12)}, not ${version.slice(0, 12)}.`,
        );
      return m;
    },
    async file(ref: FileRef): Promise<LoadedFile<"disk">> {
      const t0 = Date.now();
      const buf = await readFile(join(dir, ref.file)).catch(() => null);
      const t1 = Date.now();
      if (!buf)
        throw new AppError(
          "shard-missing",
          422,
          `${ref.file} is listed in manifest.json but missing from ${dir}. Rebuild or re-copy the shards.`,
        );
      const bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
      if (bytes.length !== ref.bytes)
        throw new AppError(
          "shard-size-mismatch",
          422,
          `${ref.file} has ${bytes.length} bytes, manifest.json says ${ref.bytes}. The file is truncated or replaced; rebuild or re-copy it.`,
        );
      const key = `${ref.file}:${ref.sha256}`;
      if (!verified.has(key)) {
        const sha = await sha256Hex(bytes);
        if (sha !== ref.sha256)
          throw new AppError(
            "shard-hash-mismatch",
            422,
            `${ref.file} has sha256 ${sha}, manifest.json says ${ref.sha256}. The file is corrupted; rebuild or re-copy it.`,
          );
        verified.add(key);
      }
      return { bytes, origin: "disk", fetchMs: t1 - t0, verifyMs: Date.now() - t1 };
    },
  };
}
