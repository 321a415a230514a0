// measure.mjs — the coordinator benchmark (issue 7 item 2): how many key
// updates a second build/tollgated reconciles through POST /v1/sync,
// against what Redis itself does with the same Lua script, and the sync
// latency at half that rate. Alone: node bench/coordinator/measure.mjs
//
// One private redis-server and one build/tollgated (--threads 4: 2 x the 2
// cores, the default) on 127.0.0.1. In each of ROUNDS rounds, in an order
// rotated per round:
//   coordinator  build/bench-loadgen, closed loop: CONNS threads, each edge
//                "bench/<i>" on its own keep-alive connection, signed
//                syncs of BATCH distinct keys drawn from KEYSPACE keys of
//                one quota whose limit no run reaches, so every item takes
//                the full lease path (a HSET of the key's hash per item:
//                checked from INFO commandstats).
//   evalsha      redis-benchmark, EVALSHA of coordinator/sync.lua (SHA
//                from SCRIPT LOAD, checked against tollgated's own
//                msg=redis_ready script=<sha>), the same BATCH items, the
//                same CONNS connections, no pipelining: each call a first
//                report of a random edge id on random keys.
//   incrby       redis-benchmark -P 16 INCRBY on random keys: the DESIGN
//                table's reference rate.
// The efficiency figure is the coordinator's rate over redis-benchmark's
// EVALSHA rate in the same round (the machine is small and shared; back to
// back is the fairest comparison). Then RUNS open-loop runs of the load
// generator at half the median coordinator rate give the sync latency,
// measured from each request's scheduled send time.

import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { randomInt } from "node:crypto";
import {
  TEST_KEYS, redisCommand, removeDir, startRedis, startTollgated, writeKeys,
} from "../../tests/integration/harness.mjs";
import { BUILD, ROOT, atLeast, bounded, isMain, median, progress, row, runAlone, runCommand } from "../lib.mjs";

const LOADGEN = path.join(BUILD, "bench-loadgen");
const TOLLGATED = path.join(BUILD, "tollgated");
const ROUNDS = 5;             // rounds of coordinator / evalsha / incrby
const RUNS = 5;               // open-loop latency runs
const SECONDS = 5;            // per coordinator, evalsha and latency run
const INCR_SECONDS = 2;       // per INCRBY run (sized by count, see below)
const CONNS = 4;              // edges = connections = redis-benchmark -c
const THREADS = 4;            // tollgated --threads
const BATCH = 100;            // keys per sync / items per EVALSHA
const KEYSPACE = 100000;      // keys of the one quota
const QUOTA = "bench";
const RB_WINDOW_MS = 1000;    // the EVALSHA workload's window (see evalsha())
const REPLAY_TTL_MS = 65000;  // CO_AUTH_REPLAY_TTL_MS, as tollgated passes it
const BUDGET_MS = 170000;     // the whole step, rounds and runs included

const POLICY = {
  version: 1, sync_interval_ms: 1000, clearance_ttl_s: 300, expected_edges: CONNS,
  quotas: [{
    name: QUOTA, key: "ip", limit: 1e12, window_s: 60, path_prefix: "/", methods: [],
    action: "challenge", floor: 1000, shadow: false, fail_open: true, deny_after: 0,
  }],
};

function onPath(cmd) {
  return (process.env.PATH || "").split(path.delimiter).some((d) => d && existsSync(path.join(d, cmd)));
}

// INFO commandstats as { cmd: { calls, failed } }.
async function cmdstats(port) {
  const info = await redisCommand(port, "INFO", "commandstats");
  if (info instanceof Error) throw info;
  const out = {};
  for (const m of info.matchAll(/^cmdstat_(\w+):calls=(\d+).*?(?:failed_calls=(\d+))?\r?$/gm)) {
    out[m[1]] = { calls: Number(m[2]), failed: Number(m[3] || 0) };
  }
  return out;
}
const delta = (a, b, cmd) => ({
  calls: (b[cmd]?.calls || 0) - (a[cmd]?.calls || 0),
  failed: (b[cmd]?.failed || 0) - (a[cmd]?.failed || 0),
});

