// Where the edge takes the client address from, in Node, against a real
// redis-server and tollgated (see clientip.mjs; the same scenario runs in
// workerd in workerd.test.mjs).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createTollgate, guard } from "../../edge-module/js/tollgate.mjs";
import { TEST_KEYS, loadWasm, startRedis, startTollgated } from "./harness.mjs";
import { CLIENTIP_QUOTA, clientIpScenario } from "./clientip.mjs";

let redis, co;
before(async () => {
  redis = await startRedis();
  co = await startTollgated({ redisPort: redis.port,
    policy: { version: 1, sync_interval_ms: 1000, expected_edges: 1, quotas: [CLIENTIP_QUOTA] } });
});
after(async () => {
  if (co) await co.stop();
  if (redis) await redis.stop();
});

test("Node: client address sources", async () => {
  const module = loadWasm();
  const base = { module, edgeId: "edge", edgeKey: TEST_KEYS.edge, coordinator: co.url };
  const { admitted } = await clientIpScenario({
    edge: (extra) => createTollgate(module, { ...base, ...extra }),
    guard: (extra) => guard(() => new Response("origin"), { ...base, ...extra }),
    assert,
  });
  console.log(`spoofing client admitted ${admitted} of 60`);
});
