// verify.mjs — verify() latency from JS through the glue's
// Tollgate.verify(features), per call, timed over batches: no token, a
// fresh HS256 token every call, the same token every call. Next to them,
// what the glue costs: the wasm export alone (features written once) and
// an empty wasm call.
//
// The policy comes from a hand-built SyncResponse through the glue's own
// sync() (see fixtures.mjs), so no server runs here. Limits are huge: every
// call is a full Allow (quota match, key, bucket, RateLimit headers). The
// JWT rows need an edge with JWT support (it exports add_key); without it
// they say so instead of failing.

import { createTollgate } from "../../edge-module/js/tollgate.mjs";
import { atMost, isMain, progress, row, runAlone } from "../lib.mjs";
import {
  JWT_OPTIONS, POLICY_IP, POLICY_SUB, edgeWithPolicy, forge, hasJwt, makeToken, wasmBytes,
} from "./fixtures.mjs";

const BATCHES = 7;      // runs reported
const WARMUP = 2;       // batches thrown away (Liftoff → TurboFan tier-up)
const PER_BATCH = 20000;
const BUDGET_MS = 20000; // per case

const NA_JWT = "n/a (edge has no JWT support yet)";

// ns per call for each of BATCHES batches of PER_BATCH calls of fn(i),
// i counting up across batches (so a fresh token is never reused).
function batches(fn, check) {
  const out = [];
  const end = Date.now() + BUDGET_MS;
  let i = 0;
  for (let b = 0; b < WARMUP + BATCHES && Date.now() < end; b++) {
    let bad = 0;
    const t0 = process.hrtime.bigint();
    for (let k = 0; k < PER_BATCH; k++, i++) if (!check(fn(i))) bad++;
    const t1 = process.hrtime.bigint();
    if (bad) throw new Error(`${bad} of ${PER_BATCH} calls answered otherwise than expected`);
    if (b >= WARMUP) out.push(Number(t1 - t0) / PER_BATCH);
  }
  return out;
}

const isAllow = (d) => d.kind === "allow";
const features = (authorization = "") =>
  ({ method: "GET", path: "/api/items", host: "shop.example", ip: "203.0.113.7", authorization, cookie: "" });

async function noToken(module) {
  const tg = await edgeWithPolicy(module, POLICY_IP);
  const f = features();
  const first = tg.verify(f);
  if (!first.headers.some(([k, v]) => k === "RateLimit-Policy" && v.startsWith('"per-ip"'))) {
    throw new Error(`policy not in force: ${JSON.stringify(first)}`);
  }
  const glue = batches(() => tg.verify(f), isAllow);

  // The same decision without the glue: features written once, then only
  // the export called (what the wasm work costs from JS).
  const x = tg.x;
  const wasm = batches(() => x.verify(Date.now()), (k) => k === 0);
  const empty = batches(() => x.tg_abi(), (n) => n > 0);
  return { glue, wasm, empty };
}

async function withTokens(module) {
  const tg = await edgeWithPolicy(module, POLICY_SUB, { jwt: JWT_OPTIONS });
  // The work cannot be skipped: a good token is keyed on its sub, a forged
  // one is refused.
  const good = tg.verify(features(`Bearer ${makeToken(0)}`));
  if (good.kind !== "allow" || !good.headers.some(([k, v]) => k === "RateLimit-Policy" && v.startsWith('"per-sub"'))) {
    throw new Error(`a valid token was not keyed by per-sub: ${JSON.stringify(good)}`);
  }
  const bad = tg.verify(features(`Bearer ${forge(makeToken(1))}`));
  if (bad.kind !== "deny") throw new Error(`a forged token was not refused: ${JSON.stringify(bad)}`);

  const n = (WARMUP + BATCHES) * PER_BATCH;
  progress(`edge: verify(), making ${n} HS256 tokens`);
  const nowS = Math.floor(Date.now() / 1000);
  const auth = new Array(n);
  for (let i = 0; i < n; i++) auth[i] = `Bearer ${makeToken(i + 2, nowS)}`;
  const f = features();
  const fresh = batches((i) => { f.authorization = auth[i]; return tg.verify(f); }, isAllow);
  f.authorization = auth[0];
  const repeated = batches(() => tg.verify(f), isAllow);
  return { fresh, repeated };
}

export async function measure() {
  const module = new WebAssembly.Module(wasmBytes());
  progress(`edge: verify() from JS, ${BATCHES} batches × ${PER_BATCH} calls per case`);
  const { glue, wasm, empty } = await noToken(module);
  const rows = [
    row({ id: "edge.verify_ns", what: "verify() from JS, no token (glue Tollgate.verify)", unit: "ns/call",
      runs: glue, target: atMost(500, "≤ 0.5 µs") }),
    row({ id: "edge.verify_wasm_ns", what: "… the wasm verify export alone (features pre-written)", unit: "ns/call", runs: wasm }),
    row({ id: "edge.wasm_call_ns", what: "… an empty wasm export call (tg_abi)", unit: "ns/call", runs: empty }),
  ];
  const jwtRows = (r) => [
    row({ id: "edge.verify_jwt_fresh_ns", what: "verify() from JS, fresh HS256 token each call", unit: "ns/call",
      runs: r ? r.fresh : [], target: atMost(5000, "≤ 5 µs"), na: r ? null : NA_JWT }),
    row({ id: "edge.verify_jwt_repeat_ns", what: "verify() from JS, the same HS256 token again", unit: "ns/call",
      runs: r ? r.repeated : [], target: atMost(1000, "≤ 1 µs"), na: r ? null : NA_JWT }),
  ];
  if (!hasJwt(module)) return [...rows, ...jwtRows(null)];
  return [...rows, ...jwtRows(await withTokens(module))];
}

if (isMain(import.meta.url)) runAlone(measure);