// ---------------------------------------------------------------- the load generator

let seqBase = 1;   // every run goes on from the seqs the previous one used

async function loadgen(port, { seconds, rate = 0, maxRequests }) {
  const args = [
    "--port", String(port), "--secret", TEST_KEYS.edge, "--edge", "bench",
    "--connections", String(CONNS), "--batch", String(BATCH), "--keys", String(KEYSPACE),
    "--quota", QUOTA, "--duration-ms", String(seconds * 1000), "--max-requests", String(maxRequests),
    "--seq-base", String(seqBase), "--policy-version", String(POLICY.version),
    "--seed", String(randomInt(1, 2 ** 31)), "--timeout-ms", "5000",
  ];
  if (rate) args.push("--rate", rate.toFixed(3));
  const r = await runCommand(LOADGEN, args, { timeoutMs: (seconds + 20) * 1000 });
  if (r.code !== 0) throw new Error(`bench-loadgen exited ${r.code ?? r.signal}: ${r.stderr}`);
  const out = JSON.parse(r.stdout);
  seqBase = out.seq_next;
  out.n_errors = Object.values(out.errors).reduce((a, b) => a + b, 0);
  if (out.ok === 0) {
    throw new Error(`bench-loadgen: no sync answered ok (first bad status ${out.first_bad_status}, errors ${JSON.stringify(out.errors)})`);
  }
  return out;
}

const errText = (o) => Object.entries(o.errors).filter(([, v]) => v).map(([k, v]) => `${k} ${v}`).join(", ");

// ---------------------------------------------------------------- redis-benchmark

// The EVALSHA command: KEYS 1 + 2 x BATCH, ARGV 7 + 7 x BATCH, laid out as
// tollgated's build_script_call() lays them out. redis-benchmark cannot
// count seqs, so each call is made a first report (seq 1) of a random edge
// id "rb/<r>" (-r draws each __rand_int__ anew), which goes through the
// same reads and writes as the coordinator's steady state minus the EWMA
// arithmetic (not the cheap retry path, which writes nothing). now_ms is a
// constant (redis-benchmark has no clock), so nothing is expired by the
// script; RB_WINDOW_MS = 1 s makes the keys' own PEXPIRE (2 x window, real
// time) drop a key 2 s after its last touch, which bounds memory and keeps
// a few edge records per key, as the coordinator's CONNS edges do.
function evalshaArgs(sha, nowMs) {
  const R = "__rand_int__";
  const a = ["EVALSHA", sha, String(1 + 2 * BATCH), `tg:{edge|rb/${R}}:sig:${R}`];
  for (let i = 0; i < BATCH; i++) a.push(`tg:{rb|k${R}}:c`, `tg:{rb|k${R}}:e`);
  a.push(String(nowMs), `rb/${R}`, "1", String(POLICY.sync_interval_ms), `n${R}`, String(REPLAY_TTL_MS), String(BATCH));
  for (let i = 0; i < BATCH; i++) a.push(String(POLICY.quotas[0].limit), String(RB_WINDOW_MS), "1", "0", "2", "2", "0");
  a.push(R);   // the batch digest (sync.lua's last ARGV)
  return a;
}

// What redis-benchmark would send, with its placeholders filled once.
const filled = (args) => args.map((s) => s.replace(/__rand_int__/g, () => String(randomInt(0, KEYSPACE)).padStart(12, "0")));

// Requests/s of one redis-benchmark run (its --csv line).
async function redisBenchmark(port, args, { n, pipeline = 1, timeoutMs = 60000 }) {
  const cmd = ["-h", "127.0.0.1", "-p", String(port), "-c", String(CONNS), "-n", String(n),
    "-r", String(KEYSPACE), "-P", String(pipeline), "--csv", ...args];
  const r = await runCommand("redis-benchmark", cmd, { timeoutMs });
  if (r.code !== 0) throw new Error(`redis-benchmark ${args[0]} exited ${r.code ?? r.signal}: ${r.stderr.slice(0, 500)}`);
  const line = r.stdout.trim().split("\n").pop();
  const m = /","([\d.]+)","[\d.]+","[\d.]+","[\d.]+","[\d.]+","[\d.]+","[\d.]+"$/.exec(line);
  if (!m) throw new Error(`no rps in redis-benchmark output: ${r.stdout.slice(-300)} ${r.stderr.slice(0, 300)}`);
  return Number(m[1]);
}

