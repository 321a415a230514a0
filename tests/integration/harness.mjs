// harness.mjs — real processes for the integration tests.
//
// Starts a throwaway redis-server and tollgated on spare loopback ports,
// talks RESP to Redis directly, and stops every process it started by PID
// (and only those), also when a test fails or the runner exits.

import { spawn } from "node:child_process";
import { createHash, createHmac } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const BUILD = path.join(ROOT, "build");

const children = new Set();
process.on("exit", () => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
});

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function tempDir(prefix = "tollgate-") {
  return mkdtempSync(path.join(tmpdir(), prefix));
}

// A port nobody listens on right now. (Another process could take it before
// we bind it; on a test machine that race is rare and fails loudly.)
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// Polls fn until it returns a truthy value, at most timeoutMs.
export async function waitFor(fn, { timeoutMs = 10000, stepMs = 50, what = "condition" } = {}) {
  const end = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ""}`);
    await sleep(stepMs);
  }
}

// Starts cmd with its output kept in proc.logs; the process is killed by
// PID if this Node process exits first.
export function startProcess(cmd, args, opts = {}) {
  const proc = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], ...opts });
  children.add(proc);
  proc.logs = "";
  const collect = (d) => { proc.logs += d.toString(); };
  proc.stdout?.on("data", collect);
  proc.stderr?.on("data", collect);
  proc.exited = new Promise((resolve) => proc.on("exit", (code, signal) => {
    children.delete(proc);
    resolve({ code, signal });
  }));
  proc.on("error", (e) => { proc.logs += `${cmd}: ${e.message}\n`; });
  return proc;
}

// Sends SIGTERM to the process we started and waits for it; SIGKILL after
// graceMs. Returns { code, signal }.
export async function stopProcess(proc, graceMs = 5000) {
  if (proc.exitCode !== null || proc.signalCode !== null) return proc.exited;
  proc.kill("SIGTERM");
  const t = setTimeout(() => proc.kill("SIGKILL"), graceMs);
  const r = await proc.exited;
  clearTimeout(t);
  return r;
}

// One RESP command on a fresh connection; resolves to the parsed reply
// (errors as Error objects, not rejections).
export async function redisCommand(port, ...args) {
  return (await redisCommands(port, [args]))[0];
}

// Several commands in order on one fresh connection (e.g. AUTH as an ACL
// user, then the command to try); resolves to their replies, as above.
export function redisCommands(port, commands) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, "127.0.0.1");
    let buf = Buffer.alloc(0);
    sock.setTimeout(2000, () => sock.destroy(new Error("redis timeout")));
    sock.on("error", reject);
    sock.on("connect", () => {
      let req = "";
      for (const args of commands) {
        req += `*${args.length}\r\n`;
        for (const a of args) {
          const b = Buffer.from(String(a));
          req += `$${b.length}\r\n${b.toString("binary")}\r\n`;
        }
      }
      sock.write(Buffer.from(req, "binary"));
    });
    sock.on("data", (d) => {
      buf = Buffer.concat([buf, d]);
      const out = [];
      for (let at = 0; out.length < commands.length;) {
        const r = parseResp(buf, at);
        if (!r) return;
        out.push(r.value);
        at = r.end;
      }
      sock.end();
      resolve(out);
    });
  });
}

function parseResp(b, i) {
  const eol = b.indexOf("\r\n", i);
  if (eol < 0) return null;
  const t = String.fromCharCode(b[i]);
  const line = b.toString("binary", i + 1, eol);
  const next = eol + 2;
  if (t === "+") return { value: line, end: next };
  if (t === "-") return { value: new Error(line), end: next };
  if (t === ":") return { value: Number(line), end: next };
  if (t === "$") {
    const n = Number(line);
    if (n < 0) return { value: null, end: next };
    if (b.length < next + n + 2) return null;
    return { value: b.toString("utf8", next, next + n), end: next + n + 2 };
  }
  if (t === "*") {
    const n = Number(line);
    if (n < 0) return { value: null, end: next };
    const out = [];
    let at = next;
    for (let k = 0; k < n; k++) {
      const r = parseResp(b, at);
      if (!r) return null;
      out.push(r.value);
      at = r.end;
    }
    return { value: out, end: at };
  }
  throw new Error(`bad RESP type ${t}`);
}

// A private redis-server on a spare loopback port, no persistence unless
// asked; conf: a config file read first (the flags override it). Returns
// { port, proc, dir, stop() }.
export async function startRedis({ port, dir, args = [], conf } = {}) {
  port = port || await freePort();
  dir = dir || tempDir("tollgate-redis-");
  const proc = startProcess("redis-server", [
    ...(conf ? [conf] : []), "--port", String(port), "--bind", "127.0.0.1", "--dir", dir,
    "--save", "", "--appendonly", "no", "--daemonize", "no", ...args,
  ]);
  // Up when it answers: PONG, or NOAUTH when an ACL file turns the
  // default user off.
  await waitFor(async () => {
    const r = await redisCommand(port, "PING");
    return r === "PONG" || (r instanceof Error && r.message.startsWith("NOAUTH"));
  }, { what: `redis-server on port ${port}` });
  return {
    port, proc, dir,
    url: `redis://127.0.0.1:${port}`,
    stop: () => stopProcess(proc),
    kill: (signal) => { proc.kill(signal); return proc.exited; },
  };
}

