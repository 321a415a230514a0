// scenario.mjs — the walking skeleton's end-to-end story, shared by the Node
// test and the workerd test so both runtimes prove the same thing: one key
// hammered across several edges crosses the global limit, and after their
// next sync every edge answers Challenge for it while other keys stay
// Allowed. Needs only the Tollgate API and an assert module.

export const HOT = "203.0.113.7";
export const COLD = "198.51.100.23";

export const POLICY = {
  version: 1,
  sync_interval_ms: 1000,
  clearance_ttl_s: 300,
  expected_edges: 2,
  quotas: [{
    name: "per-ip", key: "ip", limit: 20, window_s: 60, path_prefix: "/api/",
    methods: [], action: "challenge", floor: 3, shadow: false, fail_open: true, deny_after: 0,
  }],
};

const req = (ip) => ({ method: "GET", path: "/api/items", host: "shop.example", ip });

// Rounds of `perRound` requests for HOT on every edge, each round closed by
// a sync of every edge, until every edge challenges HOT. Returns what the
// edges decided for HOT (every decision made, so the caller can compare
// them with the coordinator's global counts).
export async function hammerUntilChallenged(edges, assert, { perRound = 4, maxRounds = 40 } = {}) {
  const limit = POLICY.quotas[0].limit;
  const tally = { allow: 0, deny: 0, challenge: 0, rounds: 0 };
  for (const e of edges) {
    assert.equal(await e.sync(), true, `first sync failed: ${e.lastSyncError}`);
    assert.equal(e.policyVersion(), POLICY.version, "policy not installed by the first sync");
  }
  const first = edges[0].verify(req(HOT));
  tally[first.kind]++;
  assert.equal(first.kind, "allow");
  const names = first.headers.map(([k]) => k.toLowerCase());
  assert.ok(names.includes("ratelimit-policy") && names.includes("ratelimit"), `headers: ${names}`);

  for (;;) {
    for (const e of edges) {
      for (let i = 0; i < perRound; i++) tally[e.verify(req(HOT)).kind]++;
      assert.equal(e.verify(req(COLD)).kind, "allow", "a quiet key was not allowed");
    }
    for (const e of edges) assert.equal(await e.sync(), true, `sync failed: ${e.lastSyncError}`);
    tally.rounds++;
    const after = edges.map((e) => e.verify(req(HOT)));
    for (const d of after) tally[d.kind]++;
    if (after.every((d) => d.kind === "challenge")) {
      for (const d of after) {
        assert.equal(d.status, 429);
        assert.ok(d.token.length > 20, `challenge without a token: ${JSON.stringify(d)}`);
      }
      break;
    }
    assert.ok(tally.rounds < maxRounds, `no challenge after ${tally.rounds} rounds: ${JSON.stringify(tally)}`);
  }
  // The limit was reached (not challenged early) and the overshoot is
  // bounded by one lease unit per edge.
  assert.ok(tally.allow >= limit, `admitted ${tally.allow} < limit ${limit}`);
  assert.ok(tally.allow <= limit + edges.length, `admitted ${tally.allow}, limit ${limit}`);
  for (const e of edges) {
    const d = e.verify(req(COLD));
    assert.equal(d.kind, "allow", "other keys must stay allowed");
  }
  return tally;
}
