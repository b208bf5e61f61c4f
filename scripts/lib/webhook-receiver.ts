/**
 * @module
 * A small webhook receiver on loopback: verifies every delivery's Standard Webhooks signature
 * (src/jobs/webhook-signature.ts), records it, and answers 204 — or, to exercise retries, a 503 to
 * the first N attempts of each webhook-id (`failFirst`) or to a fraction of first attempts
 * (`failFraction`), or nothing at all (`down`). Used by `npm run webhook-receiver`, the end-to-end
 * test and bench/jobs.ts.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { verifyWebhook } from "../../src/jobs/webhook-signature.ts";

export interface ReceivedDelivery {
  /** ms since the epoch when the request arrived. */
  at: number;
  webhookId: string;
  timestamp: string;
  verified: boolean;
  /** Why verification failed. */
  error?: string;
  /** The status answered. */
  answered: number;
  /** Attempt number of this webhook-id as seen here (1 = first). */
  attempt: number;
  body: string;
  event?: { type?: string; data?: { id?: string; status?: string; [k: string]: unknown } };
}

export interface ReceiverOptions {
  /** 0 = any free port. */
  port?: number;
  host?: string;
  /** Secrets to verify with (any may match); empty = record without verifying. */
  secrets: string[];
  /** Answer 503 to the first N attempts of every webhook-id. */
  failFirst?: number;
  /** Answer 503 to this fraction (0..1) of first attempts, chosen by a hash of the webhook-id. */
  failFraction?: number;
  /** Retry-After to send with a 503 (seconds). */
  retryAfterS?: number;
  toleranceSeconds?: number;
  onDelivery?: (d: ReceivedDelivery) => void;
}

export interface RunningReceiver {
  url: string;
  port: number;
  deliveries: ReceivedDelivery[];
  /** Stop answering (connections are reset) or answer again. */
  setDown(down: boolean): void;
  setFailFirst(n: number): void;
  stop(): Promise<void>;
}

/** Stable pseudo-random fraction in [0, 1) for a string (FNV-1a). */
function fraction(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h / 2 ** 32;
}

/** Starts the receiver; resolves once it listens. */
export async function startWebhookReceiver(o: ReceiverOptions): Promise<RunningReceiver> {
  const deliveries: ReceivedDelivery[] = [];
  const seen = new Map<string, number>();
  let down = false;
  let failFirst = o.failFirst ?? 0;
  const server: Server = createServer((req, res) => {
    if (down) {
      req.socket.destroy();
      return;
    }
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", async () => {
      const body = Buffer.concat(chunks).toString("utf8");
      const webhookId = String(req.headers["webhook-id"] ?? "");
      const attempt = (seen.get(webhookId) ?? 0) + 1;
      seen.set(webhookId, attempt);
      let verified = false;
      let error: string | undefined;
      let event: ReceivedDelivery["event"];
      try {
        event =
          o.secrets.length > 0
            ? await verifyWebhook(o.secrets, req.headers as Record<string, string>, body, {
                toleranceSeconds: o.toleranceSeconds ?? 300,
              })
            : JSON.parse(body);
        verified = o.secrets.length > 0;
      } catch (e) {
        error = e instanceof Error ? e.message : String(e);
      }
      const fail =
        attempt <= failFirst ||
        (attempt === 1 && o.failFraction !== undefined && fraction(webhookId) < o.failFraction);
      const answered = o.secrets.length > 0 && !verified ? 401 : fail ? 503 : 204;
      const d: ReceivedDelivery = {
        at: Date.now(),
        webhookId,
        timestamp: String(req.headers["webhook-timestamp"] ?? ""),
        verified,
        error,
        answered,
        attempt,
        body,
        event,
      };
      deliveries.push(d);
      o.onDelivery?.(d);
      const headers: Record<string, string> = {};
      if (answered === 503 && o.retryAfterS !== undefined) headers["retry-after"] = String(o.retryAfterS);
      res.writeHead(answered, headers).end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(o.port ?? 0, o.host ?? "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${o.host ?? "127.0.0.1"}:${port}/webhooks`,
    port,
    deliveries,
    setDown: (d) => {
      down = d;
      if (d) server.closeAllConnections();
    },
    setFailFirst: (n) => {
      failFirst = n;
    },
    stop: async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}
