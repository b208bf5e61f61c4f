/**
 * @module
 * The outbound URL policy: which URLs a Worker may fetch on a user's behalf (image URLs, redirect
 * targets, webhook callbacks). One implementation, pure code (no platform imports), applied to the
 * first URL and to every redirect target before any connection is made.
 *
 * A URL is allowed when it is `http:` or `https:` (only `https:` with `requireHttps`), carries no
 * credentials, uses an allowed port (any, unless `allowedPorts` is given), and its host is a public
 * address or an ordinary DNS name. Refused, in every notation the URL parser accepts (decimal
 * `2130706433`, hex `0x7f000001`, octal `0177.0.0.1`, short `127.1`, trailing dots, percent-encoded
 * or full-width digits, bracketed IPv6 in any compression):
 *
 * - IPv4: unspecified/"this network" 0/8, loopback 127/8, RFC 1918 (10/8, 172.16/12, 192.168/16),
 *   CGNAT 100.64/10, link-local 169.254/16 (cloud metadata 169.254.169.254), IETF 192.0.0/24,
 *   documentation (192.0.2/24, 198.51.100/24, 203.0.113/24), 6to4 relay 192.88.99/24,
 *   benchmarking 198.18/15, multicast 224/4, reserved 240/4 and broadcast.
 * - IPv6: everything outside global unicast 2000::/3 (so ::, ::1, ULA fc00::/7, link-local fe80::/10,
 *   site-local, multicast ff00::/8, discard 100::/64), the special blocks inside it (2001::/23 incl.
 *   Teredo, documentation 2001:db8::/32 and 3fff::/20), and addresses that embed an IPv4
 *   address (IPv4-mapped ::ffff:a.b.c.d, IPv4-compatible ::a.b.c.d, SIIT ::ffff:0:a.b.c.d, NAT64
 *   64:ff9b::/96, 6to4 2002::/16), which are judged by that IPv4 address. 64:ff9b:1::/48 is refused.
 * - Names: `localhost`, `*.localhost`, and names that only resolve inside a site (`*.local`,
 *   `*.internal`, `*.lan`, `*.home.arpa`, `*.localdomain`, single-label names such as `intranet`).
 *
 * `allowLoopback` (the gateway's `ALLOW_LOOPBACK_FETCH=true`, for local development and tests) lets
 * through 127/8, ::1 (and its IPv4-mapped forms) and `localhost`/`*.localhost`; 0.0.0.0 stays refused.
 *
 * The policy judges the URL as written. A public DNS name that resolves to a private address is
 * not caught here (a Worker cannot resolve names before fetching): on Cloudflare such addresses are
 * unreachable from fetch; a self-hosted workerd should keep its default `internet` network
 * (`allow = ["public"]`).
 *
 * Every refusal is the same 422 `url-not-allowed` with the same text, whatever the reason, so the
 * answer reveals nothing about the destination; text that is not an absolute URL is a 422
 * `invalid-url`.
 *
 * @example
 * ```ts
 * const url = checkOutboundUrl(userText, { allowLoopback: config.allowLoopbackFetch });
 * const res = await fetch(url.href, { redirect: "manual" });   // then check every Location too
 * ```
 */
import { AppError } from "./errors.ts";

export interface OutboundUrlPolicy {
  /** Allow loopback destinations (127/8, ::1, localhost). Default false. */
  allowLoopback?: boolean;
  /** Only these ports (the scheme's default port counts as 80/443). Default: any port. */
  allowedPorts?: readonly number[];
  /** Refuse plain http. Default false. */
  requireHttps?: boolean;
}

/** Longest URL accepted (characters); longer text is an `invalid-url`. */
export const MAX_URL_LENGTH = 8192;

/** The one detail every policy refusal carries. */
export const URL_NOT_ALLOWED_DETAIL =
  "This URL may not be fetched: only http(s) URLs of public hosts, without credentials, are allowed.";

/** What a host is, as far as the policy is concerned. */
export type HostClass = "public" | "loopback" | "refused";

/** The 422 `url-not-allowed` error (the same for every reason). */
export function urlNotAllowed(): AppError {
  return new AppError("url-not-allowed", 422, URL_NOT_ALLOWED_DETAIL);
}

