// cluster_sync.test.mjs — tollgated on a real 3 + 3 Redis Cluster
// (cluster.mjs): --redis given the seeds, cluster mode detected, a sync
// with keys in every master's slots applied once on each master, a
// replayed signature refused, the admin API's policy store working, and
// /readyz turning 503 with the reason when part of the cluster dies.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { NODE_TIMEOUT_MS, startCluster } from "./cluster.mjs";
import { ADMIN_TOKENS, encodeSync, freePort, postSync, startRedis, startTollgated, syncStates, waitFor } from "./harness.mjs";

let cluster, co;
// A loaded test machine can take longer than the default 50 ms to answer
// a first batch (scripts loaded on three masters): 1 s, so a slow reply
// is not a degraded sync, as in stats.test.mjs.

before(async () => {
  cluster = await startCluster();
  co = await startTollgated({
    redisPort: cluster.nodes[0].port,
    args: ["--redis-timeout-ms", "1000", "--redis", cluster.urls.slice(0, 3).join(",")],
  });
});
after(async () => {
  if (co) await co.stop();
  await cluster?.stop();
});

// The hash tag sync.lua's counters of (quota, key) live under.
const counters = (quota, key) => `tg:{${quota}|${key}}:c`;

test("cluster mode is detected from the seeds and /readyz is ready", async () => {
  await waitFor(() => /msg=redis_mode mode=cluster seeds=3/.test(co.proc.logs), { what: "redis_mode log line" });
  const r = await fetch(`${co.url}/readyz`);
  assert.equal(r.status, 200, await r.text());
});

test("a sync with keys in every master's slots lands once on each master", async () => {
  const keys = Array.from({ length: 60 }, (_, i) => `198.51.100.${i}`);
  const owners = new Map();
  for (const k of keys) owners.set(k, await cluster.ownerOf(await cluster.keyslot(`{per-ip|${k}}`)));
  assert.equal(new Set(owners.values()).size, 3, "keys on every master");

  const counts = keys.map((key, i) => ({ quota: "per-ip", key, admitted: 1 + (i % 7) }));
  const body = encodeSync({ edgeId: "e1", seq: 1, counts });
  const r = await postSync(co.url, body);
  assert.equal(r.status, 200);
  const states = syncStates(r.bytes);
  assert.equal(states.length, keys.length);
  for (const [i, k] of keys.entries()) {
    const a = await cluster.command(owners.get(k), "HGET", counters("per-ip", k), "a");
    assert.equal(Number(a), 1 + (i % 7), `key ${k} on ${owners.get(k)}`);
    assert.equal(states[i].count, 1 + (i % 7));
  }

  // The same batch again (its answer lost): answered, not counted twice.
  const again = await postSync(co.url, body);
  assert.equal(again.status, 200);
  for (const [i, k] of keys.entries()) {
    assert.equal(Number(await cluster.command(owners.get(k), "HGET", counters("per-ip", k), "a")), 1 + (i % 7));
  }
});

test("a replayed signature is refused in cluster mode too", async () => {
  const body = encodeSync({ edgeId: "e1", seq: 2, counts: [{ quota: "per-ip", key: "203.0.113.9", admitted: 1 }] });
  const sign = { edgeId: "e1", ts: Date.now() };
  assert.equal((await postSync(co.url, body, {}, sign)).status, 200);
  assert.equal((await postSync(co.url, body, {}, sign)).status, 401);
});

test("the admin API reads the policy store on the cluster", async () => {
  const token = ADMIN_TOKENS.find((t) => t.role === "admin") || ADMIN_TOKENS[0];
  const r = await fetch(`${co.url}/v1/policy`, { headers: { authorization: `Bearer ${token.token}` } });
  const text = await r.text();
  assert.equal(r.status, 200, text);
  const doc = JSON.parse(text);
  assert.ok(Array.isArray(doc.quotas ?? doc.policy?.quotas), text);
});

// ---------------------------------------------------------------- bad input
// Each case its own coordinator (and, where it needs one, its own cluster
// or plain redis-server), stopped by PID at the end of the case.

test("a cluster down at start: tollgated starts, says why, recovers by itself", async (t) => {
  const ports = [];
  for (let i = 0; i < 6; i++) ports.push(await freePort());
  const late = await startTollgated({
    redisPort: ports[0],
    args: ["--redis-timeout-ms", "1000", "--redis", ports.slice(0, 3).map((p) => `redis://127.0.0.1:${p}`).join(",")],
  });
  let lateCluster;
  t.after(async () => { await late.stop(); await lateCluster?.stop(); });
  assert.match(late.proc.logs, /msg=redis_unavailable .*Connection refused/);
  const down = await fetch(`${late.url}/readyz`);
  assert.equal(down.status, 503);
  assert.match(await down.text(), /redis: /);

  lateCluster = await startCluster({ ports });
  await waitFor(async () => (await fetch(`${late.url}/readyz`)).status === 200,
    { timeoutMs: 20000, what: "/readyz 200 once the cluster is up" });
  await waitFor(() => /msg=redis_mode mode=cluster/.test(late.proc.logs), { what: "the redis_mode line" });
  const counts = [{ quota: "per-ip", key: "192.0.2.77", admitted: 3 }];
  const r = await postSync(late.url, encodeSync({ edgeId: "e2", seq: 1, counts }), {}, { edgeId: "e2" });
  assert.equal(r.status, 200);
  const owner = await lateCluster.ownerOf(await lateCluster.keyslot("{per-ip|192.0.2.77}"));
  assert.equal(Number(await lateCluster.command(owner, "HGET", counters("per-ip", "192.0.2.77"), "a")), 3);
});

test("seeds outside any cluster: named in the log; /readyz 503 when no seed is a member", async (t) => {
  const plain = [await startRedis(), await startRedis()];
  const lost = await startTollgated({
    redisPort: plain[0].port,
    args: ["--redis-timeout-ms", "1000", "--redis", plain.map((x) => x.url).join(",")],
  });
  t.after(async () => { await lost.stop(); for (const x of plain) await x.stop(); });
  assert.match(lost.proc.logs, new RegExp(`msg=redis_seed_not_in_cluster seed=127.0.0.1:${plain[0].port}`));
  const r = await fetch(`${lost.url}/readyz`);
  assert.equal(r.status, 503);
  assert.match(await r.text(), /is not a cluster member/);

  // one member among the seeds is enough
  const mixed = await startTollgated({
    redisPort: plain[0].port,
    args: ["--redis-timeout-ms", "1000", "--redis", [plain[0].url, cluster.urls[1]].join(",")],
  });
  t.after(() => mixed.stop());
  assert.match(mixed.proc.logs, /msg=redis_seed_not_in_cluster/);
  assert.equal((await fetch(`${mixed.url}/readyz`)).status, 200);
});

test("/readyz says what is wrong when a master and its replica die", async () => {
  const master = (await cluster.masters())[0];
  const replica = await cluster.replicaOf(master);
  for (const port of [master, replica]) await cluster.nodes.find((n) => n.port === port).kill("SIGKILL");
  const r = await waitFor(async () => {
    const x = await fetch(`${co.url}/readyz`);
    return x.status === 503 && x;
  }, { timeoutMs: 10 * NODE_TIMEOUT_MS, what: "/readyz 503" });
  const text = await r.text();
  assert.match(text, /redis: .*(cluster down|Connection refused|not served)/);
  await waitFor(() => /msg=redis_cluster_failing/.test(co.proc.logs), { what: "the log line" });
});