// ---------------------------------------------------------------- keys
// Test secrets (hex, as in the key file). The clearance key is the one the
// edges in decisions.mjs are provisioned with, so the coordinator's
// clearance tokens are what those edges accept.
const hexOf = (s) => Buffer.from(s).toString("hex");
export const TEST_KEYS = {
  edge: hexOf("tollgate-test-edge-key-0123456789abcdef"),
  challenge: [{ id: "ch1", secret: hexOf("tollgate-test-challenge-key-1-0123456789") },
    { id: "ch2", secret: hexOf("tollgate-test-challenge-key-2-0123456789") }],
  clearance: [{ id: "c1", secret: hexOf("edge-test-clearance-secret-0123456789") }],
  captcha: hexOf("tollgate-test-captcha-static-0123456789"),
};
// Every edge name the tests use; each gets TEST_KEYS.edge.
export const TEST_EDGES = ["edge", "edge-a", "edge-b", "e1", "e2", "node-decisions",
  "wd-edge-a", "wd-edge-b", "wd-guard", "wd-decisions", "spray", "engine",
  "bench-workerd", "bench-decide", "edge-local-1"];

// Writes a key file (tollgated --keys) into a fresh temp dir; returns its path.
export function writeKeys({ edges = TEST_EDGES, keys = TEST_KEYS } = {}) {
  const lines = ["# written by tests/integration/harness.mjs"];
  for (const k of keys.challenge) lines.push(`challenge ${k.id} ${k.secret}`);
  for (const k of keys.clearance) lines.push(`clearance ${k.id} ${k.secret}`);
  // keys.captcha: the static verifier's hex secret, or { provider, secret }.
  if (keys.captcha) {
    lines.push(typeof keys.captcha === "string" ? `captcha static ${keys.captcha}`
      : `captcha ${keys.captcha.provider} ${keys.captcha.secret}`);
  }
  for (const e of edges) lines.push(`edge ${e} ${keys.edge}`);
  const file = path.join(tempDir("tollgate-keys-"), "keys");
  writeFileSync(file, lines.join("\n") + "\n");
  chmodSync(file, 0o600);
  return file;
}

// The sync signature headers (coordinator/auth.c), computed with Node's
// crypto: an implementation independent of the glue's WebCrypto one.
export function syncSignature(body, { edgeId, key = TEST_KEYS.edge, ts = Date.now(), path: p = "/v1/sync" }) {
  const digest = createHash("sha256").update(body).digest("hex");
  const mac = createHmac("sha256", Buffer.from(key, "hex"))
    .update(`tollgate-sync-v1\nPOST\n${p}\n${ts}\n${digest}`).digest("hex");
  return { "tollgate-edge": edgeId, "tollgate-timestamp": String(ts), "tollgate-signature": `v1=${mac}` };
}

