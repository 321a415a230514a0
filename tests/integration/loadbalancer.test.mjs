// Three tollgated coordinators behind Debian's haproxy, run with the shipped
// deploy/haproxy/haproxy.cfg (its ports substituted), one real redis-server,
// and edges (the Node glue over tollgate.wasm) syncing through haproxy.
// One coordinator is killed with SIGKILL mid-load: the edges keep syncing
// through the other two, Redis ends up holding exactly what the edges
// admitted, and both survivors' /v1/stats agree.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { createTollgate } from "../../edge-module/js/tollgate.mjs";
import {
  ADMIN_TOKENS, ROOT, TEST_KEYS, freePort, loadWasm, redisCommand, startProcess, startRedis,
  startTollgated, stopProcess, tempDir, waitFor,
} from "./harness.mjs";

// Edges sync every 100 ms (the policy's minimum): 60 rounds take about
// 6 s, so the balancer's health checks and the coordinators' once-a-second
// stats flush both run during the load.
const POLICY = {
  version: 1, sync_interval_ms: 100, clearance_ttl_s: 300,
  quotas: [{ name: "per-ip", key: "ip", limit: 1000000, window_s: 3600, path_prefix: "/api/",
    action: "challenge", floor: 2, fail_open: true }],
};
const EDGES = ["edge-a", "edge-b", "e1", "e2"];
const IPS = ["198.51.100.1", "198.51.100.2", "198.51.100.3"];
const ROUNDS = 60;         // rounds of load, bounded
const KILL_AT = 20;        // the round after which co2 is killed
const PER_ROUND = 5;       // requests per edge and ip in a round

// haproxy from Debian, or a clear failure: install-deps installs it.
function haproxyBinary() {
  try {
    execFileSync("haproxy", ["-v"], { stdio: "pipe" });
    return "haproxy";
  } catch (e) {
    throw new Error(`haproxy is not installed (${e.code || e.message}): run deploy/install-deps.sh ` +
      "(apt-get install haproxy); this test needs the real load balancer");
  }
}

// The shipped config with the frontend on `front` and server coN on
// backs[N-1]; every substitution must hit, so a changed file fails here.
function haproxyConfig(front, backs) {
  let cfg = readFileSync(path.join(ROOT, "deploy/haproxy/haproxy.cfg"), "utf8");
  const sub = (re, to, times) => {
    const n = (cfg.match(new RegExp(re.source, "gm")) || []).length;
    assert.equal(n, times, `deploy/haproxy/haproxy.cfg: ${re} matched ${n} times, expected ${times}`);
    cfg = cfg.replace(new RegExp(re.source, "gm"), to);
  };
  sub(/^(\s*bind )127\.0\.0\.1:8080$/, `$1127.0.0.1:${front}`, 1);
  backs.forEach((port, i) => sub(new RegExp(`^(\\s*server co${i + 1}(?:-any)? )127\\.0\\.0\\.1:808${i + 1}\\b`),
    `$1127.0.0.1:${port}`, 2));
  const file = path.join(tempDir("tollgate-haproxy-"), "haproxy.cfg");
  writeFileSync(file, cfg);
  return file;
}

const bearer = { authorization: `Bearer ${ADMIN_TOKENS[1].token}` };
async function stats(co) {
  const r = await fetch(`${co.url}/v1/stats`, { headers: bearer });
  assert.equal(r.status, 200, `/v1/stats at ${co.url}`);
  return r.json();
}
// The global count of admitted requests of a per-ip key (this window and
// the previous one: the test never crosses a window).
async function admittedInRedis(port, ip) {
  const g = await redisCommand(port, "HMGET", `tg:{per-ip|${ip}}:c`, "a", "pa");
  return Number(g[0] || 0) + Number(g[1] || 0);
}
const sum = (a) => a.reduce((x, y) => x + y, 0);

