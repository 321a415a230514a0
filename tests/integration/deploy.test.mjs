// deploy.test.mjs — the production files in deploy/ checked by the tools
// that consume them:
//   deploy/systemd/tollgated.service   systemd-analyze verify and security
//   deploy/prometheus/alerts.yml       promtool check + test rules, and every
//                                      metric it names exposed by tollgated
//   deploy/redis/users.acl             a real redis-server loading it, with
//                                      tollgated as that ACL user doing
//                                      sync, admin, stats and challenge
// A missing tool is a loud skip (deploy/install-deps.sh installs both).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash, createHmac } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import https from "node:https";
import path from "node:path";
import { test } from "node:test";
import {
  ADMIN_TOKENS, BUILD, ROOT, TEST_KEYS, encodeSync, postSync, redisCommands, startRedis,
  startTollgated, syncStates, tempDir, waitFor,
} from "./harness.mjs";

function have(tool) {
  return spawnSync("sh", ["-c", `command -v ${tool}`]).status === 0;
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: "utf8", ...opts });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

// ---------------------------------------------------------------- systemd
// The unit as installed, but with ExecStart pointing at this build's
// binary: verify refuses a unit whose command does not exist.
function unitCopy(edit = (s) => s) {
  const dir = tempDir("tollgate-unit-");
  const text = readFileSync(path.join(ROOT, "deploy/systemd/tollgated.service"), "utf8")
    .replaceAll("/usr/local/bin/tollgated", path.join(BUILD, "tollgated"));
  const file = path.join(dir, "tollgated.service");
  writeFileSync(file, edit(text));
  return file;
}

const HARDENING = ["DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes",
  "CapabilityBoundingSet=\n", "PrivateTmp=yes", "SystemCallFilter=@system-service"];

test("systemd unit: systemd-analyze verify is clean, the hardening is in, exposure is low",
  { skip: !have("systemd-analyze") && "SKIPPED LOUDLY: systemd-analyze is not installed (deploy/install-deps.sh installs systemd)" },
  () => {
    const unit = unitCopy();
    const text = readFileSync(unit, "utf8");
    for (const h of HARDENING) assert.ok(text.includes(h), `the unit sets ${h.trim()}`);
    assert.match(text, /^LoadCredential=keys:/m, "the key file comes in through LoadCredential=");
    assert.doesNotMatch(text.split("\n").filter((l) => l.startsWith("ExecStart=")).join("\n"),
      /--keys|--admin-tokens|redis:\/\//, "no secret or path to one on the command line");

    const v = run("systemd-analyze", ["verify", unit]);
    assert.equal(v.code, 0, v.err);
    assert.equal(v.err.trim(), "", `systemd-analyze verify warned:\n${v.err}`);

    // The check can fail: a misspelt directive is reported.
    const bad = run("systemd-analyze", ["verify", unitCopy((s) => s.replace("ProtectSystem=strict", "ProtectSystm=strict"))]);
    assert.match(bad.err, /Unknown key 'ProtectSystm'/);

    const s = run("systemd-analyze", ["security", "--offline=yes", unit]);
    const m = /Overall exposure level for tollgated\.service: ([\d.]+)/.exec(s.out + s.err);
    assert.ok(m, s.out + s.err);
    assert.ok(Number(m[1]) <= 2.0, `exposure ${m[1]} (systemd-analyze security), want <= 2.0`);
  });

// ---------------------------------------------------------------- prometheus
const noPromtool = !have("promtool") && "SKIPPED LOUDLY: promtool is not installed (deploy/install-deps.sh installs Debian's prometheus)";

test("alert rules: promtool check config/rules and the rule unit tests pass", { skip: noPromtool }, () => {
  const c = run("promtool", ["check", "config", path.join(ROOT, "deploy/prometheus.yml")]);
  assert.equal(c.code, 0, c.out + c.err);
  assert.match(c.out + c.err, /SUCCESS: \d+ rules found/);
  const t = run("promtool", ["test", "rules", "alerts.test.yml"], { cwd: path.join(ROOT, "deploy/prometheus") });
  assert.equal(t.code, 0, t.out + t.err);
  assert.match(t.out, /SUCCESS/);

  // The tests can fail: a rule whose threshold moved no longer passes.
  const dir = tempDir("tollgate-rules-");
  writeFileSync(path.join(dir, "alerts.yml"), readFileSync(path.join(ROOT, "deploy/prometheus/alerts.yml"), "utf8")
    .replace("tollgate_edge_sync_lag_seconds > 10", "tollgate_edge_sync_lag_seconds > 100"));
  copyFileSync(path.join(ROOT, "deploy/prometheus/alerts.test.yml"), path.join(dir, "alerts.test.yml"));
  const bad = run("promtool", ["test", "rules", "alerts.test.yml"], { cwd: dir });
  assert.notEqual(bad.code, 0);
  assert.match(bad.out + bad.err, /TollgateEdgesStale/);
});

// Metric names (not label matchers, functions or keywords) in the rules.
function ruleMetrics() {
  const text = readFileSync(path.join(ROOT, "deploy/prometheus/alerts.yml"), "utf8");
  const names = new Set();
  for (const m of text.matchAll(/^\s*expr:\s*(>-\n(?:\s{10,}.*\n)+|.*\n)/gm)) {
    for (const n of m[1].matchAll(/\btollgate_[a-z_]+\b/g)) names.add(n[0]);
  }
  return names;
}

// GET over HTTPS trusting ca (a PEM file); resolves to the body.
function httpsText(url, ca) {
  return new Promise((resolve, reject) => {
    https.get(url, { ca: readFileSync(ca) }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d) => { body += d; });
      res.on("end", () => resolve(body));
    }).on("error", reject);
  });
}

