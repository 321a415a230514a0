// harness.mjs — real processes for the integration tests.
//
// Starts a throwaway redis-server and tollgated on spare loopback ports,
// talks RESP to Redis directly, and stops every process it started by PID
// (and only those), also when a test fails or the runner exits.

import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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
export function redisCommand(port, ...args) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, "127.0.0.1");
    let buf = Buffer.alloc(0);
    sock.setTimeout(2000, () => sock.destroy(new Error("redis timeout")));
    sock.on("error", reject);
    sock.on("connect", () => {
      let req = `*${args.length}\r\n`;
      for (const a of args) {
        const b = Buffer.from(String(a));
        req += `$${b.length}\r\n${b.toString("binary")}\r\n`;
      }
      sock.write(Buffer.from(req, "binary"));
    });
    sock.on("data", (d) => {
      buf = Buffer.concat([buf, d]);
      const r = parseResp(buf, 0);
      if (r) {
        sock.end();
        resolve(r.value);
      }
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
// asked. Returns { port, proc, dir, stop() }.
export async function startRedis({ port, dir, args = [] } = {}) {
  port = port || await freePort();
  dir = dir || tempDir("tollgate-redis-");
  const proc = startProcess("redis-server", [
    "--port", String(port), "--bind", "127.0.0.1", "--dir", dir,
    "--save", "", "--appendonly", "no", "--daemonize", "no", ...args,
  ]);
  await waitFor(async () => (await redisCommand(port, "PING")) === "PONG",
    { what: `redis-server on port ${port}` });
  return {
    port, proc, dir,
    url: `redis://127.0.0.1:${port}`,
    stop: () => stopProcess(proc),
  };
}

// build/tollgated on an OS-chosen loopback port. policy: an object (written
// to a temp file) or a path. Resolves once it logs the address it bound.
export async function startTollgated({ redisPort, policy, args = [], env = {} } = {}) {
  let policyPath = policy;
  if (policy && typeof policy === "object") {
    policyPath = path.join(tempDir("tollgate-policy-"), "policy.json");
    writeFileSync(policyPath, JSON.stringify(policy));
  }
  policyPath = policyPath || path.join(ROOT, "deploy/example-policy.json");
  const proc = startProcess(path.join(BUILD, "tollgated"), [
    "--listen", "127.0.0.1:0",
    "--redis", `redis://127.0.0.1:${redisPort}`,
    "--policy", policyPath,
    ...args,
  ], { env: { ...process.env, ...env } });
  const addr = await waitFor(() => {
    if (proc.exitCode !== null) throw new Error(`tollgated exited ${proc.exitCode}:\n${proc.logs}`);
    const m = /msg=listening\b.*\baddr=127\.0\.0\.1:(\d+)/.exec(proc.logs);
    return m && Number(m[1]);
  }, { what: "tollgated to listen" });
  return {
    port: addr, proc,
    url: `http://127.0.0.1:${addr}`,
    stop: () => stopProcess(proc),
  };
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

// POSTs bytes to /v1/sync; resolves to { status, headers, bytes }.
export async function postSync(baseUrl, body, headers = {}) {
  const r = await fetch(`${baseUrl}/v1/sync`, {
    method: "POST",
    headers: { "content-type": "application/x-protobuf", ...headers },
    body,
  });
  return { status: r.status, headers: r.headers, bytes: new Uint8Array(await r.arrayBuffer()) };
}
