// GET /metrics against a real tollgated and redis-server: a few signed
// syncs (one over the limit, so a challenge is issued; one retried; one
// with a bad signature), then the scrape is checked by a strict parser of
// the Prometheus text exposition format 0.0.4 and a few values are read.
import assert from "node:assert/strict";
import { test } from "node:test";
import { readFileSync } from "node:fs";
import path from "node:path";
import { ROOT, encodeSync, postSync, startRedis, startTollgated, syncStates, waitFor } from "./harness.mjs";

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);

// Label set `{a="x",b="y"}` starting at s[i] === "{"; returns [labels, next i].
function parseLabels(s, i, where) {
  const labels = {};
  assert.equal(s[i], "{", where);
  i++;
  for (;;) {
    if (s[i] === "}") return [labels, i + 1];
    const m = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(s.slice(i));
    assert.ok(m, `${where}: label name at ${i}`);
    const name = m[0];
    assert.ok(LABEL.test(name) && !name.startsWith("__"), `${where}: label name ${name}`);
    i += name.length;
    assert.equal(s[i], "=", `${where}: '=' after ${name}`);
    assert.equal(s[i + 1], "\"", `${where}: quote after ${name}=`);
    i += 2;
    let v = "";
    for (;;) {
      const c = s[i];
      assert.ok(c !== undefined && c !== "\n", `${where}: unterminated value`);
      if (c === "\\") {
        const e = s[i + 1];
        assert.ok(e === "\\" || e === "\"" || e === "n", `${where}: bad escape \\${e}`);
        v += e === "n" ? "\n" : e;
        i += 2;
      } else if (c === "\"") {
        i++;
        break;
      } else {
        v += c;
        i++;
      }
    }
    assert.ok(!(name in labels), `${where}: label ${name} twice`);
    labels[name] = v;
    if (s[i] === ",") { i++; continue; }
    assert.equal(s[i], "}", `${where}: ',' or '}' after a label`);
  }
}

const parseValue = (v, where) => {
  assert.ok(/^(?:[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|[+-]?Inf|NaN)$/.test(v),
    `${where}: value ${JSON.stringify(v)}`);
  return v === "+Inf" || v === "Inf" ? Infinity : v === "-Inf" ? -Infinity : Number(v);
};

// Strict check of a whole exposition; returns { families, samples } where
// samples maps "name{sorted labels}" -> value.
export function checkExposition(text) {
  assert.ok(text.endsWith("\n"), "ends with a newline");
  const families = new Map();   // name -> { type, help, sampled }
  const samples = new Map();
  const series = [];
  let current = null;            // family whose samples may follow
  const familyOf = (name) => {
    for (const f of [name, name.replace(/_(bucket|sum|count)$/, "")]) {
      const fam = families.get(f);
      if (fam && (f === name || fam.type === "histogram" || fam.type === "summary")) return [f, fam];
    }
    return [null, null];
  };
  text.slice(0, -1).split("\n").forEach((line, n) => {
    const where = `line ${n + 1}: ${line}`;
    if (line.startsWith("#")) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (!m) return;   // a plain comment
      const [, kind, name, rest] = m;
      assert.ok(NAME.test(name), `${where}: family name`);
      const fam = families.get(name) || { type: null, help: null, sampled: false };
      assert.ok(!fam.sampled, `${where}: ${kind} after the family's samples`);
      if (kind === "TYPE") {
        assert.equal(fam.type, null, `${where}: second TYPE`);
        assert.ok(TYPES.has(rest), `${where}: type ${rest}`);
        fam.type = rest;
      } else {
        assert.equal(fam.help, null, `${where}: second HELP`);
        assert.ok(!/\\[^\\n]/.test(rest), `${where}: HELP escapes`);
        fam.help = rest;
      }
      families.set(name, fam);
      current = name;
      return;
    }
    assert.ok(line.trim() !== "", `${where}: blank line`);
    const nm = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
    assert.ok(nm, `${where}: metric name`);
    const name = nm[0];
    let i = name.length, labels = {};
    if (line[i] === "{") [labels, i] = parseLabels(line, i, where);
    assert.equal(line[i], " ", `${where}: space before the value`);
    const rest = line.slice(i + 1).split(" ");
    assert.ok(rest.length <= 2, `${where}: value [timestamp]`);
    const value = parseValue(rest[0], where);
    if (rest.length === 2) assert.ok(/^-?\d+$/.test(rest[1]), `${where}: timestamp`);
    const [fname, fam] = familyOf(name);
    assert.ok(fam, `${where}: no TYPE precedes ${name}`);
    assert.ok(fam.type !== null, `${where}: family ${fname} has no TYPE`);
    assert.equal(fname, current, `${where}: samples of ${fname} not grouped under its TYPE`);
    if (fam.type === "counter") assert.ok(fname.endsWith("_total"), `${where}: counter ${fname} not *_total`);
    if (fam.type === "histogram") assert.notEqual(name, fname, `${where}: bare histogram sample`);
    if (name.endsWith("_bucket") && fam.type === "histogram") assert.ok("le" in labels, `${where}: bucket without le`);
    fam.sampled = true;
    const key = name + "{" + Object.keys(labels).sort().map((k) => `${k}=${JSON.stringify(labels[k])}`).join(",") + "}";
    assert.ok(!samples.has(key), `${where}: duplicate series ${key}`);
    samples.set(key, value);
    series.push({ name, fname, labels, value });
  });
  // Histograms: per label set (without le), increasing le, cumulative
  // counts, +Inf == _count, _sum present.
  for (const [fname, fam] of families) {
    if (fam.type !== "histogram") continue;
    const groups = new Map();
    for (const s of series.filter((x) => x.fname === fname)) {
      const { le, ...rest } = s.labels;
      const g = JSON.stringify(Object.entries(rest).sort());
      if (!groups.has(g)) groups.set(g, { buckets: [], sum: undefined, count: undefined });
      const grp = groups.get(g);
      if (s.name === `${fname}_bucket`) grp.buckets.push([parseValue(le, fname), s.value]);
      else if (s.name === `${fname}_sum`) grp.sum = s.value;
      else if (s.name === `${fname}_count`) grp.count = s.value;
    }
    assert.ok(groups.size > 0, `${fname}: no samples`);
    for (const grp of groups.values()) {
      for (let k = 1; k < grp.buckets.length; k++) {
        assert.ok(grp.buckets[k][0] > grp.buckets[k - 1][0], `${fname}: le not increasing`);
        assert.ok(grp.buckets[k][1] >= grp.buckets[k - 1][1], `${fname}: buckets not cumulative`);
      }
      const last = grp.buckets.at(-1);
      assert.ok(last && last[0] === Infinity, `${fname}: no +Inf bucket`);
      assert.notEqual(grp.sum, undefined, `${fname}: no _sum`);
      assert.notEqual(grp.count, undefined, `${fname}: no _count`);
      assert.equal(last[1], grp.count, `${fname}: +Inf != _count`);
    }
  }
  return { families, samples };
}

