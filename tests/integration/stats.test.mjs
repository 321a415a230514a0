// GET /v1/stats against one redis-server and two real tollgated processes
// sharing it: signed syncs with known counts go to each coordinator, a
// challenge issued by one is solved through the other, and both answer
// the same merged figures: the decisions summed (equal to the sum of both
// coordinators' tollgate_decisions_total), both edges with the versions
// they reported, the top keys with their counts and (override-aware)
// limits, and the challenged key with its issue and solve. The quotas' hour
// window may turn while it runs: the top keys are carried over the turn and
// keep these counts for minutes (ceil(count x time left / window)). A
// second test crosses real turns of a 3 s window.
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { test } from "node:test";
import {
  ADMIN_TOKENS, TEST_KEYS, encodeSync, postSync, startRedis, startTollgated, syncStates, waitFor,
} from "./harness.mjs";

const policy = {
  version: 1, sync_interval_ms: 1000, clearance_ttl_s: 300,
  quotas: [
    { name: "per-ip", key: "ip", limit: 10, window_s: 3600, path_prefix: "/api/", action: "challenge",
      floor: 2, overrides: { "10.0.0.9": { limit: 50 } } },
    { name: "dry", key: "ip", limit: 1000, window_s: 3600, path_prefix: "/dry/", action: "deny",
      floor: 2, shadow: true },
  ],
};

const READ = ADMIN_TOKENS.find((t) => t.role === "read");
// A Redis reply may take more than the default 50 ms on a loaded test
// machine; the sync would then be answered degraded (nothing counted), which
// is not what these tests are about.
const SLOW_REDIS_OK = ["--redis-timeout-ms", "1000"];

// A SyncRequest that also carries module_version (field 5).
function syncBody({ moduleVersion, ...req }) {
  const mv = Buffer.from(moduleVersion);
  return Buffer.concat([encodeSync(req), Buffer.from([(5 << 3) | 2, mv.length]), mv]);
}

