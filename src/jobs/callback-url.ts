/**
 * @module
 * Which callback URLs a job may name, checked before the job is accepted and again before every
 * delivery attempt. It is the outbound URL policy of src/shared/url-policy.ts (the one used for
 * URL inputs), made stricter for callbacks: https only, on an allowed port (CALLBACK_ALLOWED_PORTS,
 * default 443), no credentials, no private, loopback, link-local or metadata host in any notation.
 * When ALLOW_LOOPBACK_FETCH=true (npm start, tests) a loopback callback may also be http, on any
 * port. A refusal is a 422 `invalid-callback-url` that says which rule the URL broke: the caller
 * wrote the URL, so naming the rule tells them nothing about our network.
 */
import { AppError } from "../shared/errors.ts";
import { checkOutboundUrl, classifyHost, echo, MAX_URL_LENGTH } from "../shared/url-policy.ts";

export interface CallbackPolicy {
  allowedPorts: readonly number[];
  allowLoopback: boolean;
}

function refuse(text: string, why: string): AppError {
  return new AppError(
    "invalid-callback-url",
    422,
    `callback_url ${echo(text)} is refused: ${why}. Callbacks must be https URLs of public hosts, without credentials.`,
    { parameter: "callback_url" },
  );
}

/** The URL to post to, or a 422 `invalid-callback-url` saying why not. */
export function checkCallbackUrl(text: string, policy: CallbackPolicy): URL {
  if (typeof text !== "string" || text.trim() === "") throw refuse(String(text), "it is empty");
  if (text.length > MAX_URL_LENGTH) throw refuse(text, `it is longer than ${MAX_URL_LENGTH} characters`);
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw refuse(text, "it is not an absolute URL");
  }
  const loopback = classifyHost(url.hostname) === "loopback";
  if (loopback && policy.allowLoopback) {
    // Local development: http or https to this machine, any port (the policy still vets the rest).
    if (url.username || url.password) throw refuse(text, "it carries credentials");
    return checkOutboundUrl(url, { allowLoopback: true });
  }
  if (url.protocol !== "https:")
    throw refuse(
      text,
      url.protocol === "http:"
        ? "plain http is only accepted for loopback addresses in local development (ALLOW_LOOPBACK_FETCH=true)"
        : `the scheme ${url.protocol} is not https`,
    );
  if (url.username || url.password) throw refuse(text, "it carries credentials");
  const port = url.port === "" ? 443 : Number(url.port);
  if (!policy.allowedPorts.includes(port))
    throw refuse(text, `port ${port} is not an allowed callback port (${policy.allowedPorts.join(", ")})`);
  if (loopback) throw refuse(text, "loopback addresses are not accepted here");
  try {
    return checkOutboundUrl(url, { requireHttps: true, allowedPorts: policy.allowedPorts });
  } catch (e) {
    if (e instanceof AppError && e.code === "url-not-allowed")
      throw refuse(
        text,
        "its host is not a public address (private, loopback, link-local, metadata or a local name)",
      );
    throw e;
  }
}
