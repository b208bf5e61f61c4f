/**
 * @module
 * The hot-path entry: one KV value per locator (key {@link tagKey}), written by the tagging
 * consumer, read by the proxy with one `get`. It carries everything the proxy adds to a response,
 * already serialized, so a hit costs one KV read and no formatting beyond copying strings.
 */
import type { Validators } from "./identity.ts";
import { serializeLabelList, serializeString } from "./structured-fields.ts";

/** Status of an image's tagging. `skipped` is final for that version; `failed` is retried later. */
export type TagStatus = "tagged" | "skipped" | "failed";

export interface TagEntry {
  v: 1;
  /** Validators of the version that was tagged (see identity.ts sameVersion). */
  validators: Validators;
  status: TagStatus;
  /** Why skipped or failed: an AppError code ("image-too-large", "undecodable-image", ...). */
  reason?: string;
  /** `image-labels` value ("" when no label passed the minimum score). */
  labels?: string;
  /** `image-labels-model` value. */
  model?: string;
}

/** Response header with the labels (RFC 8941 List). */
export const LABELS_HEADER = "image-labels";
/** Response header naming the model: `"<id>";version="<version>"` (+ `;synthetic` for a synthetic model). */
export const MODEL_HEADER = "image-labels-model";
/** Response header with the tagging status: `tagged`, `pending`, `skipped;reason="..."`, `failed;reason="..."`. */
export const STATUS_HEADER = "image-labels-status";

/** `image-labels-model` for a model identity. */
export function modelHeader(model: { id: string; version: string; synthetic: boolean }): string {
  return `${serializeString(model.id)};version=${serializeString(model.version)}${model.synthetic ? ";synthetic" : ""}`;
}

/** The entry for a tagged image. */
export function taggedEntry(
  validators: Validators,
  labels: readonly { label: string; score: number }[],
  model: { id: string; version: string; synthetic: boolean },
): TagEntry {
  return {
    v: 1,
    validators,
    status: "tagged",
    labels: serializeLabelList(labels),
    model: modelHeader(model),
  };
}

/** The entry for an image that was skipped or failed. */
export function statusEntry(validators: Validators, status: "skipped" | "failed", reason: string): TagEntry {
  return { v: 1, validators, status, reason };
}

/** Reads a KV value back, or null when it is not an entry of this version of the format. */
export function parseEntry(v: unknown): TagEntry | null {
  if (typeof v !== "object" || v === null) return null;
  const e = v as Partial<TagEntry>;
  if (e.v !== 1 || typeof e.validators !== "object" || e.validators === null) return null;
  if (e.status !== "tagged" && e.status !== "skipped" && e.status !== "failed") return null;
  return e as TagEntry;
}

/** Adds the entry's headers to `h`. */
export function applyEntry(h: Headers, e: TagEntry): void {
  if (e.status === "tagged") {
    if (e.labels) h.set(LABELS_HEADER, e.labels);
    if (e.model) h.set(MODEL_HEADER, e.model);
    h.set(STATUS_HEADER, "tagged");
  } else {
    h.set(STATUS_HEADER, `${e.status};reason=${serializeString(e.reason ?? "unknown")}`);
  }
}
