/**
 * @module
 * The one error every decoder throws for bytes it cannot decode: stable code "undecodable-image",
 * HTTP 400, a message naming the format and what was wrong.
 */
import { AppError } from "../shared/errors.ts";

/** Display names used in messages, by format id. */
const NAMES: Record<string, string> = { jpeg: "JPEG", png: "PNG", webp: "WebP", avif: "AVIF", gif: "GIF" };

/**
 * `undecodable("png", "the file is truncated")` ->
 * "The PNG image could not be decoded (the file is truncated); send a complete, valid image file."
 */
export function undecodable(format: string, why: string): AppError {
  return new AppError(
    "undecodable-image",
    400,
    `The ${NAMES[format] ?? format} image could not be decoded (${why}); send a complete, valid image file.`,
    { format },
  );
}
