/**
 * @module
 * Hugging Face hub download into the standard cache layout, so that a model already fetched by
 * Python tools is reused and one fetched here is reused by them:
 *
 *     <cache>/models--<org>--<name>/blobs/<etag>                 file contents
 *     <cache>/models--<org>--<name>/snapshots/<commit>/<file>   symlink -> ../../blobs/<etag>
 *     <cache>/models--<org>--<name>/refs/<revision>             the commit <revision> resolved to
 *
 * `<cache>` is HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub. A revision whose
 * ref and snapshot files are already there needs no network at all. Otherwise each file is
 * resolved at `${HF_ENDPOINT}/<repo>/resolve/<revision>/<file>` (HEAD without following
 * off-site redirects, to read X-Repo-Commit and the ETag / X-Linked-Etag that names the blob),
 * then fetched into `blobs/<etag>.incomplete`, resuming with a Range request if a previous
 * attempt was cut off, hashed with sha256 (checked against the ETag when it is one, as for LFS
 * files), and renamed into place. HF_TOKEN, when set, is sent as a bearer token to the hub
 * (fetch drops it on cross-origin redirects to the CDN).
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import {
  copyFile,
  mkdir,
  open,
  readFile,
  readlink,
  rename,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join, posix, relative } from "node:path";
import { AppError } from "../../src/shared/errors.ts";
import { progressBar } from "../progress.ts";

/** A progress report for one file. */
export interface DownloadProgress {
  file: string;
  /** Bytes on disk so far (including a resumed prefix). */
  received: number;
  /** Full size when the server said it. */
  total: number | null;
  /** True once, when the file is complete; `sha256` is then set. */
  done: boolean;
  sha256?: string;
  /** True when the file came from the cache. */
  cached?: boolean;
}

export interface HubOptions {
  /** Branch, tag or commit (default "main"). */
  revision?: string;
  /** Exact files to fetch; default config.json, preprocessor_config.json and the weights. */
  files?: string[];
  /** Default HF_ENDPOINT, else https://huggingface.co. */
  endpoint?: string;
  /** Default HF_TOKEN. */
  token?: string;
  /** Default HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub. */
  cacheDir?: string;
  /** Default: a progress bar on stderr (redrawn in place on a TTY, a line per file otherwise). */
  onProgress?: (p: DownloadProgress) => void;
}

const REQUIRED = ["config.json", "preprocessor_config.json"];
const HEX40 = /^[0-9a-f]{40}$/;
const HEX64 = /^[0-9a-f]{64}$/;

/** The hub cache directory the environment selects (same rules as huggingface_hub). */
export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  if (env.HF_HOME) return join(env.HF_HOME, "hub");
  const xdg = env.XDG_CACHE_HOME;
  return join(xdg || join(homedir(), ".cache"), "huggingface", "hub");
}

/** `models--org--name` directory of a repo inside a cache. */
export function repoCacheDir(cacheDir: string, repoId: string): string {
  return join(cacheDir, `models--${repoId.split("/").join("--")}`);
}

async function exists(p: string): Promise<boolean> {
  return (await stat(p).catch(() => null)) !== null;
}

/** Snapshot files are complete for a classification checkpoint (or for the explicit list). */
async function snapshotComplete(snap: string, files: string[] | undefined): Promise<boolean> {
  if (!(await exists(snap))) return false;
  const need = files ?? REQUIRED;
  for (const f of need) if (!(await exists(join(snap, f)))) return false;
  if (files) return true;
  if (await exists(join(snap, "model.safetensors"))) return true;
  const index = join(snap, "model.safetensors.index.json");
  if (await exists(index)) {
    try {
      const map = JSON.parse(await readFile(index, "utf8")).weight_map as Record<string, string>;
      for (const shard of new Set(Object.values(map))) if (!(await exists(join(snap, shard)))) return false;
      return true;
    } catch {
      return false;
    }
  }
  return exists(join(snap, "pytorch_model.bin"));
}

function unreachable(url: string, why: string): AppError {
  return new AppError(
    "hub-unreachable",
    503,
    `Could not download ${url} (${why}). If this machine is offline or cannot reach the Hugging Face hub, pass a local checkpoint directory instead (--from ./dir, holding config.json, preprocessor_config.json and pytorch_model.bin or model.safetensors), or set HF_ENDPOINT to a reachable mirror; a model already in the Hugging Face cache (HF_HUB_CACHE / HF_HOME) is used without the network.`,
    { url },
  );
}

