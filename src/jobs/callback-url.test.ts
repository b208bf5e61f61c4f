import { describe, expect, it } from "vitest";
import { AppError } from "../shared/errors.ts";
import { checkCallbackUrl } from "./callback-url.ts";

const deployed = { allowedPorts: [443], allowLoopback: false };
const local = { allowedPorts: [443], allowLoopback: true };

function reason(url: string, policy = deployed): string {
  try {
    checkCallbackUrl(url, policy);
  } catch (e) {
    expect(e).toBeInstanceOf(AppError);
    expect((e as AppError).status).toBe(422);
    expect((e as AppError).code).toBe("invalid-callback-url");
    return (e as AppError).detail;
  }
  return "accepted";
}

describe("callback URL policy", () => {
  it("accepts https URLs of public hosts on 443", () => {
    expect(checkCallbackUrl("https://hooks.example.com/in?x=1", deployed).href).toBe(
      "https://hooks.example.com/in?x=1",
    );
    expect(reason("https://hooks.example.com:443/in")).toBe("accepted");
    expect(reason("https://93.184.215.14/in")).toBe("accepted");
  });

  it("refuses http, other schemes, credentials and non-standard ports, saying why", () => {
    expect(reason("http://hooks.example.com/in")).toMatch(/plain http is only accepted for loopback/);
    expect(reason("ftp://hooks.example.com/in")).toMatch(/scheme ftp: is not https/);
    expect(reason("https://user:pw@hooks.example.com/in")).toMatch(/credentials/);
    expect(reason("https://hooks.example.com:8443/in")).toMatch(/port 8443 is not an allowed callback port/);
    expect(
      reason("https://hooks.example.com:8443/in", { allowedPorts: [443, 8443], allowLoopback: false }),
    ).toBe("accepted");
    expect(reason("not a url")).toMatch(/not an absolute URL/);
    expect(reason("")).toMatch(/empty/);
  });

  it("refuses private, loopback, link-local and metadata hosts in any notation", () => {
    for (const u of [
      "https://127.0.0.1/",
      "https://localhost/",
      "https://2130706433/",
      "https://0x7f000001/",
      "https://[::1]/",
      "https://[::ffff:127.0.0.1]/",
      "https://10.0.0.1/",
      "https://192.168.1.10/",
      "https://169.254.169.254/latest/meta-data",
      "https://[fd00::1]/",
      "https://[fe80::1]/",
      "https://100.64.0.1/",
      "https://0.0.0.0/",
      "https://intranet/",
      "https://printer.local/",
    ])
      expect(reason(u), u).toMatch(/refused/);
  });

  it("accepts http to loopback on any port only when ALLOW_LOOPBACK_FETCH is on", () => {
    expect(reason("http://127.0.0.1:9000/webhooks", local)).toBe("accepted");
    expect(reason("http://localhost:9000/webhooks", local)).toBe("accepted");
    expect(reason("http://[::1]:9000/webhooks", local)).toBe("accepted");
    expect(reason("http://127.0.0.1:9000/webhooks")).toMatch(/plain http/);
    expect(reason("http://u:p@127.0.0.1:9000/", local)).toMatch(/credentials/);
    expect(reason("http://10.0.0.1:9000/", local)).toMatch(/plain http/);
    expect(reason("http://0.0.0.0:9000/", local)).toMatch(/plain http/);
  });
});
