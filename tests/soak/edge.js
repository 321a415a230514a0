// The soak test's edge: tollgate in front of a tiny origin, in workerd, its
// id from the EDGE_ID binding so one file serves both edges. X-Forwarded-For
// is trusted because the soak driver plays many clients from one host.
import wasm from "./tollgate.wasm";
import { guard } from "./tollgate.mjs";

export default {
  fetch: guard((req) => new Response("origin ok\n"), (env) => ({
    module: wasm, edgeId: env.EDGE_ID, edgeKey: env.EDGE_KEY, coordinatorBinding: "COORDINATOR",
    clearanceKeys: [{ kid: "c1", hex: env.CLEARANCE_KEY }], trustForwardedFor: true,
  })),
};
