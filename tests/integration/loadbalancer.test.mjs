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
const sum = (a) => a.reduce((x, y) => x + y, 0);

test("three coordinators behind haproxy, one killed mid-load: nothing lost or doubled", async (t) => {
  const bin = haproxyBinary();
  const redis = await startRedis();
  t.after(() => redis.stop());
  const cos = [];
  t.after(() => Promise.all(cos.map((c) => c.stop())));
  for (let i = 0; i < 3; i++) {
    cos.push(await startTollgated({ redisPort: redis.port, policy: POLICY, args: ["--max-conns-per-ip", "0"] }));
  }
  const front = await freePort();
  const lb = startProcess(bin, ["-db", "-f", haproxyConfig(front, cos.map((c) => c.port))]);
  t.after(() => stopProcess(lb));
  const lbUrl = `http://127.0.0.1:${front}`;
  await waitFor(async () => {
    if (lb.exitCode !== null) throw new Error(`haproxy exited ${lb.exitCode}:\n${lb.logs}`);
    return (await fetch(`${lbUrl}/readyz`)).status === 200;
  }, { what: "haproxy to serve /readyz" });

  const wasm = loadWasm();
  const edges = EDGES.map((edgeId) => createTollgate(wasm, { edgeId, edgeKey: TEST_KEYS.edge, coordinator: lbUrl }));
  for (const e of edges) assert.equal(await e.sync(), true, String(e.lastSyncError));

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
  assert.ok(syncsAfterKill === (ROUNDS - KILL_AT - 1) * EDGES.length);
  // A sync that fails is resent by the edge with the same seq; the
  // balancer's retries should hide the death from all but a handful.
  assert.ok(okAfterKill >= syncsAfterKill - EDGES.length,
    `syncs after the kill: ${okAfterKill}/${syncsAfterKill} ok; failures:\n${failures.join("\n")}`);

  // Drain: syncing with no new decisions sends what the edges still hold.
  // Then every admission is in Redis exactly once: nothing lost with the
  // dead coordinator, nothing doubled by the balancer's retries.
  const inRedis = async (ip) => {
    const g = await redisCommand(redis.port, "HMGET", `tg:{per-ip|${ip}}:c`, "a", "pa");
    return Number(g[0] || 0) + Number(g[1] || 0);
  };
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
