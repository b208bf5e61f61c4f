import { describe, expect, it } from "vitest";
import { AppError } from "./errors.ts";
import { checkOutboundUrl, classifyHost, MAX_URL_LENGTH, URL_NOT_ALLOWED_DETAIL } from "./url-policy.ts";

function refusal(url: string, policy = {}): [string, number, string] | "allowed" {
  try {
    checkOutboundUrl(url, policy);
    return "allowed";
  } catch (e) {
    if (!(e instanceof AppError)) throw e;
    return [e.code, e.status, e.detail];
  }
}

const NOT_ALLOWED: [string, number, string] = ["url-not-allowed", 422, URL_NOT_ALLOWED_DETAIL];

// Loopback in every notation the WHATWG URL parser (Node's and workerd's) accepts for http(s).
const LOOPBACK = [
  "http://127.0.0.1/x.png",
  "http://127.0.0.1:8787/v1/classify",
  "http://127.1/",
  "http://127.0.1/",
  "http://2130706433/",
  "http://0x7f000001/",
  "http://0x7f.0.0.1/",
  "http://0177.0.0.1/",
  "http://017700000001/",
  "http://127.0.0.1./",
  "http://127.255.255.254/",
  "http://%31%32%37.0.0.1/",
  "http://１２７.０.０.１/",
  "http://localhost/",
  "http://LOCALHOST:8080/",
  "http://localhost./",
  "http://api.localhost/",
  "http://[::1]/",
  "http://[0:0:0:0:0:0:0:1]/",
  "http://[::ffff:127.0.0.1]/",
  "http://[::ffff:7f00:1]/",
  "http://[0:0:0:0:0:ffff:127.0.0.1]/",
  "http://[::127.0.0.1]/",
  "http://[64:ff9b::127.0.0.1]/",
  "http://[2002:7f00:1::]/",
];

// Never fetched, whatever allowLoopback says.
const PRIVATE = [
  "http://0.0.0.0/",
  "http://0/",
  "http://0x0/",
  "http://[::]/",
  "http://[::ffff:0.0.0.0]/",
  "http://10.0.0.1/",
  "http://10.255.255.255/",
  "http://012.1/",
  "http://167772161/",
  "http://172.16.0.1/",
  "http://172.31.255.255/",
  "http://192.168.1.1/",
  "http://0xc0a80101/",
  "http://3232235777/",
  "http://100.64.0.1/",
  "http://100.127.255.254/",
  "http://100.100.100.200/",
  "http://169.254.169.254/latest/meta-data/",
  "http://0xa9fea9fe/",
  "http://2852039166/",
  "http://0251.0376.0251.0376/",
  "http://169.254.43518/",
  "http://[::ffff:169.254.169.254]/",
  "http://[::ffff:a9fe:a9fe]/",
  "http://[::ffff:10.0.0.1]/",
  "http://[::ffff:192.168.0.1]/",
  "http://[::ffff:0:192.168.0.1]/",
  "http://[64:ff9b::10.0.0.1]/",
  "http://[64:ff9b:1::1]/",
  "http://[2002:a9fe:a9fe::1]/",
  "http://192.0.0.192/",
  "http://192.0.2.1/",
  "http://198.18.0.1/",
  "http://224.0.0.1/",
  "http://239.255.255.250/",
  "http://240.0.0.1/",
  "http://255.255.255.255/",
  "http://[fc00::1]/",
  "http://[fd00:ec2::254]/",
  "http://[fe80::1]/",
  "http://[febf::1]/",
  "http://[fec0::1]/",
  "http://[ff02::1]/",
  "http://[100::1]/",
  "http://[2001:db8::1]/",
  "http://[2001::1]/",
  "http://[3fff::1]/",
  "http://metadata.google.internal/computeMetadata/v1/",
  "http://printer.local/",
  "http://router.lan/",
  "http://nas.home.arpa/",
  "http://intranet/",
  "http://intranet./",
];