// Admin API bearer tokens (tollgated --admin-tokens): name, role, token.
export const ADMIN_TOKENS = [
  { name: "ops-admin", role: "admin", token: "tg-test-admin-token-0123456789" },
  { name: "ops-viewer", role: "read", token: "tg-test-read-token-0123456789" },
];

// Writes an admin tokens file (lines "name role sha256hex"); returns its path.
export function writeAdminTokens(tokens = ADMIN_TOKENS) {
  const file = path.join(tempDir("tollgate-admin-"), "admin-tokens");
  writeFileSync(file, tokens.map((t) => `${t.name} ${t.role} ${createHash("sha256").update(t.token).digest("hex")}`).join("\n") + "\n");
  chmodSync(file, 0o600);
  return file;
}

// build/tollgated on an OS-chosen loopback port. policy: an object (written
// to a temp file) or a path; keys: a key file path (default: writeKeys());
// adminTokens: a tokens file path (default: writeAdminTokens()).
// Resolves once it logs the address it bound.
export async function startTollgated({ redisPort, policy, keys, adminTokens, port = 0, args = [], env = {} } = {}) {
  const keysPath = keys || writeKeys();
  const adminPath = adminTokens || writeAdminTokens();
  let policyPath = policy;
  if (policy && typeof policy === "object") {
    policyPath = path.join(tempDir("tollgate-policy-"), "policy.json");
    writeFileSync(policyPath, JSON.stringify(policy));
  }
  policyPath = policyPath || path.join(ROOT, "deploy/example-policy.json");
  const proc = startProcess(path.join(BUILD, "tollgated"), [
    "--listen", `127.0.0.1:${port}`,
    "--redis", `redis://127.0.0.1:${redisPort}`,
    "--policy", policyPath,
    "--keys", keysPath,
    "--admin-tokens", adminPath,
    ...args,
  ], { env: { ...process.env, ...env } });
  const addr = await waitFor(() => {
    if (proc.exitCode !== null) throw new Error(`tollgated exited ${proc.exitCode}:\n${proc.logs}`);
    const m = /msg=listening\b.*\baddr=127\.0\.0\.1:(\d+)/.exec(proc.logs);
    return m && Number(m[1]);
  }, { what: "tollgated to listen" });
  return {
    port: addr, proc, keysPath, adminPath, policyPath,
    url: `http://127.0.0.1:${addr}`,
    stop: () => stopProcess(proc),
  };
}

// workerd serving the example edge (deploy/workerd/config.capnp, `make
// run`'s own config) on a spare port in front of the demo origin: its ports
// moved, its files named relative to the copy, the keys (and env.*) from
// the environment as deploy/run.sh passes them. Resolves to { proc, url,
// dir, stop() } once the edge answers.
export async function startExampleEdge(coPort, env = {}) {
  const dir = tempDir("tollgate-edge-");
  const port = await freePort();
  const deployed = readFileSync(path.join(ROOT, "deploy/workerd/config.capnp"), "utf8");
  const config = deployed
    .replace('address = "127.0.0.1:8787"', `address = "127.0.0.1:${port}"`)
    .replace('address = "127.0.0.1:8080"', `address = "127.0.0.1:${coPort}"`)
    .replace(/embed "([^"]+)"/g, (_, f) => `embed "${path.relative(dir, path.resolve(ROOT, "deploy/workerd", f))}"`);
  if (!config.includes(`127.0.0.1:${port}`) || !config.includes(`127.0.0.1:${coPort}`)) {
    throw new Error("deploy/workerd/config.capnp no longer listens on 8787 and calls 8080");
  }
  writeFileSync(path.join(dir, "config.capnp"), config);
  const proc = startProcess(path.join(ROOT, "node_modules/.bin/workerd"), ["serve", path.join(dir, "config.capnp")], {
    env: { ...process.env, TOLLGATE_EDGE_KEY: TEST_KEYS.edge, TOLLGATE_CLEARANCE_KEY: TEST_KEYS.clearance[0].secret, ...env },
  });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(async () => {
    if (proc.exitCode !== null) throw new Error(`workerd exited ${proc.exitCode}:\n${proc.logs}`);
    try { return (await fetch(`${url}/`)).ok; } catch { return false; }
  }, { what: "workerd edge", timeoutMs: 20000 });
  return { proc, url, dir, stop: async () => { await stopProcess(proc); removeDir(dir); } };
}

