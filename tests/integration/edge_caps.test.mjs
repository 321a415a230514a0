// A policy an edge cannot hold (issue 14, item 2), against a real
// redis-server and a real tollgated: the admin API refuses what no edge
// of this build holds (admin.test.mjs); an edge built smaller than its
// coordinator (build/tests/tollgate-caps8.wasm: 8 quotas, an older edge)
// that still receives a larger policy keeps enforcing its last one, says
// so in its next sync, and /v1/stats, /metrics and the log show it until a
// policy it can hold arrives.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { createTollgate } from "../../edge-module/js/tollgate.mjs";
import { ADMIN_TOKENS, BUILD, TEST_KEYS, startRedis, startTollgated, waitFor } from "./harness.mjs";

const ADMIN = ADMIN_TOKENS.find((t) => t.role === "admin").token;
const READ = ADMIN_TOKENS.find((t) => t.role === "read").token;
const quota = (i) => ({
  name: `q${i}`, key: "ip", limit: 1000, window_s: 60, path_prefix: `/p${i}/`,
  methods: [], action: "deny", floor: 10, shadow: false, fail_open: true, deny_after: 0,
});
const policy = (n) => ({ sync_interval_ms: 1000, clearance_ttl_s: 300, expected_edges: 1, quotas: Array.from({ length: n }, (_, i) => quota(i)) });

async function put(co, doc, version) {
  const r = await fetch(`${co.url}/v1/policy`, {
    method: "PUT", body: JSON.stringify({ version, ...doc }),
    headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json", "if-match": String(version - 1) },
  });
  assert.equal(r.status, 200, await r.text());
}

async function edgeRow(co, id) {
  const r = await fetch(`${co.url}/v1/stats`, { headers: { authorization: `Bearer ${READ}` } });
  assert.equal(r.status, 200);
  return (await r.json()).edges.find((e) => e.id === id);
}

async function refusedGauge(co) {
  const text = await (await fetch(`${co.url}/metrics`)).text();
  const m = /^tollgate_edges_policy_refused (\d+)$/m.exec(text);
  assert.ok(m, "the gauge is exported");
  return Number(m[1]);
}

const policyName = (d) => /RateLimit-Policy: "([^"]+)"/.exec(d.headerText)?.[1];

test("an edge that cannot install a policy keeps its last one and reports it in /v1/stats, /metrics and the log", async (t) => {
  const redis = await startRedis();
  const co = await startTollgated({ redisPort: redis.port, policy: { version: 1, ...policy(1) } });
  t.after(async () => { await co.stop(); await redis.stop(); });
  const small = new WebAssembly.Module(readFileSync(path.join(BUILD, "tests/tollgate-caps8.wasm")));
  const edge = createTollgate(small, { edgeId: "edge-a", edgeKey: TEST_KEYS.edge, coordinator: co.url });
  assert.equal(await edge.sync(), true, String(edge.lastSyncError));
  assert.equal(edge.policyVersion(), 1);
  assert.equal(policyName(edge.verify({ method: "GET", path: "/p0/x", host: "h", ip: "192.0.2.1" })), "q0");
  assert.equal((await edgeRow(co, edge.edgeId)).policy_refused, null);

  // 9 quotas: within the coordinator's cap (64), over this edge's (8).
  await put(co, policy(9), 2);
  assert.equal(await edge.sync(), true, String(edge.lastSyncError));
  assert.equal(edge.policyVersion(), 1, "the edge keeps enforcing version 1");
  assert.equal(policyName(edge.verify({ method: "GET", path: "/p0/x", host: "h", ip: "192.0.2.1" })), "q0");
  assert.equal(edge.verify({ method: "GET", path: "/p8/x", host: "h", ip: "192.0.2.1" }).headerText, "", "v2's quotas are not in force");
  // The refusal goes out with the next sync.
  assert.equal(await edge.sync(), true, String(edge.lastSyncError));
  const row = await edgeRow(co, edge.edgeId);
  assert.deepEqual(row.policy_refused, { version: 2, reason: "too_many_quotas" });
  assert.equal(row.policy_version, 1);
  assert.equal(await refusedGauge(co), 1);
  await waitFor(() => /msg=edge_policy_refused edge="?edge-a\/\w+"? version=2 reason=too_many_quotas enforced_version=1/.test(co.proc.logs),
    { what: "the log line" });
  assert.equal(co.proc.logs.match(/msg=edge_policy_refused/g).length, 1, "one line per change, not per sync");

  // A policy it can hold: installed, the refusal is gone everywhere.
  await put(co, policy(8), 3);
  assert.equal(await edge.sync(), true);
  assert.equal(edge.policyVersion(), 3);
  assert.equal(await edge.sync(), true);
  assert.equal((await edgeRow(co, edge.edgeId)).policy_refused, null);
  assert.equal(await refusedGauge(co), 0);
  assert.match(co.proc.logs, /msg=edge_policy_refusal_cleared edge="?edge-a\/\w+"? version=3/);
});