async function stats(co, token = READ.token) {
  const r = await fetch(`${co.url}/v1/stats`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  return { status: r.status, headers: r.headers, body: await r.json() };
}

// Sum over quotas of tollgate_decisions_total, per outcome.
async function metricsDecisions(co) {
  const text = await (await fetch(`${co.url}/metrics`)).text();
  const out = { allowed: 0, denied: 0, challenged: 0, shadow: 0 };
  for (const m of text.matchAll(/^tollgate_decisions_total\{quota="[^"]*",outcome="(\w+)"\} (\d+)$/gm)) {
    out[m[1]] += Number(m[2]);
  }
  return out;
}

const total = (s, outcome) => s.decisions[outcome].reduce((a, b) => a + b, 0);

test("/v1/stats merges two coordinators' figures through Redis", async (t) => {
  const redis = await startRedis();
  const [co1, co2] = await Promise.all([
    startTollgated({ redisPort: redis.port, policy, args: SLOW_REDIS_OK }),
    startTollgated({ redisPort: redis.port, policy, args: SLOW_REDIS_OK }),
  ]);
  t.after(async () => { await Promise.all([co1.stop(), co2.stop()]); await redis.stop(); });

  const a = await postSync(co1.url, syncBody({ edgeId: "edge-a/1", seq: 1, policyVersion: 1,
    sentAtMs: Date.now() - 20, moduleVersion: "mod-a 0.1", counts: [
      { quota: "per-ip", key: "10.0.0.7", admitted: 4 },
      { quota: "per-ip", key: "10.0.0.9", admitted: 20, denied: 1 },
      { quota: "dry", key: "10.0.0.7", admitted: 2, challenged: 1 },
    ] }), {}, { edgeId: "edge-a/1" });
  assert.equal(a.status, 200);
  const b = await postSync(co2.url, syncBody({ edgeId: "edge-b/1", seq: 1, policyVersion: 0,
    moduleVersion: "mod-b", counts: [
      { quota: "per-ip", key: "10.0.0.7", admitted: 5 },
      { quota: "per-ip", key: "10.0.0.8", admitted: 15 },
    ] }), {}, { edgeId: "edge-b/1" });
  assert.equal(b.status, 200);
  const [s7, s8] = syncStates(b.bytes);
  assert.equal(s7.count, 9, "10.0.0.7: 4 at co1 + 5 at co2");
  assert.equal(s7.action, 0, "10.0.0.7 is under its limit");
  assert.equal(s8.action, 1, "10.0.0.8 is over its limit: challenge");
  assert.ok(s8.token.length > 0);

  // Solved at the coordinator that did not issue it: matched by key hash.
  const solve = createHmac("sha256", Buffer.from(TEST_KEYS.captcha, "hex")).update(s8.token).digest("hex");
  const v = await fetch(`${co1.url}/v1/challenge/verify`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ token: s8.token, response: solve }),
  });
  assert.equal(v.status, 200);

  const want = { allowed: 44, denied: 1, challenged: 0, shadow: 3 };
  const m1 = await metricsDecisions(co1), m2 = await metricsDecisions(co2);
  for (const o of Object.keys(want)) assert.equal(m1[o] + m2[o], want[o], `/metrics ${o}`);

  for (const co of [co1, co2]) {
    // Each coordinator flushes once a second: wait until both are in.
    const s = await waitFor(async () => {
      const r = await stats(co);
      return r.status === 200 && r.body.merged && r.body.edges.length === 2 &&
        r.body.challenges[0]?.solved === 1 && r.body.challenges[0]?.key !== "" &&
        Object.keys(want).every((o) => total(r.body, o) === want[o]) && r;
    }, { timeoutMs: 8000, what: `merged /v1/stats at ${co.url}` });
    assert.equal(s.headers.get("content-type"), "application/json");
    assert.equal(s.headers.get("cache-control"), "no-store");
    const doc = s.body;
    assert.equal(doc.redis.up, true);
    assert.deepEqual(doc.viewer, { name: READ.name, role: "read" });
    assert.deepEqual(doc.policy, { version: 1, sync_interval_ms: 1000 });
    assert.equal(doc.edges_stale_after_ms, 5000);
    assert.equal(doc.coordinator.version, "0.1.0");
    assert.ok(Math.abs(doc.now_ms - Date.now()) < 5000);
    assert.equal(doc.decisions.points, 900);
    assert.equal(doc.decisions.step_s, 1);
    assert.equal(doc.decisions.from_s, Math.floor(doc.now_ms / 1000) - 899);

    const edges = Object.fromEntries(doc.edges.map((e) => [e.id, e]));
    assert.equal(edges["edge-a/1"].module_version, "mod-a?0.1", "non-visible bytes are replaced");
    assert.equal(edges["edge-a/1"].policy_version, 1);
    assert.ok(edges["edge-a/1"].lag_ms >= 20);
    assert.equal(edges["edge-b/1"].module_version, "mod-b");
    assert.equal(edges["edge-b/1"].policy_version, 0);
    assert.equal(edges["edge-b/1"].lag_ms, 0, "no sent_at_ms: lag 0");
    for (const e of doc.edges) {
      assert.equal(e.degraded, false);
      assert.equal(e.stale, false);
      assert.ok(e.age_ms >= 0 && e.age_ms < 10000);
    }
    assert.ok(doc.edges[0].last_seen_ms >= doc.edges[1].last_seen_ms, "newest first");

    assert.deepEqual(doc.top_keys.map((q) => [q.quota, q.window_s, q.shadow]),
      [["per-ip", 3600, false], ["dry", 3600, true]]);
    assert.deepEqual(doc.top_keys[0].keys, [
      { key: "10.0.0.9", count: 20, limit: 50 },
      { key: "10.0.0.8", count: 15, limit: 10 },
      { key: "10.0.0.7", count: 9, limit: 10 },
    ]);
    assert.deepEqual(doc.top_keys[1].keys, [{ key: "10.0.0.7", count: 2, limit: 1000 }]);

    assert.equal(doc.challenges.length, 1, JSON.stringify(doc.challenges));
    const [c] = doc.challenges;
    assert.equal(c.quota, "per-ip");
    assert.equal(c.key, "10.0.0.8");
    assert.equal(c.issued, 1);
    assert.equal(c.solved, 1);
    assert.equal(c.last_edge, "edge-b/1");
    assert.ok(c.first_ms <= c.last_ms);
  }

  const none = await stats(co1, null);
  assert.equal(none.status, 401);
  assert.equal(none.headers.get("www-authenticate"), 'Bearer realm="tollgate"');
  assert.equal((await stats(co2, "not-a-token")).status, 401);
  const admin = await stats(co2, ADMIN_TOKENS.find((x) => x.role === "admin").token);
  assert.equal(admin.body.viewer.role, "admin");
});

