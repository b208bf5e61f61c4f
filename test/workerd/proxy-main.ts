/**
 * @module
 * The test Worker of the workerd project: forwards every request to the gateway Worker (an
 * auxiliary Worker running the wrangler bundle), so that `SELF.fetch` exercises the real gateway.
 * `x-test-gateway: keyed` picks the gateway configured with an API_KEY.
 */
interface ProxyEnv {
  GATEWAY: Fetcher;
  GATEWAY_KEYED: Fetcher;
}

export default {
  fetch(req: Request, env: ProxyEnv): Promise<Response> {
    return req.headers.get("x-test-gateway") === "keyed"
      ? env.GATEWAY_KEYED.fetch(req)
      : env.GATEWAY.fetch(req);
  },
} satisfies ExportedHandler<ProxyEnv>;
