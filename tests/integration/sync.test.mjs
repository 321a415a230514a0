// The skeleton end to end in Node: a real redis-server, a real tollgated and
// two edge instances of build/tollgate.wasm.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createTollgate } from "../../edge-module/js/tollgate.mjs";
import { TEST_KEYS, loadWasm, redisCommand, startRedis, startTollgated } from "./harness.mjs";
import { COLD, HOT, POLICY, hammerUntilChallenged } from "./scenario.mjs";

let redis, co, wasm;
before(async () => {
  redis = await startRedis();
  co = await startTollgated({ redisPort: redis.port, policy: POLICY });
  wasm = loadWasm();
});
after(async () => {
  if (co) assert.deepEqual(await co.stop(), { code: 0, signal: null }, "tollgated must exit 0 on SIGTERM");
  if (redis) await redis.stop();
});

test("a key hammered across two edges is challenged by both; others stay allowed", async () => {
  const edges = ["edge-a", "edge-b"].map((edgeId) =>
    createTollgate(wasm, { edgeId, edgeKey: TEST_KEYS.edge, coordinator: co.url }));
  const tally = await hammerUntilChallenged(edges, assert);

  // Every decision the edges made reached Redis exactly once.
  const h = await redisCommand(redis.port, "HGETALL", `tg:{per-ip|${HOT}}:c`);
  const f = Object.fromEntries(h.reduce((acc, v, i) => (i % 2 ? acc[acc.length - 1].push(v) : acc.push([v]), acc), []));
  const n = (k) => Number(f[k] || 0);
  assert.equal(n("a") + n("pa"), tally.allow, `admitted in Redis ${JSON.stringify(f)} vs edges ${JSON.stringify(tally)}`);
  // The final decisions (made after the last sync) are still unsent.
  const unsent = edges.length;
  assert.equal(n("t") + n("pt") + unsent, tally.allow + tally.deny + tally.challenge,
    `attempts in Redis ${JSON.stringify(f)} vs edges ${JSON.stringify(tally)}`);

  // The quiet key is known globally and far from its limit.
  const cold = await redisCommand(redis.port, "HGET", `tg:{per-ip|${COLD}}:c`, "a");
  assert.ok(Number(cold) > 0 && Number(cold) < POLICY.quotas[0].limit, `cold key count ${cold}`);
});
