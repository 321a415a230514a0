// seq, counts and sent_at_ms end to end (issue 14, item 4), against a real
// redis-server and a real tollgated: seqs are exact up to 2^53 - 1 and
// refused above with a 400 naming the field (2^53 + 1 would round onto
// 2^53, 2^64 - 1 was stored negative); counts at their cap are exact; the
// same seq with other counts is a 409 with the reason, not a silent
// retry; and an edge clock decades off is clamped for the lag gauge and
// counted.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { encodeSync, postSync, protoFields, redisCommand, startRedis, startTollgated } from "./harness.mjs";

const POLICY = {
  version: 1, sync_interval_ms: 1000, clearance_ttl_s: 300, expected_edges: 1,
  quotas: [{ name: "per-ip", key: "ip", limit: 1e12, window_s: 3600, action: "deny" }],
};

let redis, co;
before(async () => {
  redis = await startRedis();
  co = await startTollgated({ redisPort: redis.port, policy: POLICY });
});
after(async () => {
  if (co) await co.stop();
  if (redis) await redis.stop();
});

const count = (key, n = 1) => ({ quota: "per-ip", key, admitted: n });
const sync = (edgeId, seq, counts, extra = {}) =>
  postSync(co.url, encodeSync({ edgeId, seq, counts, ...extra }), {}, { edgeId });
const problem = (r) => JSON.parse(new TextDecoder().decode(r.bytes));
const ackedSeq = (r) => BigInt(protoFields(r.bytes)[1]?.[0] ?? 0n);
const admitted = async (key) => redisCommand(redis.port, "HGET", `tg:{per-ip|${key}}:c`, "a");

async function metrics() {
  return (await (await fetch(`${co.url}/metrics`)).text()).split("\n");
}
const metric = (lines, name) => Number(lines.find((l) => l.startsWith(`${name} `))?.slice(name.length + 1));

test("seq 2^53 - 1 is exact; 2^53 and 2^53 + 1 are refused with 400 naming seq, nothing counted", async () => {
  const top = 2n ** 53n - 1n;
  let r = await sync("e1", top, [count("s1")]);
  assert.equal(r.status, 200);
  assert.equal(ackedSeq(r), top);
  r = await sync("e1", top, [count("s1")]);            // a resend: answered, counted once
  assert.equal(r.status, 200);
  assert.equal(await admitted("s1"), "1");
  for (const seq of [2n ** 53n, 2n ** 53n + 1n]) {
    r = await sync("e2", seq, [count("s2")]);
    assert.equal(r.status, 400);
    assert.match(problem(r).detail, /^seq: must be 1\.\.9007199254740991/);
  }
  assert.equal(await admitted("s2"), null, "a refused batch counts nothing");
});

test("seq 2^64 - 1, sent and resent: 400 both times, never stored or counted", async () => {
  const max = 2n ** 64n - 1n;
  for (let i = 0; i < 2; i++) {
    const r = await sync("e1", max, [count("s3")]);
    assert.equal(r.status, 400);
    assert.match(problem(r).detail, /^seq:/);
  }
  assert.equal(await admitted("s3"), null);
  const rec = await redisCommand(redis.port, "HGET", "tg:{per-ip|s1}:c", "e:e1");
  assert.match(rec, /^9007199254740991 /, "the stored seq is the exact one, not a negative number");
});

test("counts at their cap are exact end to end; one over is refused naming the count", async () => {
  const cap = 10n ** 12n;
  let r = await sync("e1", 1, [count("big", cap), count("big", cap)]);   // merged: 2e12
  assert.equal(r.status, 200);
  assert.equal(await admitted("big"), "2000000000000");
  r = await sync("e1", 2, [count("big2", cap + 1n)]);
  assert.equal(r.status, 400);
  assert.match(problem(r).detail, /^counts\[0\]: a count is over 1000000000000/);
});

test("the same seq with other counts: 409 with the reason, the first counts kept", async () => {
  let r = await sync("edge-a", 7, [count("m1", 5)]);
  assert.equal(r.status, 200);
  r = await sync("edge-a", 7, [count("m1", 6)]);
  assert.equal(r.status, 409);
  assert.match(problem(r).detail, /seq 7 was already applied for edge edge-a with other counts/);
  assert.equal(await admitted("m1"), "5");
  r = await sync("edge-a", 7, [count("m1", 5)]);               // the true resend
  assert.equal(r.status, 200);
  assert.equal(ackedSeq(r), 7n);
  assert.equal(await admitted("m1"), "5");
});

test("sent_at_ms = 1: the lag gauge is clamped to 300 s and the sync counted", async () => {
  const before = metric(await metrics(), "tollgate_sync_sent_at_clamped_total");
  const r = await sync("edge-b", 1, [count("lag")], { sentAtMs: 1 });
  assert.equal(r.status, 200);
  const m = await metrics();
  assert.equal(metric(m, "tollgate_sync_sent_at_clamped_total"), before + 1);
  const lag = metric(m, "tollgate_edge_sync_lag_seconds");
  assert.ok(lag >= 299 && lag <= 300, `lag ${lag} s, not 56 years`);
});
