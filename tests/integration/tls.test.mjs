// tls.test.mjs — tollgated serving HTTPS (--tls-cert/--tls-key,
// coordinator/tls.c) with a CA and certificates made by openssl at test
// time: TLS 1.2+ only, plain HTTP answered 400, an edge (the Node glue, in
// its own process trusting the CA the way a deployment does, through
// NODE_EXTRA_CA_CERTS) syncing over it, and SIGHUP swapping the
// certificate while the listener and an open connection stay up.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import https from "node:https";
import path from "node:path";
import { test } from "node:test";
import tls from "node:tls";
import {
  BUILD, ROOT, TEST_KEYS, freePort, startProcess, startRedis, startTollgated, stopProcess, tempDir, waitFor,
  writeKeys,
} from "./harness.mjs";

function openssl(args, cwd) {
  const r = spawnSync("openssl", args, { cwd, encoding: "utf8" });
  assert.equal(r.status, 0, `openssl ${args.join(" ")}: ${r.stderr}`);
}

// A test CA and, per call of leaf(), a P-256 server certificate for
// 127.0.0.1 signed by it; files in dir.
function makePki() {
  const dir = tempDir("tollgate-pki-");
  openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=tollgate test CA"], dir);
  writeFileSync(path.join(dir, "ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:coordinator.internal\n" +
    "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n");
  let n = 0;
  const leaf = (cn) => {
    n++;
    openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
      "-keyout", `leaf${n}.key`, "-out", `leaf${n}.csr`, "-subj", `/CN=${cn}`], dir);
    openssl(["x509", "-req", "-in", `leaf${n}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
      "-days", "2", "-extfile", "ext", "-out", `leaf${n}.pem`], dir);
    return { cert: path.join(dir, `leaf${n}.pem`), key: path.join(dir, `leaf${n}.key`) };
  };
  return { dir, ca: path.join(dir, "ca.pem"), leaf };
}

async function tlsStack(t) {
  const pki = makePki();
  const first = pki.leaf("tollgate coordinator one");
  // The files tollgated reads; a deployment replaces them and sends SIGHUP.
  const cert = path.join(pki.dir, "tollgated.pem"), key = path.join(pki.dir, "tollgated.key");
  copyFileSync(first.cert, cert);
  copyFileSync(first.key, key);
  const redis = await startRedis();
  const co = await startTollgated({ redisPort: redis.port, args: ["--tls-cert", cert, "--tls-key", key] });
  t.after(async () => { await co.stop(); await redis.stop(); });
  co.https = `https://127.0.0.1:${co.port}`;
  return { pki, cert, key, co, redis, first };
}

// GET over HTTPS trusting the test CA; resolves { status, body, socket
// facts }.
function httpsGet(url, { ca, agent } = {}) {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ca: readFileSync(ca), agent }, (res) => {
      const protocol = res.socket.getProtocol();
      const fingerprint = res.socket.getPeerCertificate().fingerprint256;
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d) => { body += d; });
      res.on("end", () => resolve({ status: res.statusCode, body, reused: req.reusedSocket, protocol, fingerprint }));
    });
    req.on("error", reject);
  });
}

const fingerprintOf = (file) => new X509Certificate(readFileSync(file)).fingerprint256;

test("HTTPS: TLS 1.2+ with the configured certificate; plain HTTP gets a clear 400", async (t) => {
  const { pki, co, first } = await tlsStack(t);
  assert.match(co.proc.logs, /msg=listening addr=127\.0\.0\.1:\d+ scheme=https/);
  assert.match(co.proc.logs, /msg=tls_loaded cert_chain=1 not_after=\d{4}-/);

  const r = await httpsGet(`${co.https}/healthz`, { ca: pki.ca });
  assert.equal(r.status, 200);
  assert.equal(r.body, "ok\n");
  assert.ok(["TLSv1.2", "TLSv1.3"].includes(r.protocol), r.protocol);
  assert.equal(r.fingerprint, fingerprintOf(first.cert));
  const m = await httpsGet(`${co.https}/metrics`, { ca: pki.ca });
  const notAfter = Date.parse(new X509Certificate(readFileSync(first.cert)).validTo) / 1000;
  assert.match(m.body, new RegExp(`^tollgate_tls_certificate_expiry_timestamp_seconds ${notAfter}$`, "m"));

  // Plain HTTP on the same port: an answer a person can act on.
  const plain = await fetch(`${co.url}/healthz`);
  assert.equal(plain.status, 400);
  assert.match(await plain.text(), /This port speaks HTTPS \(TLS 1\.2 or later\): use an https:\/\/ URL/);
  await waitFor(() => co.proc.logs.includes("msg=tls_plain_http"), { what: "the plain-HTTP log line" });

  // TLS 1.1 is refused by the server; the same client allowed 1.2 gets in.
  const hello = (maxVersion) => new Promise((resolve) => {
    const s = tls.connect({ host: "127.0.0.1", port: co.port, ca: readFileSync(pki.ca), minVersion: "TLSv1",
      maxVersion, ciphers: "DEFAULT@SECLEVEL=0" }, () => { const v = s.getProtocol(); s.end(); resolve(v); });
    s.on("error", (e) => resolve(e));
  });
  const old = await hello("TLSv1.1");
  assert.ok(old instanceof Error, `TLS 1.1 handshake: ${old}`);
  assert.equal(await hello("TLSv1.2"), "TLSv1.2");
});

