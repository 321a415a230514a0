// The example edge: tollgate in front of an origin. Syncs go to the
// coordinator through the COORDINATOR service binding, in the background,
// signed with EDGE_KEY; CLEARANCE_KEY verifies the cookie a solved challenge
// earns, and challenge.mjs runs the challenge round trip through this edge
// (/.well-known/tollgate/challenge). The client address is
// X-Forwarded-For's last entry: `make run` has no proxy in front, so curl -H
// 'X-Forwarded-For: 203.0.113.7' plays different clients. Behind a real
// proxy that appends the address it saw this is the right source; on
// Cloudflare use "cf-connecting-ip". CAPTCHA_SCRIPT_URL (optional) replaces
// the provider's widget script, for tests.
import wasm from "./tollgate.wasm";
import { guard } from "./tollgate.mjs";
import * as challenge from "./challenge.mjs";
export default {
  fetch: guard((req, env) => env.ORIGIN.fetch(req), (env) => ({
    module: wasm, edgeId: "edge-local-1", edgeKey: env.EDGE_KEY, coordinatorBinding: "COORDINATOR",
    clearanceKeys: [{ kid: "c1", hex: env.CLEARANCE_KEY }], clientIp: "x-forwarded-for",
    challenge, challengeOptions: { scriptUrl: env.CAPTCHA_SCRIPT_URL || undefined },
  })),
};
