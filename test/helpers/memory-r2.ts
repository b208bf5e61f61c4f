/**
 * @module
 * An in-memory stand-in for the part of an R2 bucket binding that ShardStore and r2Target use
 * (get, head, put), and of the Cache API (match, put, delete), for Node unit tests. The workerd
 * tests use miniflare's real local R2 and Cache API.
 */

class MemoryObject {
  constructor(
    readonly key: string,
    readonly bytes: Uint8Array,
  ) {}
  get size(): number {
    return this.bytes.byteLength;
  }
  async arrayBuffer(): Promise<ArrayBuffer> {
    return this.bytes.slice().buffer;
  }
  async text(): Promise<string> {
    return new TextDecoder().decode(this.bytes);
  }
  async json<T>(): Promise<T> {
    return JSON.parse(await this.text()) as T;
  }
}

export class MemoryR2 {
  readonly objects = new Map<string, Uint8Array>();
  /** Keys read with get(), in order. */
  readonly reads: string[] = [];

  async get(key: string): Promise<MemoryObject | null> {
    this.reads.push(key);
    const b = this.objects.get(key);
    return b ? new MemoryObject(key, b) : null;
  }
  async head(key: string): Promise<{ key: string; size: number } | null> {
    const b = this.objects.get(key);
    return b ? { key, size: b.byteLength } : null;
  }
  async put(key: string, value: Uint8Array | string): Promise<void> {
    this.objects.set(key, typeof value === "string" ? new TextEncoder().encode(value) : value.slice());
  }

  /** This object typed as the binding it stands in for. */
  asBinding(): R2Bucket {
    return this as unknown as R2Bucket;
  }
}

/** The Cache API calls ShardStore makes, in memory (pass as `cache as unknown as Cache`). */
export class MemoryCache {
  readonly entries = new Map<string, Uint8Array>();
  async match(url: string): Promise<Response | undefined> {
    const b = this.entries.get(url);
    return b ? new Response(b.slice()) : undefined;
  }
  async put(url: string, res: Response): Promise<void> {
    this.entries.set(url, new Uint8Array(await res.arrayBuffer()));
  }
  async delete(url: string): Promise<boolean> {
    return this.entries.delete(url);
  }
}