// The glue in a process of its own, as an edge runs: trusts the test CA
// only through NODE_EXTRA_CA_CERTS, syncs with https://, prints the result.
const EDGE = `
import { readFileSync } from "node:fs";
import { Tollgate } from ${JSON.stringify(path.join(ROOT, "edge-module/js/tollgate.mjs"))};
const tg = new Tollgate(new WebAssembly.Module(readFileSync(${JSON.stringify(path.join(BUILD, "tollgate.wasm"))})), {
  edgeId: "edge", edgeKey: process.env.EDGE_KEY, coordinator: process.env.COORDINATOR });
tg.verify({ method: "GET", path: "/api/x", host: "example.com", ip: "203.0.113.9" });
const ok = await tg.sync();
console.log(JSON.stringify({ ok, error: tg.lastSyncError ? String(tg.lastSyncError.cause ?? tg.lastSyncError) : null,
  policyVersion: tg.policyVersion() }));
`;

async function runEdge(env) {
  const p = startProcess(process.execPath, ["--input-type=module", "-e", EDGE], { env: { ...process.env, ...env } });
  const { code } = await p.exited;
  assert.equal(code, 0, p.logs);
  return JSON.parse(p.logs.trim().split("\n").at(-1));
}

test("HTTPS: an edge (Node glue) syncs over it, and only when it trusts the CA", async (t) => {
  const { pki, co } = await tlsStack(t);
  const good = await runEdge({ COORDINATOR: co.https, EDGE_KEY: TEST_KEYS.edge, NODE_EXTRA_CA_CERTS: pki.ca });
  assert.deepEqual(good, { ok: true, error: null, policyVersion: 1 });
  await waitFor(() => /msg=sync edge=edge\/[0-9a-f]{8} seq=1 keys=\d+ dur_ms=[\d.]+ redis=ok/.test(co.proc.logs), { what: `the edge's sync in\n${co.proc.logs}` });

  const untrusted = await runEdge({ COORDINATOR: co.https, EDGE_KEY: TEST_KEYS.edge, NODE_EXTRA_CA_CERTS: "" });
  assert.equal(untrusted.ok, false);
  assert.match(untrusted.error, /self-signed|unable to verify|certificate/i);
  assert.equal(untrusted.policyVersion, 0);
});