/** Quotes at most `max` characters of user text for an error message. */
export function echo(text: string, max = 100): string {
  return JSON.stringify(text.length > max ? `${text.slice(0, max)}…` : text);
}

/**
 * Parses `input` and returns it as a URL when the policy allows fetching it; throws a 422
 * AppError otherwise (`invalid-url` when it is not an absolute URL, `url-not-allowed` for any
 * policy reason). Fetch the returned `url.href`, not the original text.
 */
export function checkOutboundUrl(input: string | URL, policy: OutboundUrlPolicy = {}): URL {
  let url: URL;
  if (input instanceof URL) url = new URL(input.href);
  else {
    if (input.length > MAX_URL_LENGTH)
      throw new AppError(
        "invalid-url",
        422,
        `The URL is longer than ${MAX_URL_LENGTH} characters: ${echo(input)}.`,
        { maxUrlLength: MAX_URL_LENGTH },
      );
    try {
      url = new URL(input);
    } catch {
      throw new AppError("invalid-url", 422, `${echo(input)} is not an absolute URL.`);
    }
  }
  if (url.protocol !== "https:" && (url.protocol !== "http:" || policy.requireHttps)) throw urlNotAllowed();
  if (url.username || url.password) throw urlNotAllowed();
  const port = url.port === "" ? (url.protocol === "https:" ? 443 : 80) : Number(url.port);
  if (policy.allowedPorts && !policy.allowedPorts.includes(port)) throw urlNotAllowed();
  const cls = classifyHost(url.hostname);
  if (cls === "public" || (cls === "loopback" && policy.allowLoopback)) return url;
  throw urlNotAllowed();
}

/**
 * Classifies a URL hostname (as `URL.hostname` gives it: IPv6 in brackets, names lowercased).
 * Anything it cannot read with certainty is "refused".
 */
export function classifyHost(hostname: string): HostClass {
  let host = hostname.toLowerCase();
  if (host.startsWith("[")) {
    if (!host.endsWith("]")) return "refused";
    const words = parseIpv6(host.slice(1, -1));
    return words ? classifyIpv6(words) : "refused";
  }
  while (host.endsWith(".")) host = host.slice(0, -1);
  if (host === "") return "refused";
  const labels = host.split(".");
  // The URL parser treats a host whose last label is numeric as IPv4 (inet_aton forms); so do we,
  // in case a parser hands us one unnormalised.
  if (looksNumeric(labels[labels.length - 1])) {
    const v4 = parseIpv4(labels);
    return v4 === null ? "refused" : classifyIpv4(v4);
  }
  if (host.includes(":") || host.includes("%")) return "refused";
  const tld = labels[labels.length - 1];
  if (tld === "localhost") return "loopback";
  if (labels.length < 2) return "refused";
  if (["local", "internal", "localdomain", "lan"].includes(tld)) return "refused";
  if (host.endsWith(".home.arpa") || host === "home.arpa") return "refused";
  return "public";
}

function looksNumeric(label: string): boolean {
  return /^(0x[0-9a-f]*|[0-9]+)$/.test(label);
}

/** inet_aton: 1 to 4 parts, each decimal, 0x-hex or 0-octal; the last part fills the rest. */
function parseIpv4(labels: string[]): number | null {
  if (labels.length > 4) return null;
  const parts: number[] = [];
  for (const label of labels) {
    let n: number;
    if (/^0x[0-9a-f]*$/.test(label)) n = label.length === 2 ? 0 : Number.parseInt(label.slice(2), 16);
    else if (/^0[0-7]+$/.test(label)) n = Number.parseInt(label.slice(1), 8);
    else if (/^(0|[1-9][0-9]*)$/.test(label)) n = Number(label);
    else return null;
    if (!Number.isFinite(n)) return null;
    parts.push(n);
  }
  const last = parts.pop()!;
  if (parts.some((p) => p > 255)) return null;
  if (last >= 256 ** (4 - parts.length)) return null;
  let v = 0;
  for (const p of parts) v = v * 256 + p;
  return v * 256 ** (4 - parts.length) + last;
}

