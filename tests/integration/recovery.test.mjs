// Edges recover by themselves (issue 14, item 5), against a real
// redis-server, a real tollgated and build/tollgate.wasm in Node: an edge
// restarted under a fixed id continues past the seq the coordinator
// stored for it, with exact counts; oversized request features get a
// decision, never an exception; every kind of sync failure reaches the
// host's log once per interval.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createTollgate } from "../../edge-module/js/tollgate.mjs";
import { TEST_KEYS, freePort, loadWasm, redisCommand, startRedis, startTollgated } from "./harness.mjs";

const QUOTA = {
  key: "ip", limit: 1000, window_s: 60, path_prefix: "/api/",
  methods: [], action: "challenge", floor: 100, shadow: false, fail_open: true, deny_after: 0,
};
const POLICY = {
  version: 1, sync_interval_ms: 1000, clearance_ttl_s: 300, expected_edges: 1,
  quotas: [
    { ...QUOTA, name: "per-ip" },
    { ...QUOTA, name: "per-api-key", key: "header:x-api-key" },
  ],
};

let redis, co, wasm;
before(async () => {
  redis = await startRedis();
  co = await startTollgated({ redisPort: redis.port, policy: POLICY });
  wasm = loadWasm();
});
after(async () => {
  if (co) await co.stop();
  if (redis) await redis.stop();
});

const req = (ip, extra = {}) => ({ method: "GET", path: "/api/items", host: "shop.example", ip, ...extra });

async function counted(quota, key) {
  const h = await redisCommand(redis.port, "HGETALL", `tg:{${quota}|${key}}:c`);
  const f = {};
  for (let i = 0; i + 1 < h.length; i += 2) f[h[i]] = Number(h[i + 1]);
  return (f.t || 0) + (f.pt || 0);
}

test("an edge restarted under a fixed id continues past the stored seq: no 409 loop, exact counts", async () => {
  const lines = [];
  const opts = { edgeId: "edge-a/fixed", edgeKey: TEST_KEYS.edge, coordinator: co.url, log: (l) => lines.push(l) };
  const ipA = "192.0.2.10", ipB = "192.0.2.11";
  const first = createTollgate(wasm, opts);
  assert.equal(await first.sync(), true, "the policy arrives");
  let sent = 0;
  for (let round = 0; round < 5; round++) {
    for (let i = 0; i < 3; i++, sent++) first.verify(req(ipA));
    assert.equal(await first.sync(), true, String(first.lastSyncError));
  }
  assert.equal(await counted("per-ip", ipA), sent);

  // The restart: a new instance, same id, its seq starting again at 1.
  const second = createTollgate(wasm, opts);
  assert.equal(await second.sync(), true, "the policy arrives (no counts, so no conflict yet)");
  for (let i = 0; i < 4; i++) second.verify(req(ipA));
  for (let i = 0; i < 2; i++) second.verify(req(ipB));
  assert.equal(await second.sync(), true, `the first sync after the restart succeeds: ${second.lastSyncError}`);
  assert.equal(await counted("per-ip", ipA), sent + 4, "counted once, nothing lost");
  assert.equal(await counted("per-ip", ipB), 2);
  assert.match(co.proc.logs, /msg=sync_conflict edge="?edge-a\/fixed"? seq=2 applied_seq=6/, "the coordinator did answer 409 first");
  second.verify(req(ipA));
  assert.equal(await second.sync(), true, String(second.lastSyncError));
  assert.equal(await counted("per-ip", ipA), sent + 5, "and it goes on from there");
  assert.deepEqual(lines, [], "a recovered 409 is no failure to log");
});

test("oversized request features get a decision, never an exception", async () => {
  const edge = createTollgate(wasm, { edgeId: "edge-b", edgeKey: TEST_KEYS.edge, coordinator: co.url,
    clientIp: "cf-connecting-ip" });
  assert.equal(await edge.sync(), true, String(edge.lastSyncError));
  const big = "x".repeat(100 * 1024);
  const ip = "192.0.2.20";

  // A 100 KiB Cookie: only the clearance cookie matters; the request counts.
  let d = edge.verify(req(ip, { cookie: `a=${big}; b=1` }));
  assert.equal(d.kind, "allow");
  // A 100 KiB keyed header: its quota is skipped as for an absent header;
  // the ip quota still counts.
  d = edge.verify(req(ip, { headers: { "x-api-key": big } }));
  assert.equal(d.kind, "allow");
  // A 100 KiB bearer token: over the largest token the edge reads, invalid.
  d = edge.verify(req(ip, { authorization: `Bearer ${big}` }));
  assert.equal(d.kind, "deny");
  assert.equal(d.reason, "invalid_token");
  assert.equal(d.status, 401);
  // A 100 KiB path cannot be keyed at all: 400.
  d = edge.verify(req(ip, { path: `/api/${big}` }));
  assert.deepEqual([d.kind, d.reason, d.status], ["deny", "bad_request", 400]);
  // Through the Fetch API, as guard() calls it: a real 100 KiB header.
  d = edge.verifyRequest(new Request("http://shop.example/api/items", {
    headers: { "x-api-key": big, cookie: `junk=${big}`, "cf-connecting-ip": ip },
  }));
  assert.equal(d.kind, "allow");

  assert.equal(await edge.sync(), true, String(edge.lastSyncError));
  assert.equal(await counted("per-ip", ip), 4, "the cookie, header, token and Fetch requests were counted");
  assert.equal(await counted("per-api-key", big), 0);
});

test("sync failures reach the log once per kind and interval, and the recovery once", async () => {
  const lines = [];
  let now = 1_800_000_000_000;
  const deadPort = await freePort();
  const opts = { edgeId: "edge-b", edgeKey: TEST_KEYS.edge, now: () => now, log: (l) => lines.push(l), logIntervalMs: 60000 };
  const down = createTollgate(wasm, { ...opts, coordinator: `http://127.0.0.1:${deadPort}` });
  for (let i = 0; i < 3; i++) {
    assert.equal(await down.sync(), false);
    now += 1000;
  }
  assert.equal(lines.length, 1, lines.join("\n"));
  assert.match(lines[0], /sync failed kind=network edge=edge-b\//);
  now += 60000;
  assert.equal(await down.sync(), false);
  assert.equal(lines.length, 2, lines.join("\n"));
  assert.match(lines[1], /kind=network .*\(2 more since the last line\)/);

  // The coordinator comes back (the same edge now reaches it): one line.
  lines.length = 0;
  let reachable = false;
  const edge = createTollgate(wasm, {
    ...opts, now: () => Date.now(), coordinator: co.url,
    fetch: (url, init) => fetch(reachable ? url : `http://127.0.0.1:${deadPort}/v1/sync`, init),
  });
  edge.verify(req("192.0.2.31"));
  assert.equal(await edge.sync(), false);
  reachable = true;
  assert.equal(await edge.sync(), true, String(edge.lastSyncError));
  assert.equal(await edge.sync(), true);
  assert.equal(lines.length, 2, lines.join("\n"));
  assert.match(lines[0], /kind=network/);
  assert.match(lines[1], /sync ok again after network failures/);

  // A wrong key: 401, another kind, logged once.
  lines.length = 0;
  const wrong = createTollgate(wasm, { ...opts, now: () => Date.now(), edgeKey: "00".repeat(32), coordinator: co.url });
  wrong.verify(req("192.0.2.30"));
  assert.equal(await wrong.sync(), false);
  assert.equal(await wrong.sync(), false);
  assert.equal(lines.length, 1, lines.join("\n"));
  assert.match(lines[0], /sync failed kind=http_401 .*coordinator answered 401/);
});
