// build/tollgatectl against a real tollgated and redis-server: the common
// operations, their output, and their exit codes.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { ADMIN_TOKENS, BUILD, startRedis, startTollgated, tempDir } from "./harness.mjs";

const ADMIN = ADMIN_TOKENS.find((t) => t.role === "admin").token;
const READ = ADMIN_TOKENS.find((t) => t.role === "read").token;
const POLICY = {
  version: 1, sync_interval_ms: 1000, clearance_ttl_s: 300, expected_edges: 2,
  quotas: [{ name: "per-ip", key: "ip", limit: 50, window_s: 60, path_prefix: "/api/", action: "challenge" }],
};

test("tollgatectl: get, apply, versions, quota and override edits, key inspect/reset, rollback, audit; exit codes", async (t) => {
  const redis = await startRedis();
  const co = await startTollgated({ redisPort: redis.port, policy: POLICY });
  t.after(async () => { await co.stop(); await redis.stop(); });
  const ctl = (args, { token = ADMIN, input } = {}) => {
    const r = spawnSync(path.join(BUILD, "tollgatectl"), args, {
      encoding: "utf8", input, timeout: 20000,
      env: { ...process.env, TOLLGATE_URL: co.url, TOLLGATE_TOKEN: token },
    });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };

  let r = ctl(["get"], { token: READ });
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /^policy version 1$/m);
  assert.match(r.out, /per-ip\s+ip\s+50\s+60s/);

  const file = path.join(tempDir("tollgate-ctl-"), "policy.json");
  writeFileSync(file, JSON.stringify({ ...POLICY, quotas: [{ ...POLICY.quotas[0], limit: 75 }] }));
  r = ctl(["apply", file]);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /policy version 2 applied/);

  r = ctl(["quota", "set", "login", "--limit", "5", "--action", "deny", "--prefix", "/login"]);
  assert.equal(r.code, 0, r.err);
  r = ctl(["override", "set", "per-ip", "10.0.0.1|x/y", "9"]);
  assert.equal(r.code, 0, r.err);
  r = ctl(["key", "inspect", "per-ip", "10.0.0.1|x/y", "--json"], { token: READ });
  assert.equal(r.code, 0, r.err);
  assert.equal(JSON.parse(r.out).limit, 9, "the override reached the key (percent-encoded path)");
  r = ctl(["key", "reset", "per-ip", "10.0.0.1|x/y"]);
  assert.equal(r.code, 0, r.err);

  r = ctl(["versions"], { token: READ });
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /current version 4/);
  r = ctl(["rollback", "1"]);
  assert.equal(r.code, 0, r.err);
  r = ctl(["get", "--json"], { token: READ });
  const now = JSON.parse(r.out);
  assert.equal(now.version, 5);
  assert.deepEqual(now.quotas.map((q) => [q.name, q.limit]), [["per-ip", 50]]);
  r = ctl(["audit", "--limit", "10"], { token: READ });
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /ops-admin/);
  assert.ok(!r.out.includes(ADMIN) && !r.err.includes(ADMIN), "the token is never printed");

  // Errors: the API's (exit 1, with its detail), usage (exit 2).
  r = ctl(["quota", "set", "per-ip", "--floor", "999"]);
  assert.equal(r.code, 1, r.err);
  assert.match(r.err, /400.*floor/);
  r = ctl(["quota", "set", "per-ip", "--limit", "0"]);
  assert.equal(r.code, 2, "caught before asking the server");
  r = ctl(["quota", "delete", "per-ip"], { token: READ });
  assert.equal(r.code, 1, r.err);
  assert.match(r.err, /403/);
  r = ctl(["apply", file, "--if-match", "1"]);
  assert.equal(r.code, 1, r.err);
  assert.match(r.err, /412/);
  r = ctl(["frobnicate"]);
  assert.equal(r.code, 2, r.err);
  r = ctl(["get"], { token: "wrong" });
  assert.equal(r.code, 1, r.err);
  assert.match(r.err, /401/);
});
