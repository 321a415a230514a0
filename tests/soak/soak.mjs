// soak.mjs — `make soak`: tollgate under mixed traffic for SOAK_S seconds
// (default 600), bounded, with the failures an operator meets: two edges in
// real workerd syncing with one coordinator (build/tollgated) backed by a
// private redis-server; the coordinator restarted once (SIGTERM, started
// again on the same port) and Redis paused (SIGSTOP, 4 s, SIGCONT, by PID).
//
// Timeline (fractions of SOAK_S): restart at 0.1; a first, short Redis
// pause at 0.15 so the baseline is taken after every path (reconnects,
// degraded answers) has run once; baseline at 0.3; the Redis pause of
// PAUSE_MS at 0.5; end at 1.0. At
// the baseline and at the end it reads the coordinator's RSS and open fds
// (/proc/PID) and the sync p99 over the preceding window (the
// tollgate_sync_duration_seconds histogram's increase, at bucket
// resolution). It fails when RSS or fds grew more than 10 % from baseline to
// end, when the edges stopped syncing, or when /readyz is not 200 at the
// end. Traffic: both edges, at most RATE requests a second, CONCURRENCY in
// flight: hot and cold client addresses (some get challenged), several
// paths, plus admin reads, a quota write and /metrics and /v1/stats scrapes
// on the coordinator. A report goes to stdout and build/soak/report.json.
import { mkdirSync, readFileSync, readdirSync, writeFileSync, copyFileSync } from "node:fs";
import path from "node:path";
import {
  ADMIN_TOKENS, BUILD, ROOT, TEST_KEYS, freePort, removeDir, sleep, startProcess, startRedis,
  startTollgated, stopProcess, tempDir, waitFor,
} from "../integration/harness.mjs";

const SOAK_S = Number(process.env.SOAK_S || 600);
const RATE = Number(process.env.SOAK_RATE || 150);
const CONCURRENCY = 8;
const GROWTH_MAX = 0.10;
const PAUSE_MS = 4000;
const WARM_PAUSE_MS = 1500;
const EDGES = ["edge-a", "edge-b"];
const WORKERD = path.join(ROOT, "node_modules/.bin/workerd");

if (!(SOAK_S >= 60 && SOAK_S <= 24 * 3600)) {
  console.error("soak: SOAK_S must be 60..86400 seconds");
  process.exit(2);
}

const POLICY = {
  version: 1, sync_interval_ms: 1000, clearance_ttl_s: 300, expected_edges: 2,
  quotas: [
    { name: "per-ip", key: "ip", limit: 300, window_s: 10, path_prefix: "/api/", methods: [],
      action: "challenge", floor: 3, shadow: false, fail_open: true, deny_after: 2 },
    { name: "login", key: "ip", limit: 20, window_s: 10, path_prefix: "/login", methods: ["POST"],
      action: "deny", floor: 1, shadow: false, fail_open: false, deny_after: 0 },
  ],
};

const log = (msg) => console.log(`soak ${new Date().toISOString()} ${msg}`);

function procStats(pid) {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const rssKb = Number(/^VmRSS:\s+(\d+)/m.exec(status)[1]);
  return { rss_kb: rssKb, fds: readdirSync(`/proc/${pid}/fd`).length };
}

async function scrape(url) {
  const r = await fetch(`${url}/metrics`);
  const text = await r.text();
  const buckets = [];
  let ok = 0;
  for (const line of text.split("\n")) {
    let m = /^tollgate_sync_duration_seconds_bucket\{le="([^"]+)"\} (\d+)$/.exec(line);
    if (m) buckets.push([m[1] === "+Inf" ? Infinity : Number(m[1]), Number(m[2])]);
    m = /^tollgate_sync_requests_total\{result="ok"\} (\d+)$/.exec(line);
    if (m) ok = Number(m[1]);
  }
  return { buckets, ok };
}

// p99 of the syncs between two scrapes of the same process: the upper
// bound of the first bucket holding 99 % of them (seconds), null if none.
function p99(a, b) {
  const n = b.buckets.at(-1)[1] - a.buckets.at(-1)[1];
  if (n <= 0) return null;
  for (let i = 0; i < b.buckets.length; i++) {
    if (b.buckets[i][1] - a.buckets[i][1] >= 0.99 * n) return { p99_s: b.buckets[i][0], syncs: n };
  }
  return null;
}