test("HTTPS: workerd with deploy/workerd/production.capnp syncs through its TLS outbound", async (t) => {
  const { pki, co } = await tlsStack(t);
  // The deploy tree as the config's relative embeds expect it.
  const top = tempDir("tollgate-wd-tls-");
  for (const d of ["deploy/workerd", "edge-module/js", "build"]) mkdirSync(path.join(top, d), { recursive: true });
  for (const f of ["deploy/workerd/worker.js", "deploy/workerd/origin.js", "edge-module/js/tollgate.mjs",
    "edge-module/js/challenge.mjs"]) {
    copyFileSync(path.join(ROOT, f), path.join(top, f));
  }
  copyFileSync(path.join(BUILD, "tollgate.wasm"), path.join(top, "build/tollgate.wasm"));
  copyFileSync(pki.ca, path.join(top, "deploy/workerd/coordinator-ca.pem"));
  const edgePort = await freePort();
  const conf = readFileSync(path.join(ROOT, "deploy/workerd/production.capnp"), "utf8");
  assert.ok(conf.includes('address = "10.0.0.10:8443"') && conf.includes('address = "*:8080"'));
  writeFileSync(path.join(top, "deploy/workerd/production.capnp"), conf
    .replace('address = "10.0.0.10:8443"', `address = "127.0.0.1:${co.port}"`)
    .replace('address = "*:8080"', `address = "127.0.0.1:${edgePort}"`));
  const wd = startProcess(path.join(ROOT, "node_modules/.bin/workerd"),
    ["serve", path.join(top, "deploy/workerd/production.capnp")],
    { env: { ...process.env, TOLLGATE_EDGE_KEY: TEST_KEYS.edge, TOLLGATE_CLEARANCE_KEY: TEST_KEYS.clearance[0].secret } });
  t.after(() => stopProcess(wd));
  // Requests make the edge sync in the background; the coordinator, which
  // speaks only HTTPS, logs each one.
  await waitFor(async () => {
    const r = await fetch(`http://127.0.0.1:${edgePort}/api/hello`, { headers: { "x-forwarded-for": "203.0.113.5" } });
    await r.arrayBuffer();
    return /msg=sync edge=edge-local-1\/[0-9a-f]{8} seq=\d+ keys=\d+ dur_ms=[\d.]+ redis=ok/.test(co.proc.logs);
  }, { what: `a sync from workerd over HTTPS (workerd: ${wd.logs})`, stepMs: 200 });
  assert.ok(!co.proc.logs.includes("msg=tls_plain_http"));
});

test("HTTPS: SIGHUP swaps the certificate without dropping the listener or open connections", async (t) => {
  const { pki, co, cert, key, first } = await tlsStack(t);
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
  t.after(() => agent.destroy());
  const a = await httpsGet(`${co.https}/healthz`, { ca: pki.ca, agent });
  assert.equal(a.fingerprint, fingerprintOf(first.cert));

  const second = pki.leaf("tollgate coordinator two");
  copyFileSync(second.cert, cert);
  copyFileSync(second.key, key);
  co.proc.kill("SIGHUP");
  await waitFor(() => co.proc.logs.includes("msg=tls_reloaded"), { what: "the reload log line" });

  const b = await httpsGet(`${co.https}/healthz`, { ca: pki.ca, agent });
  assert.equal(b.status, 200);
  assert.equal(b.reused, true, "the connection opened before the reload still serves");
  const c = await httpsGet(`${co.https}/healthz`, { ca: pki.ca });
  assert.equal(c.fingerprint, fingerprintOf(second.cert), "a new handshake gets the new certificate");

  // A key that is not the certificate's: refused, the previous pair stays.
  const third = pki.leaf("tollgate coordinator three");
  copyFileSync(third.cert, cert);
  co.proc.kill("SIGHUP");
  await waitFor(() => co.proc.logs.includes("msg=tls_reload_failed"), { what: "the failed-reload log line" });
  assert.match(co.proc.logs, /msg=tls_reload_failed detail="--tls-key \S+ is not the key of --tls-cert \S+" note="still serving the previous certificate"/);
  const d = await httpsGet(`${co.https}/healthz`, { ca: pki.ca });
  assert.equal(d.fingerprint, fingerprintOf(second.cert));
  assert.equal(co.proc.exitCode, null);
});

test("HTTPS: a key that is not the certificate's, or one flag alone, refuses the start", async (t) => {
  const pki = makePki();
  const a = pki.leaf("a"), b = pki.leaf("b");
  const redis = await startRedis();
  t.after(() => redis.stop());
  const start = async (args) => {
    const p = startProcess(path.join(BUILD, "tollgated"), ["--listen", "127.0.0.1:0", "--redis", redis.url,
      "--policy", path.join(ROOT, "deploy/example-policy.json"), "--keys", writeKeys(), ...args]);
    return { ...(await p.exited), logs: p.logs };
  };
  let r = await start(["--tls-cert", a.cert, "--tls-key", b.key]);
  assert.equal(r.code, 1);
  assert.match(r.logs, /msg=tls_invalid detail="--tls-key \S+ is not the key of --tls-cert/);
  r = await start(["--tls-cert", a.cert]);
  assert.equal(r.code, 2, "bad usage");
  assert.match(r.logs, /--tls-cert and --tls-key go together/);
});