// Three tollgated (coordinator i on Redis redisPorts[i]) behind haproxy run
// with the shipped config. Every process is stopped by PID after the test.
async function fleet(t, redisPorts) {
  const bin = haproxyBinary();
  const cos = [];
  t.after(() => Promise.all(cos.map((c) => c.stop())));
  for (const redisPort of redisPorts) {
    cos.push(await startTollgated({ redisPort, policy: POLICY, args: ["--max-conns-per-ip", "0"] }));
  }
  const front = await freePort();
  const lb = startProcess(bin, ["-db", "-f", haproxyConfig(front, cos.map((c) => c.port))]);
  t.after(() => stopProcess(lb));
  const lbUrl = `http://127.0.0.1:${front}`;
  await waitFor(async () => {
    if (lb.exitCode !== null) throw new Error(`haproxy exited ${lb.exitCode}:\n${lb.logs}`);
    return (await fetch(`${lbUrl}/readyz`)).status === 200;
  }, { what: "haproxy to serve /readyz" });
  return { cos, lb, lbUrl };
}

// Edges (the Node glue) pointed at the balancer, each synced once: the
// first sync fetches the policy, and until then an edge counts nothing.
async function edgesAt(lbUrl, ids = EDGES) {
  const wasm = loadWasm();
  const edges = ids.map((edgeId) => createTollgate(wasm, { edgeId, edgeKey: TEST_KEYS.edge, coordinator: lbUrl }));
  for (const e of edges) assert.equal(await e.sync(), true, `${e.edgeId}: ${e.lastSyncError}`);
  return edges;
}

