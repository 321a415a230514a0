// Every way a real redis-server can refuse tollgated, made visible (issue
// 14, item 1): an ACL user without +@scripting, EVALSHA renamed away in a
// config file, maxmemory reached under noeviction, a read-only replica
// and a cluster-enabled node. Each case checks /readyz (503 with the
// kind and a plain reason), tollgate_redis_up, tollgate_redis_errors_total
// {kind}, the admin API's one answer (503, Retry-After, the kind in the
// problem document), one log line for the change of state, and that
// tollgated recovers by itself once the failure is removed.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import {
  ADMIN_TOKENS, redisCommand, startRedis, startTollgated, tempDir, waitFor,
} from "./harness.mjs";

const ADMIN = ADMIN_TOKENS.find((t) => t.role === "admin").token;
const POLICY = {
  version: 1, sync_interval_ms: 1000, clearance_ttl_s: 300, expected_edges: 1,
  quotas: [{ name: "per-ip", key: "ip", limit: 50, window_s: 60, action: "deny" }],
};
const COUNTERS = "tg:{per-ip|10.0.0.9}:c";

async function get(co, p) {
  const r = await fetch(`${co.url}${p}`);
  return { status: r.status, headers: r.headers, text: await r.text() };
}

async function resetKey(co) {
  const r = await fetch(`${co.url}/v1/keys/per-ip/10.0.0.9`, {
    method: "DELETE", headers: { authorization: `Bearer ${ADMIN}` },
  });
  const text = await r.text();
  return { status: r.status, headers: r.headers, text, json: text ? JSON.parse(text) : null };
}