test("every metric the alert rules use is one GET /metrics exposes", async (t) => {
  // With TLS on, as in production: the certificate's expiry is a metric.
  const dir = tempDir("tollgate-cert-");
  const cert = path.join(dir, "cert.pem"), key = path.join(dir, "key.pem");
  const o = run("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]);
  assert.equal(o.code, 0, o.err);
  const redis = await startRedis();
  const co = await startTollgated({ redisPort: redis.port, args: ["--tls-cert", cert, "--tls-key", key] });
  t.after(async () => { await co.stop(); await redis.stop(); });
  const text = await httpsText(`https://127.0.0.1:${co.port}/metrics`, cert);
  const exposed = new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]));
  const used = ruleMetrics();
  assert.ok(used.size >= 9, `${[...used]}`);
  for (const n of used) assert.ok(exposed.has(n), `alerts.yml uses ${n}, which /metrics does not expose`);
});

// ---------------------------------------------------------------- redis ACL
const ACL_PASSWORD = "tollgated-acl-test-password";
const OPS = { user: "ops", password: "ops-test-password" };
const READ = ADMIN_TOKENS.find((x) => x.role === "read").token;
const ADMIN = ADMIN_TOKENS.find((x) => x.role === "admin").token;

// deploy/redis/users.acl with the operator's step applied (the password
// hash replaced), plus an ops user the test reads ACL LOG with.
function aclFile(edit = (s) => s) {
  const dir = tempDir("tollgate-acl-");
  mkdirSync(dir, { recursive: true });
  const hash = createHash("sha256").update(ACL_PASSWORD).digest("hex");
  let text = readFileSync(path.join(ROOT, "deploy/redis/users.acl"), "utf8");
  assert.match(text, /^user tollgated on #[0-9a-f]{64} /m);
  text = text.replace(/^(user tollgated on )#[0-9a-f]{64}/m, `$1#${hash}`);
  text = edit(text) + `user ${OPS.user} on >${OPS.password} ~* &* +@all\n`;
  const file = path.join(dir, "users.acl");
  writeFileSync(file, text);
  return file;
}

const asOps = (port, ...cmd) => redisCommands(port, [["AUTH", OPS.user, OPS.password], cmd]).then((r) => r[1]);

const POLICY = {
  version: 1, sync_interval_ms: 1000, clearance_ttl_s: 300,
  quotas: [{ name: "per-ip", key: "ip", limit: 5, window_s: 60, action: "challenge", floor: 1 }],
};

async function api(co, method, p, { token = ADMIN, body, headers = {} } = {}) {
  const r = await fetch(`${co.url}${p}`, {
    method, body: body === undefined ? undefined : JSON.stringify(body),
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { "content-type": "application/json" }), ...headers },
  });
  return { status: r.status, text: await r.text() };
}

