// fixtures.mjs — what the edge benchmarks feed the module: the wasm bytes,
// a policy delivered as a hand-built SyncResponse (no servers needed),
// HS256 tokens made with node:crypto, and whether this build of the edge
// knows JWT at all.
//
// The SyncResponse goes through the glue's own sync() path: the glue is
// given a `fetch` that answers the edge's SyncRequest with these bytes, so
// the edge decodes and installs the policy exactly as it would from
// tollgated (the edge's wire codec is tested byte for byte against
// protoc-c; a policy it refused would show up as version 0, checked here).

import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { createTollgate } from "../../edge-module/js/tollgate.mjs";
import { BUILD } from "../lib.mjs";

export const WASM_PATH = path.join(BUILD, "tollgate.wasm");

export function wasmBytes() {
  return readFileSync(WASM_PATH);
}

// The build has JWT support when the module exports its key provisioning
// (the same fact as `wasm-objdump -x -j Export build/tollgate.wasm | grep
// add_key`).
export function hasJwt(module) {
  return WebAssembly.Module.exports(module).some((e) => e.name.includes("add_key"));
}

// ---------------------------------------------------------------- protobuf

// Just enough of the protobuf wire format for proto/tollgate.proto's
// SyncResponse: varints, length-delimited fields, one double.
class Writer {
  constructor() { this.b = []; }
  varint(v) {
    let x = BigInt(v);
    do {
      let byte = Number(x & 0x7fn);
      x >>= 7n;
      if (x) byte |= 0x80;
      this.b.push(byte);
    } while (x);
    return this;
  }
  tag(field, wire) { return this.varint((field << 3) | wire); }
  uint(field, v) { return v ? this.tag(field, 0).varint(v) : this; }
  bool(field, v) { return v ? this.tag(field, 0).varint(1) : this; }
  bytes(field, u8) { this.tag(field, 2).varint(u8.length); for (const x of u8) this.b.push(x); return this; }
  str(field, s) { return s ? this.bytes(field, new TextEncoder().encode(s)) : this; }
  msg(field, w) { return this.bytes(field, w.done()); }
  double(field, v) {
    if (!v) return this;
    const d = new DataView(new ArrayBuffer(8));
    d.setFloat64(0, v, true);
    this.tag(field, 1);
    for (let i = 0; i < 8; i++) this.b.push(d.getUint8(i));
    return this;
  }
  done() { return Uint8Array.from(this.b); }
}

const ACTION = { allow: 0, challenge: 1, deny: 2 };

function encodeQuota(q) {
  const w = new Writer()
    .str(1, q.name).uint(2, q.limit).uint(3, q.window_s).str(4, q.key).str(5, q.path_prefix);
  for (const m of q.methods || []) w.str(6, m);
  return w.uint(7, ACTION[q.action || "challenge"]).uint(8, q.floor || 0)
    .bool(9, q.shadow).bool(10, q.fail_open).double(11, q.deny_after || 0)
    .bool(12, q.require_token);
}

// SyncResponse { acked_seq, next_sync_ms, policy_version, policy }.
export function syncResponse(seq, policy) {
  const p = new Writer().uint(1, policy.version);
  for (const q of policy.quotas) p.msg(2, encodeQuota(q));
  p.uint(3, policy.sync_interval_ms).uint(4, policy.clearance_ttl_s);
  return new Writer().uint(1, seq).uint(2, policy.sync_interval_ms)
    .uint(5, policy.version).msg(6, p).uint(7, Date.now()).done();
}

// The seq of a SyncRequest (field 2).
function requestSeq(bytes) {
  let i = 0;
  const varint = () => {
    let v = 0n, s = 0n;
    for (;;) {
      const b = bytes[i++];
      v |= BigInt(b & 0x7f) << s;
      if (!(b & 0x80)) return v;
      s += 7n;
    }
  };
  while (i < bytes.length) {
    const key = Number(varint()), wt = key & 7;
    if ((key >> 3) === 2 && wt === 0) return varint();
    if (wt === 0) varint();
    else if (wt === 2) { const n = Number(varint()); i += n; }
    else if (wt === 1) i += 8;
    else if (wt === 5) i += 4;
    else throw new Error(`wire type ${wt} in SyncRequest`);
  }
  throw new Error("SyncRequest without seq");
}

// A fetch() standing in for tollgated: acknowledges whatever seq it is
// sent and delivers the policy.
export function fakeCoordinator(policy) {
  return async (url, init) => new Response(syncResponse(requestSeq(init.body), policy),
    { status: 200, headers: { "content-type": "application/x-protobuf" } });
}

// ---------------------------------------------------------------- policies

// Limits so large that nothing is ever denied: verify() does all of its
// work (match, key, bucket, headers) and always answers Allow.
const BIG = 1e12;
const base = { window_s: 3600, path_prefix: "/", methods: [], action: "challenge", limit: BIG, floor: BIG, fail_open: true };

export const POLICY_IP = {
  version: 7, sync_interval_ms: 1000, clearance_ttl_s: 300,
  quotas: [{ ...base, name: "per-ip", key: "ip" }],
};

// Keyed on a verified claim, token required: every call must verify the
// token (a forged one is refused), so the JWT work cannot be skipped.
export const POLICY_SUB = {
  version: 8, sync_interval_ms: 1000, clearance_ttl_s: 300,
  quotas: [{ ...base, name: "per-sub", key: "claim:sub", require_token: true }],
};

// An edge (the glue's Tollgate) with the policy installed.
export async function edgeWithPolicy(module, policy, extra = {}) {
  const tg = createTollgate(module, { edgeId: "bench-edge", fetch: fakeCoordinator(policy), ...extra });
  if (!(await tg.sync())) throw new Error(`policy sync failed: ${tg.lastSyncError}`);
  if (tg.policyVersion() !== policy.version) {
    throw new Error(`the edge did not install policy ${policy.version} (has ${tg.policyVersion()})`);
  }
  return tg;
}

// ---------------------------------------------------------------- tokens

export const JWT_KID = "k1";
export const JWT_SECRET = "tollgate-bench-secret-0123456789abcdef";
export const JWT_OPTIONS = { keys: [{ kid: JWT_KID, secret: JWT_SECRET }], leewaySeconds: 30 };

const b64u = (buf) => Buffer.from(buf).toString("base64url");
const HEADER = b64u(JSON.stringify({ alg: "HS256", typ: "JWT", kid: JWT_KID }));

// HS256 token with {sub, tenant, iat, exp (ten years ahead), jti}: the jti
// makes every token distinct while the claims the quota keys on repeat.
export function makeToken(i, nowS = Math.floor(Date.now() / 1000)) {
  const claims = { sub: `user-${i % 64}`, tenant: `t${i % 8}`, iat: nowS, exp: nowS + 10 * 365 * 86400, jti: `b${i}` };
  const signing = `${HEADER}.${b64u(JSON.stringify(claims))}`;
  const sig = createHmac("sha256", JWT_SECRET).update(signing).digest("base64url");
  return `${signing}.${sig}`;
}

// The same token with one character in the middle of its signature
// changed (the last one carries padding bits a decoder may treat apart).
export function forge(token) {
  const i = token.length - 10;
  return token.slice(0, i) + (token[i] === "A" ? "B" : "A") + token.slice(i + 1);
}
