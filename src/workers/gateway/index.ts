/**
 * @module
 * Entry of the gateway Worker (`beit-edge`, see src/topology.ts): the Hono app of
 * {@link createApp} with the default decoder (src/classify/decoder.ts), exported in the Workers
 * module shape so that `queue` or `scheduled` handlers can sit beside `fetch`. It also exports the
 * per-key quota Durable Object class (KeyQuota, src/accounts/quota.ts), bound as QUOTA.
 */
export { KeyQuota } from "../../accounts/quota.ts";

import { defaultDecoder } from "../../classify/decoder.ts";
import type { GatewayEnv } from "../../edge/env.ts";
import { createApp } from "./app.ts";

const app = createApp({ decode: defaultDecoder });

export default {
  fetch: (req, env, ctx) => app.fetch(req, env, ctx),
} satisfies ExportedHandler<GatewayEnv>;