const policy = {
  version: 1, sync_interval_ms: 1000, clearance_ttl_s: 300,
  quotas: [
    { name: "per-ip", key: "ip", limit: 10, window_s: 3600, path_prefix: "/api/", action: "challenge", floor: 2 },
    { name: "dry", key: "ip", limit: 1000, window_s: 3600, path_prefix: "/dry/", action: "deny", floor: 2, shadow: true },
  ],
};

test("GET /metrics is strict exposition format and counts what the syncs did", async (t) => {
  const redis = await startRedis();
  const co = await startTollgated({ redisPort: redis.port, policy });
  t.after(async () => { await co.stop(); await redis.stop(); });
  const edge = "engine/m1";
  const sign = (ts = Date.now()) => ({ edgeId: edge, ts });
  // tollgate_quota_overshoot_ratio is the current window's: start with a
  // minute of the hour's window left (the coordinator shares this clock),
  // so the syncs below and the scrape fall in one window whenever the
  // test runs.
  const W = policy.quotas[0].window_s * 1000;
  await waitFor(() => W - (Date.now() % W) > 60000,
    { timeoutMs: 70000, stepMs: 500, what: "a minute left in the quota's window" });

  const one = await postSync(co.url, encodeSync({ edgeId: edge, seq: 1, sentAtMs: Date.now() - 2000, counts: [
    { quota: "per-ip", key: "10.0.0.1", admitted: 3, denied: 1 },
    { quota: "dry", key: "10.0.0.1", admitted: 2, challenged: 1 },
    { quota: "unknown", key: "x", admitted: 9 },
  ] }), {}, sign());
  assert.equal(one.status, 200);

  const over = encodeSync({ edgeId: edge, seq: 2, sentAtMs: Date.now() - 2000, counts: [
    { quota: "per-ip", key: "10.0.0.2", admitted: 15 }] });
  const two = await postSync(co.url, over, {}, sign());
  assert.equal(two.status, 200);
  const [st] = syncStates(two.bytes);
  assert.equal(st.action, 1, "over the limit: challenge");
  assert.ok(st.token.length > 0, "a challenge token");
  // The same batch again (a retry): answered, not counted twice.
  const retry = await postSync(co.url, over, {}, sign(Date.now() + 1));
  assert.equal(retry.status, 200);

  const forged = await postSync(co.url, encodeSync({ edgeId: edge, seq: 3 }), {},
    { edgeId: edge, key: "00".repeat(32) });
  assert.equal(forged.status, 401);
  const bad = await postSync(co.url, Buffer.from([0xff, 0xff]), {}, sign());
  assert.equal(bad.status, 400);

  const r = await fetch(`${co.url}/metrics`);
  assert.equal(r.status, 200);
  assert.equal(r.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  const text = await r.text();
  const { families, samples } = checkExposition(text);
  const v = (k) => {
    assert.ok(samples.has(k), `missing ${k}\n${text}`);
    return samples.get(k);
  };

  for (const f of ["tollgate_sync_requests_total", "tollgate_sync_duration_seconds", "tollgate_decisions_total",
    "tollgate_challenges_issued_total", "tollgate_challenges_solved_total", "tollgate_challenge_failures_total",
    "tollgate_sync_auth_failures_total", "tollgate_edges_active", "tollgate_edge_sync_lag_seconds",
    "tollgate_redis_errors_total", "tollgate_redis_up", "tollgate_policy_version", "tollgate_quota_overshoot_ratio"]) {
    assert.ok(families.has(f), `family ${f}`);
    assert.ok(families.get(f).help, `HELP of ${f}`);
  }
  assert.ok(v('tollgate_sync_requests_total{result="ok"}') >= 3);
  assert.ok(v('tollgate_sync_requests_total{result="unauthorized"}') >= 1);
  assert.ok(v('tollgate_sync_requests_total{result="bad_request"}') >= 1);
  assert.equal(v('tollgate_sync_requests_total{result="degraded"}'), 0);
  assert.ok(v('tollgate_sync_auth_failures_total{reason="bad_signature"}') >= 1);
  assert.ok(v("tollgate_challenges_issued_total{}") >= 1);
  assert.ok(v('tollgate_sync_duration_seconds_count{}') >= 5);
  // Decisions: seq 1 and seq 2 once (the retry adds nothing); the shadow
  // quota's three counts under "shadow"; the unknown quota nowhere.
  assert.equal(v('tollgate_decisions_total{outcome="allowed",quota="per-ip"}'), 18);
  assert.equal(v('tollgate_decisions_total{outcome="denied",quota="per-ip"}'), 1);
  assert.equal(v('tollgate_decisions_total{outcome="challenged",quota="per-ip"}'), 0);
  assert.equal(v('tollgate_decisions_total{outcome="shadow",quota="dry"}'), 3);
  assert.equal(v('tollgate_decisions_total{outcome="allowed",quota="dry"}'), 0);
  assert.ok(![...samples.keys()].some((k) => k.includes('quota="unknown"') || k.includes("10.0.0") || k.includes(edge)),
    "no keys, unknown quotas or edge ids in labels");
  assert.ok(v('tollgate_quota_overshoot_ratio{quota="per-ip"}') >= 1.5);
  assert.equal(v("tollgate_edges_active{}"), 1);
  assert.ok(v("tollgate_edge_sync_lag_seconds{}") >= 1.9);
  assert.equal(v("tollgate_redis_up{}"), 1);
  assert.equal(v("tollgate_policy_version{}"), 1);

  // Every metric the shipped Grafana dashboard queries exists.
  const dash = readFileSync(path.join(ROOT, "deploy/grafana/tollgate.json"), "utf8");
  const used = new Set(dash.match(/tollgate_[a-z_]+/g));
  assert.ok(used.size >= 10, `the dashboard queries ${used.size} metrics`);
  for (const name of used) {
    const family = name.replace(/_(bucket|sum|count)$/, "");
    assert.ok(families.has(name) || (families.get(family)?.type === "histogram"),
      `deploy/grafana/tollgate.json queries ${name}, which /metrics does not expose`);
  }

  // No auth needed, and HEAD works like the other GET routes.
  const head = await fetch(`${co.url}/metrics`, { method: "HEAD" });
  assert.equal(head.status, 200);
});

test("the strict checker refuses malformed expositions", () => {
  const ok = "# HELP a_total x\n# TYPE a_total counter\na_total 1\n";
  checkExposition(ok);
  const bad = [
    "a_total 1\n",                                                       // no TYPE
    "# TYPE a_total counter\n# TYPE a_total counter\na_total 1\n",       // two TYPEs
    "# TYPE a counter\na 1\n",                                            // counter not _total
    "# TYPE a_total counter\na_total{x=\"1\"} 1\na_total{x=\"1\"} 2\n",   // duplicate series
    "# TYPE a_total counter\na_total{x=\"\\q\"} 1\n",                     // bad escape
    "# TYPE a_total counter\na_total one\n",                              // value
    "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n", // not cumulative
    "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n", // +Inf != count
    "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",     // no +Inf
    "# TYPE a_total counter\na_total 1\n# TYPE b gauge\nb 1\na_total{y=\"2\"} 1\n", // not grouped
  ];
  for (const b of bad) assert.throws(() => checkExposition(b), undefined, JSON.stringify(b));
});
