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

// Word indices of the module's ABI table (tg_abi(), edge-module/src/wasm.c):
// buffer addresses, the verify layout, key kinds and the kind and reason
// names are read from the module, never copied here.
const ABI = {
  VERSION: 0, WORDS: 1, IN: 2, OUT: 3, IO_SIZE: 4, IN_FIELDS: 5, MAX_HEADERS: 6,
  OUT_WORDS: 7, KEY_JWT: 8, KEY_CLEARANCE: 9, KINDS: 10, REASONS: 11, NAMES: 12, NAMES_LEN: 13,
  ALGS: 14, ALG_NAMES: 15, KIND_CHECK: 16,
};
const ABI_VERSION = 2;
// verify's output words (ABI.OUT_WORDS of them, then the two byte strings).
const OUT = { KIND: 0, REASON: 1, STATUS: 2, RETRY_AFTER: 3, TOKEN_LEN: 4, HEADERS_LEN: 5, SIG_KEYS: 6, SIG_ALG: 7 };
const DEFAULTS = {
  edgeId: "edge",
  coordinator: "http://127.0.0.1:8080",
  maxKeys: 4096,
  syncIntervalMs: 1000,
  syncTimeoutMs: 2000,
  now: () => Date.now(),
  log: (line) => console.warn(line),
  logIntervalMs: 60000,
};
// Feature sizes past which verify() trims a request rather than fail on it
// (the core's I/O buffer is 64 KiB): a token over 16 KiB is invalid unread
// (tollgate.h, max_token_bytes), so sending its first bytes keeps that
// verdict; of a long Cookie only the clearance cookie matters; a keyed
// header past its cap is left out, which skips the quota keyed on it, as
// an absent header does.
const TOKEN_KEEP = 16400;
const COOKIE_KEEP = 4096;
const HEADER_KEEP = 8192;
const CONFLICT_RETRIES = 4;

// A decision. headers are parsed from the edge's text only when asked for.
class Decision {
  constructor(kind, reason, status, retryAfter, token, headerText) {
    this.kind = kind;
    this.reason = reason;
    this.status = status;
    this.retryAfter = retryAfter;
    this.token = token;
    this.headerText = headerText;
  }

  // [[name, value], ...] for the host to add to its response.
  get headers() {
    return parseHeaders(this.headerText);
  }
}

