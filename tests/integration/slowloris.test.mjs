// Hostile connections against a real tollgated and Redis: one address
// trickling request heads (slowloris) while a client from another address
// is still served; a TLS ClientHello sent to the plain-HTTP port. Bounded:
// 300 connections, one header byte a second each, for at most 10 s.
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { test } from "node:test";
import { encodeSync, startRedis, startTollgated, syncSignature, waitFor } from "./harness.mjs";
import { POLICY } from "./scenario.mjs";

const TRICKLERS = 300;
const TRICKLE_S = 10;
const PER_IP = 100;

// One request from 127.0.0.2 (not the trickler's address); resolves to
// { status, body }.
function fresh(port, { method = "GET", path = "/healthz", headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, localAddress: "127.0.0.2", method, path, headers,
      agent: false }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(chunks) }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

async function metric(port, line) {
  const r = await fresh(port, { path: "/metrics" });
  const m = new RegExp(`^${line.replace(/[{}"]/g, "\\$&")} (\\d+)$`, "m").exec(r.body.toString());
  return m ? Number(m[1]) : NaN;
}

// A connection from 127.0.0.1 that sends a request head one byte a second
// and never finishes it; isClosed() once the server hung up.
function trickler(port) {
  const sock = net.connect({ host: "127.0.0.1", port, localAddress: "127.0.0.1" });
  const head = Buffer.from("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ");
  let sent = 0, timer = null, closed = false;
  sock.on("close", () => { clearInterval(timer); closed = true; });
  sock.on("error", () => {});
  sock.on("connect", () => {
    sock.write(head.subarray(0, 4));
    timer = setInterval(() => {
      if (++sent >= TRICKLE_S) { clearInterval(timer); return; }
      sock.write("a");
    }, 1000);
  });
  return { isClosed: () => closed, stop: () => { clearInterval(timer); sock.destroy(); } };
}

test("one address trickling request heads does not starve other clients", async (t) => {
  const redis = await startRedis();
  const co = await startTollgated({ redisPort: redis.port, policy: POLICY,
    args: ["--max-conns-per-ip", String(PER_IP), "--request-timeout-ms", "3000"] });
  const slow = [];
  t.after(async () => { for (const s of slow) s.stop(); await co.stop(); await redis.stop(); });

  for (let i = 0; i < TRICKLERS; i++) slow.push(trickler(co.port));
  // the address's cap is full once PER_IP of them are held
  await waitFor(async () => (await metric(co.port, "tollgate_http_connections")) >= PER_IP,
    { what: "the trickling connections to be held", timeoutMs: 20000 });

  // a fresh client from another address is served while they trickle
  const h = await fresh(co.port);
  assert.equal(h.status, 200);
  const body = encodeSync({ edgeId: "e1", seq: 1, counts: [{ quota: "per-ip", key: "10.0.0.1", admitted: 1 }] });
  const s = await fresh(co.port, { method: "POST", path: "/v1/sync", body,
    headers: { "content-type": "application/x-protobuf", ...syncSignature(body, { edgeId: "e1" }) } });
  assert.equal(s.status, 200);

  // the ones over the cap were refused at once, the held ones are cut at
  // their deadline although they never went idle
  assert.ok(await metric(co.port, 'tollgate_http_connections_closed_total{reason="limit"}') >= TRICKLERS - PER_IP);
  await waitFor(() => slow.every((x) => x.isClosed()),
    { what: "the server to close every trickling connection", timeoutMs: (TRICKLE_S + 10) * 1000 });
  const deadline = await metric(co.port, 'tollgate_http_connections_closed_total{reason="deadline"}');
  assert.ok(deadline >= PER_IP, `deadline closes: ${deadline}`);
  // and the address is welcome again afterwards
  await waitFor(async () => {
    const r = await fetch(`${co.url}/healthz`);
    await r.text();
    return r.status === 200;
  }, { what: "127.0.0.1 served again" });
  // said in the log, but not once per connection
  assert.match(co.proc.logs, /msg=connections_refused count=\d+/);
  assert.match(co.proc.logs, /msg=request_deadline_missed count=\d+/);
  const warnings = co.proc.logs.split("\n").filter((l) => /level=(warn|error)/.test(l));
  assert.ok(warnings.length < 10, `log flooded:\n${warnings.slice(0, 20).join("\n")}`);
});

test("a TLS ClientHello on the plain port is closed at once, not held", async (t) => {
  const redis = await startRedis();
  // a deadline far longer than the wait below: only the quick close passes
  const co = await startTollgated({ redisPort: redis.port, policy: POLICY,
    args: ["--request-timeout-ms", "120000"] });
  t.after(async () => { await co.stop(); await redis.stop(); });

  // the record and handshake headers of a TLS 1.2 ClientHello, and a body
  const hello = Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x00, 0x31, 0x01, 0x00, 0x00, 0x2d, 0x03, 0x03]),
    Buffer.alloc(32, 7), Buffer.from([0x00, 0x00, 0x02, 0x13, 0x01, 0x01, 0x00, 0x00, 0x00])]);
  const sock = net.connect({ host: "127.0.0.1", port: co.port });
  sock.on("error", () => {});
  let closed = false, data = 0;
  sock.on("close", () => { closed = true; });
  sock.on("data", (d) => { data += d.length; });
  sock.on("connect", () => sock.write(hello));
  await waitFor(() => closed, { what: "the TLS connection to be closed", timeoutMs: 10000 });
  assert.equal(data, 0, "nothing answered to a TLS client");
  assert.equal(await metric(co.port, 'tollgate_http_connections_closed_total{reason="tls"}'), 1);
  assert.match(co.proc.logs, /level=warn msg=tls_on_plain_port count=1 /);
  const r = await fetch(`${co.url}/healthz`);
  assert.equal(r.status, 200);
  await r.text();
});
