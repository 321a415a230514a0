// decisions.mjs — every decision kind the edge makes, end to end against a
// real coordinator, shared by the Node test and the workerd suite: tokens
// (missing, malformed, forged, expired, valid), claim- and header-keyed
// quotas, the local rate_limited answer, Challenge with its token, a
// clearance cookie letting a challenged client through, Deny(blocked) for a
// deny quota, and a shadow quota that never refuses. Uses only WebCrypto, so
// it runs in Node and in workerd alike.

export const JWT_KEY = { kid: "k1", secret: "edge-test-jwt-secret-0123456789abcdef" };
export const CLEARANCE_KEY = { kid: "c1", secret: "edge-test-clearance-secret-0123456789" };

export const DECISIONS_POLICY = {
  version: 1,
  sync_interval_ms: 1000,
  expected_edges: 1,
  quotas: [
    { name: "user", key: "claim:sub", path_prefix: "/v1/", limit: 6, window_s: 60,
      action: "challenge", floor: 2, require_token: true },
    { name: "apikey", key: "header:x-api-key", path_prefix: "/keyed/", limit: 4, window_s: 60,
      action: "deny", floor: 2 },
    { name: "watch", key: "ip", path_prefix: "/shadow/", limit: 1, window_s: 60,
      action: "deny", floor: 1, shadow: true },
  ],
};

const te = new TextEncoder();