async function startEdge(name, port, coPort, dir) {
  const d = path.join(dir, name);
  mkdirSync(d);
  copyFileSync(path.join(BUILD, "tollgate.wasm"), path.join(d, "tollgate.wasm"));
  copyFileSync(path.join(ROOT, "edge-module/js/tollgate.mjs"), path.join(d, "tollgate.mjs"));
  copyFileSync(path.join(ROOT, "tests/soak/edge.js"), path.join(d, "edge.js"));
  writeFileSync(path.join(d, "config.capnp"), `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "edge", worker = .edge),
    (name = "coordinator", external = (address = "127.0.0.1:${coPort}", http = ())),
  ],
  sockets = [(name = "http", address = "127.0.0.1:${port}", http = (), service = "edge")],
);
const edge :Workerd.Worker = (
  modules = [
    (name = "edge.js", esModule = embed "edge.js"),
    (name = "tollgate.mjs", esModule = embed "tollgate.mjs"),
    (name = "tollgate.wasm", wasm = embed "tollgate.wasm"),
  ],
  compatibilityDate = "2024-09-23",
  bindings = [
    (name = "COORDINATOR", service = "coordinator"),
    (name = "EDGE_ID", text = "${name}"),
    (name = "EDGE_KEY", text = "${TEST_KEYS.edge}"),
    (name = "CLEARANCE_KEY", text = "${TEST_KEYS.clearance[0].secret}"),
  ],
);
`);
  const proc = startProcess(WORKERD, ["serve", path.join(d, "config.capnp")]);
  const url = `http://127.0.0.1:${port}`;
  await waitFor(async () => {
    if (proc.exitCode !== null) throw new Error(`workerd ${name} exited:\n${proc.logs}`);
    const r = await fetch(`${url}/health`);
    await r.text();
    return true;
  }, { what: `workerd edge ${name}`, timeoutMs: 30000 });
  return { name, url, proc, stop: () => stopProcess(proc) };
}

// SIGSTOP Redis (by PID) for ms, SIGCONT, then wait for /readyz 200.
async function pauseRedis(redis, ms, co, report, t0) {
  log(`pausing Redis (SIGSTOP pid ${redis.proc.pid}) for ${ms} ms`);
  redis.proc.kill("SIGSTOP");
  report.events.push({ t_s: (Date.now() - t0) / 1000, event: "redis SIGSTOP" });
  await sleep(ms);
  redis.proc.kill("SIGCONT");
  report.events.push({ t_s: (Date.now() - t0) / 1000, event: "redis SIGCONT" });
  await waitFor(async () => (await fetch(`${co.url}/readyz`)).status === 200,
    { what: "/readyz 200 after the Redis pause", timeoutMs: 30000 });
}

// One request of the mix; returns its kind for the tally.
async function oneRequest(i, edges, co) {
  const edge = edges[i % edges.length];
  const r = i % 50;
  let url, init = {};
  if (r === 0) {
    url = `${co.url}/v1/policy`;
    init = { headers: { authorization: `Bearer ${ADMIN_TOKENS[0].token}` } };
  } else if (r === 1) {
    url = `${co.url}/metrics`;
  } else if (r === 2) {
    url = `${co.url}/v1/stats`;
    init = { headers: { authorization: `Bearer ${ADMIN_TOKENS[0].token}` } };
  } else if (r === 3) {
    url = `${co.url}/v1/quotas/login/overrides/10.9.${i % 7}.1`;
    init = { method: "PUT", body: JSON.stringify({ limit: 5 + (i % 11) }),
      headers: { authorization: `Bearer ${ADMIN_TOKENS[0].token}`, "content-type": "application/json" } };
  } else {
    // 1 in 4 from a few hot addresses, the rest spread over 5,000
    const ip = i % 4 === 0 ? `10.1.0.${i % 3}` : `10.2.${(i >> 8) % 20}.${i % 250}`;
    const login = r % 9 === 0;
    url = `${edge.url}${login ? "/login" : `/api/items/${i % 17}`}`;
    init = { method: login ? "POST" : "GET", headers: { "x-forwarded-for": ip } };
  }
  const res = await fetch(url, init);
  await res.arrayBuffer();
  return `${url.startsWith(co.url) ? "coordinator" : "edge"} ${res.status}`;
}

