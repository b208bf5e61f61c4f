/**
 * @module
 * The tagging store in D1 (schema: migrations/0002_images.sql): one `images` row per locator with
 * the version last tagged and its outcome, and its labels in `image_labels`.
 *
 * - {@link ImageStore.save} replaces a row and its labels in one batch (a D1 batch is a transaction).
 * - {@link ImageStore.findTaggedBySha}: the content-hash dedupe — the same bytes already tagged by the
 *   same model version lend their labels, so the same photo under ten URLs is classified once.
 * - {@link ImageStore.search}: images carrying a label (case-insensitive exact match) with a score of at
 *   least `minScore`, best score first, then image id; the cursor is the last (score, id) pair, so
 *   pages are stable while rows are added (a row inserted above the cursor is not seen by later
 *   pages, one inserted below is). One index range scan per page (image_labels_search).
 */
import { AppError } from "../shared/errors.ts";
import type { TagStatus } from "./entry.ts";
import type { ImageSource, Validators } from "./identity.ts";

export interface StoredLabel {
  label: string;
  classId: number;
  score: number;
}

/** What the consumer learned about one locator. */
export interface ImageOutcome {
  locator: string;
  source: ImageSource;
  publicUrl?: string;
  validators: Validators;
  contentType?: string;
  sha256?: string;
  width?: number;
  height?: number;
  format?: string;
  model?: { id: string; version: string };
  status: TagStatus;
  reason?: string;
  labels: StoredLabel[];
  /** True when this processing called the model (false: labels reused, or none). */
  classified: boolean;
  now: number;
}

/** The columns of an image the API shows as they are stored. */
interface ImageColumns {
  id: number;
  locator: string;
  source: "origin" | "r2";
  url: string | null;
  public_url: string | null;
  etag: string | null;
  last_modified: string | null;
  content_length: number | null;
  content_type: string | null;
  sha256: string | null;
  width: number | null;
  height: number | null;
  format: string | null;
  status: TagStatus;
  reason: string | null;
}

/** An image as the API shows it. */
export interface ImageRecord extends ImageColumns {
  key: string | null;
  model: { id: string; version: string } | null;
  classified: boolean;
  tagged_at: string | null;
  updated_at: string;
  labels: { label: string; score: number; class_id: number }[];
}

/** An image as D1 stores it (migrations/0002_images.sql). */
interface ImageRow extends ImageColumns {
  r2_key: string | null;
  model_id: string | null;
  model_version: string | null;
  classified: number;
  tagged_at: number | null;
  updated_at: number;
}

interface LabelRow {
  image_id: number;
  label: string;
  class_id: number;
  score: number;
}

/** One page of search results. */
export interface SearchPage {
  items: (ImageRecord & { score: number })[];
  next_cursor: string | null;
}

/** One page of the list of every image. */
export interface ListPage {
  items: ImageRecord[];
  next_cursor: string | null;
}

export interface SearchQuery {
  label: string;
  minScore?: number;
  limit?: number;
  cursor?: string | null;
}

/** Search page size: default and largest. */
export const SEARCH_LIMITS = { default: 20, max: 100 } as const;

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

function toRecord(row: ImageRow, labels: LabelRow[]): ImageRecord {
  return {
    id: row.id,
    locator: row.locator,
    source: row.source,
    url: row.url,
    key: row.r2_key,
    public_url: row.public_url,
    etag: row.etag,
    last_modified: row.last_modified,
    content_length: row.content_length,
    content_type: row.content_type,
    sha256: row.sha256,
    width: row.width,
    height: row.height,
    format: row.format,
    model: row.model_id && row.model_version ? { id: row.model_id, version: row.model_version } : null,
    status: row.status,
    reason: row.reason,
    classified: row.classified === 1,
    tagged_at: iso(row.tagged_at),
    updated_at: iso(row.updated_at) ?? "",
    labels: labels.map((l) => ({ label: l.label, score: l.score, class_id: l.class_id })),
  };
}

/** Validators recorded on a row. */
export function validatorsOf(r: {
  etag: string | null;
  last_modified: string | null;
  content_length: number | null;
}): Validators {
  const v: Validators = {};
  if (r.etag !== null) v.etag = r.etag;
  if (r.last_modified !== null) v.lastModified = r.last_modified;
  if (r.content_length !== null) v.length = r.content_length;
  return v;
}

