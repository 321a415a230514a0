// measure.mjs — the "peer" suite: tollgate beside the limiter users pick
// instead, rate-limiter-flexible's RateLimiterRedis (npm, with ioredis; both
// pinned devDependencies), against a private redis-server on 127.0.0.1.
//
//   (a) decisions/s of RateLimiterRedis.consume(), IN_FLIGHT promises in
//       flight on one ioredis client (its default options), over KEYS keys,
//       a limit no key reaches (every call is an allowed decision);
//   (b) Redis commands per 1,000 of those decisions, from INFO deltas over
//       each run: "sent" = the top-level commands (EVALSHA/EVAL calls: what
//       crosses the socket, one request/reply each), "executed" =
//       total_commands_processed, which also counts every command its Lua
//       script runs (SET NX, INCRBY, PTTL, sometimes EXPIRE) — the same
//       split as bench/sim's "sent" and "executed, incl. in Lua";
//   (c) its overshoot on the simulator's spray50 shape: one client at 10x its
//       limit, Poisson arrivals, each sent to one of 50 edges drawn
//       uniformly; an edge is its own ioredis connection + RateLimiterRedis.
//       The window is scaled down to stay bounded: limit 600 per 6 s
//       (sim: 6000 per 60 s and 600 per 60 s), same 10x and 50 edges, 3
//       windows. SPRAY_RUNS runs go side by side, each its own key (the 50
//       connections are shared), so the suite stays short.
//
// Beside them, tollgate's figures from the same `make bench` (the edge and
// accuracy suites run first): edge decisions/s = 1e9 / verify() ns per call
// (build/bench/edge.json), Redis commands per 1,000 decisions and the
// spray50 overshoot (build/bench/sim.json, bench-sim's summary). A missing
// file makes those rows n/a with the reason. Alone: node bench/peer/measure.mjs

import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { OUT, STARTED, bounded, isMain, progress, row, runAlone, sleep } from "../lib.mjs";
import { redisCommand, startRedis } from "../../tests/integration/harness.mjs";

const IN_FLIGHT = 64;
const KEYS = 10000;
const RUNS = 5;                 // throughput runs reported
const RUN_MS = 2000;            // each, after a WARMUP_MS run thrown away
const WARMUP_MS = 1000;
const MAX_PER_RUN = 2_000_000;  // count bound per run, whatever the speed

const SPRAY_RUNS = 5;
const SPRAY_EDGES = 50;
const SPRAY_LIMIT = 600;
const SPRAY_WINDOW_S = 6;
const SPRAY_X = 10;
const SPRAY_WINDOWS = 3;
const SPRAY_GRACE_MS = 5000;    // for answers still in flight at the end


async function loadPeer() {
  try {
    const rlf = (await import("rate-limiter-flexible")).default;
    const Redis = (await import("ioredis")).default;
    return { RateLimiterRedis: rlf.RateLimiterRedis, Redis };
  } catch (e) {
    throw new Error(`rate-limiter-flexible / ioredis not installed (npm install): ${e.message}`);
  }
}

// ---------------------------------------------------------------- INFO

function parseInfo(text) {
  const out = { total: 0, calls: {} };
  for (const line of String(text).split("\r\n")) {
    let m = /^total_commands_processed:(\d+)/.exec(line);
    if (m) out.total = Number(m[1]);
    m = /^cmdstat_([^:]+):calls=(\d+)/.exec(line);
    if (m) out.calls[m[1]] = Number(m[2]);
  }
  return out;
}

async function info(port) {
  const r = await redisCommand(port, "INFO", "stats", "commandstats");
  if (r instanceof Error) throw r;
  return parseInfo(r);
}

// Commands between two snapshots. The first snapshot's own INFO falls
// inside the delta (a command is counted once it has run); it is removed.
function delta(a, b) {
  const calls = {};
  for (const [k, v] of Object.entries(b.calls)) {
    const d = v - (a.calls[k] || 0);
    if (d) calls[k] = d;
  }
  const infos = calls.info || 0;
  delete calls.info;
  const topLevel = (calls.evalsha || 0) + (calls.eval || 0);
  return { executed: b.total - a.total - infos, topLevel, calls };
}

// ---------------------------------------------------------------- (a), (b)