export class Tollgate {
  // module: a WebAssembly.Module (workerd: the embedded wasm import).
  // options:
  //   edgeId (the edge's name, as in the coordinator's key file; a random
  //   instance is appended, "<edgeId>/<8 hex>", because every running
  //   instance needs its own id: the coordinator applies each (id, seq)
  //   once; an edgeId that already holds a "/" is used as it is),
  //   edgeKey (the edge's sync signing secret, hex as in the key file, or
  //   bytes; a secret binding),
  //   coordinator (base URL), fetch (defaults to the global fetch;
  //   in workerd pass a service binding's fetch), maxKeys, syncIntervalMs,
  //   syncTimeoutMs, now (ms clock, for tests),
  //   jwt: { keys: [{ kid, secret, alg }], jwks: { keys: [JWK, ...] },
  //          leewaySeconds, issuer, audience, maxTokenBytes }  keys for
  //          client tokens: HMAC secrets (secret bindings, never sent
  //          anywhere; alg HS256 by default, or HS384 / HS512) and public
  //          keys as an RFC 7517 JWK Set (RS256/384/512, PS256/384/512,
  //          ES256/384, EdDSA); every key pins one algorithm; several at
  //          once for rotation (see addJwks),
  //   clearanceKeys: [{ kid, secret } or { kid, hex }]  the coordinator's
  //          clearance keys (its key file's "clearance" lines),
  //   clientIp: where verifyRequest finds the client address, named
  //          explicitly because no header a client can send is trusted
  //          by default: "cf-connecting-ip" (Cloudflare sets it), or
  //          "x-forwarded-for" (its last entry: the address the proxy in
  //          front of this worker saw; only behind such a proxy), or a
  //          function(request) returning the address. Unset: on Cloudflare
  //          (request.cf present) CF-Connecting-IP; anywhere else every
  //          request throws (see NO_CLIENT_IP). trustForwardedFor: true,
  //          the older spelling, means "x-forwarded-for".
  //   log(line): where sync failures go, once per kind and logIntervalMs
  //   (default console.warn, 60 s), and one line when syncs recover.
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
    this.failLog = new Map(); // kind -> { at, suppressed }
    this.#readAbi();
    this.headerNames = [];
    this.headerNamesVersion = 0;
    this.found = new Array(2 * this.maxHeaders);
    this.edgeId = this.opt.edgeId.includes("/") ? this.opt.edgeId
      : `${this.opt.edgeId}/${hex(crypto.getRandomValues(new Uint8Array(4)))}`;
    this.signingKey = this.opt.edgeKey ? importHmacKey(this.opt.edgeKey) : null;
    this.syncPath = new URL(this.syncUrl).pathname;
    this.clientIp = clientIpSource(this.opt.clientIp ?? (this.opt.trustForwardedFor ? "x-forwarded-for" : undefined));
    const id = this.enc.encode(this.edgeId);
    this.u8.set(id, this.inPtr);
    // Keys the edge's token-cache hash, so nobody can forge a cache hit.
    crypto.getRandomValues(this.u8.subarray(this.inPtr + id.length, this.inPtr + id.length + 16));
    this.#check(this.x.init(id.length, this.opt.maxKeys, this.opt.syncIntervalMs), "init");
    this.#views(); // init grows memory: old views are detached
    const jwt = this.opt.jwt || {};
    // Host keys by the core's key index: { alg, check(data, sig) } in Node,
    // { alg, params, key: Promise<CryptoKey> } with WebCrypto.
    this.hostKeys = [];
    this.nodeCrypto = jwt.webCrypto ? null : NODE_CRYPTO;
    this.keyErrors = [];
    for (const k of jwt.keys || []) this.#addKey(this.keyJwt, k);
    if (jwt.jwks) this.addJwks(jwt.jwks);
    for (const k of this.opt.clearanceKeys || []) this.#addKey(this.keyClearance, { ...k, alg: "HS256" });
    if (this.opt.jwt) {
      const iss = this.enc.encode(jwt.issuer || "");
      const aud = this.enc.encode(jwt.audience || "");
      this.u8.set(iss, this.inPtr);
      this.u8.set(aud, this.inPtr + iss.length);
      this.#check(this.x.jwt_config(jwt.leewaySeconds ?? 60, iss.length, aud.length,
        jwt.maxTokenBytes || 0), "jwt_config");
    }
  }

  #check(rc, what) {
    if (rc < 0) throw new Error(`tollgate: ${what} failed (${rc})`);
  }

  // { kid, secret } (a string, taken as UTF-8, or bytes) or { kid, hex }
  // (hex digits, as in the coordinator's key file), with alg HS256 (the
  // core computes it), HS384 or HS512 (WebCrypto does).
  #addKey(kind, { kid = "", secret, hex: h, alg = "HS256" }) {
    const sec = h !== undefined ? fromHex(h) : typeof secret === "string" ? this.enc.encode(secret) : secret;
    if (!sec || !sec.length) throw new Error(`tollgate: key "${kid}" has no secret`);
    if (!HMAC_HASH[alg]) throw new Error(`tollgate: key "${kid}": alg ${JSON.stringify(alg)} is not an HMAC algorithm (HS256, HS384, HS512)`);
    if (alg === "HS256") {
      this.#coreKey(kind, alg, kid, sec);
      return;
    }
    if (kind !== this.keyJwt) throw new Error(`tollgate: clearance key "${kid}" must be HS256`);
    this.#hostKey(alg, kid, () => crypto.subtle.importKey("raw", sec, { name: "HMAC", hash: HMAC_HASH[alg] }, false, ["verify"]),
      (c) => c.createSecretKey(sec));
  }

  // Adds the key to the core (secret for HS256, none for a host key) and
  // returns its index.
  #coreKey(kind, alg, kid, secret) {
    const a = this.algs.indexOf(alg);
    if (a < 0) throw new Error(`tollgate: key "${kid}": this module has no algorithm ${alg}`);
    const k = this.enc.encode(kid);
    this.#views();
    this.u8.set(k, this.inPtr);
    if (secret) this.u8.set(secret, this.inPtr + k.length);
    const i = this.x.add_key(kind, a, k.length, secret ? secret.length : 0);
    this.#check(i, `add_key "${kid}"`);
    return i;
  }

  // A key whose signatures the glue checks. In Node, with node:crypto's
  // KeyObject (nodeKey(crypto), synchronous: refused here at once if
  // malformed); elsewhere, or with jwt.webCrypto, a WebCrypto key
  // (webKey(), a promise: see ready()).
  #hostKey(alg, kid, webKey, nodeKey) {
    let entry;
    if (this.nodeCrypto) {
      let key;
      try {
        key = nodeKey(this.nodeCrypto);
      } catch (err) {
        throw new Error(`tollgate: key "${kid}" (${alg}): ${err.message}`);
      }
      entry = { alg, kid, check: nodeVerifier(this.nodeCrypto, alg, key) };
    } else {
      const key = webKey().catch((err) => {
        this.keyErrors.push(new Error(`tollgate: key "${kid}" (${alg}): ${err.message}`));
        return null;
      });
      entry = { alg, kid, params: verifyParams(alg), key };
    }
    this.hostKeys[this.#coreKey(this.keyJwt, alg, kid, null)] = entry;
  }

  // Adds the signing keys of an RFC 7517 JWK Set ({ keys: [...] }, e.g.
  // an identity provider's jwks_uri document); a kid already present is
  // replaced in place. Each key pins its algorithm: the JWK's "alg", or
  // the one its curve implies (EC P-256: ES256, P-384: ES384, OKP
  // Ed25519: EdDSA); an RSA key without "alg" is refused (RS256 and PS256
  // share a key type), as are RSA moduli under 2048 bits, curves that do
  // not match the alg, and algorithms tollgate does not verify. Keys
  // marked for encryption ("use": "enc", or key_ops without "verify") are
  // skipped. Throws on the first refused key; importing is asynchronous,
  // see ready().
  addJwks(jwks) {
    if (!jwks || !Array.isArray(jwks.keys)) throw new Error("tollgate: jwks must be a JWK Set: { keys: [...] }");
    for (const jwk of jwks.keys) {
      if (jwk.use !== undefined && jwk.use !== "sig") continue;
      if (Array.isArray(jwk.key_ops) && !jwk.key_ops.includes("verify")) continue;
      const { alg, params, material } = checkJwk(jwk);
      const kid = typeof jwk.kid === "string" ? jwk.kid : "";
      if (jwk.kty === "oct") {
        this.#addKey(this.keyJwt, { kid, secret: fromB64url(jwk.k), alg });
        continue;
      }
      this.#hostKey(alg, kid, () => crypto.subtle.importKey("jwk", material, params, false, ["verify"]),
        (c) => c.createPublicKey({ key: material, format: "jwk" }));
    }
  }

  // Resolves once every host key is imported; rejects with the first key
  // WebCrypto refused (such a key verifies nothing).
  async ready() {
    await Promise.all(this.hostKeys.filter(Boolean).map((k) => k.key));
    if (this.keyErrors.length) throw this.keyErrors[0];
  }

  // The layout and the enums, from the module's own table.
  #readAbi() {
    this.#views();
    const t = this.x.tg_abi();
    if (t & 3) throw new Error("tollgate: ABI table not 4-byte aligned");
    const w = (i) => this.u32[(t >> 2) + i];
    if (w(ABI.VERSION) !== ABI_VERSION || w(ABI.WORDS) <= ABI.KIND_CHECK) {
      throw new Error(`tollgate: module ABI ${w(ABI.VERSION)} (${w(ABI.WORDS)} words), this glue reads ABI ${ABI_VERSION}`);
    }
    this.inPtr = w(ABI.IN);
    this.outPtr = w(ABI.OUT);
    if ((this.inPtr | this.outPtr) & 3) throw new Error("tollgate: I/O buffers not 4-byte aligned");
    this.ioSize = w(ABI.IO_SIZE);
    this.inFields = w(ABI.IN_FIELDS);
    if (this.inFields !== 6 || w(ABI.OUT_WORDS) < 6) throw new Error("tollgate: module's verify layout is not the one this glue writes");
    this.maxHeaders = w(ABI.MAX_HEADERS);
    this.outWords = w(ABI.OUT_WORDS);
    this.keyJwt = w(ABI.KEY_JWT);
    this.keyClearance = w(ABI.KEY_CLEARANCE);
    const names = ascii(this.u8, w(ABI.NAMES), w(ABI.NAMES) + w(ABI.NAMES_LEN) - 1).split("\0");
    const nk = w(ABI.KINDS), nr = w(ABI.REASONS);
    if (names.length !== nk + nr) throw new Error("tollgate: module ABI names do not match their counts");
    this.kinds = names.slice(0, nk);
    this.kindCheck = w(ABI.KIND_CHECK);
    const na = w(ABI.ALGS), an = w(ABI.ALG_NAMES);
    this.algs = [];
    for (let i = 0; i < na; i++) this.algs.push(ascii(this.u8, an + 5 * i, an + 5 * i + 5));
    // An Allow has no reason: "none" reads as "".
    this.reasons = names.slice(nk).map((r, i) => (i === 0 ? "" : r));
    this.reasonCounts = new Float64Array(nr); // a reason past them is not counted
  }

  #views() {
    const buf = this.x.memory.buffer;
    if (this.buf === buf) return;
    this.buf = buf;
    this.u8 = new Uint8Array(buf);
    this.u32 = new Uint32Array(buf); // wasm memory is little-endian, as is every host we run on
  }

  // Writes s at off; returns the bytes written. Short ASCII strings are
  // copied inline (cheaper than a call into TextEncoder); long ones and
  // anything non-ASCII go through encodeInto.
  #put(s, off, end) {
    const n = s.length;
    if (off + n > end) throw new RangeError("tollgate: request features too large");
    const u8 = this.u8;
    if (n <= 32) {
      let i = 0;
      for (; i < n; i++) {
        const c = s.charCodeAt(i);
        if (c > 0x7f) break;
        u8[off + i] = c;
      }
      if (i === n) return n;
    }
    const r = this.enc.encodeInto(s, u8.subarray(off, end));
    if (r.read < n) throw new RangeError("tollgate: request features too large");
    return r.written;
  }

  // Decides one request from its features: { method, path, host, ip,
  // authorization, cookie, headers } (strings; missing ones are empty;
  // headers: a Headers object or a plain object, read only for the names
  // the policy's key templates use). Returns a Decision: { kind:
  // "allow"|"deny"|"challenge", reason, status, retryAfter, token, headers },
  // or, the first time a bearer token signed with a host key (any
  // algorithm but HS256) is seen, a Promise of it: the signature is
  // checked with WebCrypto, the core caches the verdict, and the token's
  // later requests are decided synchronously again. Features too large for
  // the core are trimmed (see TOKEN_KEEP); when even the trimmed ones do
  // not fit (a method, path, host or address of tens of KiB) the decision
  // is Deny(bad_request), 400, never an exception.
  verify(req) {
    try {
      this.#write(req);
    } catch (err) {
      if (!(err instanceof RangeError)) throw err;
      req = trimmed(req);
      try {
        this.#write(req);
      } catch (err2) {
        if (!(err2 instanceof RangeError)) throw err2;
        return new Decision("deny", "bad_request", 400, 0, "", "");
      }
    }
    const kind = this.x.verify(this.opt.now());
    if (kind !== this.kindCheck) return this.#decision(kind);
    return this.nodeCrypto ? this.#checkNow() : this.#checkSignature(req);
  }

  // Writes a request's features into the in buffer; a RangeError when
  // they do not fit.
  #write(req) {
    this.#views();
    // Only the headers present are sent: an absent one leaves the quota
    // that keys on it out of this request.
    const names = this.headerNames, found = this.found;
    let present = 0;
    if (names.length && req.headers) {
      const h = req.headers, isMap = typeof h.get === "function";
      for (let i = 0; i < names.length; i++) {
        const v = isMap ? h.get(names[i]) : h[names[i]];
        if (v != null) { found[2 * present] = names[i]; found[2 * present + 1] = String(v); present++; }
      }
    }
    // The fields in the order of ABI.IN_FIELDS (method, path, host,
    // client_ip, authorization, cookie), then n_headers and the pairs.
    const base = this.inPtr, w = base >> 2, u32 = this.u32, nf = this.inFields;
    const end = base + this.ioSize;
    let off = base + 4 * (nf + 1 + 2 * present);
    let n;
    n = this.#put(req.method || "", off, end); u32[w + 0] = n; off += n;
    n = this.#put(req.path || "", off, end); u32[w + 1] = n; off += n;
    n = this.#put(req.host || "", off, end); u32[w + 2] = n; off += n;
    n = this.#put(req.ip || "", off, end); u32[w + 3] = n; off += n;
    n = this.#put(req.authorization || "", off, end); u32[w + 4] = n; off += n;
    n = this.#put(req.cookie || "", off, end); u32[w + 5] = n; off += n;
    u32[w + nf] = present;
    for (let i = 0; i < 2 * present; i++) {
      n = this.#put(found[i], off, end); u32[w + nf + 1 + i] = n; off += n;
    }
  }

  // The Decision in the out buffer (see OUT).
  #decision(kind) {
    if (kind < 0) throw new Error(`tollgate: verify failed (${kind})`);
    const o = this.outPtr, r = o >> 2, u32 = this.u32;
    const tokenLen = u32[r + OUT.TOKEN_LEN];
    const headersLen = u32[r + OUT.HEADERS_LEN];
    const p = o + 4 * this.outWords;
    const reason = u32[r + OUT.REASON];
    this.reasonCounts[reason]++;
    return new Decision(
      this.kinds[kind],
      this.reasons[reason] ?? "unknown",
      u32[r + OUT.STATUS],
      u32[r + OUT.RETRY_AFTER],
      tokenLen ? this.dec.decode(this.u8.subarray(p, p + tokenLen)) : "",
      headersLen ? this.dec.decode(this.u8.subarray(p + tokenLen, p + tokenLen + headersLen)) : "");
  }

  // check_signature with node:crypto: the verdict at once, and the same
  // request (still in the in buffer) decided again with it.
  #checkNow() {
    const { keys, data, sig } = this.#sigRequest(false);
    let verdict = -1;
    for (let i = 0; i < 32 && verdict < 0; i++) {
      const hk = (keys >>> i) & 1 ? this.hostKeys[i] : null;
      if (hk && hk.check(data, sig)) verdict = i;
    }
    return this.#decideWith(verdict);
  }

  // What check_signature left in the out buffer: the candidate keys as
  // bits, the signing input and the signature (copied when the caller
  // awaits, since other requests reuse the buffer meanwhile).
  #sigRequest(copy) {
    const o = this.outPtr, r = o >> 2, u32 = this.u32;
    const p = o + 4 * this.outWords, inLen = u32[r + OUT.TOKEN_LEN], sigLen = u32[r + OUT.HEADERS_LEN];
    const take = (a, b) => (copy ? this.u8.slice(a, b) : this.u8.subarray(a, b));
    return { keys: u32[r + OUT.SIG_KEYS], data: take(p, p + inLen), sig: take(p + inLen, p + inLen + sigLen) };
  }

  // The request in the in buffer decided again with the host's verdict
  // (the index of the key that verified, or -1).
  #decideWith(verdict) {
    const kind = this.x.verify(this.opt.now(), verdict >= 0 ? verdict + 1 : -1);
    if (kind === this.kindCheck) throw new Error("tollgate: the core asked again for a signature it was given");
    return this.#decision(kind);
  }

  // The core asked for the bearer token's signature (check_signature: the
  // signing input and the signature bytes in the out buffer, the
  // candidate keys as bits, all pinning the token's algorithm). Tries
  // them in turn with WebCrypto, then decides the request again with the
  // verdict: the core checks the token anew with it and caches the
  // outcome. Other requests may run while this awaits, so the features
  // are written again.
  async #checkSignature(req) {
    const { keys, data, sig } = this.#sigRequest(true);
    let verdict = -1;
    for (let i = 0; i < 32 && verdict < 0; i++) {
      const hk = (keys >>> i) & 1 ? this.hostKeys[i] : null;
      if (!hk) continue;
      const key = await hk.key;
      // A malformed signature (e.g. the wrong length for the curve) makes
      // some runtimes throw rather than answer false: not verified.
      if (key && await crypto.subtle.verify(hk.params, key, sig, data).catch(() => false)) verdict = i;
    }
    this.#write(req);
    return this.#decideWith(verdict);
  }

  // Decides a Fetch API Request (a Decision, or a Promise of one: see
  // verify). The client address comes from options.clientIp.
  verifyRequest(request) {
    const [host, path] = splitUrl(request.url);
    const h = request.headers;
    return this.verify({
      method: request.method,
      path,
      host,
      ip: this.clientIp(request),
      authorization: h.get("authorization") || "",
      cookie: h.get("cookie") || "",
      headers: h,
    });
  }

  // The header names the installed policy's key templates read; refreshed
  // when the policy version changes.
  #refreshHeaderNames() {
    const v = this.x.policy_version();
    if (v === this.headerNamesVersion) return;
    this.#views();
    const n = this.x.header_names();
    this.headerNames = n > 0 ? ascii(this.u8, this.outPtr, this.outPtr + n).split("\n").filter(Boolean).slice(0, this.maxHeaders) : [];
    this.headerNamesVersion = v;
  }

  syncDue() {
    return this.inflight === null && this.x.sync_due(this.opt.now()) === 1;
  }

  policyVersion() {
    return this.x.policy_version();
  }

  // Decisions by reason since this edge started, for the host's logs and
  // metrics: { rate_limited: n, invalid_token: n, unknown_kid: n, ... }
  // (Allow is "none"). unknown_kid against unsupported_alg and
  // invalid_token tells a key rotation the edge has not seen from forged
  // tokens.
  reasonStats() {
    const out = {};
    this.reasons.forEach((r, i) => { out[r || "none"] = this.reasonCounts[i]; });
    return out;
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

  async #syncOnce(retries = CONFLICT_RETRIES) {
    const ok = await this.#syncAttempt(retries);
    if (ok === "again") return this.#syncOnce(retries - 1);
    if (ok) {
      if (this.failLog.size) this.opt.log(`tollgate: sync ok again after ${[...this.failLog.keys()].join(", ")} failures`);
      this.failLog.clear();
    } else {
      this.#logFailure(this.lastSyncError);
    }
    return ok;
  }

  // One line per kind of failure (network, http_<status>, rejected, ...)
  // at most every logIntervalMs, saying how many were not logged between.
  #logFailure(err) {
    const kind = err?.kind || (err?.name === "TimeoutError" ? "timeout" : "network");
    const now = this.opt.now();
    const seen = this.failLog.get(kind);
    if (seen && now - seen.at < this.opt.logIntervalMs) { seen.suppressed++; return; }
    const more = seen?.suppressed ? ` (${seen.suppressed} more since the last line)` : "";
    this.failLog.set(kind, { at: now, suppressed: 0 });
    this.opt.log(`tollgate: sync failed kind=${kind} edge=${this.edgeId}: ${err?.message ?? err}${more}`);
  }

  // true, false (failed; the core keeps the batch), or "again": a 409 the
  // core recovered from by renumbering its batch (tg_sync_conflict).
  async #syncAttempt(retries) {
    this.#views();
    const n = this.x.sync_request(this.opt.now());
    if (n < 0) {
      this.lastSyncError = Object.assign(new Error(`tollgate: sync_request failed (${n})`), { kind: "request" });
      this.x.sync_failed(this.opt.now());
      return false;
    }
    const body = this.u8.slice(this.outPtr, this.outPtr + n);
    try {
      const headers = { "content-type": "application/x-protobuf" };
      if (this.signingKey) Object.assign(headers, await signSync(await this.signingKey, this.edgeId, this.syncPath, body, this.opt.now()));
      const resp = await this.fetch(this.syncUrl, {
        method: "POST",
        headers,
        body,
        signal: AbortSignal.timeout(this.opt.syncTimeoutMs),
      });
      const bytes = new Uint8Array(await resp.arrayBuffer());
      if (resp.status === 409 && retries > 0) {
        // An earlier instance under this edge id left newer records: go past
        // them (exact digits: the seq may exceed 2^53).
        const m = /"applied_seq":(\d+)/.exec(this.dec.decode(bytes));
        const seq = m ? BigInt(m[1]) : -1n;
        if (seq >= 0n && seq < 1n << 64n &&
            this.x.sync_conflict(this.opt.now(), Number(seq & 0xffffffffn), Number(seq >> 32n)) === 0) return "again";
      }
      if (resp.status !== 200) throw Object.assign(new Error(`coordinator answered ${resp.status}${problemDetail(bytes)}`), { kind: `http_${resp.status}` });
      if (bytes.length > this.ioSize) throw Object.assign(new Error(`sync response too large (${bytes.length} bytes)`), { kind: "too_large" });
      this.#views();
      this.u8.set(bytes, this.inPtr);
      const rc = this.x.sync_response(this.opt.now(), bytes.length);
      if (rc < 0) throw Object.assign(new Error(`sync response rejected by the edge core (${rc})`), { kind: "rejected" });
      this.#refreshHeaderNames();
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

// ---------------------------------------------------------------- JWT keys
// RFC 7518 §3: what WebCrypto calls each algorithm tollgate verifies in the
// host (HS256 is the core's own).
const HMAC_HASH = { HS256: "SHA-256", HS384: "SHA-384", HS512: "SHA-512" };
const RSA_HASH = { RS256: "SHA-256", RS384: "SHA-384", RS512: "SHA-512", PS256: "SHA-256", PS384: "SHA-384", PS512: "SHA-512" };
const EC_CURVE = { ES256: "P-256", ES384: "P-384" };

// node:crypto when this runs in Node (not in workerd, whose node:crypto is
// partial): a signature checked synchronously in the calling turn, where
// WebCrypto's is a promise settled from a worker thread, several times
// slower for one check.
const NODE_CRYPTO = (() => {
  try {
    if (globalThis.navigator?.userAgent === "Cloudflare-Workers") return null;
    const c = globalThis.process?.getBuiltinModule?.("node:crypto");
    return c && typeof c.verify === "function" && typeof c.createPublicKey === "function" ? c : null;
  } catch {
    return null;
  }
})();

// check(data, sig) for a node:crypto key of an algorithm (RFC 7518 §3):
// true when the signature verifies; a malformed one is false.
function nodeVerifier(c, alg, key) {
  const hash = `sha${alg.slice(2)}`;
  if (HMAC_HASH[alg]) {
    return (data, sig) => {
      const mac = c.createHmac(hash, key).update(data).digest();
      return mac.length === sig.length && c.timingSafeEqual(mac, sig);
    };
  }
  const opts = alg.startsWith("PS") ? { key, padding: c.constants.RSA_PKCS1_PSS_PADDING, saltLength: Number(alg.slice(2)) / 8 }
    : alg.startsWith("ES") ? { key, dsaEncoding: "ieee-p1363" } : key;
  const h = alg === "EdDSA" ? null : hash;
  return (data, sig) => {
    try {
      return c.verify(h, data, opts, sig);
    } catch {
      return false;
    }
  };
}

// verify() parameters of an algorithm.
function verifyParams(alg) {
  if (HMAC_HASH[alg]) return { name: "HMAC" };
  if (alg.startsWith("RS")) return { name: "RSASSA-PKCS1-v1_5" };
  // RFC 7518 §3.5: the salt is as long as the hash.
  if (alg.startsWith("PS")) return { name: "RSA-PSS", saltLength: Number(alg.slice(2)) / 8 };
  if (EC_CURVE[alg]) return { name: "ECDSA", hash: alg === "ES256" ? "SHA-256" : "SHA-384" };
  return { name: "Ed25519" };
}

// Checks a JWK against the rules addJwks() states; returns its pinned
// alg, WebCrypto's import parameters, and the bare public key to import
// (so a JWK's own alg, use or key_ops cannot disagree with them).
function checkJwk(jwk) {
  const kid = typeof jwk.kid === "string" ? jwk.kid : "";
  const fail = (why) => { throw new Error(`tollgate: JWK "${kid}": ${why}`); };
  if (!jwk || typeof jwk !== "object") fail("not an object");
  let alg = jwk.alg;
  if (alg === undefined) {
    if (jwk.kty === "EC") alg = jwk.crv === "P-256" ? "ES256" : jwk.crv === "P-384" ? "ES384" : undefined;
    else if (jwk.kty === "OKP") alg = jwk.crv === "Ed25519" ? "EdDSA" : undefined;
    else if (jwk.kty === "oct") alg = "HS256";
    else if (jwk.kty === "RSA") fail('an RSA key needs "alg" (RS256 and PS256 share a key type)');
    if (alg === undefined) fail(`no algorithm for kty ${JSON.stringify(jwk.kty)} crv ${JSON.stringify(jwk.crv)}`);
  }
  if (typeof alg !== "string") fail("alg must be a string");
  if (HMAC_HASH[alg]) {
    if (jwk.kty !== "oct" || typeof jwk.k !== "string") fail(`${alg} needs kty "oct" with k`);
    return { alg, params: null, material: null };
  }
  if (RSA_HASH[alg]) {
    if (jwk.kty !== "RSA" || typeof jwk.n !== "string" || typeof jwk.e !== "string") fail(`${alg} needs kty "RSA" with n and e`);
    const n = fromB64url(jwk.n);
    let i = 0;
    while (i < n.length && n[i] === 0) i++;
    const bits = i === n.length ? 0 : (n.length - i - 1) * 8 + (32 - Math.clz32(n[i]));
    if (bits < 2048) fail(`an RSA modulus of ${bits} bits is too short (at least 2048)`);
    return {
      alg,
      params: { name: alg.startsWith("PS") ? "RSA-PSS" : "RSASSA-PKCS1-v1_5", hash: RSA_HASH[alg] },
      material: { kty: "RSA", n: jwk.n, e: jwk.e },
    };
  }
  if (EC_CURVE[alg]) {
    if (jwk.kty !== "EC" || jwk.crv !== EC_CURVE[alg]) fail(`${alg} needs kty "EC" on curve ${EC_CURVE[alg]}, not ${jwk.kty} ${jwk.crv}`);
    return { alg, params: { name: "ECDSA", namedCurve: jwk.crv }, material: { kty: "EC", crv: jwk.crv, x: jwk.x, y: jwk.y } };
  }
  if (alg === "EdDSA") {
    if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519") fail(`EdDSA is verified on Ed25519 only, not ${jwk.kty} ${jwk.crv}`);
    return { alg, params: { name: "Ed25519" }, material: { kty: "OKP", crv: "Ed25519", x: jwk.x } };
  }
  return fail(`alg ${JSON.stringify(alg)} is not one tollgate verifies`);
}

// Strict base64url (RFC 4648 §5, no padding) to bytes.
function fromB64url(s) {
  if (typeof s !== "string" || !/^[A-Za-z0-9_-]*$/.test(s) || s.length % 4 === 1) throw new Error("tollgate: bad base64url in a key");
  const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "==".slice(0, (4 - (s.length % 4)) % 4));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

// ---------------------------------------------------------------- sync auth
// Every sync is signed (the coordinator's auth.c checks it):
//   Tollgate-Edge: <edge id>   Tollgate-Timestamp: <unix ms>
//   Tollgate-Signature: v1=<hex HMAC-SHA256(edge key, "tollgate-sync-v1\n" +
//     "POST\n" + path + "\n" + timestamp + "\n" + hex(SHA-256(body)))>
// WebCrypto does the hashing in both Node and workerd, so the wasm core
// carries no signing code.
const SIGN_PREFIX = "tollgate-sync-v1\nPOST\n";

function hex(u8) {
  let s = "";
  for (const b of u8) s += (b < 16 ? "0" : "") + b.toString(16);
  return s;
}

function fromHex(h) {
  if (!/^(?:[0-9a-fA-F]{2})+$/.test(h)) throw new Error("tollgate: edgeKey must be an even number of hex digits");
  const out = new Uint8Array(h.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(h.substr(2 * i, 2), 16);
  return out;
}

function importHmacKey(secret) {
  const raw = typeof secret === "string" ? fromHex(secret) : secret;
  return crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
}

async function signSync(key, edgeId, path, body, nowMs) {
  const ts = String(Math.floor(nowMs));
  const digest = hex(new Uint8Array(await crypto.subtle.digest("SHA-256", body)));
  const text = new TextEncoder().encode(`${SIGN_PREFIX}${path}\n${ts}\n${digest}`);
  const mac = hex(new Uint8Array(await crypto.subtle.sign("HMAC", key, text)));
  return { "tollgate-edge": edgeId, "tollgate-timestamp": ts, "tollgate-signature": `v1=${mac}` };
}

// req with its oversized features cut to what the core can take (see
// TOKEN_KEEP): the token past the core's largest max_token_bytes, the
// Cookie down to its tollgate_clearance pair, long keyed headers left out.
function trimmed(req) {
  const out = { ...req };
  const auth = req.authorization || "";
  if (auth.length > TOKEN_KEEP) out.authorization = auth.slice(0, TOKEN_KEEP);
  const cookie = req.cookie || "";
  if (cookie.length > COOKIE_KEEP) {
    const m = /(?:^|;\s*)(tollgate_clearance=[^;]*)/.exec(cookie);
    out.cookie = m && m[1].length <= COOKIE_KEEP ? m[1] : "";
  }
  const h = req.headers;
  if (h) {
    const get = typeof h.get === "function" ? (n) => h.get(n) : (n) => h[n];
    out.headers = { get: (n) => { const v = get(n); return v != null && String(v).length <= HEADER_KEEP ? v : null; } };
  }
  return out;
}

// ": <detail>" of an RFC 9457 problem body, or "".
function problemDetail(bytes) {
  try {
    const p = JSON.parse(new TextDecoder().decode(bytes));
    return p && typeof p.detail === "string" ? `: ${p.detail}` : "";
  } catch {
    return "";
  }
}

// The ASCII text the edge writes (header names), as a string.
function ascii(u8, from, to) {
  let s = "";
  for (let i = from; i < to; i += 4096) {
    s += String.fromCharCode.apply(null, u8.subarray(i, Math.min(to, i + 4096)));
  }
  return s;
}

function parseHeaders(text) {
  const out = [];
  for (const line of text.split("\r\n")) {
    const i = line.indexOf(": ");
    if (i > 0) out.push([line.slice(0, i), line.slice(i + 2)]);
  }
  return out;
}

// host and path of an absolute URL as Request.url spells it (already
// normalised by the runtime), without the cost of a URL object per request.
function splitUrl(url) {
  const a = url.indexOf("//");
  const start = a < 0 ? 0 : a + 2;
  let p = start;
  while (p < url.length && url[p] !== "/" && url[p] !== "?" && url[p] !== "#") p++;
  let q = url.indexOf("?", p);
  if (q < 0) q = url.length;
  const hash = url.indexOf("#", p);
  if (hash >= 0 && hash < q) q = hash;
  return [url.slice(start, p), p < q && url[p] === "/" ? url.slice(p, q) : "/"];
}

// Outside Cloudflare, CF-Connecting-IP is whatever the client sent: a
// client sending a new one each time would never be limited, and one
// naming a victim's address would spend the victim's budget.
export const NO_CLIENT_IP = "tollgate: no clientIp source. Outside Cloudflare (request.cf is absent) a " +
  "client can send any CF-Connecting-IP, so tollgate will not trust it by default: set clientIp to " +
  '"x-forwarded-for" (behind a proxy that appends the address it saw), "cf-connecting-ip" (only if ' +
  "something in front sets it), or a function(request) returning the client's address";

// The function verifyRequest reads the client address with.
function clientIpSource(src) {
  if (typeof src === "function") return (r) => String(src(r) ?? "");
  if (src === "cf-connecting-ip") return (r) => r.headers.get("cf-connecting-ip") || "";
  if (src === "x-forwarded-for") {
    return (r) => {
      const v = r.headers.get("x-forwarded-for") || "";
      return v.slice(v.lastIndexOf(",") + 1).trim();
    };
  }
  if (src === undefined) {
    return (r) => {
      if (r.cf === undefined || r.cf === null) throw new Error(NO_CLIENT_IP);
      return r.headers.get("cf-connecting-ip") || "";
    };
  }
  throw new Error(`tollgate: clientIp must be "cf-connecting-ip", "x-forwarded-for" or a function, not ${JSON.stringify(src)}`);
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
// Tollgate options plus `module` (the wasm module), `coordinatorBinding`
// (the name of a service binding the sync goes through) and `challenge`
// (the challenge.mjs module: the round trip through the edge).
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
    const answered = tg.opt.challenge && await tg.opt.challenge.intercept(tg, request); // challenge.mjs
    if (answered) return answered;
    let d = tg.verifyRequest(request);
    if (d instanceof Promise) d = await d;
    if (d.kind !== "allow") {
      const make = d.kind === "challenge" ? tg.opt.challengePage : tg.opt.denyResponse;
      return (make || decisionResponse)(d, request);
    }
    const resp = await handler(request, env, ctx);
    const add = d.headers;
    if (add.length === 0) return resp;
    // Headers of a Response the handler built are mutable: set them in
    // place. A fetch() response's are immutable: copy it once.
    try {
      for (const [k, v] of add) resp.headers.set(k, v);
      return resp;
    } catch {
      const out = new Response(resp.body, resp);
      for (const [k, v] of add) out.headers.set(k, v);
      return out;
    }
  };
}
