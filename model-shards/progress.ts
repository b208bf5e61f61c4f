/**
 * @module
 * The converter's one progress bar (the build steps of `npm run model -- build` and the hub
 * download): `[#####-------]  42% label suffix` redrawn in place on a terminal, at most ten
 * times a second for the same label (a new label or a final frame always draws); off a terminal,
 * one plain line per call, or only the lines the caller gives.
 */

export interface ProgressFrame {
  /** What is in progress ("writing stage 2", a file name). */
  label: string;
  /** 0..1, or undefined when the total is unknown (no percentage shown). */
  frac?: number;
  /** Shown after the label on a terminal (sizes, rates). */
  suffix?: string;
  /** Last frame of this label: ends the line on a terminal. Default: frac >= 1. */
  final?: boolean;
  /** The line written off a terminal; null writes nothing. Default: the bar line. */
  plain?: string | null;
}

/**
 * A progress reporter writing to `stream` (default stderr).
 *
 * @example
 * const bar = progressBar();
 * bar({ label: "converting", frac: 0.5 });
 */
export function progressBar(stream: NodeJS.WriteStream = process.stderr): (frame: ProgressFrame) => void {
  const width = 24;
  let lastLabel: string | null = null;
  let lastAt = 0;
  return (p) => {
    const frac = p.frac === undefined ? undefined : Math.max(0, Math.min(1, p.frac));
    const final = p.final ?? (frac ?? 0) >= 1;
    const filled = Math.round((frac ?? 0) * width);
    const pct = frac === undefined ? "    " : `${String(Math.round(frac * 100)).padStart(3)}%`;
    const line = `[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${pct} ${p.label}${p.suffix ? ` ${p.suffix}` : ""}`;
    if (!stream.isTTY) {
      const plain = p.plain === undefined ? line : p.plain;
      if (plain !== null) stream.write(`${plain}\n`);
      return;
    }
    const now = Date.now();
    if (!final && p.label === lastLabel && now - lastAt < 100) return;
    lastLabel = final ? null : p.label;
    lastAt = now;
    stream.write(`\r\x1b[K${line.slice(0, (stream.columns ?? 100) - 1)}${final ? "\n" : ""}`);
  };
}