const PUBLIC = [
  "https://example.com/cat.jpg",
  "http://images.test/gradient.png",
  "https://8.8.8.8/",
  "http://134744072/",
  "http://1.1.1.1:8443/x",
  "http://100.63.255.255/",
  "http://100.128.0.0/",
  "http://172.15.255.255/",
  "http://172.32.0.0/",
  "http://169.253.255.255/",
  "http://192.169.0.0/",
  "https://[2606:4700:4700::1111]/",
  "https://[2001:4860:4860::8888]/",
  "http://[::ffff:8.8.8.8]/",
  "http://[64:ff9b::8.8.8.8]/",
  "https://xn--bcher-kva.example/",
  "https://127.0.0.1.example.com/",
  "https://localhost.example.com/",
];

describe("checkOutboundUrl", () => {
  it.each(LOOPBACK)("refuses loopback %s by default and allows it with allowLoopback", (url) => {
    expect(refusal(url)).toEqual(NOT_ALLOWED);
    expect(refusal(url, { allowLoopback: true })).toBe("allowed");
  });

  it.each(PRIVATE)("refuses %s even with allowLoopback", (url) => {
    expect(refusal(url)).toEqual(NOT_ALLOWED);
    expect(refusal(url, { allowLoopback: true })).toEqual(NOT_ALLOWED);
  });

  it.each(PUBLIC)("allows the public %s", (url) => {
    expect(refusal(url)).toBe("allowed");
  });

  it("refuses other schemes, credentials and, when asked, plain http and other ports, with the same answer", () => {
    for (const url of [
      "ftp://example.com/x",
      "file:///etc/passwd",
      "data:image/png;base64,AA==",
      "gopher://a.b/",
    ])
      expect(refusal(url)).toEqual(NOT_ALLOWED);
    expect(refusal("https://user:pw@example.com/")).toEqual(NOT_ALLOWED);
    expect(refusal("https://user@example.com/")).toEqual(NOT_ALLOWED);
    expect(refusal("http://example.com/", { requireHttps: true })).toEqual(NOT_ALLOWED);
    expect(refusal("https://example.com/", { requireHttps: true })).toBe("allowed");
    expect(refusal("https://example.com:8443/", { allowedPorts: [443] })).toEqual(NOT_ALLOWED);
    expect(refusal("https://example.com/", { allowedPorts: [443] })).toBe("allowed");
    expect(refusal("http://example.com:443/", { allowedPorts: [80] })).toEqual(NOT_ALLOWED);
  });

  it("answers text that is not a URL with invalid-url, echoing at most 100 characters", () => {
    const [code, status, detail] = refusal("http://[") as [string, number, string];
    expect([code, status]).toEqual(["invalid-url", 422]);
    expect(detail).toContain('"http://["');
    const long = `https://example.com/${"a".repeat(MAX_URL_LENGTH)}`;
    const r = refusal(long) as [string, number, string];
    expect(r[0]).toBe("invalid-url");
    expect(r[2].length).toBeLessThan(300);
    const junk = refusal(`not a url ${"x".repeat(5000)}`) as [string, number, string];
    expect(junk[2].length).toBeLessThan(300);
  });

  it("returns the normalised URL, which is what must be fetched", () => {
    expect(checkOutboundUrl("http://0x7f000001:99/a", { allowLoopback: true }).href).toBe(
      "http://127.0.0.1:99/a",
    );
    expect(checkOutboundUrl(new URL("https://EXAMPLE.com/x")).href).toBe("https://example.com/x");
  });
});

describe("classifyHost (hosts a parser might hand over unnormalised)", () => {
  it.each([
    ["127.1", "loopback"],
    ["0x7f.1", "loopback"],
    ["0177.0.0.01", "loopback"],
    ["2130706433", "loopback"],
    ["127.0.0.1..", "loopback"],
    ["[0000:0000::0001]", "loopback"],
    ["[::FFFF:127.0.0.1]", "loopback"],
    ["0x", "refused"],
    ["4294967296", "refused"],
    ["1.2.3.4.5", "refused"],
    ["256.0.0.1", "refused"],
    ["1.2.3.09", "refused"],
    ["[fe80::1%25eth0]", "refused"],
    ["[::ffff:1.2.3]", "refused"],
    ["[1::2::3]", "refused"],
    ["[1:2:3:4:5:6:7:8:9]", "refused"],
    ["[::1", "refused"],
    ["", "refused"],
    ["[2606:4700::1]", "public"],
    ["93.184.215.14", "public"],
  ])("%s is %s", (host, cls) => {
    expect(classifyHost(host)).toBe(cls);
  });
});
