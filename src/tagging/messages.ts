/**
 * @module
 * Messages on the tagging queue (`beit-edge-tagging`). Two producers write to it:
 *
 * - the tagging Worker's hot path and `npm run tag` send a {@link TagMessage};
 * - R2 event notifications (rule: object-create / object-delete on the IMAGES bucket -> this queue)
 *   send R2's own shape, {@link R2EventNotification}:
 *   `{"account","action":"PutObject"|"CopyObject"|"CompleteMultipartUpload"|"DeleteObject"|
 *   "LifecycleDeletion","bucket","object":{"key","size","eTag"},"eventTime","copySource"?}`.
 *
 * {@link parseQueueMessage} turns either into a {@link TagJob}; anything else is refused with a
 * reason (the consumer acknowledges it and logs it: retrying a malformed message cannot help).
 */
import type { ImageSource } from "./identity.ts";

/** What the hot path and `npm run tag` enqueue. */
export interface TagMessage {
  type: "tag";
  source: ImageSource;
  /** The URL the image was requested under (for lookup by public URL). */
  publicUrl?: string;
  /** Classify again even when the stored tags are current (`npm run tag -- --retag`). */
  retag?: boolean;
  /** ISO time of the request that enqueued it. */
  requestedAt?: string;
  /** The API key (id) that asked for it (backfill): its image quota and usage are charged. */
  keyId?: string;
}

/** The body of an R2 event notification message. */
export interface R2EventNotification {
  account: string;
  action: string;
  bucket: string;
  object: { key: string; size?: number; eTag?: string };
  eventTime?: string;
  copySource?: { bucket: string; object: string };
}

/** R2 actions of the object-create event type. */
export const R2_CREATE_ACTIONS = ["PutObject", "CopyObject", "CompleteMultipartUpload"] as const;
/** R2 actions of the object-delete event type. */
export const R2_DELETE_ACTIONS = ["DeleteObject", "LifecycleDeletion"] as const;

/** One unit of work for the consumer. */
export type TagJob =
  | {
      op: "tag";
      source: ImageSource;
      publicUrl?: string;
      retag: boolean;
      etagHint?: string;
      sizeHint?: number;
      /** Who asked (a key id or caller id), when a client did (backfill). */
      keyId?: string;
    }
  | { op: "forget"; source: ImageSource };

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function parseSource(v: unknown): ImageSource | null {
  if (!isRecord(v)) return null;
  if (v.kind === "origin" && typeof v.url === "string") return { kind: "origin", url: v.url };
  if (v.kind === "r2" && typeof v.bucket === "string" && typeof v.key === "string" && v.key !== "")
    return { kind: "r2", bucket: v.bucket, key: v.key };
  return null;
}

/** A queue message body as a job, or a string saying why it is not one. */
export function parseQueueMessage(body: unknown): TagJob | string {
  if (!isRecord(body)) return "the message body is not a JSON object";
  if (body.type === "tag") {
    const source = parseSource(body.source);
    if (!source) return "a tag message needs source {kind:'origin',url} or {kind:'r2',bucket,key}";
    return {
      op: "tag",
      source,
      ...(typeof body.publicUrl === "string" ? { publicUrl: body.publicUrl } : {}),
      retag: body.retag === true,
      ...(typeof body.keyId === "string" && body.keyId.length <= 64 ? { keyId: body.keyId } : {}),
    };
  }
  if (typeof body.action === "string" && typeof body.bucket === "string" && isRecord(body.object)) {
    const key = body.object.key;
    if (typeof key !== "string" || key === "") return "an R2 notification without object.key";
    const source: ImageSource = { kind: "r2", bucket: body.bucket, key };
    if ((R2_CREATE_ACTIONS as readonly string[]).includes(body.action))
      return {
        op: "tag",
        source,
        retag: false,
        ...(typeof body.object.eTag === "string" ? { etagHint: body.object.eTag } : {}),
        ...(typeof body.object.size === "number" ? { sizeHint: body.object.size } : {}),
      };
    if ((R2_DELETE_ACTIONS as readonly string[]).includes(body.action)) return { op: "forget", source };
    return `R2 action "${body.action}" is not handled`;
  }
  return "neither a tag message nor an R2 event notification";
}