function describeFetchError(e: unknown): string {
  const cause = (e as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (e as Error).message;
}

interface Resolved {
  url: string;
  commit: string | null;
  etag: string | null;
  size: number | null;
}

/**
 * Downloads a model repo's files (or uses the cache) and returns the snapshot directory,
 * `<cache>/models--org--name/snapshots/<commit>`.
 *
 * @example
 * const dir = await downloadFromHub("microsoft/beit-base-patch16-224-pt22k-ft22k");
 */
export async function downloadFromHub(repoId: string, opts: HubOptions = {}): Promise<string> {
  const revision = opts.revision ?? "main";
  const endpoint = (opts.endpoint ?? process.env.HF_ENDPOINT ?? "https://huggingface.co").replace(/\/+$/, "");
  const token = opts.token ?? process.env.HF_TOKEN;
  const repoDir = repoCacheDir(opts.cacheDir ?? hubCacheDir(), repoId);
  const progress = opts.onProgress ?? downloadProgress();

  // Offline first: a ref (or a commit) whose snapshot holds every file we need.
  const refFile = join(repoDir, "refs", revision);
  const knownCommit = HEX40.test(revision)
    ? revision
    : await readFile(refFile, "utf8").then(
        (s) => s.trim(),
        () => null,
      );
  if (knownCommit && (await snapshotComplete(join(repoDir, "snapshots", knownCommit), opts.files)))
    return join(repoDir, "snapshots", knownCommit);

  const offline = /^(1|true|yes|on)$/i.test(process.env.HF_HUB_OFFLINE ?? "");
  if (offline)
    throw new AppError(
      "hub-unreachable",
      503,
      `HF_HUB_OFFLINE is set and ${repoId}@${revision} is not complete in the Hugging Face cache (${repoDir}). Unset HF_HUB_OFFLINE to download it, or pass a local checkpoint directory instead (--from ./dir).`,
      { repo: repoId },
    );
  let commit: string | null = null;
  const fetchOne = async (file: string, optional: boolean): Promise<boolean> => {
    // Once the revision has resolved, ask for that commit so all files come from one snapshot.
    const rev = commit ?? revision;
    const url = `${endpoint}/${repoId}/resolve/${encodeURIComponent(rev)}/${file.split("/").map(encodeURIComponent).join("/")}`;
    const meta = await resolve(url, token);
    if (meta === null) {
      if (optional) return false;
      throw new AppError(
        "hub-not-found",
        404,
        `${url} does not exist (404): check the repo id and revision "${revision}"; for a private or gated repo set HF_TOKEN.`,
        { url },
      );
    }
    commit ??= meta.commit ?? (HEX40.test(revision) ? revision : null);
    if (!commit)
      throw new AppError(
        "hub-error",
        502,
        `${url} answered without an X-Repo-Commit header, so the snapshot cannot be named; use a hub that sends it or pass a local directory.`,
      );
    const etag = meta.etag;
    if (!etag || !/^[A-Za-z0-9_.-]{1,128}$/.test(etag))
      throw new AppError(
        "hub-error",
        502,
        `${url} answered without a usable ETag (${JSON.stringify(etag)}), so the file cannot be cached.`,
      );
    const blob = join(repoDir, "blobs", etag);
    await mkdir(dirname(blob), { recursive: true });
    let sha: string;
    if (await exists(blob)) {
      sha = await hashFile(blob);
      progress({
        file,
        received: (await stat(blob)).size,
        total: meta.size,
        done: true,
        sha256: sha,
        cached: true,
      });
    } else {
      sha = await fetchBlob(meta, blob, token, file, progress);
      if (HEX64.test(etag) && sha !== etag) {
        await rm(blob, { force: true });
        throw new AppError(
          "hub-integrity",
          502,
          `${url} downloaded with sha256 ${sha}, but the hub says ${etag}; the file was discarded. Retry the download.`,
          { url },
        );
      }
    }
    const link = join(repoDir, "snapshots", commit, file);
    await mkdir(dirname(link), { recursive: true });
    const target = relative(dirname(link), blob).split("\\").join(posix.sep);
    const current = await readlink(link).catch(() => null);
    if (current !== target) {
      await rm(link, { force: true });
      await symlink(target, link).catch(() => copyFile(blob, link));
    }
    return true;
  };

  if (opts.files) for (const f of opts.files) await fetchOne(f, false);
  else {
    for (const f of REQUIRED) await fetchOne(f, false);
    if (!(await fetchOne("model.safetensors", true))) {
      if (await fetchOne("model.safetensors.index.json", true)) {
        const snap = join(repoDir, "snapshots", commit as unknown as string);
        const map =
          JSON.parse(await readFile(join(snap, "model.safetensors.index.json"), "utf8")).weight_map ?? {};
        for (const shard of new Set(Object.values(map) as string[])) await fetchOne(shard, false);
      } else if (!(await fetchOne("pytorch_model.bin", true)))
        throw new AppError(
          "hub-not-found",
          404,
          `${repoId}@${revision} has neither model.safetensors, model.safetensors.index.json nor pytorch_model.bin; it is not a checkpoint beit-edge can convert.`,
        );
    }
  }
  const finalCommit = commit as unknown as string;
  if (revision !== finalCommit) {
    await mkdir(dirname(refFile), { recursive: true });
    await writeFile(refFile, finalCommit);
  }
  return join(repoDir, "snapshots", finalCommit);
}

/** HEAD a resolve URL; follows same-site redirects, stops at an off-site one (the CDN). */
async function resolve(url: string, token: string | undefined): Promise<Resolved | null> {
  let current = url;
  let commitSeen: string | null = null;
  for (let hop = 0; hop < 10; hop++) {
    let res: Response;
    try {
      res = await fetch(current, {
        method: "HEAD",
        redirect: "manual",
        headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), "Accept-Encoding": "identity" },
        signal: AbortSignal.timeout(30_000),
      });
    } catch (e) {
      throw unreachable(current, describeFetchError(e));
    }
    const h = res.headers;
    const etag = (h.get("x-linked-etag") ?? h.get("etag"))?.replace(/^W\//, "").replace(/"/g, "") ?? null;
    const sizeHeader = h.get("x-linked-size") ?? h.get("content-length");
    // Same-site redirects (renamed repos, resolve caches) may carry the commit on an earlier hop.
    commitSeen = h.get("x-repo-commit") ?? commitSeen;
    const found = {
      url: current,
      commit: commitSeen,
      etag,
      size: sizeHeader ? Number(sizeHeader) : null,
    };
    if (res.status === 404) return null;
    if (res.status === 401 || res.status === 403)
      throw new AppError(
        "hub-unauthorized",
        res.status,
        `${current} answered ${res.status}: the repo is private or gated. Set HF_TOKEN to a token with access, or pass a local directory.`,
        { url: current },
      );
    if (res.status >= 300 && res.status < 400) {
      const location = h.get("location");
      if (!location) throw unreachable(current, `redirect ${res.status} without a Location`);
      const next = new URL(location, current);
      // Off-site redirect (LFS content on a CDN): the hub's headers already describe the file.
      if (next.origin !== new URL(current).origin && found.etag) return { ...found, url };
      current = next.href;
      continue;
    }
    if (!res.ok) throw unreachable(current, `HTTP ${res.status}`);
    return { ...found, url };
  }
  throw unreachable(url, "too many redirects");
}

