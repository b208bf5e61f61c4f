import { createHash } from "node:crypto";
import { lstat, mkdir, mkdtemp, readFile, readlink, rm, stat, writeFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { AppError } from "../../src/shared/errors.ts";
import { type DownloadProgress, downloadFromHub, hubCacheDir } from "./hub.ts";
import { loadCheckpoint } from "./index.ts";
import { synthesize, writeCheckpoint } from "./synth.ts";

const REPO = "acme/tiny-beit";
const COMMIT = "0123456789abcdef0123456789abcdef01234567";

interface Seen {
  server: "hub" | "cdn";
  method: string;
  url: string;
  authorization?: string;
  range?: string;
}

let root: string;
let files: Map<string, Buffer>;
let hub: Server;
let cdn: Server;
let hubUrl: string;
let cdnUrl: string;
let seen: Seen[] = [];
/** When set, the CDN sends only this many bytes of the next full GET and then drops the connection. */
let cutAfter: number | null = null;
/** When true, the CDN flips one byte of the next body it sends. */
let corrupt = false;

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const gitSha = (b: Buffer) => createHash("sha1").update(`blob ${b.length}\0`).update(b).digest("hex");
const quiet = (_: DownloadProgress) => {};

function listen(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<[Server, string]> {
  return new Promise((ok) => {
    const s = createServer(handler);
    s.listen(0, "127.0.0.1", () => ok([s, `http://127.0.0.1:${(s.address() as AddressInfo).port}`]));
  });
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "beit-hub-"));
  const src = join(root, "src");
  await writeCheckpoint(src, synthesize({ size: "tiny", seed: 5 }), "bin");
  files = new Map();
  for (const f of ["config.json", "preprocessor_config.json", "pytorch_model.bin"])
    files.set(f, await readFile(join(src, f)));

  [cdn, cdnUrl] = await listen((req, res) => {
    seen.push({
      server: "cdn",
      method: req.method ?? "",
      url: req.url ?? "",
      authorization: req.headers.authorization,
      range: req.headers.range,
    });
    const body = [...files.values()].find((b) => req.url === `/lfs/${sha256(b)}`);
    if (!body) return res.writeHead(404).end();
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
    const start = m ? Number(m[1]) : 0;
    const part = body.subarray(start);
    res.writeHead(m ? 206 : 200, {
      "Content-Length": part.length,
      ...(m ? { "Content-Range": `bytes ${start}-${body.length - 1}/${body.length}` } : {}),
    });
    if (req.method === "HEAD") return res.end();
    if (cutAfter !== null && !m) {
      const n = cutAfter;
      cutAfter = null;
      res.write(part.subarray(0, n), () => setTimeout(() => res.destroy(), 20));
      return;
    }
    if (corrupt) {
      corrupt = false;
      const bad = Buffer.from(part);
      bad[bad.length >> 1] ^= 0xff;
      return res.end(bad);
    }
    res.end(part);
  });

  [hub, hubUrl] = await listen((req, res) => {
    seen.push({
      server: "hub",
      method: req.method ?? "",
      url: req.url ?? "",
      authorization: req.headers.authorization,
      range: req.headers.range,
    });
    if (req.url?.startsWith("/acme/old-name/")) {
      // A renamed repo: a same-site relative redirect that carries no headers of interest.
      return res.writeHead(307, { Location: req.url.replace("/acme/old-name/", "/acme/tiny-beit/") }).end();
    }
    const m = /^\/acme\/tiny-beit\/resolve\/([^/]+)\/(.+)$/.exec(req.url ?? "");
    if (!m || (m[1] !== "main" && m[1] !== COMMIT)) return res.writeHead(404).end();
    const body = files.get(decodeURIComponent(m[2]));
    if (!body) return res.writeHead(404, { "X-Error-Code": "EntryNotFound" }).end();
    if (m[2].endsWith(".bin")) {
      // LFS file: the hub redirects to the CDN and names the blob by its sha256.
      return res
        .writeHead(302, {
          Location: `${cdnUrl}/lfs/${sha256(body)}`,
          "X-Repo-Commit": COMMIT,
          "X-Linked-Etag": `"${sha256(body)}"`,
          "X-Linked-Size": String(body.length),
          ETag: '"something-else"',
        })
        .end();
    }
    res.writeHead(200, { "X-Repo-Commit": COMMIT, ETag: `"${gitSha(body)}"`, "Content-Length": body.length });
    res.end(req.method === "HEAD" ? undefined : body);
  });
});

afterAll(async () => {
  await new Promise((ok) => hub.close(ok));
  await new Promise((ok) => cdn.close(ok));
  await rm(root, { recursive: true, force: true });
});

beforeEach(() => {
  seen = [];
  cutAfter = null;
  corrupt = false;
});

