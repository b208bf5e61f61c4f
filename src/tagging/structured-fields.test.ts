import { describe, expect, it } from "vitest";
import {
  serializeDecimal,
  serializeDisplayString,
  serializeLabel,
  serializeLabelList,
  serializeString,
} from "./structured-fields.ts";

/**
 * A strict parser for the subset of RFC 8941/9651 Lists the header uses (items that are
 * sf-strings or display strings, parameters whose values are decimals, integers, strings or
 * booleans), following §4.2's algorithms: it throws where the RFC says "fail parsing".
 */
function parseList(input: string): { value: string; params: Record<string, number | string | boolean> }[] {
  let s = input.replace(/^ +| +$/g, "");
  const out: { value: string; params: Record<string, number | string | boolean> }[] = [];
  const fail = (why: string): never => {
    throw new Error(`parse failed: ${why} at ${JSON.stringify(s.slice(0, 20))}`);
  };
  const bareItem = (): number | string | boolean => {
    if (s[0] === '"') {
      let v = "";
      let i = 1;
      for (; i < s.length; i++) {
        const c = s[i];
        if (c === "\\") {
          const n = s[++i];
          if (n !== '"' && n !== "\\") fail("bad escape");
          v += n;
        } else if (c === '"') break;
        else if (c < " " || c > "~") fail("non-printable in string");
        else v += c;
      }
      if (i >= s.length) fail("unterminated string");
      s = s.slice(i + 1);
      return v;
    }
    if (s.startsWith('%"')) {
      const bytes: number[] = [];
      let i = 2;
      for (; i < s.length; i++) {
        const c = s[i];
        if (c === "%") {
          const hex = s.slice(i + 1, i + 3);
          if (!/^[0-9a-f]{2}$/.test(hex)) fail("bad percent-encoding (lower-case hex required)");
          bytes.push(Number.parseInt(hex, 16));
          i += 2;
        } else if (c === '"') break;
        else if (c < " " || c > "~") fail("non-printable in display string");
        else bytes.push(c.charCodeAt(0));
      }
      if (i >= s.length) fail("unterminated display string");
      s = s.slice(i + 1);
      return new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(new Uint8Array(bytes));
    }
    if (s[0] === "?") {
      const b = s[1];
      if (b !== "0" && b !== "1") fail("bad boolean");
      s = s.slice(2);
      return b === "1";
    }
    const m = /^-?[0-9]+(\.[0-9]+)?/.exec(s);
    if (!m) return fail("unsupported bare item");
    const [num, frac] = [m[0], m[1]];
    if (frac !== undefined && (frac.length - 1 > 3 || num.replace(/^-/, "").split(".")[0].length > 12))
      fail("decimal out of range");
    if (frac === undefined && num.replace(/^-/, "").length > 15) fail("integer out of range");
    s = s.slice(num.length);
    return Number(num);
  };
  const params = (): Record<string, number | string | boolean> => {
    const p: Record<string, number | string | boolean> = {};
    while (s[0] === ";") {
      s = s.slice(1).replace(/^ +/, "");
      const k = /^[a-z*][a-z0-9_\-.*]*/.exec(s);
      if (!k) fail("bad key");
      const key = (k as RegExpExecArray)[0];
      s = s.slice(key.length);
      if (s[0] === "=") {
        s = s.slice(1);
        p[key] = bareItem();
      } else p[key] = true;
    }
    return p;
  };
  while (s.length > 0) {
    const value = bareItem();
    if (typeof value !== "string") fail("label must be a string");
    out.push({ value: value as string, params: params() });
    s = s.replace(/^[ \t]+/, "");
    if (s.length === 0) break;
    if (s[0] !== ",") fail("expected comma");
    s = s.slice(1).replace(/^[ \t]+/, "");
    if (s.length === 0) fail("trailing comma");
  }
  return out;
}