async function hashFile(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest("hex");
}

/** GETs `meta.url` into `<blob>.incomplete` (resuming with Range), then renames it to `blob`. */
async function fetchBlob(
  meta: Resolved,
  blob: string,
  token: string | undefined,
  file: string,
  progress: (p: DownloadProgress) => void,
): Promise<string> {
  const part = `${blob}.incomplete`;
  let have = (await stat(part).catch(() => null))?.size ?? 0;
  if (meta.size !== null && have > meta.size) {
    await rm(part, { force: true });
    have = 0;
  }
  const headers: Record<string, string> = { "Accept-Encoding": "identity" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (have > 0) headers.Range = `bytes=${have}-`;
  let res: Response;
  try {
    res = await fetch(meta.url, { headers, redirect: "follow" });
  } catch (e) {
    throw unreachable(meta.url, describeFetchError(e));
  }
  if (res.status === 416 && meta.size !== null && have === meta.size) {
    // Already complete.
  } else if (!res.ok || !res.body) throw unreachable(meta.url, `HTTP ${res.status}`);
  const resumed = res.status === 206;
  const hash = createHash("sha256");
  if (resumed) for await (const chunk of createReadStream(part)) hash.update(chunk as Buffer);
  else have = 0;
  const total = meta.size;
  const fh = await open(part, resumed || res.status === 416 ? "a" : "w");
  let received = have;
  try {
    if (res.status !== 416 && res.body) {
      try {
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
          hash.update(chunk);
          await fh.write(chunk);
          received += chunk.byteLength;
          progress({ file, received, total, done: false });
        }
      } catch (e) {
        throw unreachable(
          meta.url,
          `the transfer broke off after ${received} bytes: ${describeFetchError(e)}; run the same command again to resume`,
        );
      }
    } else for await (const chunk of createReadStream(part)) hash.update(chunk as Buffer);
  } finally {
    await fh.close();
  }
  if (total !== null && received !== total)
    throw unreachable(
      meta.url,
      `the transfer ended after ${received} of ${total} bytes; run the same command again to resume`,
    );
  await rename(part, blob);
  const sha256 = hash.digest("hex");
  progress({ file, received, total, done: true, sha256 });
  return sha256;
}

/**
 * Download progress on stderr (model-shards/progress.ts): a bar with sizes and rate per file on a
 * terminal, one line per finished file otherwise.
 */
export function downloadProgress(stream: NodeJS.WriteStream = process.stderr): (p: DownloadProgress) => void {
  const bar = progressBar(stream);
  const started = new Map<string, number>();
  const mb = (n: number) => (n / 1e6).toFixed(1);
  return (p) => {
    const now = Date.now();
    if (!started.has(p.file)) started.set(p.file, now);
    const secs = Math.max(0.001, (now - (started.get(p.file) ?? now)) / 1000);
    bar({
      label: p.file,
      frac: p.total ? p.received / p.total : undefined,
      suffix: `${mb(p.received)}${p.total ? `/${mb(p.total)}` : ""} MB ${mb(p.received / secs)} MB/s`,
      final: p.done,
      plain: p.done
        ? `${p.cached ? "cached" : "downloaded"} ${p.file} (${mb(p.received)} MB, sha256 ${p.sha256})`
        : null,
    });
  };
}
