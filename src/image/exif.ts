/**
 * @module
 * EXIF orientation: reads tag 0x0112 from a TIFF-structured EXIF block and applies the same transpose
 * as Pillow's `ImageOps.exif_transpose` (orientation 2..8; anything else leaves the image as it is).
 */

/**
 * Reads the orientation tag (1..8) from IFD0 of an EXIF block that starts at the TIFF byte-order mark.
 *
 * @returns the orientation, or 1 when absent, malformed or out of range.
 * @example
 * readOrientation(exifBytes); // 6 for a phone photo taken in portrait
 */
export function readOrientation(tiff: Uint8Array | null): number {
  const v = orientationTag(tiff);
  return v !== null && v >= 1 && v <= 8 ? v : 1;
}

/**
 * The orientation (1..8) that `ImageOps.exif_transpose` acts on: the EXIF tag when the EXIF block has
 * one (whatever its value), otherwise Pillow's fallback, a `tiff:Orientation` digit in the XMP packet.
 *
 * @example
 * effectiveOrientation(header.exif, header.xmp); // 6
 */
export function effectiveOrientation(tiff: Uint8Array | null, xmp: string | null | undefined): number {
  const tag = orientationTag(tiff);
  if (tag !== null) return tag >= 1 && tag <= 8 ? tag : 1;
  const m = xmp ? /tiff:Orientation(="|>)([0-9])/.exec(xmp) : null;
  const v = m ? Number(m[2]) : 1;
  return v >= 1 && v <= 8 ? v : 1;
}

/** The raw orientation tag value from IFD0, or null when there is no such tag (or no valid EXIF). */
function orientationTag(tiff: Uint8Array | null): number | null {
  if (!tiff || tiff.length < 8) return null;
  const le = tiff[0] === 0x49 && tiff[1] === 0x49;
  const be = tiff[0] === 0x4d && tiff[1] === 0x4d;
  if (!le && !be) return null;
  const u16 = (at: number): number => (le ? tiff[at] | (tiff[at + 1] << 8) : (tiff[at] << 8) | tiff[at + 1]);
  const u32 = (at: number): number =>
    le
      ? (tiff[at] | (tiff[at + 1] << 8) | (tiff[at + 2] << 16) | (tiff[at + 3] << 24)) >>> 0
      : ((tiff[at] << 24) | (tiff[at + 1] << 16) | (tiff[at + 2] << 8) | tiff[at + 3]) >>> 0;
  if (u16(2) !== 42) return null;
  const ifd = u32(4);
  if (ifd + 2 > tiff.length) return null;
  const count = u16(ifd);
  for (let i = 0; i < count; i++) {
    const e = ifd + 2 + i * 12;
    if (e + 12 > tiff.length) return null;
    if (u16(e) !== 0x0112) continue;
    const type = u16(e + 2);
    // SHORT is the standard type; LONG appears in the wild and Pillow reads it too.
    return type === 3 ? u16(e + 8) : type === 4 ? u32(e + 8) : 0;
  }
  return null;
}

/** An RGB raster: 3 bytes per pixel, row-major. */
export interface RgbRaster {
  width: number;
  height: number;
  data: Uint8Array;
}

/**
 * Applies an EXIF orientation the way `ImageOps.exif_transpose` does: 2 mirror, 3 rotate 180,
 * 4 flip, 5 transpose, 6 rotate 90 clockwise, 7 transverse, 8 rotate 90 counter-clockwise.
 * Orientation 1 (or any other value) returns the input unchanged.
 *
 * @example
 * const upright = applyOrientation(img, readOrientation(exif));
 */
export function applyOrientation<T extends RgbRaster>(img: T, orientation: number): T {
  if (orientation < 2 || orientation > 8) return img;
  const { width: w, height: h, data: src } = img;
  const swap = orientation >= 5;
  const ow = swap ? h : w;
  const oh = swap ? w : h;
  const out = new Uint8Array(ow * oh * 3);
  for (let y = 0; y < oh; y++) {
    for (let x = 0; x < ow; x++) {
      let sx: number;
      let sy: number;
      switch (orientation) {
        case 2:
          sx = w - 1 - x;
          sy = y;
          break;
        case 3:
          sx = w - 1 - x;
          sy = h - 1 - y;
          break;
        case 4:
          sx = x;
          sy = h - 1 - y;
          break;
        case 5:
          sx = y;
          sy = x;
          break;
        case 6:
          sx = y;
          sy = h - 1 - x;
          break;
        case 7:
          sx = w - 1 - y;
          sy = h - 1 - x;
          break;
        default:
          sx = w - 1 - y;
          sy = x;
          break;
      }
      const s = (sy * w + sx) * 3;
      const d = (y * ow + x) * 3;
      out[d] = src[s];
      out[d + 1] = src[s + 1];
      out[d + 2] = src[s + 2];
    }
  }
  return { ...img, width: ow, height: oh, data: out };
}