async function closedPort(): Promise<string> {
  const [s, url] = await listen(() => {});
  await new Promise((ok) => s.close(ok));
  return url;
}

describe("downloadFromHub", () => {
  it("downloads into the Hugging Face cache layout, sending HF_TOKEN to the hub only", async () => {
    const cacheDir = join(root, "cache-a");
    const old = process.env.HF_TOKEN;
    process.env.HF_TOKEN = "hf_test_token";
    let dir: string;
    const events: DownloadProgress[] = [];
    try {
      dir = await downloadFromHub(REPO, { endpoint: hubUrl, cacheDir, onProgress: (p) => events.push(p) });
    } finally {
      if (old === undefined) delete process.env.HF_TOKEN;
      else process.env.HF_TOKEN = old;
    }
    const repoDir = join(cacheDir, "models--acme--tiny-beit");
    expect(dir).toBe(join(repoDir, "snapshots", COMMIT));
    expect((await readFile(join(repoDir, "refs", "main"), "utf8")).trim()).toBe(COMMIT);
    for (const [name, body] of files) {
      const link = join(dir, name);
      expect((await lstat(link)).isSymbolicLink(), name).toBe(true);
      const blob = name.endsWith(".bin") ? sha256(body) : gitSha(body);
      expect(await readlink(link)).toBe(`../../blobs/${blob}`);
      expect(Buffer.compare(await readFile(link), body)).toBe(0);
      const done = events.find((e) => e.file === name && e.done);
      expect(done?.sha256).toBe(sha256(body));
    }
    // model.safetensors was asked for, answered 404, and pytorch_model.bin used instead.
    expect(seen.some((s) => s.server === "hub" && s.url.endsWith("/model.safetensors"))).toBe(true);
    await expect(stat(join(dir, "model.safetensors"))).rejects.toThrow();
    for (const s of seen.filter((x) => x.server === "hub"))
      expect(s.authorization).toBe("Bearer hf_test_token");
    for (const s of seen.filter((x) => x.server === "cdn")) expect(s.authorization).toBeUndefined();
    // After the first file the resolved commit is used, so every file comes from one snapshot.
    const later = seen.filter((s) => s.server === "hub" && !s.url.endsWith("/config.json"));
    expect(later.length).toBeGreaterThan(0);
    for (const s of later) expect(s.url).toContain(`/resolve/${COMMIT}/`);
  });

  it("reuses a cached snapshot without any network request", async () => {
    const cacheDir = join(root, "cache-b");
    await downloadFromHub(REPO, { endpoint: hubUrl, cacheDir, onProgress: quiet });
    seen = [];
    const again = await downloadFromHub(REPO, { endpoint: await closedPort(), cacheDir, onProgress: quiet });
    expect(again).toBe(join(cacheDir, "models--acme--tiny-beit", "snapshots", COMMIT));
    expect(seen).toEqual([]);
  });

  it("reuses a snapshot laid out by Python tools (plain files, refs/main) offline", async () => {
    const cacheDir = join(root, "cache-py");
    const snap = join(cacheDir, "models--acme--tiny-beit", "snapshots", COMMIT);
    await mkdir(snap, { recursive: true });
    await mkdir(join(cacheDir, "models--acme--tiny-beit", "refs"), { recursive: true });
    await writeFile(join(cacheDir, "models--acme--tiny-beit", "refs", "main"), COMMIT);
    for (const [name, body] of files) await writeFile(join(snap, name), body);
    const ck = await loadCheckpoint(REPO, { endpoint: await closedPort(), cacheDir, onProgress: quiet });
    expect(ck.id).toBe(REPO);
    expect(ck.revision).toBe(COMMIT);
    expect(ck.synthetic).toBe(true);
    expect(ck.files.find((f) => f.name === "pytorch_model.bin")?.sha256).toBe(
      sha256(files.get("pytorch_model.bin")!),
    );
  });

  it("resumes an interrupted download with a Range request", async () => {
    const cacheDir = join(root, "cache-c");
    const bin = files.get("pytorch_model.bin")!;
    cutAfter = 300_000;
    const err = await downloadFromHub(REPO, { endpoint: hubUrl, cacheDir, onProgress: quiet }).catch(
      (e) => e,
    );
    expect(err).toBeInstanceOf(AppError);
    expect(err.code).toBe("hub-unreachable");
    expect(err.detail).toMatch(/again to resume/);
    const part = join(cacheDir, "models--acme--tiny-beit", "blobs", `${sha256(bin)}.incomplete`);
    const partial = (await stat(part)).size;
    expect(partial).toBeGreaterThan(0);
    expect(partial).toBeLessThan(bin.length);
    seen = [];
    const dir = await downloadFromHub(REPO, { endpoint: hubUrl, cacheDir, onProgress: quiet });
    const get = seen.find((s) => s.server === "cdn" && s.method === "GET");
    expect(get?.range).toBe(`bytes=${partial}-`);
    expect(Buffer.compare(await readFile(join(dir, "pytorch_model.bin")), bin)).toBe(0);
    await expect(stat(part)).rejects.toThrow();
  });

  it("explains in one paragraph which URL failed when the hub is unreachable", async () => {
    const endpoint = await closedPort();
    const err = await downloadFromHub(REPO, {
      endpoint,
      cacheDir: join(root, "cache-d"),
      onProgress: quiet,
    }).catch((e) => e);
    expect(err).toBeInstanceOf(AppError);
    expect(err.code).toBe("hub-unreachable");
    expect(err.detail).toContain(`${endpoint}/${REPO}/resolve/main/config.json`);
    expect(err.detail).toContain("--from ./dir");
    expect(err.detail).toContain("HF_ENDPOINT");
    expect(err.detail).not.toContain("\n");
  });

  it("honours HF_HUB_OFFLINE: cache only, a clear error on a miss", async () => {
    const old = process.env.HF_HUB_OFFLINE;
    process.env.HF_HUB_OFFLINE = "1";
    try {
      const err = await downloadFromHub(REPO, {
        endpoint: hubUrl,
        cacheDir: join(root, "cache-off"),
        onProgress: quiet,
      }).catch((e) => e);
      expect(err.code).toBe("hub-unreachable");
      expect(err.detail).toContain("HF_HUB_OFFLINE is set");
      expect(seen).toEqual([]);
    } finally {
      if (old === undefined) delete process.env.HF_HUB_OFFLINE;
      else process.env.HF_HUB_OFFLINE = old;
    }
  });

  it("follows same-site redirects of a renamed repo", async () => {
    const cacheDir = join(root, "cache-renamed");
    const dir = await downloadFromHub("acme/old-name", { endpoint: hubUrl, cacheDir, onProgress: quiet });
    expect(dir).toBe(join(cacheDir, "models--acme--old-name", "snapshots", COMMIT));
    expect(Buffer.compare(await readFile(join(dir, "config.json")), files.get("config.json")!)).toBe(0);
  });

  it("discards a download whose sha256 differs from the LFS ETag", async () => {
    const cacheDir = join(root, "cache-corrupt");
    corrupt = true;
    const err = await downloadFromHub(REPO, { endpoint: hubUrl, cacheDir, onProgress: quiet }).catch(
      (e) => e,
    );
    expect(err.code).toBe("hub-integrity");
    expect(err.detail).toContain(sha256(files.get("pytorch_model.bin")!));
    const blobs = join(cacheDir, "models--acme--tiny-beit", "blobs");
    await expect(stat(join(blobs, sha256(files.get("pytorch_model.bin")!)))).rejects.toThrow();
    // Nothing claims the snapshot is complete: the next run downloads the file again.
    const dir = await downloadFromHub(REPO, { endpoint: hubUrl, cacheDir, onProgress: quiet });
    expect(
      Buffer.compare(await readFile(join(dir, "pytorch_model.bin")), files.get("pytorch_model.bin")!),
    ).toBe(0);
  });

  it("says a missing repo or revision is not found", async () => {
    const err = await downloadFromHub(REPO, {
      endpoint: hubUrl,
      revision: "v9",
      cacheDir: join(root, "cache-e"),
      onProgress: quiet,
    }).catch((e) => e);
    expect(err.code).toBe("hub-not-found");
    expect(err.detail).toContain("/resolve/v9/config.json");
  });

  it("loadCheckpoint takes org/name@revision and returns the same tensors as the local files", async () => {
    const cacheDir = join(root, "cache-f");
    const ck = await loadCheckpoint(`${REPO}@${COMMIT}`, { endpoint: hubUrl, cacheDir, onProgress: quiet });
    const local = await loadCheckpoint(join(root, "src"));
    expect(ck.revision).toBe(COMMIT);
    expect([...ck.tensors.keys()]).toEqual([...local.tensors.keys()]);
    expect(ck.tensors.get("classifier.weight")?.data).toEqual(local.tensors.get("classifier.weight")?.data);
  });

  it("finds the cache the way huggingface_hub does", () => {
    expect(hubCacheDir({ HF_HUB_CACHE: "/x/hub", HF_HOME: "/y" })).toBe("/x/hub");
    expect(hubCacheDir({ HF_HOME: "/y" })).toBe(join("/y", "hub"));
    expect(hubCacheDir({ XDG_CACHE_HOME: "/z" })).toBe(join("/z", "huggingface", "hub"));
  });
});