async function throughput({ RateLimiterRedis, Redis }, port) {
  const client = new Redis({ host: "127.0.0.1", port, lazyConnect: true });
  await client.connect();
  try {
    const limiter = new RateLimiterRedis({
      storeClient: client, keyPrefix: "peer-tp", points: 1e9, duration: 60,
    });
    const keys = Array.from({ length: KEYS }, (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
    let next = 0;

    // One time-bounded run: IN_FLIGHT loops, each awaiting one consume() at
    // a time. Returns { perS, decisions, redis }.
    const run = async (ms) => {
      const before = await info(port);
      let done = 0;
      const t0 = performance.now();
      const end = t0 + ms;
      const loop = async () => {
        while (performance.now() < end && done < MAX_PER_RUN) {
          const res = await limiter.consume(keys[next++ % KEYS]);
          if (res.remainingPoints <= 0) throw new Error("throughput run hit its limit");
          done++;
        }
      };
      await Promise.all(Array.from({ length: IN_FLIGHT }, loop));
      const secs = (performance.now() - t0) / 1000;
      const redis = delta(before, await info(port));
      return { perS: done / secs, decisions: done, redis };
    };

    progress(`peer: rate-limiter-flexible consume(), ${IN_FLIGHT} in flight, ${KEYS} keys, warm-up + ${RUNS} × ${RUN_MS / 1000} s`);
    await run(WARMUP_MS);
    const runs = [];
    await bounded(RUNS, (RUNS + 2) * RUN_MS, async () => { runs.push(await run(RUN_MS)); });
    return runs;
  } finally {
    client.disconnect();
  }
}

// ---------------------------------------------------------------- (c)

// A small seeded PRNG (mulberry32), so the arrivals are the same every run.
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function spray({ RateLimiterRedis, Redis }, port) {
  const windowMs = SPRAY_WINDOW_S * 1000;
  const spanMs = SPRAY_WINDOWS * windowMs;
  const ratePerMs = (SPRAY_X * SPRAY_LIMIT) / windowMs;
  const clients = [];
  for (let e = 0; e < SPRAY_EDGES; e++) {
    const c = new Redis({ host: "127.0.0.1", port, lazyConnect: true });
    clients.push(c);
  }
  try {
    await Promise.all(clients.map((c) => c.connect()));
    const tag = Date.now().toString(36);
    // Every run's arrivals (Poisson, edge drawn uniformly), merged in time
    // order; the first arrival of each run is at t = 0, which starts its
    // key's first window (RateLimiterRedis's window opens at the first
    // consume and lasts the key's TTL).
    const arrivals = [];
    const runs = [];
    for (let r = 0; r < SPRAY_RUNS; r++) {
      const limiters = clients.map((c) => new RateLimiterRedis({
        storeClient: c, keyPrefix: `peer-spray-${tag}`, points: SPRAY_LIMIT, duration: SPRAY_WINDOW_S,
      }));
      const rand = prng(7 + r);
      runs.push({ key: `203.0.113.7-run${r}`, limiters, decided: [], errors: 0 });
      for (let t = 0; t < spanMs; t += -Math.log(1 - rand()) / ratePerMs) {
        arrivals.push({ t, run: r, edge: Math.floor(rand() * SPRAY_EDGES) });
      }
    }
    arrivals.sort((x, y) => x.t - y.t);
    progress(`peer: 50-edge spray, ${SPRAY_RUNS} runs side by side, limit ${SPRAY_LIMIT} per ${SPRAY_WINDOW_S} s at ${SPRAY_X}x, ${SPRAY_WINDOWS} windows (${arrivals.length} consume() calls, ${spanMs / 1000} s)`);

    const pending = [];
    const t0 = performance.now();
    let i = 0;
    // Issue every arrival whose time has come; a bounded loop (the list is
    // finite and the time limit is the span plus a grace period).
    while (i < arrivals.length && performance.now() - t0 < spanMs + SPRAY_GRACE_MS) {
      const now = performance.now() - t0;
      for (; i < arrivals.length && arrivals[i].t <= now; i++) {
        const a = arrivals[i];
        const run = runs[a.run];
        const sentAt = performance.now() - t0;
        pending.push(run.limiters[a.edge].consume(run.key).then(
          (res) => run.decided.push({ t: a.t, late: sentAt - a.t, ok: true, end: performance.now() - t0 + res.msBeforeNext }),
          (res) => {
            if (res instanceof Error) run.errors++;
            else run.decided.push({ t: a.t, late: sentAt - a.t, ok: false, end: performance.now() - t0 + res.msBeforeNext });
          }));
      }
      await sleep(1);
    }
    const timeout = sleep(SPRAY_GRACE_MS).then(() => "timeout");
    if (await Promise.race([Promise.all(pending).then(() => "done"), timeout]) === "timeout" || i < arrivals.length) {
      throw new Error(`spray: ${arrivals.length - i} calls not sent / answers missing after ${(spanMs + 2 * SPRAY_GRACE_MS) / 1000} s`);
    }

    return runs.map((run) => {
      if (run.errors) throw new Error(`spray: ${run.errors} consume() calls failed`);
      // (1) windows aligned to the attack's start (as bench-sim aligns them
      // to the coordinator's), by arrival time;
      const aligned = new Array(SPRAY_WINDOWS).fill(0);
      for (const d of run.decided) if (d.ok) aligned[Math.floor(d.t / windowMs)]++;
      // (2) its own windows: the key's expiry as the answer reported it
      // (answers in one window agree to within a few ms).
      const own = new Map();
      for (const d of run.decided) {
        if (!d.ok) continue;
        let k = [...own.keys()].find((x) => Math.abs(x - d.end) < 200);
        if (k === undefined) { k = d.end; own.set(k, 0); }
        own.set(k, own.get(k) + 1);
      }
      const worst = (counts) => Math.max(0, ...counts.map((n) => (n / SPRAY_LIMIT - 1) * 100));
      const lateMs = run.decided.map((d) => d.late).sort((x, y) => x - y);
      return {
        decisions: run.decided.length,
        aligned, own: [...own.values()],
        worstAligned: worst(aligned), worstOwn: worst([...own.values()]),
        lateP99: lateMs[Math.floor(lateMs.length * 0.99)] || 0,
      };
    });
  } finally {
    for (const c of clients) c.disconnect();
  }
}

// ---------------------------------------------------------------- tollgate

// A build/bench file written by an earlier suite; { data } or { why }.
function readOut(name) {
  const file = path.join(OUT, name);
  if (!existsSync(file)) return { why: `no build/bench/${name} (its suite has not run)` };
  try {
    const data = JSON.parse(readFileSync(file, "utf8"));
    const stale = statSync(file).mtimeMs < STARTED;
    return { data, note: stale ? `from build/bench/${name} of ${new Date(statSync(file).mtimeMs).toISOString().slice(0, 16)}Z` : `from build/bench/${name}` };
  } catch (e) {
    return { why: `build/bench/${name} unreadable: ${e.message}` };
  }
}

function edgeRow(edge, id) {
  if (!edge.data) return { why: edge.why };
  const r = edge.data.rows.find((x) => x.id === id);
  if (!r) return { why: `no ${id} in edge.json` };
  if (r.na || r.error || !r.runs?.length) return { why: `${id}: ${r.na || r.error || "no runs"}` };
  return { runs: r.runs.map((ns) => 1e9 / ns) };
}

function simFig(sim, scenario, limit, name) {
  if (!sim.data) return { why: sim.why };
  const run = sim.data.runs?.find((x) => x.scenario === scenario && x.limit === limit);
  if (!run) return { why: `${scenario} at ${limit} not in sim.json` };
  if (run.truncated) return { why: `${scenario} cut: ${run.truncated_why}` };
  if (!run[name]) return { why: `no ${name} in sim.json` };
  return { runs: [run[name].value], run };
}

// Every pairwise ratio a_i / b_j: its median, and its min–max the extremes.
const ratios = (a, b) => a.flatMap((x) => b.map((y) => x / y));

// ---------------------------------------------------------------- measure

export async function measure() {
  const peer = await loadPeer();
  const redis = await startRedis();
  let tp, sp;
  try {
    tp = await throughput(peer, redis.port);
    sp = await spray(peer, redis.port);
  } finally {
    await redis.stop();
  }
  const rows = [];
  const per1000 = (f) => tp.map((r) => (f(r.redis) / r.decisions) * 1000);
  const rlfRate = tp.map((r) => r.perS);
  const calls = tp.at(-1).redis.calls;
  rows.push(row({
    id: "peer.rlf_decisions_per_s",
    what: `rate-limiter-flexible RateLimiterRedis.consume(), ${IN_FLIGHT} in flight, ${KEYS} keys, one ioredis client`,
    unit: "decisions/s", runs: rlfRate, digits: 3,
  }));
  rows.push(row({
    id: "peer.rlf_redis_sent_per_1000",
    what: "… its Redis commands sent per 1,000 decisions (EVALSHA, one request/reply each)",
    unit: "/1000", runs: per1000((d) => d.topLevel), digits: 4,
  }));
  rows.push(row({
    id: "peer.rlf_redis_executed_per_1000",
    what: "… executed, incl. in its Lua (INFO total_commands_processed)",
    unit: "/1000", runs: per1000((d) => d.executed), digits: 4,
    note: "per decision: " + Object.entries(calls).map(([k, v]) => `${k} ${+(v / tp.at(-1).decisions).toFixed(2)}`).join(", "),
  }));
  rows.push(row({
    id: "peer.rlf_overshoot_spray50",
    what: `rate-limiter-flexible, 50 edges, 10× attack, limit ${SPRAY_LIMIT}/${SPRAY_WINDOW_S}s: worst-window overshoot`,
    unit: "%", runs: sp.map((r) => r.worstAligned), digits: 3,
    note: `windows aligned to the attack's start; ${SPRAY_RUNS} runs side by side`,
  }));
  rows.push(row({
    id: "peer.rlf_overshoot_spray50_own",
    what: "… in its own windows (opened by the first consume, closed by the key's TTL)",
    unit: "%", runs: sp.map((r) => r.worstOwn), digits: 3,
  }));

  // tollgate, from the same make bench.
  const edge = readOut("edge.json");
  const sim = readOut("sim.json");
  const add = (spec, fig, src) => rows.push(row({
    ...spec, runs: fig.runs || [], na: fig.why ? `n/a: ${fig.why}` : null,
    note: [spec.note, fig.why ? "" : src.note].filter(Boolean).join("; "),
  }));
  const plain = edgeRow(edge, "edge.verify_ns");
  const repeat = edgeRow(edge, "edge.verify_jwt_repeat_ns");
  add({ id: "peer.tollgate_edge_decisions_per_s", what: "tollgate edge decisions/s, one thread (1e9 / verify() ns, no token)",
    unit: "decisions/s", digits: 3 }, plain, edge);
  add({ id: "peer.tollgate_edge_decisions_per_s_jwt", what: "tollgate edge decisions/s, one thread (1e9 / verify() ns, repeated HS256 token)",
    unit: "decisions/s", digits: 3 }, repeat, edge);
  add({ id: "peer.ratio_edge_vs_rlf", what: "tollgate edge decisions/s ÷ rate-limiter-flexible decisions/s (no token)",
    unit: "ratio", digits: 3, note: "over every pair of runs" },
  plain.runs ? { runs: ratios(plain.runs, rlfRate) } : plain, edge);
  for (const [scenario, limit] of [["spray50", 6000], ["fleet20", 6000]]) {
    const trips = simFig(sim, scenario, limit, "redis_round_trips_per_1000_decisions");
    const who = trips.run ? `${trips.run.clients ? `${trips.run.clients} clients` : "one client at 10×"} over ${trips.run.edges} edges, limit ${limit}` : `limit ${limit}`;
    add({ id: `peer.tollgate_redis_trips_${scenario}`, what: `tollgate Redis round trips per 1,000 edge decisions, sim ${scenario} (${who})`,
      unit: "/1000", digits: 4 }, trips, sim);
    add({ id: `peer.tollgate_redis_executed_${scenario}`, what: `… commands executed, incl. in its Lua, sim ${scenario}`,
      unit: "/1000", digits: 4 }, simFig(sim, scenario, limit, "redis_commands_executed_per_1000_decisions"), sim);
  }
  for (const limit of [6000, 600]) {
    add({ id: `peer.tollgate_overshoot_spray50_${limit}`, what: `tollgate, 50 edges, 10× attack, limit ${limit}/60s (sim spray50): worst-window overshoot`,
      unit: "%", digits: 3, note: "simulated time, deterministic" }, simFig(sim, "spray50", limit, "worst_window_overshoot"), sim);
  }
  progress(`peer: spray windows admitted ${sp.map((r) => r.aligned.join("/")).join(", ")} (limit ${SPRAY_LIMIT}); own windows ${sp.map((r) => r.own.join("/")).join(", ")}; p99 send lateness ${Math.max(...sp.map((r) => r.lateP99)).toFixed(1)} ms`);
  return rows;
}

if (isMain(import.meta.url)) runAlone(measure);
