// cluster.mjs — a throwaway Redis Cluster for the integration tests.
//
// Three masters and three replicas of redis-server (harness.mjs
// startRedis) on spare loopback ports, client and cluster-bus ports both
// asked of the kernel, no persistence, joined with `redis-cli --cluster
// create ... --cluster-replicas 1 --cluster-yes` and stopped by PID.
// Starting one takes a few seconds: start it once per test file (in
// `before`) and share it between the file's cases. The C twin for unit
// tests is tests/unit/test_redis_cluster.h.

import { mkdirSync } from "node:fs";
import path from "node:path";

import { freePort, redisCommand, removeDir, startProcess, startRedis, tempDir, waitFor } from "./harness.mjs";

export const NODE_TIMEOUT_MS = 2000;

// Parses CLUSTER SLOTS into [{ from, to, port }] (the master of each range).
function slotRanges(reply) {
  if (!Array.isArray(reply)) throw new Error(`CLUSTER SLOTS: ${reply}`);
  return reply.map(([from, to, master]) => ({ from, to, port: master[1] }));
}

// Starts the cluster and waits until every node says cluster_state:ok.
// Returns an object with: nodes [{ port, busPort, proc, kill(signal) }],
// seeds ("127.0.0.1:port" of every node), urls (redis://... of every
// node), command(port, ...args), masters(), replicaOf(masterPort),
// ownerOf(slot), keyslot(key), waitOk({ timeoutMs }), stop().
// ports: the nodes' client ports, chosen beforehand (a test that points
// tollgated at a cluster before it exists); spare ones by default.
export async function startCluster({ masters = 3, replicas = 1, nodeTimeoutMs = NODE_TIMEOUT_MS, ports = [] } = {}) {
  const dir = tempDir("tollgate-cluster-");
  const count = masters * (1 + replicas);
  const used = new Set(ports);
  const spare = async () => {
    for (;;) {
      const p = await freePort();
      if (!used.has(p)) { used.add(p); return p; }
    }
  };
  const nodes = [];
  const cluster = {
    nodes, dir,
    get seeds() { return nodes.map((n) => `127.0.0.1:${n.port}`); },
    get urls() { return nodes.map((n) => `redis://127.0.0.1:${n.port}`); },
    command: (port, ...args) => redisCommand(port, ...args),
    alive: () => nodes.filter((n) => n.proc.exitCode === null && n.proc.signalCode === null),

    async info(port, section) {
      const text = await redisCommand(port, ...section.split(" "));
      if (typeof text !== "string") throw new Error(`${section} on ${port}: ${text}`);
      return text;
    },
    async masters() {
      const out = [];
      for (const n of cluster.alive()) if ((await cluster.info(n.port, "INFO replication")).includes("role:master")) out.push(n.port);
      return out;
    },
    async replicaOf(masterPort) {
      for (const n of cluster.alive()) {
        if ((await cluster.info(n.port, "INFO replication")).includes(`master_port:${masterPort}\r`)) return n.port;
      }
      return null;
    },
    async slots(askPort = cluster.alive()[0].port) {
      return slotRanges(await redisCommand(askPort, "CLUSTER", "SLOTS"));
    },
    async ownerOf(slot) {
      const r = (await cluster.slots()).find((x) => slot >= x.from && slot <= x.to);
      return r ? r.port : null;
    },
    async keyslot(key) {
      return redisCommand(cluster.alive()[0].port, "CLUSTER", "KEYSLOT", key);
    },
    // Every live node: cluster_state:ok, all slots ok, replicas linked.
    async waitOk({ timeoutMs = 20000 } = {}) {
      await waitFor(async () => {
        for (const n of cluster.alive()) {
          const ci = await cluster.info(n.port, "CLUSTER INFO");
          if (!ci.includes("cluster_state:ok") || !ci.includes("cluster_slots_ok:16384")) return false;
          const rep = await cluster.info(n.port, "INFO replication");
          if (!rep.includes("role:master") && !rep.includes("master_link_status:up")) return false;
        }
        return true;
      }, { timeoutMs, stepMs: 100, what: "cluster_state:ok on every node" });
    },
    async stop() {
      await Promise.all(nodes.map((n) => n.stop()));
      removeDir(dir);
    },
  };
  try {
    for (let i = 0; i < count; i++) {
      const port = ports[i] ?? await spare();
      const busPort = await spare();
      const ndir = path.join(dir, String(port));
      mkdirSync(ndir);
      const r = await startRedis({
        port, dir: ndir,
        args: ["--cluster-enabled", "yes", "--cluster-port", String(busPort),
          "--cluster-config-file", "nodes.conf",
          "--cluster-node-timeout", String(nodeTimeoutMs)],
      });
      nodes.push({ ...r, busPort });
    }
    const create = startProcess("redis-cli", ["--cluster", "create", ...cluster.seeds,
      "--cluster-replicas", String(replicas), "--cluster-yes"]);
    const { code } = await create.exited;
    if (code !== 0) throw new Error(`redis-cli --cluster create exited ${code}:\n${create.logs}`);
    await cluster.waitOk();
  } catch (e) {
    await cluster.stop();
    throw e;
  }
  return cluster;
}
