// tollgated at its boundaries: bad input answers with a clear status and the
// server keeps serving; Redis absent at start, then present; SIGTERM.
import assert from "node:assert/strict";
import { test } from "node:test";
import { freePort, postSync, protoFields, startRedis, startTollgated, waitFor } from "./harness.mjs";
import { POLICY } from "./scenario.mjs";

// SyncRequest{edge_id:"e1", seq:1, counts:[{quota:"per-ip", key:"10.0.0.1", admitted:1}]}
const count = Buffer.concat([Buffer.from([0x0a, 6]), Buffer.from("per-ip"),
  Buffer.from([0x12, 8]), Buffer.from("10.0.0.1"), Buffer.from([0x18, 1])]);
const SYNC = Buffer.concat([Buffer.from([0x0a, 2]), Buffer.from("e1"), Buffer.from([0x10, 1]),
  Buffer.from([0x32, count.length]), count]);

async function healthy(url) {
  const r = await fetch(`${url}/healthz`);
  await r.text();
  return r.status === 200;
}

test("bad input gets a clear status and the coordinator keeps serving", async (t) => {
  const redis = await startRedis();
  const co = await startTollgated({ redisPort: redis.port, policy: POLICY, args: ["--max-body", "4096"] });
  t.after(async () => { await co.stop(); await redis.stop(); });

  const ok = await postSync(co.url, SYNC);
  assert.equal(ok.status, 200);
  assert.equal(ok.headers.get("content-type"), "application/x-protobuf");
  assert.equal(protoFields(ok.bytes)[1][0], 1n, "acked_seq");

  const cases = [
    ["garbage protobuf", () => postSync(co.url, Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff])), 400],
    ["truncated protobuf", () => postSync(co.url, SYNC.subarray(0, SYNC.length - 3)), 400],
    ["length past the end", () => postSync(co.url, Buffer.from([0x0a, 0x7f, 0x41])), 400],
    ["oversized body", () => postSync(co.url, Buffer.alloc(5000, 0x41)), 413],
    ["wrong content type", () => postSync(co.url, SYNC, { "content-type": "application/json" }), 415],
  ];
  for (const [what, send, status] of cases) {
    const r = await send();
    assert.equal(r.status, status, what);
    assert.equal(r.headers.get("content-type"), "application/problem+json", what);
    const p = JSON.parse(new TextDecoder().decode(r.bytes));
    assert.equal(p.status, status, what);
    assert.ok(p.title && p.detail, `${what}: ${JSON.stringify(p)}`);
    assert.ok(await healthy(co.url), `still serving after ${what}`);
  }

  let r = await fetch(`${co.url}/no/such/path`);
  assert.equal(r.status, 404);
  await r.text();
  r = await fetch(`${co.url}/v1/sync`);
  assert.equal(r.status, 405);
  assert.match(r.headers.get("allow"), /\bPOST\b/);
  await r.text();
  r = await fetch(`${co.url}/healthz`, { method: "POST" });
  assert.equal(r.status, 405);
  assert.match(r.headers.get("allow"), /\bGET\b/);
  await r.text();
  assert.ok(await healthy(co.url));
  r = await fetch(`${co.url}/readyz`);
  assert.equal(r.status, 200);
  await r.text();
});

test("Redis unreachable at start: degraded, /readyz 503, recovers by itself", async (t) => {
  const port = await freePort();
  const co = await startTollgated({ redisPort: port, policy: POLICY });
  let redis;
  t.after(async () => { await co.stop(); if (redis) await redis.stop(); });

  let r = await fetch(`${co.url}/readyz`);
  assert.equal(r.status, 503);
  await r.text();
  assert.ok(await healthy(co.url), "/healthz is about the process, not Redis");

  const down = await postSync(co.url, SYNC);
  assert.equal(down.status, 200);
  const f = protoFields(down.bytes);
  assert.equal(f[4]?.[0], 1n, "degraded flag set");
  assert.equal(f[1], undefined, "nothing acknowledged while Redis is down");

  redis = await startRedis({ port });
  await waitFor(async () => (await fetch(`${co.url}/readyz`)).status === 200,
    { timeoutMs: 15000, what: "/readyz to turn 200 once Redis is up" });
  const up = protoFields((await postSync(co.url, SYNC)).bytes);
  assert.equal(up[4], undefined, "not degraded once Redis is back");
  assert.equal(up[1][0], 1n, "the batch is acknowledged");
});

test("SIGTERM drains and exits 0", async () => {
  const redis = await startRedis();
  const co = await startTollgated({ redisPort: redis.port, policy: POLICY });
  assert.ok(await healthy(co.url));
  assert.deepEqual(await co.stop(), { code: 0, signal: null });
  assert.match(co.proc.logs, /level=info.*msg=/);
  await redis.stop();
});
