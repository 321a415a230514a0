// cluster.test.mjs — the Redis Cluster helper (cluster.mjs) that other
// integration tests build on: a real 3 + 3 cluster comes up with every
// slot served, a master killed with SIGKILL is replaced by its replica
// (the path failover tests rely on), and stop() ends every process.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { NODE_TIMEOUT_MS, startCluster } from "./cluster.mjs";

let cluster;

before(async () => { cluster = await startCluster(); });
after(async () => { await cluster?.stop(); });

test("three masters with a replica each serve every slot", async () => {
  const masters = await cluster.masters();
  assert.equal(masters.length, 3);
  const replicas = await Promise.all(masters.map((m) => cluster.replicaOf(m)));
  assert.equal(new Set(replicas.filter(Boolean)).size, 3);
  const ranges = (await cluster.slots()).sort((a, b) => a.from - b.from);
  let next = 0;
  for (const r of ranges) {
    assert.equal(r.from, next);
    assert.ok(masters.includes(r.port));
    next = r.to + 1;
  }
  assert.equal(next, 16384);
  // the cluster specification's CRC16 test vector, asked of the cluster
  assert.equal(await cluster.keyslot("123456789"), 0x31c3);
  assert.equal(cluster.seeds.length, 6);
});

test("SIGKILL of a master: its replica takes over its slots", async () => {
  const slot = await cluster.keyslot("victim");
  const master = await cluster.ownerOf(slot);
  const replica = await cluster.replicaOf(master);
  assert.ok(replica);
  const node = cluster.nodes.find((n) => n.port === master);
  await node.kill("SIGKILL");
  await cluster.waitOk({ timeoutMs: 10 * NODE_TIMEOUT_MS });
  assert.equal(await cluster.ownerOf(slot), replica);
  assert.ok((await cluster.masters()).includes(replica));
  assert.equal(cluster.alive().length, 5);
});

test("stop() ends every node it started", async () => {
  const procs = cluster.nodes.map((n) => n.proc);
  await cluster.stop();
  cluster = null;
  for (const p of procs) assert.ok(p.exitCode !== null || p.signalCode !== null);
});