/** Keeps the first (best) label of each name, case-insensitively, so search lists an image once. */
export function distinctLabels(labels: readonly StoredLabel[]): StoredLabel[] {
  const seen = new Set<string>();
  return labels.filter((l) => {
    const k = l.label.toLowerCase();
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

function encodeCursor(score: number, id: number): string {
  return btoa(JSON.stringify([score, id]))
    .replace(/\+/g, "-")
    .replace(/\//g, "_")
    .replace(/=+$/, "");
}

function decodeCursor(c: string): [number, number] {
  try {
    const v = JSON.parse(atob(c.replace(/-/g, "+").replace(/_/g, "/"))) as unknown;
    if (Array.isArray(v) && v.length === 2 && Number.isFinite(v[0]) && Number.isInteger(v[1]))
      return [v[0], v[1]];
  } catch {
    // fall through
  }
  throw new AppError(
    "invalid-parameter",
    422,
    "cursor is not one this API returned; start again without it.",
  );
}

export class ImageStore {
  constructor(private readonly db: D1Database) {}

  private async labelsOf(ids: number[]): Promise<Map<number, LabelRow[]>> {
    const out = new Map<number, LabelRow[]>();
    if (ids.length === 0) return out;
    const { results } = await this.db
      .prepare(
        "SELECT image_id, label, class_id, score FROM image_labels WHERE image_id IN (SELECT value FROM json_each(?1)) ORDER BY image_id, rank",
      )
      .bind(JSON.stringify(ids))
      .all<LabelRow>();
    for (const r of results) {
      const list = out.get(r.image_id) ?? [];
      list.push(r);
      out.set(r.image_id, list);
    }
    return out;
  }

  private async one(sql: string, ...args: unknown[]): Promise<ImageRecord | null> {
    const row = await this.db
      .prepare(sql)
      .bind(...args)
      .first<ImageRow>();
    if (!row) return null;
    return toRecord(row, (await this.labelsOf([row.id])).get(row.id) ?? []);
  }

  /** The row of a locator, with its labels. */
  get(locator: string): Promise<ImageRecord | null> {
    return this.one("SELECT * FROM images WHERE locator = ?1", locator);
  }

  /** An image with these bytes already tagged by this model version, if any. */
  findTaggedBySha(sha256: string, modelVersion: string): Promise<ImageRecord | null> {
    return this.one(
      "SELECT * FROM images WHERE sha256 = ?1 AND model_version = ?2 AND status = 'tagged' ORDER BY id LIMIT 1",
      sha256,
      modelVersion,
    );
  }

  /** Lookup by origin URL or by the public URL it was served under; or by R2 key. */
  lookup(q: { url: string } | { key: string }): Promise<ImageRecord | null> {
    if ("url" in q)
      return this.one(
        "SELECT * FROM images WHERE url = ?1 OR public_url = ?1 ORDER BY updated_at DESC, id DESC LIMIT 1",
        q.url,
      );
    return this.one(
      "SELECT * FROM images WHERE r2_key = ?1 ORDER BY updated_at DESC, id DESC LIMIT 1",
      q.key,
    );
  }

  /** Writes a locator's row and replaces its labels, in one transaction. */
  async save(o: ImageOutcome): Promise<void> {
    const labels = distinctLabels(o.labels);
    const v = o.validators;
    const stmts: D1PreparedStatement[] = [
      this.db
        .prepare(
          `INSERT INTO images (locator, source, url, r2_key, public_url, etag, last_modified, content_length,
             content_type, sha256, width, height, format, model_id, model_version, status, reason, label_count,
             classified, tagged_at, updated_at)
           VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)
           ON CONFLICT (locator) DO UPDATE SET
             public_url = COALESCE(excluded.public_url, images.public_url),
             etag = excluded.etag, last_modified = excluded.last_modified,
             content_length = excluded.content_length, content_type = excluded.content_type,
             sha256 = excluded.sha256, width = excluded.width, height = excluded.height, format = excluded.format,
             model_id = excluded.model_id, model_version = excluded.model_version, status = excluded.status,
             reason = excluded.reason, label_count = excluded.label_count, classified = excluded.classified,
             tagged_at = excluded.tagged_at, updated_at = excluded.updated_at`,
        )
        .bind(
          o.locator,
          o.source.kind,
          o.source.kind === "origin" ? o.source.url : null,
          o.source.kind === "r2" ? o.source.key : null,
          o.publicUrl ?? null,
          v.etag ?? null,
          v.lastModified ?? null,
          v.length ?? null,
          o.contentType ?? null,
          o.sha256 ?? null,
          o.width ?? null,
          o.height ?? null,
          o.format ?? null,
          o.model?.id ?? null,
          o.model?.version ?? null,
          o.status,
          o.reason ?? null,
          labels.length,
          o.classified ? 1 : 0,
          o.status === "tagged" ? o.now : null,
          o.now,
        ),
      this.db
        .prepare("DELETE FROM image_labels WHERE image_id = (SELECT id FROM images WHERE locator = ?1)")
        .bind(o.locator),
      ...labels.map((l, rank) =>
        this.db
          .prepare(
            "INSERT INTO image_labels (image_id, rank, label, class_id, score) SELECT id, ?2, ?3, ?4, ?5 FROM images WHERE locator = ?1",
          )
          .bind(o.locator, rank, l.label, l.classId, l.score),
      ),
    ];
    await this.db.batch(stmts);
  }

  /** Marks a locator as processed again without a model call (a duplicate job for a current version). */
  async touch(locator: string, now: number): Promise<void> {
    await this.db
      .prepare("UPDATE images SET updated_at = ?2, classified = 0 WHERE locator = ?1")
      .bind(locator, now)
      .run();
  }

  /** Removes a locator (R2 object deleted). True when it existed. */
  async forget(locator: string): Promise<boolean> {
    const [, del] = await this.db.batch([
      this.db
        .prepare("DELETE FROM image_labels WHERE image_id = (SELECT id FROM images WHERE locator = ?1)")
        .bind(locator),
      this.db.prepare("DELETE FROM images WHERE locator = ?1").bind(locator),
    ]);
    return (del.meta.changes ?? 0) > 0;
  }

  /** One page of every recorded image, oldest (lowest id) first; the cursor is the last id. */
  async list(q: { limit?: number; cursor?: string | null }): Promise<ListPage> {
    const limit = q.limit ?? SEARCH_LIMITS.default;
    const after = q.cursor ? decodeCursor(q.cursor)[1] : 0;
    const { results } = await this.db
      .prepare("SELECT * FROM images WHERE id > ?1 ORDER BY id LIMIT ?2")
      .bind(after, limit + 1)
      .all<ImageRow>();
    const page = results.slice(0, limit);
    const labels = await this.labelsOf(page.map((r) => r.id));
    const last = page[page.length - 1];
    return {
      items: page.map((r) => toRecord(r, labels.get(r.id) ?? [])),
      next_cursor: results.length > limit && last ? encodeCursor(0, last.id) : null,
    };
  }

  /** One page of images carrying `label` (see the module header for the order and the cursor). */
  async search(q: SearchQuery): Promise<SearchPage> {
    const limit = q.limit ?? SEARCH_LIMITS.default;
    const after = q.cursor ? decodeCursor(q.cursor) : null;
    const { results } = await this.db
      .prepare(
        `SELECT i.*, l.score AS match_score FROM image_labels l JOIN images i ON i.id = l.image_id
         WHERE l.label = ?1 AND l.score >= ?2
           AND (?3 IS NULL OR l.score < ?3 OR (l.score = ?3 AND l.image_id > ?4))
         ORDER BY l.score DESC, l.image_id ASC LIMIT ?5`,
      )
      .bind(q.label, q.minScore ?? 0, after ? after[0] : null, after ? after[1] : 0, limit + 1)
      .all<ImageRow & { match_score: number }>();
    const page = results.slice(0, limit);
    const labels = await this.labelsOf(page.map((r) => r.id));
    const last = page[page.length - 1];
    return {
      items: page.map((r) => ({ ...toRecord(r, labels.get(r.id) ?? []), score: r.match_score })),
      next_cursor: results.length > limit && last ? encodeCursor(last.match_score, last.id) : null,
    };
  }
}
