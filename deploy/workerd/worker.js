// The example edge: tollgate in front of an origin, wired in three lines.
// Syncs go to the coordinator through the COORDINATOR service binding, in
// the background. X-Forwarded-For is trusted here only because `make run`
// has no real proxy in front: curl -H 'X-Forwarded-For: 203.0.113.7' plays
// different clients. Behind a real CDN leave trustForwardedFor off.
import wasm from "./tollgate.wasm";
import { guard } from "./tollgate.mjs";
export default { fetch: guard((req, env) => env.ORIGIN.fetch(req), { module: wasm, edgeId: "edge-local-1", coordinatorBinding: "COORDINATOR", trustForwardedFor: true }) };