/** [network, prefix length] blocks never fetched (besides loopback, handled apart). */
const REFUSED_V4: [number, number][] = [
  [0x00000000, 8], // "this network", incl. 0.0.0.0
  [0x0a000000, 8], // RFC 1918
  [0x64400000, 10], // CGNAT (RFC 6598)
  [0xa9fe0000, 16], // link-local, cloud metadata
  [0xac100000, 12], // RFC 1918
  [0xc0000000, 24], // IETF protocol assignments
  [0xc0000200, 24], // TEST-NET-1
  [0xc0586300, 24], // 6to4 relay anycast
  [0xc0a80000, 16], // RFC 1918
  [0xc6120000, 15], // benchmarking
  [0xc6336400, 24], // TEST-NET-2
  [0xcb007100, 24], // TEST-NET-3
  [0xe0000000, 4], // multicast
  [0xf0000000, 4], // reserved, broadcast
];

function inBlock(v: number, [net, bits]: [number, number]): boolean {
  const size = 2 ** (32 - bits);
  return v >= net && v < net + size;
}

function classifyIpv4(v: number): HostClass {
  if (inBlock(v, [0x7f000000, 8])) return "loopback";
  return REFUSED_V4.some((b) => inBlock(v, b)) ? "refused" : "public";
}

/** Eight 16-bit words, or null when `text` is not an IPv6 address (zone ids are refused). */
function parseIpv6(text: string): number[] | null {
  if (text === "" || text.includes("%")) return null;
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const side = (s: string): number[] | null => {
    if (s === "") return [];
    const out: number[] = [];
    const groups = s.split(":");
    for (let i = 0; i < groups.length; i++) {
      const g = groups[i];
      if (i === groups.length - 1 && g.includes(".")) {
        const v4 = g.split(".");
        if (v4.length !== 4 || !v4.every((p) => /^(0|[1-9][0-9]{0,2})$/.test(p) && Number(p) < 256))
          return null;
        const n = v4.map(Number);
        out.push(n[0] * 256 + n[1], n[2] * 256 + n[3]);
      } else {
        if (!/^[0-9a-f]{1,4}$/.test(g)) return null;
        out.push(Number.parseInt(g, 16));
      }
    }
    return out;
  };
  const head = side(halves[0]);
  const tail = halves.length === 2 ? side(halves[1]) : [];
  if (!head || !tail) return null;
  if (halves.length === 1) return head.length === 8 ? head : null;
  const fill = 8 - head.length - tail.length;
  if (fill < 1) return null;
  return [...head, ...new Array<number>(fill).fill(0), ...tail];
}

function classifyIpv6(w: number[]): HostClass {
  const v4At = (i: number) => w[i] * 0x10000 + w[i + 1];
  const zero = (from: number, to: number) => w.slice(from, to).every((x) => x === 0);
  if (zero(0, 7) && w[7] === 1) return "loopback"; // ::1
  if (zero(0, 5) && w[5] === 0xffff) return classifyIpv4(v4At(6)); // ::ffff:a.b.c.d (mapped)
  if (zero(0, 6)) return zero(6, 8) ? "refused" : classifyIpv4(v4At(6)); // :: and ::a.b.c.d (compatible)
  if (zero(0, 4) && w[4] === 0xffff && w[5] === 0) return classifyIpv4(v4At(6)); // ::ffff:0:a.b.c.d (SIIT)
  if (w[0] === 0x64 && w[1] === 0xff9b && zero(2, 6)) return classifyIpv4(v4At(6)); // NAT64
  if (w[0] === 0x2002) return classifyIpv4(v4At(1)); // 6to4
  if ((w[0] & 0xe000) !== 0x2000) return "refused"; // outside global unicast 2000::/3
  if (w[0] === 0x2001 && w[1] < 0x200) return "refused"; // 2001::/23 (Teredo, benchmarking, ORCHID ...)
  if (w[0] === 0x2001 && w[1] === 0x0db8) return "refused"; // documentation
  if (w[0] === 0x3fff && w[1] < 0x1000) return "refused"; // documentation 3fff::/20
  return "public";
}
