// The quota admin API against a real redis-server and a real tollgated:
// versioned policy with If-Match, quotas, overrides, keys, audit, auth,
// rollback, persistence across restarts of both, and a new limit reaching
// edges in Node within two sync intervals.
import assert from "node:assert/strict";
import { test } from "node:test";
import { createTollgate } from "../../edge-module/js/tollgate.mjs";
import {
  ADMIN_TOKENS, TEST_KEYS, loadWasm, startRedis, startTollgated, tempDir, waitFor,
} from "./harness.mjs";

const ADMIN = ADMIN_TOKENS.find((t) => t.role === "admin").token;
const READ = ADMIN_TOKENS.find((t) => t.role === "read").token;

const QUOTA = {
  name: "per-ip", key: "ip", limit: 50, window_s: 60, path_prefix: "/api/",
  methods: [], action: "challenge", floor: 2, shadow: false, fail_open: true, deny_after: 0,
};
const POLICY = { version: 1, sync_interval_ms: 1000, clearance_ttl_s: 300, expected_edges: 2, quotas: [QUOTA] };

async function api(co, method, path, { token = ADMIN, body, headers = {} } = {}) {
  const h = { ...headers };
  if (token) h.authorization = `Bearer ${token}`;
  if (body !== undefined) h["content-type"] = "application/json";
  const r = await fetch(`${co.url}${path}`, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  return { status: r.status, headers: r.headers, json, text };
}

async function stack(t, { redisArgs = [], dir } = {}) {
  const redis = await startRedis({ dir, args: redisArgs });
  const co = await startTollgated({ redisPort: redis.port, policy: POLICY });
  t.after(async () => { await co.stop(); await redis.stop(); });
  return { redis, co };
}

const withoutVersion = ({ version, ...rest }) => rest;

test("policy, quotas, overrides, keys and audit: CRUD round trips, every write a version and an audit entry", async (t) => {
  const { co } = await stack(t);
  let r = await api(co, "GET", "/v1/policy", { token: READ });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.version, 1, "--policy seeds version 1");
  assert.equal(r.headers.get("etag"), "\"1\"");
  assert.equal(r.json.quotas[0].limit, 50);

  const doc = { ...r.json, quotas: [{ ...r.json.quotas[0], limit: 80 }] };
  r = await api(co, "PUT", "/v1/policy", { body: doc, headers: { "if-match": "1" } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.version, 2);
  assert.equal(r.json.quotas[0].limit, 80);

  r = await api(co, "PUT", "/v1/quotas/login", { body: { key: "ip", limit: 5, window_s: 60, action: "deny", path_prefix: "/login" } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.version, 3);
  r = await api(co, "GET", "/v1/quotas/login", { token: READ });
  assert.equal(r.status, 200);
  assert.equal(r.json.limit, 5);
  assert.equal(r.json.action, "deny");

  r = await api(co, "PUT", `/v1/quotas/per-ip/overrides/${encodeURIComponent("10.0.0.1")}`, { body: { limit: 7 } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.version, 4);
  r = await api(co, "GET", "/v1/policy", { token: READ });
  assert.deepEqual(r.json.quotas.find((q) => q.name === "per-ip").overrides, { "10.0.0.1": { limit: 7 } });
  r = await api(co, "GET", `/v1/keys/per-ip/${encodeURIComponent("10.0.0.1")}`, { token: READ });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.limit, 7, "the override is the key's effective limit");
  assert.equal(r.json.count, 0);
  r = await api(co, "DELETE", `/v1/quotas/per-ip/overrides/${encodeURIComponent("10.0.0.1")}`);
  assert.equal(r.status, 200);
  assert.equal(r.json.version, 5);
  r = await api(co, "DELETE", "/v1/quotas/login");
  assert.equal(r.status, 200);
  assert.equal(r.json.version, 6);
  r = await api(co, "GET", "/v1/quotas/login", { token: READ });
  assert.equal(r.status, 404);
  assert.equal(r.headers.get("content-type"), "application/problem+json");
  r = await api(co, "DELETE", `/v1/keys/per-ip/${encodeURIComponent("10.0.0.9")}`);
  assert.equal(r.status, 200, r.text);

  r = await api(co, "GET", "/v1/policy/versions", { token: READ });
  assert.equal(r.status, 200);
  assert.equal(r.json.current, 6);
  assert.deepEqual(r.json.versions.map((v) => v.version), [6, 5, 4, 3, 2, 1]);
  r = await api(co, "GET", "/v1/policy/versions/2", { token: READ });
  assert.equal(r.status, 200);
  assert.equal(r.json.quotas[0].limit, 80);
  r = await api(co, "GET", "/v1/policy/versions/99", { token: READ });
  assert.equal(r.status, 404);

  r = await api(co, "GET", "/v1/audit?limit=3", { token: READ });
  assert.equal(r.status, 200);
  assert.equal(r.json.entries.length, 3);
  assert.ok(r.json.entries.every((e) => e.who === "ops-admin"), JSON.stringify(r.json.entries));
  assert.ok(r.json.next !== null);
  const page2 = await api(co, "GET", `/v1/audit?limit=50&before=${r.json.next}`, { token: READ });
  const all = [...r.json.entries, ...page2.json.entries];
  assert.ok(all.length >= 6, `${all.length} audit entries for 6 writes and a key reset`);
  assert.ok(all.some((e) => e.to_version === 2 && e.from_version === 1));
  assert.ok(!co.proc.logs.includes(ADMIN), "a token never reaches the log");
});

test("a PUT with a stale If-Match gets 412 and changes nothing; no If-Match gets 428", async (t) => {
  const { co } = await stack(t);
  const cur = await api(co, "GET", "/v1/policy");
  const a = { ...cur.json, quotas: [{ ...QUOTA, limit: 60 }] };
  const b = { ...cur.json, quotas: [{ ...QUOTA, limit: 70 }] };
  const [ra, rb] = await Promise.all([
    api(co, "PUT", "/v1/policy", { body: a, headers: { "if-match": "\"1\"" } }),
    api(co, "PUT", "/v1/policy", { body: b, headers: { "if-match": "1" } }),
  ]);
  const statuses = [ra.status, rb.status].sort();
  assert.deepEqual(statuses, [200, 412], `${ra.text} / ${rb.text}`);
  const lost = ra.status === 412 ? ra : rb;
  assert.equal(lost.headers.get("content-type"), "application/problem+json");
  const now = await api(co, "GET", "/v1/policy");
  assert.equal(now.json.version, 2);
  assert.equal(now.json.quotas[0].limit, (ra.status === 200 ? a : b).quotas[0].limit, "the winner's document");
  const none = await api(co, "PUT", "/v1/policy", { body: a });
  assert.equal(none.status, 428);
  assert.equal((await api(co, "GET", "/v1/policy")).json.version, 2);
});

// [what, document (or a function of a valid one), the problem's path]
const q = (extra) => ({ ...QUOTA, ...extra });
const INVALID = [
  ["not an object", [], ""],
  ["quotas not an array", { ...POLICY, quotas: {} }, "quotas"],
  ["unknown top-level member", { ...POLICY, colour: "red" }, "colour"],
  ["sync interval a string", { ...POLICY, sync_interval_ms: "1000" }, "sync_interval_ms"],
  ["quota not an object", { ...POLICY, quotas: [1] }, "quotas[0]"],
  ["limit 0", { ...POLICY, quotas: [q({}), q({ name: "b", limit: 0 })] }, "quotas[1].limit"],
  ["limit missing", { ...POLICY, quotas: [{ ...QUOTA, limit: undefined }] }, "quotas[0].limit"],
  ["limit negative", { ...POLICY, quotas: [q({ limit: -5 })] }, "quotas[0].limit"],
  ["limit fractional", { ...POLICY, quotas: [q({ limit: 1.5 })] }, "quotas[0].limit"],
  ["limit too large", { ...POLICY, quotas: [q({ limit: 1e13 })] }, "quotas[0].limit"],
  ["window 0", { ...POLICY, quotas: [q({ window_s: 0 })] }, "quotas[0].window_s"],
  ["window over a week", { ...POLICY, quotas: [q({ window_s: 604801 })] }, "quotas[0].window_s"],
  ["duplicate names", { ...POLICY, quotas: [q({}), q({})] }, "quotas[1].name"],
  ["name with a space", { ...POLICY, quotas: [q({ name: "a b" })] }, "quotas[0].name"],
  ["empty name", { ...POLICY, quotas: [q({ name: "" })] }, "quotas[0].name"],
  ["unknown key part", { ...POLICY, quotas: [q({ key: "sub" })] }, "quotas[0].key"],
  ["key part twice", { ...POLICY, quotas: [q({ key: "ip+ip" })] }, "quotas[0].key"],
  ["upper-case header name", { ...POLICY, quotas: [q({ key: "header:X-Api-Key" })] }, "quotas[0].key"],
  ["unknown action", { ...POLICY, quotas: [q({ action: "block" })] }, "quotas[0].action"],
  ["path prefix without /", { ...POLICY, quotas: [q({ path_prefix: "api" })] }, "quotas[0].path_prefix"],
  ["lower-case method", { ...POLICY, quotas: [q({ methods: ["GET", "get"] })] }, "quotas[0].methods[1]"],
  ["floor over the limit", { ...POLICY, quotas: [q({ floor: 51 })] }, "quotas[0].floor"],
  ["shadow not a boolean", { ...POLICY, quotas: [q({ shadow: 1 })] }, "quotas[0].shadow"],
  ["deny_after below 1", { ...POLICY, quotas: [q({ deny_after: 0.5 })] }, "quotas[0].deny_after"],
  ["unknown quota member", { ...POLICY, quotas: [q({ bogus: true })] }, "quotas[0].bogus"],
  ["override limit 0", { ...POLICY, quotas: [q({ overrides: { "10.0.0.1": { limit: 0 } } })] }, "quotas[0].overrides[\"10.0.0.1\"].limit"],
  ["override not an object", { ...POLICY, quotas: [q({ overrides: { "10.0.0.1": 5 } })] }, "quotas[0].overrides[\"10.0.0.1\"]"],
  ["overrides an array", { ...POLICY, quotas: [q({ overrides: [] })] }, "quotas[0].overrides"],
  ["burst negative", { ...POLICY, quotas: [q({ burst: -1 })] }, "quotas[0].burst"],
  // What an edge cannot hold (edge-module/include/tollgate_caps.h): 64
  // quotas, 8 distinct claim names, 16 distinct header names.
  ["65 quotas", { ...POLICY, quotas: Array.from({ length: 65 }, (_, i) => q({ name: `q${i}` })) }, "quotas", /over the cap of 64/],
  ["a 9th claim name", { ...POLICY, quotas: Array.from({ length: 9 }, (_, i) => q({ name: `c${i}`, key: `ip+claim:c${i}` })) }, "quotas[8].key", /more than 8 distinct claim names/],
  ["a 17th header name", { ...POLICY, quotas: Array.from({ length: 17 }, (_, i) => q({ name: `h${i}`, key: `header:x-h${i}` })) }, "quotas[16].key", /more than 16 distinct header names/],
];

// "quotas[1].limit" -> "/quotas/1/limit": the problem's errors[0].pointer.
const pointerOf = (path) => path.replace(/\[(\d+)\]/g, "/$1").replace(/\./g, "/").replace(/^(?=.)/, "/");

test("a policy at the edges' caps is accepted, and the edge installs all 64 quotas", async (t) => {
  const { co } = await stack(t);
  const doc = { ...POLICY, quotas: Array.from({ length: 64 }, (_, i) => q({ name: `q${i}`, path_prefix: `/p${i}/` })) };
  const r = await api(co, "PUT", "/v1/policy", { body: doc, headers: { "if-match": "1" } });
  assert.equal(r.status, 200, r.text);
  const edge = createTollgate(await loadWasm(), { edgeId: "edge-a", edgeKey: TEST_KEYS.edge, coordinator: co.url });
  assert.equal(await edge.sync(), true, String(edge.lastSyncError));
  assert.equal(edge.policyVersion(), r.json.version, "the edge installed the 64-quota policy");
  const d = edge.verify({ method: "GET", path: "/p63/x", host: "h", ip: "10.0.0.9" });
  assert.match(d.headers.map(([n, v]) => `${n}: ${v}`).join("\n"), /"q63"/, "the 64th quota is enforced");
});

test(`${INVALID.length} invalid documents: 400 with the offending field's path, nothing changed`, async (t) => {
  const { co } = await stack(t);
  for (const [what, doc, where, why] of INVALID) {
    const r = await api(co, "PUT", "/v1/policy", { body: doc, headers: { "if-match": "1" } });
    assert.equal(r.status, 400, `${what}: ${r.text}`);
    assert.equal(r.headers.get("content-type"), "application/problem+json", what);
    if (where) assert.ok(r.json.detail.startsWith(`${where}:`), `${what}: detail "${r.json.detail}" should start with "${where}:"`);
    if (why) assert.match(r.json.detail, why, what);
    if (where && !where.includes("\"")) assert.equal(r.json.errors?.[0]?.pointer, pointerOf(where), `${what}: ${r.text}`);
  }
  const raw = await fetch(`${co.url}/v1/policy`, {
    method: "PUT", body: "{\"quotas\": [", headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json", "if-match": "1" },
  });
  assert.equal(raw.status, 400, "malformed JSON");
  await raw.text();
  const now = await api(co, "GET", "/v1/policy");
  assert.equal(now.json.version, 1, "no rejected write made a version");
  assert.equal((await api(co, "GET", "/v1/audit")).json.entries.filter((e) => e.to_version > 1).length, 0);
});

test("auth: no token and a wrong token get 401, a read token cannot write (403), an admin token can", async (t) => {
  const { co } = await stack(t);
  const doc = withoutVersion((await api(co, "GET", "/v1/policy")).json);
  let r = await api(co, "GET", "/v1/policy", { token: null });
  assert.equal(r.status, 401);
  assert.match(r.headers.get("www-authenticate") || "", /^Bearer/);
  r = await api(co, "GET", "/v1/policy", { token: "not-a-token" });
  assert.equal(r.status, 401);
  r = await api(co, "GET", "/v1/policy", { token: READ });
  assert.equal(r.status, 200);
  for (const [method, path, body] of [["PUT", "/v1/policy", doc], ["POST", "/v1/policy/rollback", { to: 1 }],
    ["PUT", "/v1/quotas/x", { key: "ip", limit: 1, window_s: 1, action: "deny" }], ["DELETE", "/v1/quotas/per-ip"],
    ["DELETE", "/v1/keys/per-ip/1.2.3.4"]]) {
    r = await api(co, method, path, { token: READ, body, headers: { "if-match": "1" } });
    assert.equal(r.status, 403, `${method} ${path} with a read token: ${r.text}`);
  }
  assert.equal((await api(co, "GET", "/v1/policy")).json.version, 1);
  r = await api(co, "PUT", "/v1/policy", { body: doc, headers: { "if-match": "1" } });
  assert.equal(r.status, 200);
});

test("rollback makes a new version equal to the old one", async (t) => {
  const { co } = await stack(t);
  const v1 = (await api(co, "GET", "/v1/policy")).json;
  await api(co, "PUT", "/v1/quotas/per-ip", { body: { ...QUOTA, limit: 999 } });
  let r = await api(co, "POST", "/v1/policy/rollback", { body: { to: 1 } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.version, 3);
  assert.deepEqual(withoutVersion(r.json), withoutVersion(v1));
  r = await api(co, "POST", "/v1/policy/rollback", { body: { to: 42 } });
  assert.equal(r.status, 404);
});

test("versions and the audit log survive a restart of both Redis (AOF) and tollgated", async (t) => {
  const dir = tempDir("tollgate-admin-aof-");
  const aof = ["--appendonly", "yes", "--appendfsync", "always"];
  let redis = await startRedis({ dir, args: aof });
  const port = redis.port;
  let co = await startTollgated({ redisPort: port, policy: POLICY });
  t.after(async () => { await co.stop(); await redis.stop(); });
  await api(co, "PUT", "/v1/quotas/per-ip", { body: { ...QUOTA, limit: 123 } });
  await api(co, "PUT", "/v1/quotas/login", { body: { key: "ip", limit: 3, window_s: 60, action: "deny" } });
  const before = await api(co, "GET", "/v1/audit");
  assert.equal((await api(co, "GET", "/v1/policy")).json.version, 3);

  await co.stop();
  await redis.stop();
  redis = await startRedis({ port, dir, args: aof });
  co = await startTollgated({ redisPort: port, policy: POLICY });
  const after = await api(co, "GET", "/v1/policy");
  assert.equal(after.json.version, 3, "--policy does not reseed over existing versions");
  assert.equal(after.json.quotas.find((x) => x.name === "per-ip").limit, 123);
  assert.deepEqual((await api(co, "GET", "/v1/policy/versions")).json.versions.map((v) => v.version), [3, 2, 1]);
  assert.deepEqual((await api(co, "GET", "/v1/audit")).json.entries, before.json.entries);
});

test("two edges pick up a new limit within two sync intervals and enforce it", async (t) => {
  const { co } = await stack(t);
  const wasm = loadWasm();
  const edges = ["edge-a", "edge-b"].map((edgeId) => createTollgate(wasm, { edgeId, edgeKey: TEST_KEYS.edge, coordinator: co.url }));
  for (const e of edges) assert.equal(await e.sync(), true, String(e.lastSyncError));
  assert.deepEqual(edges.map((e) => e.policyVersion()), [1, 1]);
  const req = (ip) => ({ method: "GET", path: "/api/x", host: "shop.example", ip });
  assert.match(edges[0].verify(req("192.0.2.1")).headers.find(([k]) => k === "RateLimit-Policy")[1], /q=50\b/);

  const r = await api(co, "PUT", "/v1/quotas/per-ip", { body: { ...QUOTA, limit: 4, floor: 1 } });
  assert.equal(r.status, 200, r.text);
  const t0 = Date.now();
  // The edges sync on their own schedule (every sync_interval_ms = 1 s).
  await waitFor(async () => {
    for (const e of edges) await e.maybeSync();
    return edges.every((e) => e.policyVersion() === r.json.version);
  }, { timeoutMs: 2000, stepMs: 20, what: "both edges on the new version within two sync intervals" });
  const took = Date.now() - t0;
  assert.ok(took <= 2000, `${took} ms`);

  // Enforced: a client gets at most the new limit across both edges.
  let allowed = 0;
  for (let round = 0; round < 10; round++) {
    for (const e of edges) {
      for (let i = 0; i < 3; i++) allowed += e.verify(req("192.0.2.77")).kind === "allow";
      await e.sync();
    }
  }
  assert.ok(allowed <= 4 + edges.length, `allowed ${allowed} with a limit of 4`);
  assert.ok(allowed >= 4, `allowed ${allowed}: the new limit admits 4`);
  assert.match(edges[1].verify(req("192.0.2.2")).headers.find(([k]) => k === "RateLimit-Policy")[1], /q=4\b/);
});
