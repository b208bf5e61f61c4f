/**
 * @module
 * The `image-labels` response header: an RFC 8941 / RFC 9651 structured-field List whose members
 * are the label strings, each with a `score` parameter (sf-decimal). Labels in printable ASCII are
 * sf-strings (`"tabby, tabby cat"`); any other label is an RFC 9651 Display String
 * (`%"caf%c3%a9"`), which carries UTF-8 percent-encoded.
 *
 * Only serialization lives here (the Worker never parses the header); a strict parser for tests
 * sits beside it in structured-fields.test.ts.
 *
 * @example
 * serializeLabelList([{ label: "tabby, tabby cat", score: 0.41 }, { label: "tiger cat", score: 0.12 }]);
 * // '"tabby, tabby cat";score=0.41, "tiger cat";score=0.12'
 */

/** One labelled score, as the header carries it. */
export interface LabelScore {
  label: string;
  score: number;
}

/** Largest header value {@link serializeLabelList} emits by default (bytes; all output is ASCII). */
export const DEFAULT_MAX_HEADER_BYTES = 4096;

/** True when every code unit is printable ASCII (%x20-7E): an sf-string can carry it as is. */
function isPrintableAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

/** RFC 8941 §4.1.6: DQUOTE, the string with `\` and `"` escaped, DQUOTE. */
export function serializeString(s: string): string {
  if (!isPrintableAscii(s)) throw new TypeError("sf-string needs printable ASCII; use a display string");
  return `"${s.replace(/[\\"]/g, (ch) => `\\${ch}`)}"`;
}

const HEX = "0123456789abcdef";

/**
 * RFC 9651 §4.1.11: `%"`, then the UTF-8 bytes, with `%`, `"` and every byte outside %x20-7E
 * written as `%` + two lower-case hex digits, then `"`. Lone surrogates become U+FFFD (what
 * TextEncoder does), since a display string is Unicode text.
 */
export function serializeDisplayString(s: string): string {
  let out = '%"';
  for (const b of new TextEncoder().encode(s)) {
    if (b === 0x25 || b === 0x22 || b < 0x20 || b > 0x7e) out += `%${HEX[b >> 4]}${HEX[b & 15]}`;
    else out += String.fromCharCode(b);
  }
  return `${out}"`;
}

/** A label as a bare item: sf-string when it can be one, Display String otherwise. */
export function serializeLabel(label: string): string {
  return isPrintableAscii(label) ? serializeString(label) : serializeDisplayString(label);
}

/**
 * RFC 8941 §4.1.5: at most 12 integer digits, rounded to 3 fractional digits half-to-even, at
 * least one fractional digit, no trailing zeros. The rounding works on the double's value times
 * 1000 (a score of 0.0625 is an exact tie and becomes 0.062).
 *
 * @example
 * serializeDecimal(0.41); // "0.41"
 * serializeDecimal(1);    // "1.0"
 * serializeDecimal(0.0004); // "0.0"
 */
export function serializeDecimal(x: number): string {
  if (!Number.isFinite(x)) throw new TypeError(`sf-decimal must be finite, got ${x}`);
  const neg = x < 0;
  const scaled = Math.abs(x) * 1000;
  let units = Math.floor(scaled);
  const frac = scaled - units;
  if (frac > 0.5 || (frac === 0.5 && units % 2 === 1)) units += 1;
  const intPart = Math.floor(units / 1000);
  if (intPart >= 1e12) throw new TypeError(`sf-decimal allows 12 integer digits, got ${x}`);
  const fracDigits = String(units % 1000)
    .padStart(3, "0")
    .replace(/0+$/, "");
  const sign = neg && units !== 0 ? "-" : "";
  return `${sign}${intPart}.${fracDigits === "" ? "0" : fracDigits}`;
}

/**
 * The `image-labels` value: labels in the order given (callers pass them best first), each with
 * `;score=<decimal>`, joined by `", "`. Members that would push the value past `maxBytes` are left
 * off (the lowest scores, given best-first input), so the header never grows unbounded; an empty
 * list gives "" (callers then send no header).
 */
export function serializeLabelList(
  labels: readonly LabelScore[],
  maxBytes: number = DEFAULT_MAX_HEADER_BYTES,
): string {
  let out = "";
  for (const { label, score } of labels) {
    const member = `${serializeLabel(label)};score=${serializeDecimal(score)}`;
    const next = out === "" ? member : `${out}, ${member}`;
    if (next.length > maxBytes) break;
    out = next;
  }
  return out;
}