export function b64url(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

async function hmac(secret, data) {
  const key = await crypto.subtle.importKey("raw", te.encode(secret),
    { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", key, te.encode(data)));
}

// An HS256 JWS over claims with the given key.
export async function signJwt(claims, { kid, secret }, header = { alg: "HS256", typ: "JWT", kid }) {
  const input = `${b64url(te.encode(JSON.stringify(header)))}.${b64url(te.encode(JSON.stringify(claims)))}`;
  return `${input}.${b64url(await hmac(secret, input))}`;
}

// The clearance token the coordinator hands out once a challenge is solved:
// q the quota, kh the first 16 bytes of SHA-256(quota "\n" key).
export async function clearanceToken(quota, key, nowS, key_ = CLEARANCE_KEY, ttl = 300) {
  const kh = new Uint8Array(await crypto.subtle.digest("SHA-256", te.encode(`${quota}\n${key}`))).subarray(0, 16);
  return signJwt({ q: quota, kh: b64url(kh), exp: nowS + ttl, iat: nowS }, key_);
}

const IP = "192.0.2.44";
const at = (path, extra = {}) => ({ method: "GET", path, host: "api.example", ip: IP, ...extra });
const bearer = (t) => ({ authorization: `Bearer ${t}` });

// Calls verify until pred(decision) holds, syncing after every `per`
// requests; bounded. Returns the decision that satisfied pred.
async function until(edge, features, pred, assert, what, per = 3, rounds = 20) {
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < per; i++) {
      const d = edge.verify(features);
      if (pred(d)) return d;
    }
    assert.equal(await edge.sync(), true, `sync failed: ${edge.lastSyncError}`);
  }
  throw new Error(`never saw ${what}`);
}

export async function decisionsScenario(edge, assert) {
  const nowS = Math.floor(Date.now() / 1000);
  assert.equal(await edge.sync(), true, `first sync: ${edge.lastSyncError}`);
  assert.equal(edge.policyVersion(), DECISIONS_POLICY.version);

  // Tokens.
  let d = edge.verify(at("/v1/items"));
  assert.deepEqual([d.kind, d.reason, d.status], ["deny", "missing_token", 401]);
  d = edge.verify(at("/v1/items", bearer("not.a.token")));
  assert.deepEqual([d.kind, d.reason, d.status], ["deny", "invalid_token", 401]);
  const forged = await signJwt({ sub: "alice", exp: nowS + 600 }, { kid: "k1", secret: "wrong-secret" });
  d = edge.verify(at("/v1/items", bearer(forged)));
  assert.deepEqual([d.kind, d.reason], ["deny", "invalid_token"]);
  const none = `${b64url(te.encode('{"alg":"none"}'))}.${b64url(te.encode('{"sub":"alice"}'))}.`;
  d = edge.verify(at("/v1/items", bearer(none)));
  assert.deepEqual([d.kind, d.reason], ["deny", "invalid_token"]);
  const expired = await signJwt({ sub: "alice", exp: nowS - 3600 }, JWT_KEY);
  d = edge.verify(at("/v1/items", bearer(expired)));
  assert.deepEqual([d.kind, d.reason, d.status], ["deny", "token_expired", 401]);
  assert.ok(d.headers.some(([k]) => k.toLowerCase() === "www-authenticate"), "401 carries WWW-Authenticate");

  // A valid token: allowed, keyed by its sub claim, headers describe the quota.
  const alice = await signJwt({ sub: "alice", exp: nowS + 600 }, JWT_KEY);
  const bob = await signJwt({ sub: "bob", exp: nowS + 600 }, JWT_KEY);
  d = edge.verify(at("/v1/items", bearer(alice)));
  assert.equal(d.kind, "allow");
  const hdr = Object.fromEntries(d.headers.map(([k, v]) => [k.toLowerCase(), v]));
  assert.equal(hdr["ratelimit-policy"], '"user";q=6;w=60');

  // The local allowance (floor 2) runs out before the coordinator knows:
  // rate_limited with Retry-After.
  assert.equal(edge.verify(at("/v1/items", bearer(alice))).kind, "allow");
  d = edge.verify(at("/v1/items", bearer(alice)));
  assert.deepEqual([d.kind, d.reason, d.status], ["deny", "rate_limited", 429]);
  assert.ok(d.retryAfter >= 1, `Retry-After ${d.retryAfter}`);

  // Over the global limit: Challenge with the coordinator's token; another
  // subject is untouched.
  d = await until(edge, at("/v1/items", bearer(alice)), (x) => x.kind === "challenge", assert, "challenge");
  assert.equal(d.status, 429);
  assert.ok(d.token.length > 20);
  assert.equal(edge.verify(at("/v1/items", bearer(bob))).kind, "allow");

  // A clearance for alice lets her through; one for bob, or an expired one,
  // or one for another quota does not.
  const cookie = (t) => ({ cookie: `theme=dark; tollgate_clearance=${t}` });
  const forBob = await clearanceToken("user", "bob", nowS);
  assert.equal(edge.verify(at("/v1/items", { ...bearer(alice), ...cookie(forBob) })).kind, "challenge");
  const stale = await clearanceToken("user", "alice", nowS - 1000, CLEARANCE_KEY, 10);
  assert.equal(edge.verify(at("/v1/items", { ...bearer(alice), ...cookie(stale) })).kind, "challenge");
  const otherQuota = await clearanceToken("apikey", "alice", nowS);
  assert.equal(edge.verify(at("/v1/items", { ...bearer(alice), ...cookie(otherQuota) })).kind, "challenge");
  const cleared = await clearanceToken("user", "alice", nowS);
  d = edge.verify(at("/v1/items", { ...bearer(alice), ...cookie(cleared) }));
  assert.equal(d.kind, "allow", `cleared client: ${JSON.stringify(d)}`);

  // A header-keyed deny quota: blocked once over; no header, no quota.
  const keyed = { headers: { "x-api-key": "k-123" } };
  d = await until(edge, at("/keyed/x", keyed), (x) => x.reason === "blocked", assert, "blocked");
  assert.deepEqual([d.kind, d.status], ["deny", 429]);
  d = edge.verify(at("/keyed/x", { headers: { "x-api-key": "k-456" } }));
  assert.equal(d.kind, "allow");
  d = edge.verify(at("/keyed/x"));
  assert.equal(d.kind, "allow");
  assert.equal(d.headers.length, 0, "a request no quota counts has no RateLimit headers");

  // Shadow: far over its limit of 1, never refused.
  for (let i = 0; i < 6; i++) assert.equal(edge.verify(at("/shadow/x")).kind, "allow");
  assert.equal(await edge.sync(), true);
  for (let i = 0; i < 3; i++) assert.equal(edge.verify(at("/shadow/x")).kind, "allow");
  assert.equal(await edge.sync(), true);
  return { ip: IP };
}