function metric(text, name) {
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

// Waits for the failure of kind to show everywhere, then checks the admin
// API's answer to a key reset (which must change nothing: no DEL without
// its audit entry). admin: port of a Redis the test may read.
async function expectFailing(co, kind, { reason, readPort } = {}) {
  const ready = await waitFor(async () => {
    const r = await get(co, "/readyz");
    return r.status === 503 && JSON.parse(r.text).kind === kind && r;
  }, { what: `/readyz 503 kind=${kind}`, timeoutMs: 15000 });
  const doc = JSON.parse(ready.text);
  assert.equal(ready.headers.get("retry-after"), "1");
  assert.equal(ready.headers.get("content-type"), "application/problem+json");
  if (reason) assert.match(doc.detail, reason);
  const m = (await get(co, "/metrics")).text;
  assert.equal(metric(m, "tollgate_redis_up"), 0);
  assert.ok(metric(m, `tollgate_redis_errors_total{kind="${kind}"}`) > 0, `errors{kind=${kind}} counted`);

  const before = readPort ? await redisCommand(readPort, "LLEN", "tg:{policy}:audit") : null;
  const r = await resetKey(co);
  assert.equal(r.status, 503, r.text);
  assert.equal(r.headers.get("retry-after"), "1");
  assert.equal(r.headers.get("content-type"), "application/problem+json");
  assert.equal(r.json.status, 503);
  assert.equal(r.json.kind, kind, r.text);
  if (readPort) {
    assert.equal(await redisCommand(readPort, "LLEN", "tg:{policy}:audit"), before, "no audit entry");
    assert.equal(await redisCommand(readPort, "EXISTS", COUNTERS), 1, "no DEL without its audit entry");
  }
  const lines = co.proc.logs.split("\n").filter((l) => l.includes("msg=redis_failing") && l.includes(`kind=${kind} `));
  assert.equal(lines.length >= 1, true, "the change of state is logged");
}

// The failure is gone: ready again, up again, and the reset and its
// audit entry land together.
async function expectRecovered(co, readPort) {
  await waitFor(async () => (await get(co, "/readyz")).status === 200,
    { what: "/readyz 200 after the fix", timeoutMs: 15000 });
  await waitFor(async () => metric((await get(co, "/metrics")).text, "tollgate_redis_up") === 1,
    { what: "tollgate_redis_up 1" });
  await waitFor(() => /msg=redis_ok\b/.test(co.proc.logs), { what: "the recovery logged" });
  await redisCommand(readPort, "HSET", COUNTERS, "a", "1");
  const before = await redisCommand(readPort, "LLEN", "tg:{policy}:audit");
  const r = await resetKey(co);
  assert.equal(r.status, 200, r.text);
  assert.equal(await redisCommand(readPort, "EXISTS", COUNTERS), 0);
  assert.equal(await redisCommand(readPort, "LLEN", "tg:{policy}:audit"), before + 1);
  const top = JSON.parse(await redisCommand(readPort, "LINDEX", "tg:{policy}:audit", 0));
  assert.equal(top.action, "key.reset");
}

// Log lines for one kind while the state did not change: at most one.
function failingLines(co, kind) {
  return co.proc.logs.split("\n").filter((l) => l.includes("msg=redis_failing") && l.includes(`kind=${kind} `)).length;
}

test("ACL user without +@scripting: said at start, noperm everywhere, recovers on ACL SETUSER", async (t) => {
  const redis = await startRedis({ args: ["--user", "tg", "on", ">tg-pass", "~*", "&*", "+@all", "-@scripting"] });
  t.after(() => redis.stop());
  await redisCommand(redis.port, "HSET", COUNTERS, "a", "1");
  const co = await startTollgated({
    redisPort: redis.port, policy: POLICY,
    args: ["--redis", `redis://tg:tg-pass@127.0.0.1:${redis.port}`],
  });
  t.after(() => co.stop());
  assert.match(co.proc.logs, /msg=redis_unavailable .*the ACL user lacks a permission tollgated needs \(\+@scripting/);
  await expectFailing(co, "noperm", { reason: /\+@scripting/, readPort: redis.port });
  // many failing requests, still one line for the one change of state
  for (let i = 0; i < 5; i++) assert.equal((await resetKey(co)).status, 503);
  assert.equal(failingLines(co, "noperm"), 1, co.proc.logs);
  await redisCommand(redis.port, "ACL", "SETUSER", "tg", "+@scripting");
  await expectRecovered(co, redis.port);
});

test("EVALSHA renamed away in the config file: unknown_command; a restart without it recovers", async (t) => {
  const dir = tempDir("tollgate-redis-");
  const conf = path.join(dir, "redis.conf");
  writeFileSync(conf, 'rename-command EVALSHA ""\n');
  let redis = await startRedis({ conf, dir });
  t.after(() => redis.stop());
  await redisCommand(redis.port, "HSET", COUNTERS, "a", "1");
  const co = await startTollgated({ redisPort: redis.port, policy: POLICY });
  t.after(() => co.stop());
  assert.match(co.proc.logs, /msg=redis_unavailable .*rename-command/);
  await expectFailing(co, "unknown_command", { reason: /EVALSHA/, readPort: redis.port });
  await redis.stop();
  redis = await startRedis({ port: redis.port, dir });
  await expectRecovered(co, redis.port);
});

test("maxmemory reached under noeviction: oom, the reset and its audit both refused; freeing memory recovers", async (t) => {
  const redis = await startRedis();
  t.after(() => redis.stop());
  const co = await startTollgated({ redisPort: redis.port, policy: POLICY });
  t.after(() => co.stop());
  await waitFor(async () => (await get(co, "/readyz")).status === 200, { what: "ready" });
  await redisCommand(redis.port, "HSET", COUNTERS, "a", "1");
  await redisCommand(redis.port, "SET", "filler", "x".repeat(2 * 1024 * 1024));
  await redisCommand(redis.port, "CONFIG", "SET", "maxmemory-policy", "noeviction");
  await redisCommand(redis.port, "CONFIG", "SET", "maxmemory", "1mb");
  await expectFailing(co, "oom", { reason: /out of memory/, readPort: redis.port });
  await redisCommand(redis.port, "DEL", "filler");
  await redisCommand(redis.port, "CONFIG", "SET", "maxmemory", "0");
  await expectRecovered(co, redis.port);
});

test("a read-only replica: readonly; REPLICAOF NO ONE recovers", async (t) => {
  const primary = await startRedis();
  t.after(() => primary.stop());
  const replica = await startRedis({ args: ["--replicaof", "127.0.0.1", String(primary.port)] });
  t.after(() => replica.stop());
  await redisCommand(primary.port, "HSET", COUNTERS, "a", "1");
  await waitFor(async () => (await redisCommand(replica.port, "EXISTS", COUNTERS)) === 1, { what: "replication" });
  const co = await startTollgated({ redisPort: replica.port, policy: POLICY });
  t.after(() => co.stop());
  assert.match(co.proc.logs, /msg=redis_unavailable .*read-only replica/);
  await expectFailing(co, "readonly", { reason: /read-only replica/, readPort: replica.port });
  await redisCommand(replica.port, "REPLICAOF", "NO", "ONE");
  await expectRecovered(co, replica.port);
});

// A cluster-enabled node is a Redis Cluster to tollgated (it routes by
// slot, coordinator/cluster.c): one serving no slot yet is a cluster that
// is down, visible as such until its slots are served.
test("a cluster node serving no slot: clusterdown everywhere; serving the slots recovers", async (t) => {
  const dir = tempDir("tollgate-redis-");
  const redis = await startRedis({
    dir, args: ["--cluster-enabled", "yes", "--cluster-config-file", path.join(dir, "nodes.conf")],
  });
  t.after(() => redis.stop());
  const co = await startTollgated({ redisPort: redis.port, policy: POLICY });
  t.after(() => co.stop());
  const ready = await waitFor(async () => {
    const r = await get(co, "/readyz");
    return r.status === 503 && JSON.parse(r.text).kind === "clusterdown" && r;
  }, { what: "/readyz 503 kind=clusterdown", timeoutMs: 15000 });
  assert.equal(ready.headers.get("retry-after"), "1");
  assert.match(JSON.parse(ready.text).detail, /slot/);
  const m = (await get(co, "/metrics")).text;
  assert.equal(metric(m, "tollgate_redis_up"), 0);
  assert.ok(metric(m, 'tollgate_redis_errors_total{kind="clusterdown"}') > 0, "errors{kind=clusterdown} counted");
  assert.ok(failingLines(co, "clusterdown") >= 1, "the change of state is logged");

  await redisCommand(redis.port, "CLUSTER", "ADDSLOTSRANGE", "0", "16383");
  await waitFor(async () => /cluster_state:ok/.test(await redisCommand(redis.port, "CLUSTER", "INFO")),
    { what: "cluster_state:ok" });
  await waitFor(async () => (await get(co, "/readyz")).status === 200,
    { what: "/readyz 200 once the slots are served", timeoutMs: 15000 });
  await waitFor(async () => metric((await get(co, "/metrics")).text, "tollgate_redis_up") === 1,
    { what: "tollgate_redis_up 1" });
  await waitFor(() => /msg=redis_ok\b/.test(co.proc.logs), { what: "the recovery logged" });
});
