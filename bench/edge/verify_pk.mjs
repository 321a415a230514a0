// verify_pk.mjs — verify() from JS with tokens an identity provider signs
// with a public-key algorithm (RS256, ES256, EdDSA): a fresh token each
// call, over Node's own crypto.verify of the same tokens in the same run
// (the glue checks the signature once with WebCrypto, so this ratio is the
// glue's and WebCrypto's overhead over a bare verification; target ≤ 2×),
// and the same token again (decided from the core's cache without
// WebCrypto; target ≤ 1 µs, as HS256).
//
// Keys and tokens are made here with node:crypto; the policy comes from a
// hand-built SyncResponse (fixtures.mjs), so no server runs. Every call
// must Allow: a token keyed on its sub, limits huge.

import { createPrivateKey, generateKeyPairSync, sign, verify } from "node:crypto";
import { atMost, isMain, progress, row, runAlone } from "../lib.mjs";
import { POLICY_SUB, edgeWithPolicy, wasmBytes } from "./fixtures.mjs";

const ALGS = {
  RS256: { gen: ["rsa", { modulusLength: 2048 }], hash: "sha256", opts: {} },
  ES256: { gen: ["ec", { namedCurve: "P-256" }], hash: "sha256", opts: { dsaEncoding: "ieee-p1363" } },
  EdDSA: { gen: ["ed25519", {}], hash: null, opts: {} },
};
const BATCHES = 7;
const WARMUP = 1;
const FRESH = 300;        // tokens per batch (each verified once)
const REPEAT = 20000;     // calls per batch with one token
const BUDGET_MS = 30000;  // per algorithm

const b64u = (x) => Buffer.from(x).toString("base64url");

function mint(alg, privateKey, n) {
  const { hash, opts } = ALGS[alg];
  const header = b64u(JSON.stringify({ alg, typ: "JWT", kid: `bench-${alg}` }));
  const nowS = Math.floor(Date.now() / 1000);
  const out = [];
  for (let i = 0; i < n; i++) {
    const input = `${header}.${b64u(JSON.stringify({ sub: `user-${i % 64}`, iat: nowS, exp: nowS + 86400, jti: `${alg}-${i}` }))}`;
    const sig = sign(hash, Buffer.from(input), { key: privateKey, ...opts });
    out.push({ token: `${input}.${b64u(sig)}`, input: Buffer.from(input), sig });
  }
  return out;
}

async function one(module, alg) {
  const { gen, hash, opts } = ALGS[alg];
  const { publicKey, privateKey } = generateKeyPairSync(...gen);
  const jwk = { ...publicKey.export({ format: "jwk" }), kid: `bench-${alg}`, alg, use: "sig" };
  const tg = await edgeWithPolicy(module, POLICY_SUB, { jwt: { jwks: { keys: [jwk] }, leewaySeconds: 30 } });
  await tg.ready();
  progress(`edge: verify() with ${alg}, minting ${(WARMUP + BATCHES) * FRESH} tokens`);
  const tokens = mint(alg, createPrivateKey(privateKey.export({ format: "pem", type: "pkcs8" })), (WARMUP + BATCHES) * FRESH);
  const f = { method: "GET", path: "/api/items", host: "shop.example", ip: "203.0.113.7", authorization: "" };
  const glue = [], node = [], repeated = [];
  const end = Date.now() + BUDGET_MS;
  for (let b = 0; b < WARMUP + BATCHES && Date.now() < end; b++) {
    const batch = tokens.slice(b * FRESH, (b + 1) * FRESH);
    // Node's own verification of the same tokens, then tollgate's.
    let t0 = process.hrtime.bigint();
    for (const t of batch) {
      if (!verify(hash, t.input, { key: publicKey, ...opts }, t.sig)) throw new Error(`${alg}: Node refused its own token`);
    }
    const tn = Number(process.hrtime.bigint() - t0) / FRESH;
    t0 = process.hrtime.bigint();
    for (const t of batch) {
      f.authorization = `Bearer ${t.token}`;
      const d = await tg.verify(f);
      if (d.kind !== "allow") throw new Error(`${alg}: a fresh token was refused (${d.reason})`);
    }
    const tg_ = Number(process.hrtime.bigint() - t0) / FRESH;
    // (300 fresh tokens in a 256-slot cache may have pushed it out.)
    f.authorization = `Bearer ${batch[0].token}`;
    await tg.verify(f);
    t0 = process.hrtime.bigint();
    for (let i = 0; i < REPEAT; i++) {
      const d = tg.verify(f);
      if (d instanceof Promise || d.kind !== "allow") throw new Error(`${alg}: a repeated token was not decided from the cache`);
    }
    const tr = Number(process.hrtime.bigint() - t0) / REPEAT;
    if (b < WARMUP) continue;
    glue.push(tg_);
    node.push(tn);
    repeated.push(tr);
  }
  return { glue, node, repeated, ratio: glue.map((g, i) => g / node[i]) };
}

export async function measure() {
  const module = new WebAssembly.Module(wasmBytes());
  const rows = [];
  for (const alg of Object.keys(ALGS)) {
    const r = await one(module, alg);
    const id = alg.toLowerCase();
    rows.push(
      row({ id: `edge.verify_${id}_fresh_ratio`, what: `verify() from JS, fresh ${alg} token ÷ Node's crypto.verify of it`,
        unit: "ratio", runs: r.ratio, target: atMost(2, "≤ 2×") }),
      row({ id: `edge.verify_${id}_fresh_ns`, what: `… verify() with a fresh ${alg} token`, unit: "ns/call", runs: r.glue, digits: 4 }),
      row({ id: `edge.verify_${id}_node_ns`, what: `… Node's crypto.verify of the same ${alg} token`, unit: "ns/call", runs: r.node, digits: 4 }),
      row({ id: `edge.verify_${id}_repeat_ns`, what: `verify() from JS, the same ${alg} token again`, unit: "ns/call",
        runs: r.repeated, target: atMost(1000, "≤ 1 µs") }),
    );
  }
  return rows;
}

if (isMain(import.meta.url)) runAlone(measure);
