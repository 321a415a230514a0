// Every decision kind of the edge in Node, against a real redis-server and
// tollgated (see decisions.mjs).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createTollgate } from "../../edge-module/js/tollgate.mjs";
import { TEST_KEYS, loadWasm, redisCommand, startRedis, startTollgated } from "./harness.mjs";
import { CLEARANCE_KEY, DECISIONS_POLICY, JWT_KEY, decisionsScenario } from "./decisions.mjs";

let redis, co;
before(async () => {
  redis = await startRedis();
  co = await startTollgated({ redisPort: redis.port, policy: DECISIONS_POLICY });
});
after(async () => {
  if (co) await co.stop();
  if (redis) await redis.stop();
});

test("Node: every decision kind, end to end", async () => {
  const edge = createTollgate(loadWasm(), {
    edgeId: "node-decisions", edgeKey: TEST_KEYS.edge, coordinator: co.url,
    jwt: { keys: [JWT_KEY] }, clearanceKeys: [CLEARANCE_KEY],
  });
  const { ip } = await decisionsScenario(edge, assert);
  // The shadow quota's would-be refusals reached the coordinator as counts.
  const t = Number(await redisCommand(redis.port, "HGET", `tg:{watch|${ip}}:c`, "t"));
  assert.equal(t, 9, "all nine shadow requests counted");
  // Claim-keyed counts are per subject.
  assert.ok(Number(await redisCommand(redis.port, "HGET", "tg:{user|alice}:c", "t")) > 6);
  assert.ok(Number(await redisCommand(redis.port, "HGET", "tg:{apikey|k-123}:c", "t")) >= 4);
});
