// tollgate.mjs — host glue for tollgate.wasm, one file for Node and workerd.
//
// The wasm core decides; this file only moves bytes: it writes the request's
// features into the module's input buffer, reads the decision back, and
// carries SyncRequest/SyncResponse bytes to and from the coordinator. It
// never blocks a request on a sync: guard() sends syncs in the background
// (ctx.waitUntil in workerd).
//
// Wiring a worker (workerd):
//   import wasm from "./tollgate.wasm";
//   import { guard } from "./tollgate.mjs";
//   export default { fetch: guard((req, env) => env.ORIGIN.fetch(req), { module: wasm }) };
//
// Node compiles the module from the file itself:
//   new WebAssembly.Module(readFileSync("build/tollgate.wasm"))

const KINDS = ["allow", "deny", "challenge"];
// Mirrors tg_reason in edge-module/include/tollgate.h.
const REASONS = ["", "rate_limited", "blocked", "invalid_token",
  "token_expired", "missing_token", "bad_request"];
const FIELDS = 6; // method, path, host, client_ip, authorization, cookie
const DEFAULTS = {
  edgeId: "edge",
  coordinator: "http://127.0.0.1:8080",
  maxKeys: 4096,
  syncIntervalMs: 1000,
  syncTimeoutMs: 2000,
  now: () => Date.now(),
};

export class Tollgate {
  // module: a WebAssembly.Module (workerd: the embedded wasm import).
  // options: edgeId, coordinator (base URL), fetch (defaults to the global
  // fetch; in workerd pass a service binding's fetch), maxKeys,
  // syncIntervalMs, syncTimeoutMs, now (ms clock, for tests).
  constructor(module, options = {}) {
    this.opt = { ...DEFAULTS, ...options };
    this.fetch = this.opt.fetch || ((...a) => fetch(...a));
    this.syncUrl = new URL("/v1/sync", this.opt.coordinator).toString();
    this.instance = new WebAssembly.Instance(module, {});
    this.x = this.instance.exports;
    this.enc = new TextEncoder();
    this.dec = new TextDecoder();
    this.inflight = null;
    this.lastSyncError = null;
    this.ioSize = this.x.tg_io_size();
    const id = this.enc.encode(this.opt.edgeId);
    this.#views();
    this.u8.set(id, this.inPtr);
    const rc = this.x.init(id.length, this.opt.maxKeys, this.opt.syncIntervalMs);
    if (rc < 0) throw new Error(`tollgate: init failed (${rc})`);
    this.#views(); // init grows memory: old views are detached
  }

  #views() {
    const buf = this.x.memory.buffer;
    if (this.buf === buf) return;
    this.buf = buf;
    this.u8 = new Uint8Array(buf);
    this.dv = new DataView(buf);
    this.inPtr = this.x.tg_in();
    this.outPtr = this.x.tg_out();
  }

  // Decides one request from its features: { method, path, host, ip,
  // authorization, cookie } (strings; missing ones are empty). Returns
  // { kind: "allow"|"deny"|"challenge", reason, status, retryAfter, token,
  //   headers: [[name, value], ...] }.
  verify(req) {
    this.#views();
    const vals = [req.method, req.path, req.host, req.ip, req.authorization, req.cookie];
    let off = this.inPtr + 4 * FIELDS;
    const end = this.inPtr + this.ioSize;
    for (let i = 0; i < FIELDS; i++) {
      const s = vals[i] || "";
      // encodeInto stops at the end of the view: a truncated field is
      // caught by the length check in the core, never read past.
      const r = this.enc.encodeInto(s, this.u8.subarray(off, end));
      if (r.read < s.length) throw new RangeError("tollgate: request features too large");
      this.dv.setUint32(this.inPtr + 4 * i, r.written, true);
      off += r.written;
    }
    const kind = this.x.verify(this.opt.now());
    if (kind < 0) throw new Error(`tollgate: verify failed (${kind})`);
    const o = this.outPtr, dv = this.dv;
    const tokenLen = dv.getUint32(o + 16, true);
    const headersLen = dv.getUint32(o + 20, true);
    const p = o + 24;
    return {
      kind: KINDS[kind],
      reason: REASONS[dv.getUint32(o + 4, true)] ?? "unknown",
      status: dv.getUint32(o + 8, true),
      retryAfter: dv.getUint32(o + 12, true),
      token: tokenLen ? this.dec.decode(this.u8.subarray(p, p + tokenLen)) : "",
      headers: headersLen ? parseHeaders(this.dec.decode(
        this.u8.subarray(p + tokenLen, p + tokenLen + headersLen))) : [],
    };
  }

  // Decides a Fetch API Request. clientIp(request) says who the client is;
  // by default CF-Connecting-IP, else (only with trustForwardedFor) the
  // first X-Forwarded-For hop, else "unknown".
  verifyRequest(request) {
    const url = new URL(request.url);
    const h = request.headers;
    return this.verify({
      method: request.method,
      path: url.pathname,
      host: url.host,
      ip: this.opt.clientIp ? this.opt.clientIp(request) : defaultClientIp(h, this.opt.trustForwardedFor),
      authorization: h.get("authorization") || "",
      cookie: h.get("cookie") || "",
    });
  }

  syncDue() {
    return this.inflight === null && this.x.sync_due(this.opt.now()) === 1;
  }

  policyVersion() {
    return this.x.policy_version();
  }

  // Sends the pending batch and applies the answer. One sync at a time: a
  // call while one is in flight returns that one's promise. Resolves true
  // on success, false on failure (the core keeps the batch and resends it
  // with the same seq); the error is kept in lastSyncError.
  sync() {
    if (this.inflight) return this.inflight;
    this.inflight = this.#syncOnce().finally(() => { this.inflight = null; });
    return this.inflight;
  }

  // Starts a sync if one is due; returns its promise, or null.
  maybeSync() {
    return this.syncDue() ? this.sync() : null;
  }

  async #syncOnce() {
    this.#views();
    const n = this.x.sync_request(this.opt.now());
    if (n < 0) {
      this.lastSyncError = new Error(`tollgate: sync_request failed (${n})`);
      this.x.sync_failed(this.opt.now());
      return false;
    }
    const body = this.u8.slice(this.outPtr, this.outPtr + n);
    try {
      const resp = await this.fetch(this.syncUrl, {
        method: "POST",
        headers: { "content-type": "application/x-protobuf" },
        body,
        signal: AbortSignal.timeout(this.opt.syncTimeoutMs),
      });
      const bytes = new Uint8Array(await resp.arrayBuffer());
      if (resp.status !== 200) throw new Error(`coordinator answered ${resp.status}`);
      if (bytes.length > this.ioSize) throw new Error(`sync response too large (${bytes.length} bytes)`);
      this.#views();
      this.u8.set(bytes, this.inPtr);
      const rc = this.x.sync_response(this.opt.now(), bytes.length);
      if (rc < 0) throw new Error(`sync response rejected by the edge core (${rc})`);
      this.lastSyncError = null;
      return true;
    } catch (err) {
      this.lastSyncError = err;
      this.x.sync_failed(this.opt.now());
      return false;
    }
  }
}