describe("image-labels structured-field list", () => {
  it("serializes the issue's example exactly", () => {
    const header = serializeLabelList([
      { label: "tabby, tabby cat", score: 0.41 },
      { label: "tiger cat", score: 0.12 },
    ]);
    expect(header).toBe('"tabby, tabby cat";score=0.41, "tiger cat";score=0.12');
    expect(parseList(header)).toEqual([
      { value: "tabby, tabby cat", params: { score: 0.41 } },
      { value: "tiger cat", params: { score: 0.12 } },
    ]);
  });

  it("escapes quotes and backslashes in sf-strings", () => {
    expect(serializeString('say "hi" \\ bye')).toBe('"say \\"hi\\" \\\\ bye"');
    expect(parseList(`${serializeLabel('a "b" \\c')};score=1.0`)[0].value).toBe('a "b" \\c');
  });

  it("writes labels outside printable ASCII as RFC 9651 display strings (RFC example: füü)", () => {
    expect(serializeDisplayString("füü")).toBe('%"f%c3%bc%c3%bc"');
    expect(serializeLabel("café")).toBe('%"caf%c3%a9"');
    // % and " are encoded inside a display string, everything else printable stays as is.
    expect(serializeDisplayString('100% "ü"')).toBe('%"100%25 %22%c3%bc%22"');
    // a control character cannot be in an sf-string either
    expect(serializeLabel("tab\there")).toBe('%"tab%09here"');
    for (const label of ["café", "東京", "emoji 🐈", "tab\there", '100% "ü"']) {
      const parsed = parseList(serializeLabelList([{ label, score: 0.5 }]));
      expect(parsed).toEqual([{ value: label, params: { score: 0.5 } }]);
    }
  });

  it("sf-decimal: at most 3 fractional digits, half to even, at least one digit, no trailing zeros", () => {
    const cases: [number, string][] = [
      [0.41, "0.41"],
      [0.12, "0.12"],
      [1, "1.0"],
      [0, "0.0"],
      [0.0004, "0.0"],
      [0.0006, "0.001"],
      [0.123456, "0.123"],
      [0.9996, "1.0"],
      [0.0625, "0.062"], // exact tie in binary: rounds to even
      [0.1875, "0.188"], // exact tie, odd neighbour: rounds up
      [0.5, "0.5"],
      [-0.25, "-0.25"],
      [123456789012.5, "123456789012.5"],
    ];
    for (const [x, s] of cases) expect(serializeDecimal(x), String(x)).toBe(s);
    expect(() => serializeDecimal(1e12)).toThrow(/12 integer digits/);
    expect(() => serializeDecimal(Number.NaN)).toThrow(/finite/);
    for (const [, s] of cases.slice(0, 12))
      expect(parseList(`"x";score=${s}`)[0].params.score).toBe(Number(s));
  });

  it("keeps the header under its byte limit by dropping the lowest-scored members", () => {
    const labels = Array.from({ length: 50 }, (_, i) => ({
      label: `label-${i}-${"x".repeat(40)}`,
      score: 1 - i / 100,
    }));
    const header = serializeLabelList(labels, 500);
    expect(header.length).toBeLessThanOrEqual(500);
    const parsed = parseList(header);
    expect(parsed.length).toBeGreaterThan(0);
    expect(parsed.map((p) => p.value)).toEqual(labels.slice(0, parsed.length).map((l) => l.label));
    expect(serializeLabelList([])).toBe("");
    expect(serializeLabelList([{ label: "x".repeat(600), score: 0.5 }], 500)).toBe("");
  });

  it("the test parser refuses what the RFC refuses (so the checks above can fail)", () => {
    expect(() => parseList('"a";score=0.1234')).toThrow(/decimal out of range/);
    expect(() => parseList('%"caf%C3%A9"')).toThrow(/lower-case hex/);
    expect(() => parseList('"a", ')).toThrow(/trailing comma/);
    expect(() => parseList('"a" "b"')).toThrow(/expected comma/);
  });
});