async function main() {
  const out = path.join(BUILD, "soak");
  mkdirSync(out, { recursive: true });
  const dir = tempDir("tollgate-soak-");
  const coPort = await freePort();
  const redis = await startRedis();
  let co = await startTollgated({ redisPort: redis.port, policy: POLICY, port: coPort });
  const edges = [];
  for (const name of EDGES) edges.push(await startEdge(name, await freePort(), coPort, dir));
  const stopAll = async () => {
    for (const e of edges) await e.stop();
    await co.stop();
    await redis.stop();
    removeDir(dir);
  };

  const t0 = Date.now();
  const at = (f) => t0 + f * SOAK_S * 1000;
  const tally = new Map();
  const errors = new Map();
  let i = 0, stopLoad = false;
  const worker = async () => {
    while (!stopLoad) {
      const n = i++;
      // paced: request n is not sent before t0 + n / RATE
      const due = t0 + (n * 1000) / RATE;
      if (due > Date.now()) await sleep(due - Date.now());
      if (stopLoad) break;
      try {
        const k = await oneRequest(n, edges, co);
        tally.set(k, (tally.get(k) || 0) + 1);
      } catch (e) {
        const k = e.cause?.code || e.message;
        errors.set(k, (errors.get(k) || 0) + 1);
      }
    }
  };
  const load = Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const report = { soak_s: SOAK_S, rate: RATE, events: [] };
  let failed = [];
  try {
    log(`${SOAK_S} s: coordinator :${coPort} pid ${co.proc.pid}, redis :${redis.port}, edges ${edges.map((e) => e.url).join(" ")}`);
    await sleep(at(0.1) - Date.now());
    log("restarting the coordinator (SIGTERM, same port)");
    const r = await co.stop();
    report.events.push({ t_s: (Date.now() - t0) / 1000, event: "coordinator restart", exit: r });
    co = await startTollgated({ redisPort: redis.port, policy: POLICY, port: coPort });
    await sleep(at(0.15) - Date.now());
    await pauseRedis(redis, WARM_PAUSE_MS, co, report, t0);
    const winMs = Math.min(Math.max(10000, SOAK_S * 100), SOAK_S * 150);
    await sleep(at(0.3) - winMs - Date.now());
    const s0 = await scrape(co.url);
    await sleep(at(0.3) - Date.now());
    const s1 = await scrape(co.url);
    report.start = { t_s: (Date.now() - t0) / 1000, ...procStats(co.proc.pid), sync: p99(s0, s1) };
    log(`baseline: ${JSON.stringify(report.start)}`);

    await sleep(at(0.5) - Date.now());
    await pauseRedis(redis, PAUSE_MS, co, report, t0);

    await sleep(at(1) - winMs - Date.now());
    const e0 = await scrape(co.url);
    await sleep(at(1) - Date.now());
    const e1 = await scrape(co.url);
    report.end = { t_s: (Date.now() - t0) / 1000, ...procStats(co.proc.pid), sync: p99(e0, e1) };
    log(`end: ${JSON.stringify(report.end)}`);
    const ready = await fetch(`${co.url}/readyz`);
    await ready.text();

    const growth = (k) => (report.end[k] - report.start[k]) / report.start[k];
    report.rss_growth = growth("rss_kb");
    report.fd_growth = growth("fds");
    if (report.rss_growth > GROWTH_MAX) failed.push(`RSS grew ${(100 * report.rss_growth).toFixed(1)} %`);
    if (report.fd_growth > GROWTH_MAX) failed.push(`fds grew ${(100 * report.fd_growth).toFixed(1)} %`);
    if (e1.ok - e0.ok <= 0) failed.push("no successful sync in the last window");
    if (ready.status !== 200) failed.push(`/readyz answered ${ready.status} at the end`);
  } catch (e) {
    failed.push(`soak aborted: ${e.message}`);
  } finally {
    stopLoad = true;
    await load;
    report.requests = Object.fromEntries([...tally].sort());
    report.errors = Object.fromEntries(errors);
    report.failed = failed;
    writeFileSync(path.join(out, "report.json"), JSON.stringify(report, null, 2) + "\n");
    await stopAll();
  }
  const fmt = (s) => s && `RSS ${(s.rss_kb / 1024).toFixed(1)} MiB, ${s.fds} fds, sync p99 ${
    s.sync ? `<= ${s.sync.p99_s * 1000} ms over ${s.sync.syncs} syncs` : "n/a"}`;
  console.log(`\nsoak ${SOAK_S} s, ${i} requests planned at ${RATE}/s`);
  console.log(`  start (t=${report.start?.t_s} s): ${fmt(report.start)}`);
  console.log(`  end   (t=${report.end?.t_s} s): ${fmt(report.end)}`);
  console.log(`  growth: RSS ${(100 * (report.rss_growth ?? NaN)).toFixed(1)} %, fds ${(100 * (report.fd_growth ?? NaN)).toFixed(1)} %`);
  console.log(`  answers: ${JSON.stringify(report.requests)}`);
  console.log(`  client errors: ${JSON.stringify(report.errors)}`);
  console.log(`  report: ${path.join(out, "report.json")}`);
  if (failed.length) {
    console.log(`soak FAILED: ${failed.join("; ")}`);
    process.exit(1);
  }
  console.log("soak passed");
}

main().catch((e) => { console.error(e); process.exit(1); });