// The top keys across real window turns, with a 3 s quota so that the
// test crosses two: a key synced at one coordinator is listed by the other
// (through Redis alone) in the next window too, its count decayed as
// sync.lua decays the previous window, and gone two windows on. Every
// figure is checked against the now_ms of the answer it came in, so the
// test holds whenever it runs.
test("/v1/stats carries the top keys over the window turn, decaying", async (t) => {
  const W = 3000;
  const fast = {
    version: 1, sync_interval_ms: 1000, clearance_ttl_s: 300,
    quotas: [{ name: "fast", key: "ip", limit: 100, window_s: W / 1000, path_prefix: "/", action: "challenge", floor: 2 }],
  };
  const redis = await startRedis();
  const [co1, co2] = await Promise.all([
    startTollgated({ redisPort: redis.port, policy: fast, args: SLOW_REDIS_OK }),
    startTollgated({ redisPort: redis.port, policy: fast, args: SLOW_REDIS_OK }),
  ]);
  t.after(async () => { await Promise.all([co1.stop(), co2.stop()]); await redis.stop(); });

  // A sync early in a window (the coordinators share this machine's clock),
  // so its window is known: idx.
  let idx;
  await waitFor(async () => {
    const before = Date.now();
    if (before % W > W / 4) return false;
    const r = await postSync(co1.url, encodeSync({ edgeId: "edge-a/fast", seq: Math.floor(before / W),
      counts: [{ quota: "fast", key: "10.9.9.9", admitted: 40 }] }), {}, { edgeId: "edge-a/fast" });
    assert.equal(r.status, 200);
    const after = Date.now();
    if (Math.floor(after / W) !== Math.floor(before / W)) return false;
    idx = Math.floor(before / W);
    return true;
  }, { what: "a sync in the first quarter of a window", timeoutMs: 3 * W, stepMs: 20 });

  // What a coordinator must list for the key at now: 40 in its window,
  // ceil(40 x time left / W) in the next, nothing after.
  const want = (now) => {
    const w = Math.floor(now / W);
    if (w === idx) return 40;
    if (w === idx + 1) return Math.ceil((40 * ((idx + 2) * W - now)) / W);
    return 0;
  };
  const listed = (doc) => doc.top_keys[0].keys.find((k) => k.key === "10.9.9.9")?.count ?? 0;
  const seen = { [idx]: 0, [idx + 1]: 0, [idx + 2]: 0 };
  await waitFor(async () => {
    for (const co of [co1, co2]) {
      const { body } = await stats(co);
      const w = Math.floor(body.now_ms / W);
      // co2 knows the key only once co1 flushed it (within a second)
      if (co === co2 && w === idx && listed(body) === 0) continue;
      assert.equal(body.merged, true);
      assert.equal(listed(body), want(body.now_ms), `at ${body.now_ms}, window ${w - idx} after the sync's`);
      if (w in seen && (listed(body) > 0 || w === idx + 2)) seen[w]++;
    }
    return seen[idx + 2] >= 2;
  }, { what: "two window turns", timeoutMs: 4 * W, stepMs: 100 });
  assert.ok(seen[idx + 1] > 0, "listed in the window after the sync's");
});