export function createTollgate(module, options) {
  return new Tollgate(module, options);
}

function parseHeaders(text) {
  const out = [];
  for (const line of text.split("\r\n")) {
    const i = line.indexOf(": ");
    if (i > 0) out.push([line.slice(0, i), line.slice(i + 2)]);
  }
  return out;
}

function defaultClientIp(h, trustForwardedFor) {
  const cf = h.get("cf-connecting-ip");
  if (cf) return cf;
  if (trustForwardedFor) {
    const xff = h.get("x-forwarded-for");
    if (xff) return xff.split(",")[0].trim();
  }
  return "unknown";
}

function escapeHtml(s) {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// The response for a decision that is not Allow. Hosts may pass their own
// as options.challengePage(decision) / options.denyResponse(decision).
export function decisionResponse(d) {
  const headers = new Headers(d.headers);
  if (d.kind === "challenge") {
    headers.set("content-type", "text/html; charset=utf-8");
    headers.set("cache-control", "no-store");
    const t = escapeHtml(d.token);
    return new Response(`<!doctype html>
<html><head><meta charset="utf-8"><title>Checking your browser</title></head>
<body><h1>One more step</h1>
<p>Too many requests came from your network. Solve the challenge to continue.</p>
<div id="tollgate-challenge" data-token="${t}"></div>
</body></html>
`, { status: d.status || 429, headers });
  }
  headers.set("content-type", "application/json");
  return new Response(JSON.stringify({ error: d.reason }) + "\n", { status: d.status || 429, headers });
}

// Wraps a fetch handler: decide, then either answer for tollgate or call the
// handler and add the RateLimit headers to its response. options (an object,
// or a function of env since workerd passes bindings per request) are the
// Tollgate options plus `module` (the wasm module) and `coordinatorBinding`
// (the name of a service binding the sync goes through).
export function guard(handler, options = {}) {
  let tg = null;
  return async function fetchGuarded(request, env, ctx) {
    if (tg === null) {
      const o = typeof options === "function" ? options(env) : { ...options };
      if (o.coordinatorBinding && env && env[o.coordinatorBinding]) {
        const b = env[o.coordinatorBinding];
        o.fetch = (url, init) => b.fetch(url, init);
        o.coordinator = o.coordinator || "http://coordinator";
      }
      tg = new Tollgate(o.module, o);
    }
    const p = tg.maybeSync();
    if (p && ctx && ctx.waitUntil) ctx.waitUntil(p);
    const d = tg.verifyRequest(request);
    if (d.kind !== "allow") {
      const make = d.kind === "challenge" ? tg.opt.challengePage : tg.opt.denyResponse;
      return (make || decisionResponse)(d);
    }
    const resp = await handler(request, env, ctx);
    if (d.headers.length === 0) return resp;
    const out = new Response(resp.body, resp);
    for (const [k, v] of d.headers) out.headers.set(k, v);
    return out;
  };
}