test("redis ACL: tollgated as the least-privilege user syncs, administers, reads stats, verifies a challenge",
  async (t) => {
    const redis = await startRedis({ args: ["--aclfile", aclFile()] });
    t.after(() => redis.stop());
    // The default user is off: nobody gets in without a password.
    const anon = (await redisCommands(redis.port, [["GET", "tg:{policy}:current"]]))[0];
    assert.ok(anon instanceof Error && /NOAUTH|NOPERM/.test(anon.message), String(anon));

    const co = await startTollgated({
      redisPort: redis.port, policy: POLICY,
      args: ["--redis", `redis://tollgated:${ACL_PASSWORD}@127.0.0.1:${redis.port}`],
    });
    t.after(() => co.stop());
    assert.equal((await fetch(`${co.url}/readyz`)).status, 200);

    // sync: over the limit, so the answer carries a challenge token.
    const s = await postSync(co.url, encodeSync({ edgeId: "e1/acl", seq: 1, policyVersion: 1,
      counts: [{ quota: "per-ip", key: "10.1.1.1", admitted: 9 }] }), {}, { edgeId: "e1/acl" });
    assert.equal(s.status, 200);
    const [st] = syncStates(s.bytes);
    assert.equal(st.action, 1, "challenged");
    assert.ok(st.token);

    // challenge: solved with the static verifier, and single use.
    const solve = createHmac("sha256", Buffer.from(TEST_KEYS.captcha, "hex")).update(st.token).digest("hex");
    const verify = () => fetch(`${co.url}/v1/challenge/verify`, {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ token: st.token, response: solve }),
    });
    assert.equal((await verify()).status, 200);
    assert.equal((await verify()).status, 409);

    // admin: every route family that touches Redis.
    let r = await api(co, "PUT", "/v1/quotas/login", { body: { key: "ip", limit: 3, window_s: 60, action: "deny", floor: 1 } });
    assert.equal(r.status, 200, r.text);
    r = await api(co, "GET", "/v1/policy/versions", { token: READ });
    assert.equal(r.status, 200, r.text);
    r = await api(co, "GET", "/v1/policy/versions/1", { token: READ });
    assert.equal(r.status, 200, r.text);
    r = await api(co, "POST", "/v1/policy/rollback", { body: { to: 1 } });
    assert.equal(r.status, 200, r.text);
    r = await api(co, "GET", `/v1/keys/per-ip/${encodeURIComponent("10.1.1.1")}`, { token: READ });
    assert.equal(r.status, 200, r.text);
    assert.match(r.text, /"count":\s*9/);
    r = await api(co, "DELETE", `/v1/keys/per-ip/${encodeURIComponent("10.1.1.1")}`);
    assert.equal(r.status, 200, r.text);
    r = await api(co, "GET", "/v1/audit?limit=10", { token: READ });
    assert.equal(r.status, 200, r.text);

    // stats: merged through Redis (the flush thread ran as the ACL user).
    const stats = await waitFor(async () => {
      const x = await api(co, "GET", "/v1/stats", { token: READ });
      const j = JSON.parse(x.text);
      return x.status === 200 && j.merged === true && j.challenges.length > 0 && j;
    }, { what: "merged /v1/stats with the challenge" });
    assert.ok(stats.edges.some((e) => e.id === "e1/acl"), JSON.stringify(stats.edges));

    // Nothing tollgated did was refused, and it can do nothing else.
    assert.deepEqual(await asOps(redis.port, "ACL", "LOG"), [], "ACL LOG is empty");
    const m = await (await fetch(`${co.url}/metrics`)).text();
    assert.match(m, /^tollgate_sync_requests_total\{result="degraded"\} 0$/m);
    assert.match(m, /^tollgate_redis_up 1$/m);
    const as = (cmd) => redisCommands(redis.port, [["AUTH", "tollgated", ACL_PASSWORD], cmd]).then((x) => x[1]);
    for (const cmd of [["FLUSHALL"], ["KEYS", "*"], ["CONFIG", "GET", "*"], ["GET", "other:key"], ["SCRIPT", "FLUSH"]]) {
      const e = await as(cmd);
      assert.ok(e instanceof Error && /NOPERM/.test(e.message), `${cmd.join(" ")}: ${e}`);
    }
  });

test("redis ACL: without EVALSHA the coordinator shows degraded syncs and ACL LOG names the command",
  async (t) => {
    const redis = await startRedis({ args: ["--aclfile", aclFile((s) => s.replace(" +evalsha", ""))] });
    t.after(() => redis.stop());
    const co = await startTollgated({
      redisPort: redis.port, policy: POLICY,
      args: ["--redis", `redis://tollgated:${ACL_PASSWORD}@127.0.0.1:${redis.port}`],
    });
    t.after(() => co.stop());
    const s = await postSync(co.url, encodeSync({ edgeId: "e1/acl", seq: 1, policyVersion: 1,
      counts: [{ quota: "per-ip", key: "10.1.1.2", admitted: 1 }] }), {}, { edgeId: "e1/acl" });
    assert.equal(s.status, 200);
    const m = await (await fetch(`${co.url}/metrics`)).text();
    assert.match(m, /^tollgate_sync_requests_total\{result="degraded"\} 1$/m);
    const log = await asOps(redis.port, "ACL", "LOG");
    assert.ok(log.some((e) => e.includes("evalsha")), JSON.stringify(log));
  });