// ---------------------------------------------------------------- the step

export async function measure() {
  for (const [f, make] of [[LOADGEN, "build/bench-loadgen"], [TOLLGATED, "build/tollgated"]]) {
    if (!existsSync(f)) throw new Error(`${make} missing: make ${make}`);
  }
  if (!onPath("redis-server")) throw new Error("redis-server not found on PATH (deploy/install-deps.sh)");
  const haveRb = onPath("redis-benchmark");
  const rbNa = haveRb ? null : "redis-benchmark not found on PATH";
  const t0 = Date.now();
  const left = () => BUDGET_MS - (Date.now() - t0);
  const temp = [];
  let redis, co;
  try {
    progress(`coordinator: starting redis-server and tollgated --threads ${THREADS} on 127.0.0.1`);
    redis = await startRedis();
    const keys = writeKeys({ edges: ["bench"] });
    temp.push(path.dirname(keys));
    co = await startTollgated({ redisPort: redis.port, policy: POLICY, keys, args: ["--threads", String(THREADS)] });
    temp.push(path.dirname(co.policyPath), path.dirname(co.adminPath));

    // The script redis-benchmark runs is the coordinator's own.
    const sha = await redisCommand(redis.port, "SCRIPT", "LOAD", readFileSync(path.join(ROOT, "coordinator/sync.lua"), "utf8"));
    if (sha instanceof Error) throw sha;
    const logged = /msg=redis_ready\b.*\bscript=([0-9a-f]{40})/.exec(co.proc.logs)?.[1];
    if (logged && logged !== sha) {
      throw new Error(`tollgated runs script ${logged}, coordinator/sync.lua is ${sha}: rebuild (make build/tollgated)`);
    }
    const rbArgs = evalshaArgs(sha, Date.now());
    const incrArgs = ["INCRBY", "tg:{incr|k__rand_int__}", "1"];
    // One call as redis-benchmark will make it: applied, every item leased.
    const probe = await redisCommand(redis.port, ...filled(rbArgs));
    if (probe instanceof Error || !Array.isArray(probe) || probe.length !== 3 + 4 * BATCH || probe[0] !== 0 ||
        probe.slice(3).filter((_, i) => i % 4 === 1).some((lease) => !(lease > 0))) {
      throw new Error(`EVALSHA probe did not take the full path: ${String(probe).slice(0, 200)}`);
    }

    // Warm-up: the coordinator's keyspace gets its edge records (the
    // rounds then run in the steady state: a previous report per edge on
    // most keys), and the two redis-benchmark runs are sized from a short
    // calibration so each lasts about SECONDS / INCR_SECONDS.
    progress("coordinator: warm-up (3 s of syncs) and redis-benchmark calibration");
    await loadgen(co.port, { seconds: 3, maxRequests: 30000 });
    let nEval = 0, nIncr = 0;
    if (haveRb) {
      const e = await redisBenchmark(redis.port, rbArgs, { n: 400 });
      const i = await redisBenchmark(redis.port, incrArgs, { n: 200000, pipeline: 16 });
      nEval = Math.max(200, Math.min(20000, Math.round(e * SECONDS)));
      nIncr = Math.max(100000, Math.min(5000000, Math.round(i * INCR_SECONDS)));
      progress(`coordinator: calibration: EVALSHA ${e.toFixed(0)}/s -> -n ${nEval}, INCRBY -P 16 ${i.toFixed(0)}/s -> -n ${nIncr}`);
    }

    const coKeys = [], coReqs = [], coHset = [], coP99 = [], coErr = [];
    const rbKeys = [], rbHset = [], incr = [], ratio = [], ratioIncr = [];
    const order = ["coordinator", "evalsha", "incrby"];
    await bounded(ROUNDS, Math.max(0, left() - RUNS * (SECONDS + 3) * 1000), async (r) => {
      progress(`coordinator: round ${r + 1}/${ROUNDS} (${order.map((_, k) => order[(k + r) % 3]).join(", ")})`);
      const got = {};
      for (let k = 0; k < order.length; k++) {
        const what = order[(k + r) % order.length];
        if (what === "coordinator") {
          const a = await cmdstats(redis.port);
          const o = await loadgen(co.port, { seconds: SECONDS, maxRequests: 20000 });
          const b = await cmdstats(redis.port);
          got.co = o.key_updates_per_s;
          coKeys.push(o.key_updates_per_s);
          coReqs.push(o.req_per_s);
          coHset.push(delta(a, b, "hset").calls / o.key_updates);
          coP99.push(o.latency_ms.p99);
          coErr.push(o.n_errors);
          if (o.n_errors) progress(`coordinator: ${o.n_errors} failed syncs: ${errText(o)}`);
        } else if (!haveRb) {
          continue;
        } else if (what === "evalsha") {
          const a = await cmdstats(redis.port);
          const rps = await redisBenchmark(redis.port, rbArgs, { n: nEval });
          const b = await cmdstats(redis.port);
          const ev = delta(a, b, "evalsha");
          if (ev.failed || ev.calls < nEval) throw new Error(`EVALSHA: ${ev.calls} calls, ${ev.failed} failed (expected ${nEval}, none failed)`);
          got.rb = rps * BATCH;
          rbKeys.push(rps * BATCH);
          rbHset.push(delta(a, b, "hset").calls / (ev.calls * BATCH));
        } else {
          got.incr = await redisBenchmark(redis.port, incrArgs, { n: nIncr, pipeline: 16 });
          incr.push(got.incr);
        }
      }
      if (got.rb) ratio.push(got.co / got.rb);
      if (got.incr) ratioIncr.push(got.co / got.incr);
      progress(`coordinator: round ${r + 1}: coordinator ${got.co.toFixed(0)} keys/s` +
        (got.rb ? `, EVALSHA ${got.rb.toFixed(0)} keys/s (ratio ${(got.co / got.rb).toFixed(3)})` : "") +
        (got.incr ? `, INCRBY -P 16 ${got.incr.toFixed(0)}/s` : ""));
    });

    // Latency at half the measured maximum, open loop.
    const half = median(coReqs) / 2;
    if (!(half > 0)) throw new Error("no closed-loop rate measured: nothing to halve");
    const p50 = [], p99 = [], achieved = [], late = [];
    let olErr = 0;
    await bounded(RUNS, Math.max(0, left()), async (k) => {
      progress(`coordinator: latency run ${k + 1}/${RUNS}, open loop at ${half.toFixed(0)} syncs/s (half of ${median(coReqs).toFixed(0)})`);
      const o = await loadgen(co.port, { seconds: SECONDS, rate: half, maxRequests: Math.ceil(half * SECONDS) + 100 });
      p50.push(o.latency_ms.p50);
      p99.push(o.latency_ms.p99);
      achieved.push(o.req_per_s);
      late.push(o.sent ? o.late_sends / o.sent * 100 : 0);
      olErr += o.n_errors;
      progress(`coordinator: latency run ${k + 1}: p50 ${o.latency_ms.p50.toFixed(2)} ms, p99 ${o.latency_ms.p99.toFixed(2)} ms, ${o.req_per_s.toFixed(0)} syncs/s`);
      if (o.n_errors) progress(`coordinator: ${o.n_errors} failed syncs: ${errText(o)}`);
    });
    progress(`coordinator: done in ${((Date.now() - t0) / 1000).toFixed(0)} s`);

    const cut = (n, want) => (n < want ? `; only ${n} of ${want} runs in the time budget` : "");
    const errNote = (n) => (n ? `; ${n} syncs failed and are not counted` : "");
    const what = `${CONNS} edges, 1 keep-alive connection each, batches of ${BATCH} distinct keys of ${KEYSPACE / 1000}k, closed loop, ${SECONDS} s runs`;
    const diff = `same sync.lua, ${BATCH} items per call, ${CONNS} connections, unpipelined; differs from the coordinator's: ` +
      `each call is a first report of a random edge id at a fixed now_ms with window_ms ${RB_WINDOW_MS} (the coordinator's edges report again, ` +
      `60 s window), an item's :c and :e keys are drawn independently, and there is no HTTP, signature check, protobuf or policy lookup`;
    return [
      row({ id: "coordinator.efficiency", what: "coordinator reconcile rate ÷ Redis running the same Lua alone (same round)", unit: "ratio",
        runs: ratio, target: atLeast(0.5, "≥ 0.5"), na: rbNa, note: `coordinator key updates/s ÷ redis-benchmark EVALSHA key updates/s${haveRb ? cut(ratio.length, ROUNDS) : ""}` }),
      row({ id: "coordinator.reconcile_keys_per_s", what: `coordinator reconcile rate via POST /v1/sync (${what})`, unit: "keys/s",
        runs: coKeys, digits: 4, note: `tollgated --threads ${THREADS}${cut(coKeys.length, ROUNDS)}${errNote(coErr.reduce((a, b) => a + b, 0))}` }),
      row({ id: "coordinator.redis_evalsha_keys_per_s", what: "Redis alone: redis-benchmark EVALSHA of the coordinator's sync.lua", unit: "keys/s",
        runs: rbKeys, digits: 4, na: rbNa, note: diff }),
      row({ id: "coordinator.vs_incrby", what: "… reference: coordinator key updates/s ÷ Redis pipelined INCRBY/s (same round)", unit: "ratio",
        runs: ratioIncr, na: rbNa, note: "the DESIGN table's wording of the target (≥ 0.5 × pipelined INCRBY); one INCRBY is not one lease decision, see the row above" }),
      row({ id: "coordinator.redis_incrby_per_s", what: `… Redis pipelined INCRBY (redis-benchmark -P 16 -c ${CONNS}, random keys)`, unit: "ops/s",
        runs: incr, digits: 4, na: rbNa }),
      row({ id: "coordinator.sync_p50_ms", what: "sync latency p50 at half the maximum rate (open loop)", unit: "ms", runs: p50,
        note: `${half.toFixed(0)} syncs/s of ${BATCH} keys over ${CONNS} edges, from each request's scheduled send time${cut(p50.length, RUNS)}${errNote(olErr)}` }),
      row({ id: "coordinator.sync_p99_ms", what: "sync latency p99 at half the maximum rate (open loop)", unit: "ms", runs: p99 }),
      row({ id: "coordinator.sync_per_s", what: "… syncs/s at the maximum (closed loop)", unit: "req/s", runs: coReqs, digits: 4 }),
      row({ id: "coordinator.sync_p99_max_ms", what: "… sync latency p99 at the maximum (closed loop, send to answer)", unit: "ms", runs: coP99 }),
      row({ id: "coordinator.open_loop_rate", what: "… open-loop runs: syncs/s achieved", unit: "req/s", runs: achieved, digits: 4,
        note: `median ${median(late).toFixed(1)} % of sends over 1 ms behind schedule` }),
      row({ id: "coordinator.hset_per_key", what: "… Redis HSETs per key update, coordinator (1 = every item took the full lease path)", unit: "ratio", runs: coHset }),
      row({ id: "coordinator.rb_hset_per_key", what: "… Redis HSETs per key update, redis-benchmark EVALSHA", unit: "ratio", runs: rbHset, na: rbNa }),
    ];
  } finally {
    if (co) await co.stop();
    if (redis) { await redis.stop(); removeDir(redis.dir); }
    for (const d of temp) removeDir(d);
  }
}

if (isMain(import.meta.url)) runAlone(measure);