test("three coordinators behind haproxy, one killed mid-load: nothing lost or doubled", async (t) => {
  const redis = await startRedis();
  t.after(() => redis.stop());
  const { cos, lb, lbUrl } = await fleet(t, [redis.port, redis.port, redis.port]);

  const edges = await edgesAt(lbUrl);

  const admitted = Object.fromEntries(IPS.map((ip) => [ip, 0]));
  const failures = [];
  let syncsAfterKill = 0, okAfterKill = 0;
  const killed = cos[1];
  const started = Date.now();
  let downAfterMs = null;   // reported, not asserted: timings go in bench/
  const kill = async () => {
    const killedAt = Date.now();
    waitFor(() => /Server coordinators\/co2 is DOWN/.test(lb.logs), { stepMs: 10, timeoutMs: 10000 })
      .then(() => { downAfterMs = Date.now() - killedAt; }, () => {});
    killed.proc.kill("SIGKILL");
    assert.deepEqual(await killed.proc.exited, { code: null, signal: "SIGKILL" });
  };
  for (let round = 0; round < ROUNDS; round++) {
    // Every edge decides, waits until its sync is due (the policy's
    // interval) and syncs; in round KILL_AT co2 dies as soon as the first
    // of them has sent its sync, so syncs are in flight when it goes.
    let dying = null;
    await Promise.all(edges.map(async (e) => {
      for (const ip of IPS) {
        for (let k = 0; k < PER_ROUND; k++) {
          const d = e.verify({ method: "GET", path: "/api/x", host: "shop.example", ip });
          if (d.kind === "allow") admitted[ip]++;
        }
      }
      await waitFor(() => e.syncDue(), { stepMs: 10, what: `${e.edgeId}'s next sync` });
      const pending = e.sync();
      if (round === KILL_AT && !dying) dying = kill();
      const ok = await pending;
      if (!ok) failures.push(`round ${round} ${e.edgeId}: ${e.lastSyncError}`);
      if (round > KILL_AT) { syncsAfterKill++; okAfterKill += ok; }
    }));
    await dying;
  }

  // haproxy saw it go, and said so in one log line.
  await waitFor(() => /Server coordinators\/co2 is DOWN/.test(lb.logs),
    { timeoutMs: 5000, what: `haproxy to mark co2 DOWN:\n${lb.logs}` });
  const downLine = lb.logs.split("\n").find((l) => /co2 is DOWN/.test(l));
  assert.equal(syncsAfterKill, (ROUNDS - KILL_AT - 1) * EDGES.length);
  // A sync that fails is resent by the edge with the same seq; the
  // balancer's retries should hide the death from all but a handful.
  assert.ok(okAfterKill >= syncsAfterKill - EDGES.length,
    `syncs after the kill: ${okAfterKill}/${syncsAfterKill} ok; failures:\n${failures.join("\n")}`);

  // Drain: syncing with no new decisions sends what the edges still hold.
  // Then every admission is in Redis exactly once: nothing lost with the
  // dead coordinator, nothing doubled by the balancer's retries.
  const inRedis = (ip) => admittedInRedis(redis.port, ip);
  await waitFor(async () => {
    const oks = await Promise.all(edges.map((e) => e.sync()));
    return oks.every(Boolean);
  }, { timeoutMs: 10000, what: "every edge to drain through haproxy" });
  for (const ip of IPS) {
    assert.equal(await inRedis(ip), admitted[ip], `${ip}: Redis holds ${await inRedis(ip)}, the edges admitted ${admitted[ip]}`);
  }
  const total = sum(Object.values(admitted));
  // Only a new key's first decisions (before its first lease) are held to
  // the floor; the limit itself never bites.
  assert.ok(total > (ROUNDS - 1) * EDGES.length * IPS.length * PER_ROUND, `admitted ${total}`);
  // The balancer spread the syncs: each coordinator applied some.
  for (const co of cos) assert.match(co.proc.logs, /msg=sync\b.*redis=ok/, `no sync reached ${co.url}`);

  // Each survivor's /v1/stats shows the merged fleet, the same from both.
  const survivors = [cos[0], cos[2]];
  let views;
  await waitFor(async () => {
    views = await Promise.all(survivors.map(stats));
    const allowed = views.map((s) => sum(s.decisions.allowed));
    const ids = views.map((s) => s.edges.map((e) => e.id).sort().join(","));
    return views.every((s) => s.merged) && allowed[0] === allowed[1] && ids[0] === ids[1];
  }, { timeoutMs: 8000, what: "both survivors' /v1/stats to agree" });
  const allowed = sum(views[0].decisions.allowed);
  // The dead coordinator's counts of its last second (not yet flushed to
  // Redis) died with it: the stats may miss those, never add any.
  assert.ok(allowed <= total && allowed > 0, `/v1/stats allowed ${allowed}, edges admitted ${total}`);
  const ids = views[0].edges.map((e) => e.id.split("/")[0]).sort();
  assert.deepEqual(ids, [...EDGES].sort(), "every edge listed once");

  // The dashboard's edge count is max(tollgate_edges_active) over the
  // coordinators (deploy/grafana/tollgate.json): behind round robin each
  // survivor has seen every edge, so the max is the fleet, once per edge.
  for (const co of survivors) {
    const text = await (await fetch(`${co.url}/metrics`)).text();
    const m = /^tollgate_edges_active (\d+)$/m.exec(text);
    assert.ok(m, `tollgate_edges_active at ${co.url}`);
    assert.equal(Number(m[1]), EDGES.length, `tollgate_edges_active at ${co.url}`);
  }
  const dash = readFileSync(path.join(ROOT, "deploy/grafana/tollgate.json"), "utf8");
  assert.match(dash, /max\(tollgate_edges_active\{/, "the dashboard counts edges with max over coordinators");
  assert.doesNotMatch(dash, /sum\(tollgate_edges_active/, "a sum counts an edge once per coordinator");
  t.diagnostic(`admitted ${total}; /v1/stats allowed ${allowed}; syncs after the kill ${okAfterKill}/${syncsAfterKill} ok; ` +
    `load ${Date.now() - started} ms; co2 out of rotation ${downAfterMs} ms after the kill; haproxy: ${downLine}`);
});

test("a coordinator whose /readyz fails leaves rotation and returns when ready", async (t) => {
  // co3 gets a Redis of its own, stopped mid-test: it stands in for a
  // coordinator that lost its Redis link while its process lives on.
  const shared = await startRedis();
  t.after(() => shared.stop());
  let lone = await startRedis();
  t.after(() => lone.stop());
  const { cos, lb, lbUrl } = await fleet(t, [shared.port, shared.port, lone.port]);
  const edges = await edgesAt(lbUrl);

  await lone.stop();
  await waitFor(async () => (await fetch(`${cos[2].url}/readyz`)).status === 503, { what: "co3's /readyz to fail" });
  await waitFor(() => /server coordinators\/co3 failed, reason: Layer7 wrong status, code: 503\b/.test(lb.logs) &&
    /Server coordinators\/co3 is DOWN/.test(lb.logs),
    { what: `haproxy to take co3 out on its /readyz:\n${lb.logs}` });
  const co3Syncs = () => (cos[2].proc.logs.match(/msg=sync\b/g) || []).length;
  const before = co3Syncs();

  // Every sync now goes to co1 or co2, answered from the shared Redis.
  const ip = "198.51.100.9";
  let admitted = 0;
  for (let round = 0; round < 10; round++) {
    for (const e of edges) {
      for (let k = 0; k < PER_ROUND; k++) admitted += e.verify({ method: "GET", path: "/api/y", host: "shop.example", ip }).kind === "allow";
      assert.equal(await e.sync(), true, `${e.edgeId}: ${e.lastSyncError}`);
    }
  }
  assert.equal(co3Syncs(), before, `co3 answered syncs while out of rotation:\n${cos[2].proc.logs}`);
  const inRedis = await admittedInRedis(shared.port, ip);
  // The last round's decisions are acknowledged by its sync: all are in.
  assert.equal(inRedis, admitted, `Redis holds ${inRedis}, the edges admitted ${admitted}`);

  // Its Redis back: co3 is ready again and haproxy puts it back.
  lone = await startRedis({ port: lone.port, dir: lone.dir });
  await waitFor(() => /Server coordinators\/co3 is UP/.test(lb.logs),
    { timeoutMs: 15000, what: `haproxy to put co3 back:\n${lb.logs}` });
});

test("with no coordinator ready (Redis down), syncs still reach one and are answered degraded", async (t) => {
  let redis = await startRedis();
  t.after(() => redis.stop());
  const { lb, lbUrl } = await fleet(t, [redis.port, redis.port, redis.port]);
  const [edge] = await edgesAt(lbUrl, ["edge-a"]);

  await redis.stop();
  await waitFor(() => /Server coordinators\/co\d is DOWN\. 0 active and 3 backup servers left/.test(lb.logs),
    { what: `haproxy to take every coordinator out:\n${lb.logs}` });
  // The unchecked backup entries carry the sync: the coordinator answers
  // 200 degraded (nothing acknowledged, the edge keeps its counts), not
  // haproxy's 503.
  const ip = "198.51.100.20";
  let admitted = 0;
  for (let k = 0; k < PER_ROUND; k++) admitted += edge.verify({ method: "GET", path: "/api/z", host: "shop.example", ip }).kind === "allow";
  assert.equal(await edge.sync(), true, `sync through haproxy with Redis down: ${edge.lastSyncError}`);

  // Redis back: the coordinators are put back and the kept counts arrive.
  redis = await startRedis({ port: redis.port, dir: redis.dir });
  await waitFor(() => (lb.logs.match(/Server coordinators\/co\d is UP/g) || []).length >= 3,
    { timeoutMs: 15000, what: `haproxy to put the coordinators back:\n${lb.logs}` });
  let inRedis = -1;
  await waitFor(async () => {
    await edge.sync();
    inRedis = await admittedInRedis(redis.port, ip);
    return inRedis >= admitted;
  }, { what: "the kept counts to reach Redis" });
  assert.ok(admitted > 0, "the edge admitted some while Redis was down");
  assert.equal(inRedis, admitted);
});