export function loadWasm() {
  return new WebAssembly.Module(readFileSync(path.join(BUILD, "tollgate.wasm")));
}

export function removeDir(dir) {
  rmSync(dir, { recursive: true, force: true });
}

// Reads the top level of a protobuf message: { fieldNumber: [values] } with
// varints as BigInt and length-delimited fields as Uint8Array. Enough for
// tests to look at a SyncResponse without a protobuf library.
export function protoFields(bytes) {
  const out = {};
  let i = 0;
  const varint = () => {
    let v = 0n, shift = 0n;
    for (;;) {
      if (i >= bytes.length) throw new Error("truncated varint");
      const b = bytes[i++];
      v |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
      shift += 7n;
    }
  };
  while (i < bytes.length) {
    const key = Number(varint());
    const field = key >> 3, wt = key & 7;
    let val;
    if (wt === 0) val = varint();
    else if (wt === 2) {
      const n = Number(varint());
      val = bytes.subarray(i, i + n);
      i += n;
    } else if (wt === 1) { val = bytes.subarray(i, i + 8); i += 8; }
    else if (wt === 5) { val = bytes.subarray(i, i + 4); i += 4; }
    else throw new Error(`wire type ${wt}`);
    (out[field] ||= []).push(val);
  }
  return out;
}

// POSTs bytes to /v1/sync, signed as edge `sign.edgeId` unless sign is
// null; resolves to { status, headers, bytes }.
export async function postSync(baseUrl, body, headers = {}, sign = { edgeId: "e1" }) {
  const auth = sign ? syncSignature(body, sign) : {};
  const r = await fetch(`${baseUrl}/v1/sync`, {
    method: "POST",
    headers: { "content-type": "application/x-protobuf", ...auth, ...headers },
    body,
  });
  return { status: r.status, headers: r.headers, bytes: new Uint8Array(await r.arrayBuffer()) };
}

// ---------------------------------------------------------------- protobuf
// Just enough of the wire format to write a SyncRequest by hand.
function pbVarint(n) {
  const out = [];
  let v = BigInt(n);
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v) b |= 0x80;
    out.push(b);
  } while (v);
  return Buffer.from(out);
}
const pbKey = (field, wt) => pbVarint((field << 3) | wt);
const pbBytes = (field, b) => Buffer.concat([pbKey(field, 2), pbVarint(b.length), b]);
const pbUint = (field, v) => (v ? Buffer.concat([pbKey(field, 0), pbVarint(v)]) : Buffer.alloc(0));

// SyncRequest { edge_id, seq, sent_at_ms, policy_version, counts: [{ quota, key,
// admitted, denied, challenged }] } as bytes.
export function encodeSync({ edgeId, seq, policyVersion = 0, sentAtMs = 0, counts = [] }) {
  const parts = [pbBytes(1, Buffer.from(edgeId)), pbUint(2, seq), pbUint(3, sentAtMs), pbUint(4, policyVersion)];
  for (const c of counts) {
    parts.push(pbBytes(6, Buffer.concat([pbBytes(1, Buffer.from(c.quota)), pbBytes(2, Buffer.from(c.key)),
      pbUint(3, c.admitted || 0), pbUint(4, c.denied || 0), pbUint(5, c.challenged || 0)])));
  }
  return Buffer.concat(parts);
}

// The KeyStates of a SyncResponse as plain objects.
export function syncStates(bytes) {
  const f = protoFields(bytes);
  const td = new TextDecoder();
  return (f[3] || []).map((b) => {
    const s = protoFields(b);
    return {
      quota: td.decode(s[1]?.[0] ?? new Uint8Array()), key: td.decode(s[2]?.[0] ?? new Uint8Array()),
      action: Number(s[3]?.[0] ?? 0n), lease: Number(s[4]?.[0] ?? 0n), resetMs: Number(s[5]?.[0] ?? 0n),
      token: td.decode(s[6]?.[0] ?? new Uint8Array()), count: Number(s[7]?.[0] ?? 0n),
    };
  });
}
